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
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imapguard/imapguard/cmd/imapd/server"
	"github.com/imapguard/imapguard/limits"
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

// response is one HTTP exchange.
type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends a request; token "" sends no Authorization header.
func do(t *testing.T, method, url, token, contentType, body string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
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

func byClient(list []Session, host string) *Session {
	for i := range list {
		if h, _, _ := net.SplitHostPort(list[i].Client); h == host {
			return &list[i]
		}
	}
	return nil
}

// TestSessionsAndKick lists live sessions, filters them, and kicks by
// user and by address, over real sockets.
func TestSessionsAndKick(t *testing.T) {
	p := startProxy(t)
	_, base := startAdmin(t, Options{Sessions: p.Server, Listeners: 1})

	alice := login(t, "127.0.0.2", p.Addr, "alice", "secret")
	bob := login(t, "127.0.0.3", p.Addr, "bob", "hunter2")
	pre := dialFrom(t, "127.0.0.4", p.Addr)
	alice.cmd("s1", "SELECT INBOX")
	start := time.Now()

	var all SessionList
	r := do(t, "GET", base+"/sessions", "", "", "")
	r.decode(t, http.StatusOK, &all)
	if all.Count != 3 || len(all.Sessions) != 3 {
		t.Fatalf("GET /sessions: %s; want 3 sessions", r.body)
	}
	for _, tc := range []struct {
		host, user, state string
	}{
		{"127.0.0.2", "alice", "authenticated"},
		{"127.0.0.3", "bob", "authenticated"},
		{"127.0.0.4", "", "preauth"},
	} {
		s := byClient(all.Sessions, tc.host)
		if s == nil {
			t.Fatalf("no session from %s in %s", tc.host, r.body)
		}
		if s.User != tc.user || s.State != tc.state || s.TLS || s.Listener != p.Addr || s.ID == 0 {
			t.Errorf("session from %s: %+v; want user %q, state %s, no TLS, listener %s", tc.host, *s, tc.user, tc.state, p.Addr)
		}
		if s.Since.Location() != time.UTC || s.Since.After(start) || start.Sub(s.Since) > time.Minute || s.DurationSeconds < 0 {
			t.Errorf("session from %s: since %v, duration %v", tc.host, s.Since, s.DurationSeconds)
		}
	}
	if s := byClient(all.Sessions, "127.0.0.2"); s.BytesToUpstream == 0 || s.BytesToClient == 0 {
		t.Errorf("alice after SELECT: bytes %d/%d; want both > 0", s.BytesToUpstream, s.BytesToClient)
	}
	// The user field is there, empty, before authentication.
	if !bytes.Contains(r.body, []byte(`"user":""`)) {
		t.Errorf("GET /sessions: %s; want an empty user field for the pre-auth connection", r.body)
	}

	for _, tc := range []struct {
		name, query string
		hosts       []string
	}{
		{"user", "user=ALICE", []string{"127.0.0.2"}},
		{"address", "address=127.0.0.3", []string{"127.0.0.3"}},
		{"prefix", "address=" + url.QueryEscape("127.0.0.4/31"), []string{"127.0.0.4"}},
		{"both", "user=bob&address=127.0.0.3", []string{"127.0.0.3"}},
		{"no match", "user=bob&address=127.0.0.2", nil},
		{"nobody", "user=carol", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got SessionList
			r := do(t, "GET", base+"/sessions?"+tc.query, "", "", "")
			r.decode(t, http.StatusOK, &got)
			var hosts []string
			for _, s := range got.Sessions {
				h, _, _ := net.SplitHostPort(s.Client)
				hosts = append(hosts, h)
			}
			if got.Count != len(tc.hosts) || !slices.Equal(hosts, tc.hosts) {
				t.Fatalf("got %s; want sessions from %v", r.body, tc.hosts)
			}
			if got.Sessions == nil {
				t.Fatalf("got %s; want [] for no sessions", r.body)
			}
		})
	}
	for _, q := range []string{"address=nonsense", "usr=alice", "user=a&user=b"} {
		if msg := do(t, "GET", base+"/sessions?"+q, "", "", "").wantError(t, http.StatusBadRequest); msg == "" {
			t.Errorf("?%s: empty error", q)
		}
	}

	// Requests that kick nobody. Only a JSON body kicks: the three content
	// types an HTML form can send (and query parameters, which a form can
	// send with any of them) would let any page the operator visits kick
	// users, with no CORS preflight to stop it. These ones name alice,
	// who must still be there for the JSON kick below.
	for _, tc := range []struct {
		name, ct, query, body string
		status                int
	}{
		{"empty JSON", "application/json", "", `{}`, http.StatusBadRequest},
		{"blank user", "application/json", "", `{"user":"  "}`, http.StatusBadRequest},
		{"form", "application/x-www-form-urlencoded", "", `user=alice`, http.StatusUnsupportedMediaType},
		{"multipart form", "multipart/form-data; boundary=b", "", "--b\r\nContent-Disposition: form-data; name=\"user\"\r\n\r\nalice\r\n--b--\r\n", http.StatusUnsupportedMediaType},
		{"JSON as text/plain", "text/plain", "", `{"user":"alice"}`, http.StatusUnsupportedMediaType},
		{"query", "", "?user=alice", ``, http.StatusUnsupportedMediaType},
		{"form and query", "application/x-www-form-urlencoded", "?user=alice", `user=alice`, http.StatusUnsupportedMediaType},
		{"no body", "", "", ``, http.StatusUnsupportedMediaType},
		{"bad content type", "application/json; charset", "", `{"user":"alice"}`, http.StatusUnsupportedMediaType},
		{"JSON and query", "application/json", "?user=alice", `{"user":"alice"}`, http.StatusBadRequest},
		{"JSON empty body, query", "application/json", "?user=alice", ``, http.StatusBadRequest},
		{"bad address", "application/json", "", `{"address":"nonsense"}`, http.StatusBadRequest},
		{"unknown field", "application/json", "", `{"user":"alice","adress":"127.0.0.2"}`, http.StatusBadRequest},
		{"bad JSON", "application/json", "", `{"user":`, http.StatusBadRequest},
		{"two values", "application/json", "", `{"user":"alice"}{"user":"bob"}`, http.StatusBadRequest},
		{"too big", "application/json", "", `{"reason":"` + strings.Repeat("x", 65<<10) + `"}`, http.StatusRequestEntityTooLarge},
	} {
		t.Run("kick "+tc.name, func(t *testing.T) {
			msg := do(t, "POST", base+"/sessions/kick"+tc.query, "", tc.ct, tc.body).wantError(t, tc.status)
			if tc.status == http.StatusUnsupportedMediaType && !strings.Contains(msg, "Content-Type: application/json") {
				t.Errorf("error %q; want it to name Content-Type: application/json", msg)
			}
		})
	}
	r = do(t, "GET", base+"/sessions/kick?user=alice", "", "", "")
	r.wantError(t, http.StatusMethodNotAllowed)
	if a := r.header.Get("Allow"); a != "POST" {
		t.Errorf("GET /sessions/kick: Allow %q; want POST", a)
	}
	var none KickResult
	do(t, "POST", base+"/sessions/kick", "", "application/json", `{"user":"carol"}`).decode(t, http.StatusOK, &none)
	if none.Count != 0 || none.Kicked == nil {
		t.Fatalf("kick carol: %+v; want count 0 and []", none)
	}

	// Kick alice by user; a charset parameter is fine.
	var kicked KickResult
	r = do(t, "POST", base+"/sessions/kick", "", "application/json; charset=utf-8", `{"user":"alice"}`)
	r.decode(t, http.StatusOK, &kicked)
	if kicked.Count != 1 || len(kicked.Kicked) != 1 || kicked.Kicked[0].User != "alice" || kicked.Kicked[0].State != "authenticated" {
		t.Fatalf("kick alice: %s", r.body)
	}
	alice.wantBye("* BYE [UNAVAILABLE] Session closed by the administrator")
	if st := bob.cmd("n1", "NOOP"); !strings.HasPrefix(st, "n1 OK") {
		t.Fatalf("bob after kicking alice: %q", st)
	}

	// Kick the pre-auth connection by address, with a reason that tries
	// to inject a line.
	r = do(t, "POST", base+"/sessions/kick", "", "application/json",
		`{"address":"127.0.0.4","reason":"Maintenance\r\nA1 OK  done\u0000 é"}`)
	r.decode(t, http.StatusOK, &kicked)
	if kicked.Count != 1 || kicked.Kicked[0].State != "preauth" {
		t.Fatalf("kick 127.0.0.4: %s", r.body)
	}
	pre.wantBye("* BYE [UNAVAILABLE] Maintenance A1 OK done")

	// And bob by address.
	r = do(t, "POST", base+"/sessions/kick", "", "application/json", `{"address":"127.0.0.3","reason":"Bye bob"}`)
	r.decode(t, http.StatusOK, &kicked)
	if kicked.Count != 1 || kicked.Kicked[0].User != "bob" {
		t.Fatalf("kick 127.0.0.3: %s", r.body)
	}
	bob.wantBye("* BYE [UNAVAILABLE] Bye bob")
	waitZero(t, p.Limiter)
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

// TestToken: with a token, every endpoint but /healthz and /readyz wants
// it; refusals are logged without the presented token; kicks are logged.
func TestToken(t *testing.T) {
	p := startProxy(t)
	var logs syncBuffer
	_, base := startAdmin(t, Options{Token: testToken, Sessions: p.Server, Listeners: 1,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})

	for _, tc := range []struct {
		name, path, auth string
		status           int
	}{
		{"no header", "/sessions", "", http.StatusUnauthorized},
		{"wrong token", "/sessions", "Bearer not-the-token-at-all", http.StatusUnauthorized},
		{"token prefix", "/sessions", "Bearer " + testToken[:10], http.StatusUnauthorized},
		{"basic", "/sessions", "Basic " + testToken, http.StatusUnauthorized},
		{"bare token", "/sessions", testToken, http.StatusUnauthorized},
		{"right token", "/sessions", "Bearer " + testToken, http.StatusOK},
		{"scheme case", "/sessions", "bearer " + testToken, http.StatusOK},
		{"settings", "/settings", "", http.StatusUnauthorized},
		{"metrics", "/metrics", "", http.StatusUnauthorized},
		{"kick", "/sessions/kick", "", http.StatusUnauthorized},
		{"healthz", "/healthz", "", http.StatusOK},
		{"readyz", "/readyz", "", http.StatusOK},
		{"readyz wrong token", "/readyz", "Bearer wrong", http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", base+tc.path, nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d (%s); want %d", resp.StatusCode, body, tc.status)
			}
			if tc.status == http.StatusUnauthorized {
				if wa := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(wa, "Bearer") {
					t.Errorf("WWW-Authenticate %q; want Bearer", wa)
				}
				var e ErrorBody
				if err := json.Unmarshal(body, &e); err != nil || e.Error == "" {
					t.Errorf("401 body %s; want a JSON error", body)
				}
			}
		})
	}

	login(t, "127.0.0.2", p.Addr, "alice", "secret").cmd("n1", "NOOP")
	var kicked KickResult
	do(t, "POST", base+"/sessions/kick", testToken, "application/json", `{"user":"alice","reason":"Bye"}`).decode(t, http.StatusOK, &kicked)
	if kicked.Count != 1 {
		t.Fatalf("kick with token: %+v", kicked)
	}

	log := logs.String()
	if strings.Contains(log, "not-the-token") || strings.Contains(log, testToken[:10]) {
		t.Errorf("log shows a token:\n%s", log)
	}
	if !strings.Contains(log, "level=WARN") || !strings.Contains(log, "remote=127.0.0.1:") {
		t.Errorf("log has no refusal with the remote address:\n%s", log)
	}
	if !strings.Contains(log, "count=1 user=alice") {
		t.Errorf("log has no kick line:\n%s", log)
	}
}

