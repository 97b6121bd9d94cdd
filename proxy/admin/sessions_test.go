package admin

import (
	"bytes"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imapguard/imapguard/test/proxytest"
)

// threeClients starts a proxy with an admin API and three clients of it:
// alice from 127.0.0.2 and bob from 127.0.0.3, logged in, and one from
// 127.0.0.4 that has not logged in.
func threeClients(t *testing.T) (p *proxytest.Proxy, base string, alice, bob, pre *proxytest.Conn) {
	t.Helper()
	p = startProxy(t)
	_, base = startAdmin(t, Options{Sessions: p.Server, Listeners: 1})
	alice = proxytest.LoginFrom(t, "127.0.0.2", p.Addr, "alice", "secret")
	bob = proxytest.LoginFrom(t, "127.0.0.3", p.Addr, "bob", "hunter2")
	pre = proxytest.DialFrom(t, "127.0.0.4", p.Addr)
	pre.Greeting()
	return p, base, alice, bob, pre
}

// TestSessions lists live sessions and filters them, over real sockets.
func TestSessions(t *testing.T) {
	p, base, alice, _, _ := threeClients(t)
	alice.OK("s1", "SELECT INBOX")
	start := time.Now()

	var all SessionList
	r := get(t, base+"/sessions")
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
			r := get(t, base+"/sessions?"+tc.query)
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
		if msg := get(t, base+"/sessions?"+q).wantError(t, http.StatusBadRequest); msg == "" {
			t.Errorf("?%s: empty error", q)
		}
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

// TestKick kicks by user and by address, over real sockets, and refuses
// what is not a JSON body.
func TestKick(t *testing.T) {
	p, base, alice, bob, pre := threeClients(t)

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
			msg := post(t, base+"/sessions/kick"+tc.query, tc.ct, tc.body).wantError(t, tc.status)
			if tc.status == http.StatusUnsupportedMediaType && !strings.Contains(msg, "Content-Type: application/json") {
				t.Errorf("error %q; want it to name Content-Type: application/json", msg)
			}
		})
	}
	r := get(t, base+"/sessions/kick?user=alice")
	r.wantError(t, http.StatusMethodNotAllowed)
	if a := r.header.Get("Allow"); a != "POST" {
		t.Errorf("GET /sessions/kick: Allow %q; want POST", a)
	}
	var none KickResult
	post(t, base+"/sessions/kick", "application/json", `{"user":"carol"}`).decode(t, http.StatusOK, &none)
	if none.Count != 0 || none.Kicked == nil {
		t.Fatalf("kick carol: %+v; want count 0 and []", none)
	}

	// Kick alice by user; a charset parameter is fine.
	var kicked KickResult
	r = post(t, base+"/sessions/kick", "application/json; charset=utf-8", `{"user":"alice"}`)
	r.decode(t, http.StatusOK, &kicked)
	if kicked.Count != 1 || len(kicked.Kicked) != 1 || kicked.Kicked[0].User != "alice" || kicked.Kicked[0].State != "authenticated" {
		t.Fatalf("kick alice: %s", r.body)
	}
	alice.ExpectBye("* BYE [UNAVAILABLE] Session closed by the administrator")
	bob.OK("n1", "NOOP") // untouched

	// Kick the pre-auth connection by address, with a reason that tries
	// to inject a line.
	r = post(t, base+"/sessions/kick", "application/json",
		`{"address":"127.0.0.4","reason":"Maintenance\r\nA1 OK  done\u0000 é"}`)
	r.decode(t, http.StatusOK, &kicked)
	if kicked.Count != 1 || kicked.Kicked[0].State != "preauth" {
		t.Fatalf("kick 127.0.0.4: %s", r.body)
	}
	pre.ExpectBye("* BYE [UNAVAILABLE] Maintenance A1 OK done")

	// And bob by address.
	r = post(t, base+"/sessions/kick", "application/json", `{"address":"127.0.0.3","reason":"Bye bob"}`)
	r.decode(t, http.StatusOK, &kicked)
	if kicked.Count != 1 || kicked.Kicked[0].User != "bob" {
		t.Fatalf("kick 127.0.0.3: %s", r.body)
	}
	bob.ExpectBye("* BYE [UNAVAILABLE] Bye bob")
	proxytest.WaitZero(t, p.Limiter)
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
