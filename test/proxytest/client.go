package proxytest

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// Client is a line-oriented raw IMAP client whose methods return errors:
// the form for goroutines, where a test must not call t.Fatal. Every read
// and write has a deadline. Conn is the same client bound to a test.
type Client struct {
	// Timeout bounds each read and write; zero means the package's
	// Timeout. Set it before the client is used.
	Timeout time.Duration

	nc net.Conn
	br *bufio.Reader
}

// DialClient connects to addr from the local address src ("" = any),
// such as 127.0.0.2, to test per-address limits. The caller closes it.
func DialClient(src, addr string) (*Client, error) {
	d := net.Dialer{Timeout: Timeout}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return NewClient(nc), nil
}

// NewClient is a client on a connection the caller made.
func NewClient(nc net.Conn) *Client { return &Client{nc: nc, br: bufio.NewReader(nc)} }

// LocalAddr is the client's end of the connection: the address the
// proxy sees it connect from.
func (c *Client) LocalAddr() net.Addr { return c.nc.LocalAddr() }

func (c *Client) deadline() time.Time {
	if c.Timeout != 0 {
		return time.Now().Add(c.Timeout)
	}
	return time.Now().Add(Timeout)
}

// Send writes s as it is.
func (c *Client) Send(s string) error {
	c.nc.SetWriteDeadline(c.deadline())
	if _, err := io.WriteString(c.nc, s); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// Line reads one line and returns it without CRLF.
func (c *Client) Line() (string, error) {
	c.nc.SetReadDeadline(c.deadline())
	s, err := c.br.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("reading line: %w (got %q)", err, s)
	}
	return strings.TrimRight(s, "\r\n"), nil
}

// ReadN reads exactly n bytes, such as a literal's octets after the
// line that announced it, under one deadline. It returns what it read.
func (c *Client) ReadN(n int) ([]byte, error) {
	c.nc.SetReadDeadline(c.deadline())
	b := make([]byte, n)
	k, err := io.ReadFull(c.br, b)
	if err != nil {
		return b[:k], fmt.Errorf("reading %d bytes: %w", n, err)
	}
	return b, nil
}

// Until reads up to the tagged response for tag and returns the lines
// before it and the tagged line.
func (c *Client) Until(tag string) (untagged []string, tagged string, err error) {
	for {
		l, err := c.Line()
		if err != nil {
			return untagged, "", err
		}
		if strings.HasPrefix(l, tag+" ") {
			return untagged, l, nil
		}
		untagged = append(untagged, l)
	}
}

// Cmd sends "tag command" and reads up to its tagged response.
func (c *Client) Cmd(tag, command string) (untagged []string, tagged string, err error) {
	if err := c.Send(tag + " " + command + "\r\n"); err != nil {
		return nil, "", err
	}
	return c.Until(tag)
}

// ExpectClosed checks that the server closes the connection (EOF or
// reset) without sending more.
func (c *Client) ExpectClosed() error {
	c.nc.SetReadDeadline(c.deadline())
	s, err := c.br.ReadString('\n')
	switch {
	case err == nil:
		return fmt.Errorf("got %q; want the connection closed", s)
	case IsTimeout(err):
		return errors.New("connection still open")
	}
	return nil
}

// Logout sends LOGOUT and checks for * BYE, the tagged OK and the close.
func (c *Client) Logout(tag string) error {
	un, st, err := c.Cmd(tag, "LOGOUT")
	if err != nil {
		return err
	}
	if len(un) == 0 || !strings.HasPrefix(un[0], "* BYE") || !strings.HasPrefix(st, tag+" OK") {
		return fmt.Errorf("LOGOUT: got %q %q; want * BYE and %s OK", un, st, tag)
	}
	return c.ExpectClosed()
}

// ReadToEnd reads whatever the server sends until it closes the
// connection. err is nil for an orderly close (FIN), else the error that
// ended the reading: a reset (a peer that closes with unread data in its
// receive buffer sends RST instead of FIN), or a timeout if the
// connection stayed open.
func (c *Client) ReadToEnd() ([]byte, error) {
	c.nc.SetReadDeadline(c.deadline())
	return io.ReadAll(c.br)
}

// UpgradeTLS runs a TLS handshake as client on the connection, as after
// a STARTTLS OK or on an imaps port, and goes on over TLS. Bytes the
// server sent in plaintext and the client has not read are an error:
// they would be a STARTTLS injection (CVE-2011-0411).
func (c *Client) UpgradeTLS(cfg *tls.Config) (tls.ConnectionState, error) {
	if n := c.br.Buffered(); n != 0 {
		b, _ := c.br.Peek(n)
		return tls.ConnectionState{}, fmt.Errorf("server sent %q in plaintext before the TLS handshake", b)
	}
	tc := tls.Client(c.nc, cfg)
	tc.SetDeadline(c.deadline())
	if err := tc.Handshake(); err != nil {
		return tls.ConnectionState{}, fmt.Errorf("TLS handshake: %w", err)
	}
	tc.SetDeadline(time.Time{})
	c.nc, c.br = tc, bufio.NewReader(tc)
	return tc.ConnectionState(), nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.nc.Close() }

// Reset closes the connection with an RST instead of a FIN (under TLS,
// the TCP connection, without a close_notify).
func (c *Client) Reset() error {
	nc := c.nc
	if t, ok := nc.(*tls.Conn); ok {
		nc = t.NetConn()
	}
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return fmt.Errorf("reset: %T is not a TCP connection", c.nc)
	}
	if err := tc.SetLinger(0); err != nil {
		return err
	}
	return tc.Close()
}

// CloseWrite half-closes the connection: the server reads EOF.
func (c *Client) CloseWrite() error {
	tc, ok := c.nc.(*net.TCPConn)
	if !ok {
		return fmt.Errorf("close write: %T is not a TCP connection", c.nc)
	}
	return tc.CloseWrite()
}

// IsTimeout reports whether err is a network timeout, such as a read
// deadline passing.
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