// TestLocalOnly: without a token, the API answers only requests for a
// loopback Host (DNS rebinding) that carry no foreign Origin (CSRF), but
// the probes for any Host; with a token, any Host and Origin.
func TestLocalOnly(t *testing.T) {
	f := &fakeSessions{}
	var logs syncBuffer
	_, open := startAdmin(t, Options{Sessions: f, Listeners: 1, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	_, withToken := startAdmin(t, Options{Token: testToken, Sessions: f, Listeners: 1})
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(open, "http://"))

	const (
		noOrigin = "-" // send no Origin header
		ctJSON   = "application/json"
	)
	for _, tc := range []struct {
		name, method, path, host, origin, body string
		token                                  bool
		status                                 int
	}{
		{"IPv4 loopback", "GET", "/sessions", "127.0.0.1:" + port, noOrigin, "", false, http.StatusOK},
		{"other loopback", "GET", "/sessions", "127.0.0.2", noOrigin, "", false, http.StatusOK},
		{"localhost", "GET", "/settings", "localhost:" + port, noOrigin, "", false, http.StatusOK},
		{"LOCALHOST", "GET", "/settings", "LOCALHOST", noOrigin, "", false, http.StatusOK},
		{"IPv6 loopback", "GET", "/sessions", "[::1]:" + port, noOrigin, "", false, http.StatusOK},
		{"IPv6 loopback without port", "GET", "/sessions", "[::1]", noOrigin, "", false, http.StatusOK},
		{"rebinding name", "GET", "/sessions", "attacker.example:" + port, noOrigin, "", false, http.StatusForbidden},
		{"rebinding name settings", "GET", "/settings", "attacker.example", noOrigin, "", false, http.StatusForbidden},
		{"rebinding name kick", "POST", "/sessions/kick", "attacker.example", noOrigin, `{"user":"alice"}`, false, http.StatusForbidden},
		{"rebinding name metrics", "GET", "/metrics", "attacker.example", noOrigin, "", false, http.StatusForbidden},
		{"rebinding name unknown path", "GET", "/nothing", "attacker.example", noOrigin, "", false, http.StatusForbidden},
		{"name resolving to loopback", "GET", "/sessions", "127.0.0.1.nip.io", noOrigin, "", false, http.StatusForbidden},
		{"localhost subdomain", "GET", "/sessions", "localhost.attacker.example", noOrigin, "", false, http.StatusForbidden},
		{"public address", "GET", "/sessions", "192.0.2.1:" + port, noOrigin, "", false, http.StatusForbidden},
		{"unspecified address", "GET", "/sessions", "0.0.0.0:" + port, noOrigin, "", false, http.StatusForbidden},
		{"healthz any host", "GET", "/healthz", "attacker.example", noOrigin, "", false, http.StatusOK},
		{"readyz any host", "GET", "/readyz", "attacker.example", noOrigin, "", false, http.StatusOK},
		{"loopback origin", "GET", "/sessions", "127.0.0.1:" + port, "http://127.0.0.1:" + port, "", false, http.StatusOK},
		{"localhost origin", "GET", "/sessions", "127.0.0.1:" + port, "https://localhost", "", false, http.StatusOK},
		{"IPv6 origin", "GET", "/sessions", "127.0.0.1:" + port, "http://[::1]:" + port, "", false, http.StatusOK},
		{"foreign origin", "GET", "/sessions", "127.0.0.1:" + port, "https://attacker.example", "", false, http.StatusForbidden},
		{"foreign origin kick", "POST", "/sessions/kick", "127.0.0.1:" + port, "https://attacker.example", `{"user":"alice"}`, false, http.StatusForbidden},
		{"null origin kick", "POST", "/sessions/kick", "127.0.0.1:" + port, "null", `{"user":"alice"}`, false, http.StatusForbidden},
		{"empty origin", "GET", "/sessions", "127.0.0.1:" + port, "", "", false, http.StatusForbidden},
		{"extension origin", "GET", "/sessions", "127.0.0.1:" + port, "chrome-extension://abcdef", "", false, http.StatusForbidden},
		{"foreign origin healthz", "GET", "/healthz", "127.0.0.1:" + port, "https://attacker.example", "", false, http.StatusForbidden},
		{"token, any host", "GET", "/sessions", "admin.example:8143", noOrigin, "", true, http.StatusOK},
		{"token, any origin", "POST", "/sessions/kick", "admin.example", "https://attacker.example", `{"user":"alice"}`, true, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base, token := open, ""
			if tc.token {
				base, token = withToken, testToken
			}
			req, err := http.NewRequest(tc.method, base+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Host = tc.host
			if tc.origin != noOrigin {
				req.Header.Set("Origin", tc.origin)
			}
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			if tc.method == "POST" {
				req.Header.Set("Content-Type", ctJSON)
			}
			kicks := f.kicks.Load()
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			r := response{resp.StatusCode, resp.Header, body}
			if tc.status != http.StatusForbidden {
				if r.status != tc.status {
					t.Fatalf("status %d (%s); want %d", r.status, body, tc.status)
				}
				return
			}
			msg := r.wantError(t, http.StatusForbidden)
			if !strings.Contains(msg, "admin.token") {
				t.Errorf("error %q; want it to say what admin.token would change", msg)
			}
			if n := f.kicks.Load(); n != kicks {
				t.Errorf("%d kicks after a refused request; want %d", n, kicks)
			}
		})
	}
	if log := logs.String(); !strings.Contains(log, `level=WARN msg="admin API: refused"`) || !strings.Contains(log, "host=attacker.example") {
		t.Errorf("log:\n%s\nwant refusals at WARN with the host", log)
	}

	// HTTP/1.0 allows a request without Host; it is not a loopback one.
	nc, err := net.Dial("tcp", strings.TrimPrefix(open, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(nc, "GET /sessions HTTP/1.0\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("HTTP/1.0 without Host: status %d; want 403", resp.StatusCode)
	}
}

func TestLoopbackAuthority(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{"127.0.0.1", true}, {"127.0.0.1:8143", true}, {"127.255.255.254:1", true}, {"localhost", true},
		{"Localhost:8143", true}, {"localhost:", true}, {"[::1]", true}, {"[::1]:8143", true},
		{"[0:0:0:0:0:0:0:1]:80", true}, {"[::ffff:127.0.0.1]:80", true},
		{"", false}, {":8143", false}, {"::1", false}, {"::1:8143", false}, {"[127.0.0.1]:80", false},
		{"[localhost]:80", false}, {"[::1]x", false}, {"[::1%25lo]:80", false}, {"127.0.0.1:x", false},
		{"127.0.0.1:80:80", false}, {"127.1", false}, {"2130706433", false}, {"localhost.", false},
		{"localhost.example", false}, {"a.localhost", false}, {"10.0.0.1", false}, {"0.0.0.0", false},
		{"[::]:80", false}, {"attacker.example:8143", false}, {"127.0.0.1.nip.io", false},
	} {
		if got := loopbackAuthority(tc.in); got != tc.want {
			t.Errorf("loopbackAuthority(%q) = %v; want %v", tc.in, got, tc.want)
		}
	}
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{"http://127.0.0.1:8143", true}, {"https://localhost", true}, {"HTTP://[::1]:8143", true},
		{"null", false}, {"", false}, {"127.0.0.1", false}, {"file://", false}, {"ftp://127.0.0.1", false},
		{"http://attacker.example", false}, {"http://127.0.0.1@attacker.example", false},
		{"http://localhost/", false}, {"http://localhost.attacker.example", false}, {"http://[::1", false},
	} {
		if got := loopbackOrigin(tc.in); got != tc.want {
			t.Errorf("loopbackOrigin(%q) = %v; want %v", tc.in, got, tc.want)
		}
	}
}

// FuzzLoopbackAuthority checks loopbackAuthority against net/url: what
// it accepts parses as an authority whose host is localhost or a
// loopback IP.
func FuzzLoopbackAuthority(f *testing.F) {
	for _, s := range []string{"127.0.0.1:8143", "localhost", "[::1]:80", "::1", "[127.0.0.1]", "attacker.example", "localhost:", "[::1%25lo]:80", "127.0.0.1:80:80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !loopbackAuthority(s) {
			return
		}
		u, err := url.Parse("http://" + s + "/")
		if err != nil || u.Host != s || u.User != nil {
			t.Fatalf("loopbackAuthority(%q) but url.Parse gives host %q, %v", s, u.Host, err)
		}
		h := u.Hostname()
		if ip := net.ParseIP(h); !strings.EqualFold(h, "localhost") && (ip == nil || !ip.IsLoopback()) {
			t.Fatalf("loopbackAuthority(%q) but its host %q is neither localhost nor a loopback IP", s, h)
		}
	})
}

