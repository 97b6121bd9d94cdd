package proxytest

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imapguard/imapguard/cmd/imapd/server"
)

// Imapd starts the bundled upstream (cmd/imapd) on 127.0.0.1 with users,
// plaintext logins allowed, and returns its address. Without users it
// has alice, password secret, with 3 messages.
func Imapd(t testing.TB, users ...server.User) string {
	t.Helper()
	if len(users) == 0 {
		users = []server.User{{Username: "alice", Password: "secret", Messages: 3}}
	}
	return server.Start(t, server.Options{Users: users, InsecureAuth: true})
}

// Fake is a scripted upstream: a listener on 127.0.0.1 whose connections
// are served by a handler, each on its own goroutine. It records the
// commands its handlers read (FakeConn.Command). Cleanup closes the
// listener and every connection and waits for the handlers.
type Fake struct {
	Addr string
	// Accepted receives each connection as it is accepted (while there
	// is room: it holds 16).
	Accepted chan *FakeConn

	commands chan string
	closing  chan struct{}
	wg       sync.WaitGroup

	mu    sync.Mutex
	conns []net.Conn
}

// StartFake serves handler on a new listener.
func StartFake(t testing.TB, handler func(*FakeConn)) *Fake {
	t.Helper()
	ln := listen(t)
	f := &Fake{
		Addr:     ln.Addr().String(),
		Accepted: make(chan *FakeConn, 16),
		commands: make(chan string, 100),
		closing:  make(chan struct{}),
	}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			if !f.track(nc) {
				nc.Close()
				return
			}
			nc.SetDeadline(time.Now().Add(2 * Timeout))
			c := &FakeConn{f: f, nc: nc, br: bufio.NewReader(nc)}
			select {
			case f.Accepted <- c:
			default:
			}
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				defer nc.Close()
				handler(c)
			}()
		}
	}()
	t.Cleanup(func() {
		f.mu.Lock()
		close(f.closing)
		for _, nc := range f.conns {
			nc.Close()
		}
		f.mu.Unlock()
		ln.Close()
		f.wg.Wait()
	})
	return f
}

// track registers a connection to close at cleanup, unless cleanup has
// begun.
func (f *Fake) track(nc net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.closing:
		return false
	default:
	}
	f.conns = append(f.conns, nc)
	return true
}

// Next returns the next command a handler read, failing the test if
// none comes.
func (f *Fake) Next(t testing.TB) string {
	t.Helper()
	select {
	case s := <-f.commands:
		return s
	case <-time.After(Timeout):
		t.Fatal("the fake upstream got no command")
		return ""
	}
}

// FakeConn is the upstream's side of one connection to a Fake.
type FakeConn struct {
	// MaxLiteral, when not zero, makes Command refuse synchronizing
	// literals over this many octets, as a server with a literal limit
	// does (RFC 9051 §7.5).
	MaxLiteral int

	f  *Fake
	nc net.Conn
	br *bufio.Reader
}

// Command is one command a FakeConn read.
type Command struct {
	Tag, Name string // as sent
	// Text is the whole command without its final CRLF, literals inline.
	Text string
	// Refused: the command ended at a synchronizing literal over
	// MaxLiteral, which the client was not asked for.
	Refused bool
}

// Line reads one line and returns it without CRLF.
func (c *FakeConn) Line() (string, error) {
	s, err := c.br.ReadString('\n')
	return strings.TrimRight(s, "\r\n"), err
}

// Command reads one command, and its literals: for a synchronizing one
// it first sends a continuation request "+ go ahead". The Fake records
// the command's text.
func (c *FakeConn) Command() (Command, error) {
	var text strings.Builder
	cmd := Command{}
	for {
		line, err := c.br.ReadString('\n')
		if err != nil {
			return cmd, err
		}
		text.WriteString(line)
		n, sync, ok := literalAtEnd(strings.TrimRight(line, "\r\n"))
		if !ok {
			break
		}
		if sync && c.MaxLiteral != 0 && n > c.MaxLiteral {
			cmd.Refused = true
			break
		}
		if sync {
			if err := c.Write("+ go ahead\r\n"); err != nil {
				return cmd, err
			}
		}
		buf := make([]byte, n)
		if _, err := io.ReadFull(c.br, buf); err != nil {
			return cmd, err
		}
		text.Write(buf)
	}
	cmd.Text = strings.TrimRight(text.String(), "\r\n")
	var rest string
	cmd.Tag, rest, _ = strings.Cut(cmd.Text, " ")
	cmd.Name, _, _ = strings.Cut(rest, " ")
	cmd.Name = strings.TrimRight(cmd.Name, "\r\n")
	select {
	case c.f.commands <- cmd.Text:
	default:
	}
	return cmd, nil
}

