package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

const (
	// maxLine bounds one response line (without its literals). Dovecot's
	// longest lines here are ENVELOPE responses of a few hundred bytes.
	maxLine = 1 << 20
	// maxLiteral bounds one literal the server may announce.
	maxLiteral = 1 << 30
	// discardChunk is how much of a literal is discarded between two
	// refreshes of the read deadline.
	discardChunk = 1 << 20
)

// dialer opens connections from a rotating set of loopback source
// addresses, so that neither the proxies' per-address tables nor the
// 64k ephemeral ports of one source address are a bottleneck.
type dialer struct {
	sources []netip.Addr
	next    atomic.Uint64
	timeout time.Duration
	tls     bool
	bufSize int
}

// dial connects to addr from the next source address and returns the
// connection; nothing has been read yet.
func (d *dialer) dial(ctx context.Context, addr string) (*conn, error) {
	nd := net.Dialer{Timeout: d.timeout}
	if len(d.sources) > 0 {
		src := d.sources[(d.next.Add(1)-1)%uint64(len(d.sources))]
		nd.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
	}
	nc, err := nd.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if d.tls {
		// Hook for imaps (implicit TLS). The benchmark targets run on
		// loopback with throwaway self-signed certificates.
		host, _, _ := net.SplitHostPort(addr)
		tc := tls.Client(nc, &tls.Config{InsecureSkipVerify: true, ServerName: host}) //nolint:gosec // loopback benchmark
		_ = tc.SetDeadline(time.Now().Add(d.timeout))
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, fmt.Errorf("TLS handshake: %w", err)
		}
		_ = tc.SetDeadline(time.Time{})
		nc = tc
	}
	return &conn{
		nc:      nc,
		r:       bufio.NewReaderSize(nc, d.bufSize),
		timeout: d.timeout,
	}, nil
}

// conn is one raw IMAP client connection. It is not safe for concurrent
// use.
type conn struct {
	nc      net.Conn
	r       *bufio.Reader
	timeout time.Duration

	tagN uint64
	tag  []byte // current tag
	out  []byte // scratch for the command being written
	line []byte // scratch for the line being read

	// bytes counts every byte read from the server: lines and literals.
	bytes int64
	// byeSeen is set when the server sent an untagged BYE.
	byeSeen bool
}

func (c *conn) close() error { return c.nc.Close() }

// greeting reads the server greeting and fails unless it is "* OK".
func (c *conn) greeting() error {
	c.setReadDeadline()
	line, err := c.readLine()
	if err != nil {
		return fmt.Errorf("reading greeting: %w", err)
	}
	if !bytes.HasPrefix(line, []byte("* OK")) {
		return fmt.Errorf("greeting: %q", trimCRLF(line))
	}
	return nil
}

// login sends LOGIN with quoted user name and password.
func (c *conn) login(user, pass string) error {
	_, err := c.command("LOGIN " + quote(user) + " " + quote(pass))
	return err
}

// commandResult is what the responses to one command came to.
type commandResult struct {
	// fetches counts untagged FETCH responses.
	fetches int
	// searchUIDs holds the numbers of an untagged SEARCH response.
	searchUIDs []uint64
}

// command sends one command with a fresh tag and reads every response up
// to the tagged one. A tagged NO or BAD is an error.
func (c *conn) command(cmd string) (commandResult, error) {
	c.tagN++
	c.tag = append(c.tag[:0], 'a')
	c.tag = strconv.AppendUint(c.tag, c.tagN, 10)
	c.out = append(c.out[:0], c.tag...)
	c.out = append(c.out, ' ')
	c.out = append(c.out, cmd...)
	c.out = append(c.out, '\r', '\n')
	if err := c.nc.SetWriteDeadline(time.Now().Add(c.timeout)); err != nil {
		return commandResult{}, err
	}
	if _, err := c.nc.Write(c.out); err != nil {
		return commandResult{}, fmt.Errorf("writing %s: %w", verb(cmd), err)
	}
	res, err := c.await(c.tag)
	if err != nil {
		return res, fmt.Errorf("%s: %w", verb(cmd), err)
	}
	return res, nil
}

// await reads responses until the tagged completion of tag. Literals
// ({N} at the end of a line, then N octets) are counted and discarded
// without being kept.
func (c *conn) await(tag []byte) (commandResult, error) {
	var res commandResult
	c.setReadDeadline()
	for {
		line, err := c.readLine()
		if err != nil {
			return res, err
		}
		if len(line) > len(tag) && bytes.HasPrefix(line, tag) && line[len(tag)] == ' ' {
			rest := line[len(tag)+1:]
			if bytes.HasPrefix(rest, []byte("OK")) {
				return res, nil
			}
			return res, fmt.Errorf("server answered %q", trimCRLF(line))
		}
		isFetch := false
		switch {
		case bytes.HasPrefix(line, []byte("* BYE")):
			c.byeSeen = true
		case bytes.HasPrefix(line, []byte("* SEARCH")):
			for _, f := range strings.Fields(string(trimCRLF(line[len("* SEARCH"):]))) {
				if n, err := strconv.ParseUint(f, 10, 64); err == nil {
					res.searchUIDs = append(res.searchUIDs, n)
				}
			}
		case bytes.HasPrefix(line, []byte("* ")) && bytes.Contains(line, []byte(" FETCH ")):
			isFetch = true
		case bytes.HasPrefix(line, []byte("+")):
			return res, fmt.Errorf("unexpected continuation request %q", trimCRLF(line))
		}
		// A response may carry literals: each ends a line, and the
		// response goes on after its octets.
		for {
			n, ok, err := literalSize(line)
			if err != nil {
				return res, err
			}
			if !ok {
				break
			}
			if err := c.discard(n); err != nil {
				return res, fmt.Errorf("reading a %d-byte literal: %w", n, err)
			}
			if line, err = c.readLine(); err != nil {
				return res, err
			}
		}
		if isFetch {
			res.fetches++
		}
	}
}

