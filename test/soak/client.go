package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// The suite's IMAP client: just enough of RFC 9051 to log in, run the
// workload's commands and read their responses (literals included), and
// to end a connection in a chosen way at a chosen point.

// maxLine bounds one response line read by the client; maxLiteral one
// literal. Both are far above what cmd/imapd and the fake upstreams send.
const (
	maxLine    = 1 << 20
	maxLiteral = 64 << 20
)

// transport is how a client reaches the proxy.
type transport int

const (
	plain    transport = iota // the imap listener, no TLS (allow_plaintext_auth)
	imaps                     // the imaps listener, implicit TLS
	starttls                  // the imap listener, then STARTTLS
)

func (t transport) String() string {
	return [...]string{"plain", "imaps", "starttls"}[t]
}

// errUnexpected is a response the client did not expect: a client-visible
// error in the suite's terms.
var errUnexpected = errors.New("unexpected response")

// client is one IMAP connection. It is not safe for concurrent use, except
// that abort and close may be called from another goroutine to end a read.
type client struct {
	raw     *net.TCPConn // the TCP connection under any TLS
	nc      net.Conn     // raw, or TLS over it
	br      *bufio.Reader
	timeout time.Duration // bounds each command's exchange
	tagN    int
	greet   string // the greeting line
	// literalBytes counts the literal octets read (FETCH bodies).
	literalBytes int64
}

// dialer opens client connections to the proxy's listeners, from a
// rotating set of loopback source addresses so that neither the ephemeral
// ports of one address nor the TIME_WAIT sockets of a 100,000-connection
// run get in the way.
type dialer struct {
	imapAddr, imapsAddr string
	sources             []net.IP // nil: the system's choice (127.0.0.1)
	next                atomic.Uint64
	timeout             time.Duration
}

// source returns the next source address, or nil.
func (d *dialer) source() *net.TCPAddr {
	if len(d.sources) == 0 {
		return nil
	}
	ip := d.sources[(d.next.Add(1)-1)%uint64(len(d.sources))]
	return &net.TCPAddr{IP: ip}
}

// loopbackSources returns 127.0.0.from .. 127.0.0.to.
func loopbackSources(from, to int) []net.IP {
	var ips []net.IP
	for i := from; i <= to; i++ {
		ips = append(ips, net.IPv4(127, 0, 0, byte(i)))
	}
	return ips
}

// dialTCP connects to addr from src (nil: any) within d.timeout.
func (d *dialer) dialTCP(ctx context.Context, addr string, src *net.TCPAddr) (*net.TCPConn, error) {
	nd := net.Dialer{Timeout: d.timeout}
	if src != nil {
		nd.LocalAddr = src
	}
	nc, err := nd.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return nc.(*net.TCPConn), nil
}

// clientTLS is the client side of every TLS connection to the proxy: its
// certificate is self-signed (tls.mode = "self_signed"), so it is not
// verified; the suite tests the proxy's connection handling, not PKI.
func clientTLS() *tls.Config {
	return &tls.Config{InsecureSkipVerify: true, ServerName: "localhost"} //nolint:gosec // loopback test
}

// open connects over t and reads the greeting (and for STARTTLS, upgrades
// the connection), ready for LOGIN.
func (d *dialer) open(ctx context.Context, t transport) (*client, error) {
	addr := d.imapAddr
	if t == imaps {
		addr = d.imapsAddr
	}
	raw, err := d.dialTCP(ctx, addr, d.source())
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	c := &client{raw: raw, nc: raw, timeout: d.timeout}
	if t == imaps {
		if err := c.handshake(ctx); err != nil {
			raw.Close()
			return nil, err
		}
	}
	c.br = bufio.NewReaderSize(c.nc, 4096)
	c.deadline()
	if c.greet, err = c.readLine(); err != nil {
		raw.Close()
		return nil, fmt.Errorf("greeting: %w", err)
	}
	if !strings.HasPrefix(c.greet, "* OK") {
		raw.Close()
		return nil, fmt.Errorf("greeting %q: %w", c.greet, errUnexpected)
	}
	if t == starttls {
		if _, err := c.command("STARTTLS"); err != nil {
			raw.Close()
			return nil, err
		}
		if err := c.handshake(ctx); err != nil {
			raw.Close()
			return nil, err
		}
		c.br = bufio.NewReaderSize(c.nc, 4096)
	}
	return c, nil
}

func (c *client) handshake(ctx context.Context) error {
	tc := tls.Client(c.raw, clientTLS())
	hctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		return fmt.Errorf("TLS handshake: %w", err)
	}
	c.nc = tc
	return nil
}

// newBufReader is the client's reader of a connection.
func newBufReader(r io.Reader) *bufio.Reader { return bufio.NewReaderSize(r, 4096) }