// literalAtEnd reads a literal announcement "{N}" or "{N+}" at the end
// of line.
func literalAtEnd(line string) (n int, sync, ok bool) {
	open := strings.LastIndexByte(line, '{')
	if open < 0 || !strings.HasSuffix(line, "}") {
		return 0, false, false
	}
	spec := line[open+1 : len(line)-1]
	digits, nonSync := strings.CutSuffix(spec, "+")
	n, err := strconv.Atoi(digits)
	if err != nil || n < 0 {
		return 0, false, false
	}
	return n, !nonSync, true
}

// Write writes s as it is.
func (c *FakeConn) Write(s string) error {
	_, err := io.WriteString(c.nc, s)
	return err
}

// Read reads raw bytes (through the buffer Line and Command read from),
// such as a binary PROXY protocol header before the greeting.
func (c *FakeConn) Read(p []byte) (int, error) { return c.br.Read(p) }

// ReadAll reads what the client sends until it closes the connection.
func (c *FakeConn) ReadAll() ([]byte, error) { return io.ReadAll(c.br) }

// StartTLS runs a TLS handshake as server and goes on over TLS. The
// handshake reads through the buffer, which may already hold the start of
// it (behind a PROXY header read with Read).
func (c *FakeConn) StartTLS(cfg *tls.Config) error {
	tc := tls.Server(bufferedConn{c.nc, c.br}, cfg)
	if err := tc.Handshake(); err != nil {
		return err
	}
	c.nc, c.br = tc, bufio.NewReader(tc)
	return nil
}

// bufferedConn reads a connection through its bufio.Reader.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// NetConn is the connection the handler reads and writes.
func (c *FakeConn) NetConn() net.Conn { return c.nc }

// AcceptLogin greets as an IMAP4rev1 server with AUTH=PLAIN and answers
// the first command, the proxy's login, with OK: the start of a handler
// that then does what the test needs.
func (c *FakeConn) AcceptLogin() error {
	if err := c.Write("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\n"); err != nil {
		return err
	}
	login, err := c.Command()
	if err != nil {
		return err
	}
	return c.Write(login.Tag + " OK [CAPABILITY IMAP4rev1] in\r\n")
}

// StayOpen returns when the test ends, keeping the connection open until
// then: an upstream that neither answers nor closes.
func (c *FakeConn) StayOpen() { <-c.f.closing }

// Hold is a handler that writes greeting (if any) and then keeps the
// connection open, reading nothing, until the test ends: an upstream
// that never answers. The test may read the connection from Accepted.
func Hold(greeting string) func(*FakeConn) {
	return func(c *FakeConn) {
		if greeting != "" {
			c.Write(greeting)
		}
		c.StayOpen()
	}
}

// Respond is a handler that writes greeting, then reads commands one by
// one and writes what answer returns for each (whole lines, with CRLF).
// It ends the connection after answering LOGOUT.
func Respond(greeting string, answer func(c *FakeConn, cmd Command) string) func(*FakeConn) {
	return func(c *FakeConn) {
		if c.Write(greeting) != nil {
			return
		}
		for {
			cmd, err := c.Command()
			if err != nil {
				return
			}
			if c.Write(answer(c, cmd)) != nil || strings.EqualFold(cmd.Name, "LOGOUT") {
				return
			}
		}
	}
}

// Logout is the answer to LOGOUT from tag.
func Logout(tag string) string { return fmt.Sprintf("* BYE bye\r\n%s OK LOGOUT completed\r\n", tag) }
