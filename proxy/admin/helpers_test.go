package admin

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imapguard/imapguard/cmd/imapd/server"
	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/test/proxytest"
)

const testToken = "0123456789abcdef-admin-token"

// startProxy starts the bundled upstream (alice/secret, bob/hunter2) and
// a proxy in front of it; proxytest checks at cleanup that every count
// went back to zero.
func startProxy(t *testing.T) *proxytest.Proxy {
	t.Helper()
	up := server.Start(t, server.Options{InsecureAuth: true, Users: []server.User{
		{Username: "alice", Password: "secret", Messages: 2},
		{Username: "bob", Password: "hunter2", Messages: 1},
	}})
	return proxytest.Start(t, proxytest.Config{Upstream: up})
}

var waitZero = proxytest.WaitZero

// startAdmin serves an admin Server on 127.0.0.1:0 and returns its base
// URL.
func startAdmin(t *testing.T, o Options) (*Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := New(o)
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("admin shutdown: %v", err)
		}
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("admin serve: %v; want http.ErrServerClosed", err)
		}
	})
	return s, "http://" + ln.Addr().String()
}

// request is one HTTP request of a test. The method "" is GET; a Host
// in header goes to the request's Host.
type request struct {
	method string
	url    string
	header http.Header
	body   string
}

// headers builds a header of name, value pairs.
func headers(pairs ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(pairs); i += 2 {
		h.Set(pairs[i], pairs[i+1])
	}
	return h
}

// response is one HTTP exchange.
type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends r and returns the answer.
func do(t *testing.T, r request) response {
	t.Helper()
	method := r.method
	if method == "" {
		method = http.MethodGet
	}
	req, err := http.NewRequest(method, r.url, strings.NewReader(r.body))
	if err != nil {
		t.Fatal(err)
	}
	for name, values := range r.header {
		if name == "Host" {
			req.Host = values[0]
			continue
		}
		req.Header[name] = values
	}
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, b}
}

// get sends a GET without headers.
func get(t *testing.T, url string) response {
	t.Helper()
	return do(t, request{url: url})
}

// post sends a POST of body with the Content-Type contentType, if not "".
func post(t *testing.T, url, contentType, body string) response {
	t.Helper()
	h := http.Header{}
	if contentType != "" {
		h.Set("Content-Type", contentType)
	}
	return do(t, request{method: http.MethodPost, url: url, header: h, body: body})
}

// decode checks status and Content-Type and decodes the body into v.
func (r response) decode(t *testing.T, status int, v any) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d (%s); want %d", r.status, r.body, status)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q; want application/json", ct)
	}
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decoding %s: %v", r.body, err)
	}
}

// wantError checks an error response: status and a JSON error.
func (r response) wantError(t *testing.T, status int) string {
	t.Helper()
	var e ErrorBody
	r.decode(t, status, &e)
	if e.Error == "" {
		t.Fatalf("error body %s has no error text", r.body)
	}
	return e.Error
}

// rawConn is a line-oriented IMAP client.
type rawConn struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

// dialFrom connects to addr from the local address src, such as 127.0.0.2.
func dialFrom(t *testing.T, src, addr string) *rawConn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	c := &rawConn{t: t, nc: nc, br: bufio.NewReader(nc)}
	if g := c.line(); !strings.HasPrefix(g, "* OK") {
		t.Fatalf("greeting %q", g)
	}
	return c
}

// login connects from src and logs in with LOGIN.
func login(t *testing.T, src, addr, user, pass string) *rawConn {
	t.Helper()
	c := dialFrom(t, src, addr)
	if st := c.cmd("l1", "LOGIN "+user+" "+pass); !strings.HasPrefix(st, "l1 OK") {
		t.Fatalf("login %s: %q", user, st)
	}
	return c
}

func (c *rawConn) line() string {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	s, err := c.br.ReadString('\n')
	if err != nil {
		c.t.Fatalf("reading: %v (got %q)", err, s)
	}
	return strings.TrimRight(s, "\r\n")
}

// cmd sends a command and returns its tagged response.
func (c *rawConn) cmd(tag, line string) string {
	c.t.Helper()
	c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c.nc, tag+" "+line+"\r\n"); err != nil {
		c.t.Fatal(err)
	}
	for {
		if l := c.line(); strings.HasPrefix(l, tag+" ") {
			return l
		}
	}
}

// wantBye checks that the next line is bye and that the connection then
// ends.
func (c *rawConn) wantBye(bye string) {
	c.t.Helper()
	if l := c.line(); l != bye {
		c.t.Fatalf("got %q; want %q", l, bye)
	}
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if s, err := c.br.ReadString('\n'); err == nil {
		c.t.Fatalf("got %q after BYE; want EOF", s)
	} else if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		c.t.Fatal("connection still open after BYE")
	}
}

// syncBuffer is a bytes.Buffer for a logger written from several
// goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// logTo returns a text logger writing to w.
func logTo(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }

// fakeSessions counts kicks and upstream checks. A check returns err at
// once when started is nil; otherwise it says it started and waits for
// release.
type fakeSessions struct {
	kicks   atomic.Int32
	checks  atomic.Int32
	err     error
	started chan struct{}
	release chan struct{}
}

func (f *fakeSessions) Select(proxy.Match) ([]proxy.ConnInfo, error) { return nil, nil }

func (f *fakeSessions) Kick(proxy.Match, string) ([]proxy.ConnInfo, error) {
	f.kicks.Add(1)
	return nil, nil
}

func (f *fakeSessions) Listening() []string { return []string{"127.0.0.1:1143"} }

func (f *fakeSessions) CheckUpstream(ctx context.Context) error {
	f.checks.Add(1)
	if f.started == nil {
		return f.err
	}
	f.started <- struct{}{}
	select {
	case <-f.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
