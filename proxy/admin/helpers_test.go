package admin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
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