// TestReadyz: ready with the listeners and a reachable upstream; not
// ready with too few listeners or a dead upstream.
func TestReadyz(t *testing.T) {
	p := startProxy(t)

	_, base := startAdmin(t, Options{Sessions: p.Server, Listeners: 1})
	var rd Readiness
	do(t, "GET", base+"/readyz", "", "", "").decode(t, http.StatusOK, &rd)
	if rd.Status != "ready" || rd.Upstream != "ok" || !slices.Equal(rd.Listeners, []string{p.Addr}) {
		t.Fatalf("readyz: %+v", rd)
	}
	var h Health
	do(t, "GET", base+"/healthz", "", "", "").decode(t, http.StatusOK, &h)
	if h.Status != "ok" {
		t.Fatalf("healthz: %+v", h)
	}

	_, base = startAdmin(t, Options{Sessions: p.Server, Listeners: 2})
	do(t, "GET", base+"/readyz", "", "", "").decode(t, http.StatusServiceUnavailable, &rd)
	if rd.Status != "not ready" || rd.Upstream != "ok" || len(rd.Listeners) != 1 {
		t.Fatalf("readyz expecting 2 listeners: %+v", rd)
	}

	// A proxy with no listener is never ready.
	idle := proxy.New(proxy.Options{UpstreamAddr: "127.0.0.1:1"}, limits.New(limits.Options{}), nil)
	_, base = startAdmin(t, Options{Sessions: idle})
	r := do(t, "GET", base+"/readyz", "", "", "")
	r.decode(t, http.StatusServiceUnavailable, &rd)
	if rd.Listeners == nil {
		t.Fatalf("readyz without listeners: %s; want listeners []", r.body)
	}

	// A dead upstream: "unreachable", and the details (its address) only
	// in the log, since the endpoint needs no token.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	p.Server.SetOptions(proxy.Options{UpstreamAddr: dead})
	var logs syncBuffer
	_, base = startAdmin(t, Options{Sessions: p.Server, Listeners: 1, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	r = do(t, "GET", base+"/readyz", "", "", "")
	r.decode(t, http.StatusServiceUnavailable, &rd)
	if rd.Status != "not ready" || rd.Upstream != "unreachable" {
		t.Fatalf("readyz with a dead upstream: %+v; want not ready, upstream unreachable", rd)
	}
	if _, port, _ := net.SplitHostPort(dead); bytes.Contains(r.body, []byte(port)) {
		t.Errorf("readyz with a dead upstream: %s; want no upstream address", r.body)
	}
	if log := logs.String(); !strings.Contains(log, `level=WARN msg="admin API: upstream check failed"`) || !strings.Contains(log, dead) {
		t.Errorf("log:\n%s\nwant a WARN line with the upstream's address %s", log, dead)
	}
}

// TestReadyzLogsOnce: a failed check is logged once, however many
// requests its cached result answers, and its text never reaches them.
func TestReadyzLogsOnce(t *testing.T) {
	const detail = "dial 10.9.8.7:993: tls: failed to verify certificate: x509: certificate is valid for internal.example"
	f := &fakeSessions{err: errors.New(detail)}
	var logs syncBuffer
	s := New(Options{Sessions: f, Listeners: 1, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	defer s.Shutdown(context.Background())
	var clock atomic.Int64 // nanoseconds
	s.now = func() time.Time { return time.Unix(0, clock.Load()) }
	h := s.Handler()
	get := func() string {
		t.Helper()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
		if rec.Code != http.StatusServiceUnavailable {
			t.Fatalf("readyz: %d; want 503", rec.Code)
		}
		return rec.Body.String()
	}
	const want = `{"status":"not ready","listeners":["127.0.0.1:1143"],"upstream":"unreachable"}` + "\n"
	for range 3 {
		if got := get(); got != want {
			t.Fatalf("readyz: %s; want %s", got, want)
		}
	}
	count := func() int { return strings.Count(logs.String(), "upstream check failed") }
	if n, c := count(), f.checks.Load(); n != 1 || c != 1 {
		t.Fatalf("%d log lines for %d checks and 3 requests; want 1 and 1:\n%s", n, c, logs.String())
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "10.9.8.7:993") {
		t.Errorf("log:\n%s\nwant the detail at WARN", logs.String())
	}
	clock.Add(int64(readyCacheTTL))
	get()
	if n, c := count(), f.checks.Load(); n != 2 || c != 2 {
		t.Fatalf("after the cache time: %d log lines for %d checks; want 2 and 2", n, c)
	}
}

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

// TestReadyzShared: concurrent /readyz requests share one upstream check,
// its result is reused for a second, and a request that gives up does
// not cancel the check for the others.
func TestReadyzShared(t *testing.T) {
	f := &fakeSessions{started: make(chan struct{}, 10), release: make(chan struct{})}
	s := New(Options{Sessions: f, Listeners: 1})
	defer s.Shutdown(context.Background())
	var clock atomic.Int64 // nanoseconds
	s.now = func() time.Time { return time.Unix(0, clock.Load()) }
	h := s.Handler()
	get := func(ctx context.Context) int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequestWithContext(ctx, "GET", "/readyz", nil))
		return rec.Code
	}

	// One request gives up while the check runs.
	ctx, cancel := context.WithCancel(context.Background())
	gaveUp := make(chan int)
	go func() { gaveUp <- get(ctx) }()
	<-f.started
	cancel()
	if code := <-gaveUp; code != http.StatusServiceUnavailable {
		t.Fatalf("cancelled request: %d; want 503", code)
	}

	codes := make(chan int, 10)
	for range 10 {
		go func() { codes <- get(context.Background()) }()
	}
	close(f.release)
	for range 10 {
		if code := <-codes; code != http.StatusOK {
			t.Fatalf("readyz: %d; want 200", code)
		}
	}
	if n := f.checks.Load(); n != 1 {
		t.Fatalf("%d upstream checks for 11 requests; want 1", n)
	}
	clock.Add(int64(readyCacheTTL - time.Millisecond))
	get(context.Background())
	if n := f.checks.Load(); n != 1 {
		t.Fatalf("%d upstream checks within the cache time; want 1", n)
	}
	clock.Add(int64(time.Millisecond))
	if code := get(context.Background()); code != http.StatusOK {
		t.Fatalf("readyz after the cache time: %d", code)
	}
	if n := f.checks.Load(); n != 2 {
		t.Fatalf("%d upstream checks after the cache time; want 2", n)
	}
}

// TestSettings: /settings returns what the function gives, in order.
func TestSettings(t *testing.T) {
	want := []Setting{
		{Name: "limits.max_connections", Value: "2147483647"},
		{Name: "admin.token", Value: "(redacted)"},
		{Name: "tls.email", Value: ""},
	}
	f := &fakeSessions{}
	_, base := startAdmin(t, Options{Sessions: f, Settings: func() []Setting { return want }})
	r := do(t, "GET", base+"/settings", "", "", "")
	var got SettingList
	r.decode(t, http.StatusOK, &got)
	wantJSON := `{"settings":[{"name":"limits.max_connections","value":"2147483647"},{"name":"admin.token","value":"(redacted)"},{"name":"tls.email","value":""}]}` + "\n"
	if string(r.body) != wantJSON {
		t.Fatalf("GET /settings: %s; want %s", r.body, wantJSON)
	}
	do(t, "POST", base+"/settings", "", "", "").wantError(t, http.StatusMethodNotAllowed)

	_, base = startAdmin(t, Options{Sessions: f})
	if r := do(t, "GET", base+"/settings", "", "", ""); string(r.body) != `{"settings":[]}`+"\n" {
		t.Fatalf("GET /settings without Settings: %s", r.body)
	}
}

// TestMetrics: /metrics is the given handler, 404 without one.
func TestMetrics(t *testing.T) {
	f := &fakeSessions{}
	metrics := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		io.WriteString(w, "imapguard_connections 3\n")
	})
	_, base := startAdmin(t, Options{Token: testToken, Sessions: f, Metrics: metrics})
	r := do(t, "GET", base+"/metrics", testToken, "", "")
	if r.status != http.StatusOK || string(r.body) != "imapguard_connections 3\n" || !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET /metrics: %d %q %q", r.status, r.header.Get("Content-Type"), r.body)
	}
	_, base = startAdmin(t, Options{Sessions: f})
	do(t, "GET", base+"/metrics", "", "", "").wantError(t, http.StatusNotFound)
	do(t, "GET", base+"/nothing", "", "", "").wantError(t, http.StatusNotFound)
	r = do(t, "DELETE", base+"/sessions", "", "", "")
	r.wantError(t, http.StatusMethodNotAllowed)
	if a := r.header.Get("Allow"); a != "GET" {
		t.Errorf("DELETE /sessions: Allow %q; want GET", a)
	}
}