// readLine reads one line including its CRLF into c.line.
func (c *conn) readLine() ([]byte, error) {
	c.line = c.line[:0]
	for {
		chunk, err := c.r.ReadSlice('\n')
		c.line = append(c.line, chunk...)
		switch {
		case err == nil:
			c.bytes += int64(len(c.line))
			return c.line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			if len(c.line) > maxLine {
				return nil, fmt.Errorf("response line longer than %d bytes", maxLine)
			}
		case errors.Is(err, io.EOF):
			if c.byeSeen {
				return nil, fmt.Errorf("server closed the connection after BYE")
			}
			return nil, fmt.Errorf("server closed the connection")
		default:
			return nil, err
		}
	}
}

// discard reads and drops n octets, refreshing the read deadline as it
// goes, so that a stalled server is noticed but a large literal is not
// cut.
func (c *conn) discard(n int64) error {
	for n > 0 {
		k := min(n, discardChunk)
		c.setReadDeadline()
		d, err := c.r.Discard(int(k))
		c.bytes += int64(d)
		n -= int64(d)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

func (c *conn) setReadDeadline() {
	_ = c.nc.SetReadDeadline(time.Now().Add(c.timeout))
}

// literalSize reports whether line ends with a literal announcement
// ("{N}", "{N+}" or "~{N}" before CRLF) and returns N. A quoted string
// cannot contain CRLF, so "{N}" right before the line end is always a
// literal.
func literalSize(line []byte) (int64, bool, error) {
	l := trimCRLF(line)
	if len(l) < 3 || l[len(l)-1] != '}' {
		return 0, false, nil
	}
	open := bytes.LastIndexByte(l, '{')
	if open < 0 {
		return 0, false, nil
	}
	digits := l[open+1 : len(l)-1]
	if len(digits) > 0 && (digits[len(digits)-1] == '+' || digits[len(digits)-1] == '-') {
		digits = digits[:len(digits)-1]
	}
	if len(digits) == 0 || len(digits) > 12 {
		return 0, false, nil
	}
	var n int64
	for _, b := range digits {
		if b < '0' || b > '9' {
			return 0, false, nil
		}
		n = n*10 + int64(b-'0')
	}
	if n > maxLiteral {
		return 0, false, fmt.Errorf("server announced a %d-byte literal (limit %d)", n, maxLiteral)
	}
	return n, true, nil
}

func trimCRLF(b []byte) []byte {
	return bytes.TrimRight(b, "\r\n")
}

// quote returns s as an IMAP quoted string.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
	return b.String()
}

// verb returns the command name of cmd for error messages; it never
// includes arguments, so passwords stay out of the output.
func verb(cmd string) string {
	v, _, _ := strings.Cut(cmd, " ")
	if strings.EqualFold(v, "UID") {
		if rest, ok := strings.CutPrefix(cmd, v+" "); ok {
			v2, _, _ := strings.Cut(rest, " ")
			return v + " " + v2
		}
	}
	return v
}

// parseSources parses a list of loopback source addresses: single
// addresses and ranges "127.0.0.2-127.0.0.254", comma-separated. An empty
// string means "let the kernel choose".
func parseSources(s string) ([]netip.Addr, error) {
	var out []netip.Addr
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		first, err := netip.ParseAddr(strings.TrimSpace(lo))
		if err != nil {
			return nil, fmt.Errorf("source %q: %w", part, err)
		}
		last := first
		if isRange {
			if last, err = netip.ParseAddr(strings.TrimSpace(hi)); err != nil {
				return nil, fmt.Errorf("source %q: %w", part, err)
			}
		}
		if !first.IsLoopback() || !last.IsLoopback() || first.Is4() != last.Is4() {
			return nil, fmt.Errorf("source %q: only loopback addresses (127.0.0.0/8, ::1) are allowed", part)
		}
		if last.Less(first) {
			return nil, fmt.Errorf("source %q: range ends before it starts", part)
		}
		for a := first; ; a = a.Next() {
			out = append(out, a)
			if len(out) > 1<<16 {
				return nil, fmt.Errorf("source %q: more than 65536 addresses", part)
			}
			if a == last {
				break
			}
		}
	}
	return out, nil
}