// deadline bounds the next exchange.
func (c *client) deadline() { c.nc.SetDeadline(time.Now().Add(c.timeout)) }

// readLine reads one line without its CRLF.
func (c *client) readLine() (string, error) {
	var b []byte
	for {
		frag, err := c.br.ReadSlice('\n')
		b = append(b, frag...)
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return "", err
		}
		if len(b) > maxLine {
			return "", fmt.Errorf("line over %d bytes: %w", maxLine, errUnexpected)
		}
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// literalSize returns N when line ends with a literal announcement {N}
// (or ~{N}, {N+}), else -1.
func literalSize(line string) int64 {
	if !strings.HasSuffix(line, "}") {
		return -1
	}
	open := strings.LastIndexByte(line, '{')
	if open < 0 {
		return -1
	}
	num := strings.TrimSuffix(line[open+1:len(line)-1], "+")
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 {
		return -1
	}
	return n
}

// readResponse reads one whole response line: a line and, for each
// literal it announces, the literal's octets (discarded, counted) and the
// rest of the line after it. It returns the line with each literal
// replaced by {N}.
func (c *client) readResponse() (string, error) {
	var sb strings.Builder
	for {
		line, err := c.readLine()
		if err != nil {
			return "", err
		}
		sb.WriteString(line)
		n := literalSize(line)
		if n < 0 {
			return sb.String(), nil
		}
		if n > maxLiteral {
			return "", fmt.Errorf("literal of %d bytes: %w", n, errUnexpected)
		}
		got, err := io.CopyN(io.Discard, c.br, n)
		c.literalBytes += got
		if err != nil {
			return "", err
		}
	}
}

// reply is what the server answered to one command.
type reply struct {
	untagged []string
	status   string // OK, NO or BAD
	text     string // the tagged line after the status
}

// nextTag returns a fresh tag.
func (c *client) nextTag() string {
	c.tagN++
	return "t" + strconv.Itoa(c.tagN)
}

// command sends "TAG cmd" and reads to the tagged answer; anything but OK
// is an error wrapping errUnexpected.
func (c *client) command(cmd string) (reply, error) {
	r, err := c.commandAny(cmd)
	if err == nil && r.status != "OK" {
		err = fmt.Errorf("%s: %s %s: %w", verb(cmd), r.status, r.text, errUnexpected)
	}
	return r, err
}

// commandAny is command without judging the status.
func (c *client) commandAny(cmd string) (reply, error) {
	tag := c.nextTag()
	c.deadline()
	if _, err := io.WriteString(c.nc, tag+" "+cmd+"\r\n"); err != nil {
		return reply{}, fmt.Errorf("%s: write: %w", verb(cmd), err)
	}
	return c.readTagged(tag, verb(cmd))
}

// readTagged reads responses up to the one tagged tag. A BYE on the way
// is an error.
func (c *client) readTagged(tag, what string) (reply, error) {
	var r reply
	for {
		line, err := c.readResponse()
		if err != nil {
			return r, fmt.Errorf("%s: %w", what, err)
		}
		if strings.HasPrefix(line, "* BYE") {
			return r, fmt.Errorf("%s: %q: %w", what, line, errUnexpected)
		}
		if rest, ok := strings.CutPrefix(line, tag+" "); ok {
			r.status, r.text, _ = strings.Cut(rest, " ")
			return r, nil
		}
		if strings.HasPrefix(line, "+") {
			return r, fmt.Errorf("%s: continuation %q: %w", what, line, errUnexpected)
		}
		r.untagged = append(r.untagged, line)
	}
}

func verb(cmd string) string {
	v, _, _ := strings.Cut(cmd, " ")
	return v
}

// quote returns s as an IMAP quoted string; the suite's user names and
// passwords are ASCII without CR or LF.
func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// login logs in with LOGIN.
func (c *client) login(user, pass string) error {
	_, err := c.command("LOGIN " + quote(user) + " " + quote(pass))
	return err
}

// continuation sends "TAG line" (which ends in a synchronizing literal
// announcement) and waits for the server's "+".
func (c *client) continuation(line string) (string, error) {
	tag := c.nextTag()
	c.deadline()
	if _, err := io.WriteString(c.nc, tag+" "+line+"\r\n"); err != nil {
		return tag, fmt.Errorf("%s: write: %w", verb(line), err)
	}
	for {
		l, err := c.readResponse()
		if err != nil {
			return tag, fmt.Errorf("%s: %w", verb(line), err)
		}
		if strings.HasPrefix(l, "+") {
			return tag, nil
		}
		if strings.HasPrefix(l, tag+" ") || strings.HasPrefix(l, "* BYE") {
			return tag, fmt.Errorf("%s: %q instead of +: %w", verb(line), l, errUnexpected)
		}
	}
}

// appendMessage APPENDs msg to INBOX with a synchronizing literal and
// returns the UID of APPENDUID (RFC 4315), 0 when there is none.
func (c *client) appendMessage(msg []byte) (uint32, error) {
	tag, err := c.continuation(fmt.Sprintf("APPEND INBOX {%d}", len(msg)))
	if err != nil {
		return 0, err
	}
	c.deadline()
	if _, err := c.nc.Write(append(msg, '\r', '\n')); err != nil {
		return 0, fmt.Errorf("APPEND: write: %w", err)
	}
	r, err := c.readTagged(tag, "APPEND")
	if err != nil {
		return 0, err
	}
	if r.status != "OK" {
		return 0, fmt.Errorf("APPEND: %s %s: %w", r.status, r.text, errUnexpected)
	}
	return appendUID(r.text), nil
}

// appendUID returns the UID of "[APPENDUID validity uid] ...", or 0.
func appendUID(text string) uint32 {
	rest, ok := strings.CutPrefix(text, "[APPENDUID ")
	if !ok {
		return 0
	}
	f := strings.Fields(strings.TrimSuffix(strings.SplitN(rest, "]", 2)[0], "]"))
	if len(f) != 2 {
		return 0
	}
	uid, err := strconv.ParseUint(f[1], 10, 32)
	if err != nil {
		return 0
	}
	return uint32(uid)
}

// idle starts IDLE (RFC 2177) and returns its tag once the server has
// answered "+". The caller then reads untagged lines until it calls done.
func (c *client) idle() (string, error) {
	tag := c.nextTag()
	c.deadline()
	if _, err := io.WriteString(c.nc, tag+" IDLE\r\n"); err != nil {
		return tag, fmt.Errorf("IDLE: write: %w", err)
	}
	for {
		l, err := c.readResponse()
		if err != nil {
			return tag, fmt.Errorf("IDLE: %w", err)
		}
		if strings.HasPrefix(l, "+") {
			return tag, nil
		}
		if strings.HasPrefix(l, tag+" ") || strings.HasPrefix(l, "* BYE") {
			return tag, fmt.Errorf("IDLE: %q: %w", l, errUnexpected)
		}
	}
}

// done ends IDLE and reads its tagged OK.
func (c *client) done(tag string) error {
	c.deadline()
	if _, err := io.WriteString(c.nc, "DONE\r\n"); err != nil {
		return fmt.Errorf("DONE: write: %w", err)
	}
	r, err := c.readTagged(tag, "IDLE")
	if err == nil && r.status != "OK" {
		err = fmt.Errorf("IDLE: %s %s: %w", r.status, r.text, errUnexpected)
	}
	return err
}

// logout sends LOGOUT, expects BYE and the tagged OK, and closes.
func (c *client) logout() error {
	defer c.raw.Close()
	tag := c.nextTag()
	c.deadline()
	if _, err := io.WriteString(c.nc, tag+" LOGOUT\r\n"); err != nil {
		return fmt.Errorf("LOGOUT: write: %w", err)
	}
	bye := false
	for {
		l, err := c.readResponse()
		if err != nil {
			return fmt.Errorf("LOGOUT: %w", err)
		}
		if strings.HasPrefix(l, "* BYE") {
			bye = true
			continue
		}
		if rest, ok := strings.CutPrefix(l, tag+" "); ok {
			if !bye || !strings.HasPrefix(rest, "OK") {
				return fmt.Errorf("LOGOUT: %q (BYE seen: %v): %w", l, bye, errUnexpected)
			}
			return nil
		}
	}
}

// ending is how a client ends a connection abruptly.
type ending int

const (
	// fin half-closes (shutdown SHUT_WR: a FIN), reads what the proxy
	// still sends until it closes, then closes. Closing at once instead
	// would turn into an RST as soon as the proxy sent anything more.
	fin ending = iota
	// rst closes with SO_LINGER 0: an RST, at once.
	rst
)

func (e ending) String() string { return [...]string{"FIN", "RST"}[e] }

// drainLimit bounds how long a FIN-ending client waits for the proxy to
// close its side.
const drainLimit = 15 * time.Second

// abortConn ends raw the way e says. For fin it returns how many bytes
// came after the FIN and whether the proxy closed within drainLimit.
func abortConn(raw *net.TCPConn, e ending) (drained int64, closedByPeer bool) {
	if e == rst {
		raw.SetLinger(0)
		raw.Close()
		return 0, true
	}
	raw.CloseWrite()
	raw.SetReadDeadline(time.Now().Add(drainLimit))
	n, err := io.Copy(io.Discard, raw)
	raw.Close()
	// A reset after the FIN also means the proxy let go.
	var ne net.Error
	return n, err == nil || !(errors.As(err, &ne) && ne.Timeout())
}

// abort ends the client's connection the way e says.
func (c *client) abort(e ending) (int64, bool) { return abortConn(c.raw, e) }