// TestServePublic: without a token Serve refuses a listener that is not
// on loopback, and closes it; with one it serves.
func TestServePublic(t *testing.T) {
	f := &fakeSessions{}
	for _, addr := range []string{"0.0.0.0:0", "[::]:0"} {
		t.Run(addr, func(t *testing.T) {
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				t.Skipf("cannot listen on %s: %v", addr, err)
			}
			s := New(Options{Sessions: f})
			err = s.Serve(ln)
			if !errors.Is(err, ErrPublicWithoutToken) {
				t.Fatalf("Serve(%s) without token = %v; want ErrPublicWithoutToken", addr, err)
			}
			select {
			case <-s.Started():
				t.Fatal("Started closed after a refusal")
			default:
			}
			if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("listener after refusal: Accept = %v; want closed", err)
			}
		})
	}

	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	s := New(Options{Token: testToken, Sessions: f})
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	select {
	case <-s.Started():
	case err := <-done:
		t.Fatalf("Serve(0.0.0.0:0) with a token = %v", err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	var h Health
	do(t, "GET", "http://127.0.0.1:"+port+"/healthz", "", "", "").decode(t, http.StatusOK, &h)
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("Serve with token after Shutdown = %v", err)
	}
}

func TestSanitizeReason(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"empty", "", ""},
		{"plain", "Maintenance until 18:00", "Maintenance until 18:00"},
		{"CRLF", "a\r\nb", "a b"},
		{"only controls", "\r\n\t", ""},
		{"trim", "  x  ", "x"},
		{"non-ASCII", "Wartung für alle", "Wartung f r alle"},
		{"long", strings.Repeat("ab ", 100), strings.TrimSpace(strings.Repeat("ab ", 67)[:200])},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := sanitizeReason(tc.in)
			if got != tc.want {
				t.Fatalf("got %q; want %q", got, tc.want)
			}
			if len(got) > maxReasonLen {
				t.Fatalf("got %d characters; want at most %d", len(got), maxReasonLen)
			}
		})
	}
}
