package admin

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/imapguard/imapguard/test/proxytest"
)

// TestToken: with a token, every endpoint but /healthz and /readyz wants
// it; refusals are logged without the presented token; kicks are logged.
func TestToken(t *testing.T) {
	p := startProxy(t)
	var logs proxytest.Buffer
	_, base := startAdmin(t, Options{Token: testToken, Sessions: p.Server, Listeners: 1,
		Logger: logTo(&logs)})

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
			h := http.Header{}
			if tc.auth != "" {
				h.Set("Authorization", tc.auth)
			}
			r := do(t, request{url: base + tc.path, header: h})
			if r.status != tc.status {
				t.Fatalf("status %d (%s); want %d", r.status, r.body, tc.status)
			}
			if tc.status == http.StatusUnauthorized {
				if wa := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(wa, "Bearer") {
					t.Errorf("WWW-Authenticate %q; want Bearer", wa)
				}
				r.wantError(t, http.StatusUnauthorized)
			}
		})
	}

	proxytest.LoginFrom(t, "127.0.0.2", p.Addr, "alice", "secret").OK("n1", "NOOP")
	var kicked KickResult
	do(t, request{method: http.MethodPost, url: base + "/sessions/kick",
		header: headers("Authorization", "Bearer "+testToken, "Content-Type", "application/json"), body: `{"user":"alice","reason":"Bye"}`}).decode(t, http.StatusOK, &kicked)
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
	var logs proxytest.Buffer
	_, open := startAdmin(t, Options{Sessions: f, Listeners: 1, Logger: logTo(&logs)})
	_, withToken := startAdmin(t, Options{Token: testToken, Sessions: f, Listeners: 1})
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(open, "http://"))

	const noOrigin = "-" // send no Origin header
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
			base, h := open, headers("Host", tc.host)
			if tc.token {
				base = withToken
				h.Set("Authorization", "Bearer "+testToken)
			}
			if tc.origin != noOrigin {
				h.Set("Origin", tc.origin)
			}
			if tc.method == http.MethodPost {
				h.Set("Content-Type", "application/json")
			}
			kicks := f.kicks.Load()
			r := do(t, request{method: tc.method, url: base + tc.path, header: h, body: tc.body})
			if tc.status != http.StatusForbidden {
				if r.status != tc.status {
					t.Fatalf("status %d (%s); want %d", r.status, r.body, tc.status)
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
