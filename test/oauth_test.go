package test

// OAuth pass-through (issue 12 item 6): AUTHENTICATE OAUTHBEARER (RFC
// 7628) and XOAUTH2 through the proxy to cmd/imapd's test tokens.

import (
	"encoding/base64"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imapguard/imapguard/cmd/imapd/server"
	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/test/dovecot"
	"github.com/imapguard/imapguard/test/otlpreceiver"
	"github.com/imapguard/imapguard/test/proxytest"
)

// The test tokens: long and distinctive, so that finding them in the log
// means a leak.
const (
	aliceToken = "ya29.alice-tok-3f9c1e5b7d9f1a2c4e6a8b0d"
	bobToken   = "ya29.bob-tok-8a2d6c4e0f1b3a5c7e9d1f3b"
	wrongToken = "ya29.wrong-tok-5c9e1f0a7b3d4e6f8a0c2e4"
	// bobUser needs the GS2 escapes (RFC 5801 §4) in OAUTHBEARER.
	bobUser = "bob,x=y"
)

// oauthProxy is a proxy that probes its upstream, logging to log, with
// its upstream connections counted.
type oauthProxy struct {
	*proxytest.Proxy
	dials   *proxytest.Dialer
	log     *proxytest.Buffer
	tracker *limits.Tracker
	clock   *proxytest.Clock
}

// startOAuth starts imapd with users (alice and bobUser with tokens
// when none are given) and a proxy in front with ProbeUpstream, and waits
// for the first probe to have learnt the upstream's capabilities.
func startOAuth(t *testing.T, opts proxy.Options, lim limits.Options, users ...server.User) *oauthProxy {
	t.Helper()
	if len(users) == 0 {
		users = []server.User{
			{Username: "alice", Password: "secret", Token: aliceToken, Messages: 1},
			{Username: bobUser, Password: "pw", Token: bobToken},
		}
	}
	p := &oauthProxy{dials: &proxytest.Dialer{}, log: &proxytest.Buffer{}}
	p.tracker = limits.NewTracker(limits.AuthOptions{Window: 10 * time.Minute, MaxPerIP: 100, MaxPerUser: 100,
		Block: 15 * time.Minute, Entries: 1000})
	opts.Dial, opts.AuthTracker = p.dials.Dial, p.tracker
	p.clock = proxytest.NewClock()
	opts.Clock = p.clock
	p.Proxy = proxytest.Start(t, proxytest.Config{Upstream: proxytest.Imapd(t, users...), Options: opts, Limits: lim,
		Logger: slog.New(slog.NewTextHandler(p.log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if opts.ProbeUpstream {
		proxytest.WaitFor(t, "the upstream's capabilities probed", func() bool { return p.Server.UpstreamCaps() != nil })
	}
	t.Cleanup(func() {
		for _, tok := range []string{aliceToken, bobToken, wrongToken} {
			if strings.Contains(p.log.String(), tok) {
				t.Errorf("token %q found in the log:\n%s", tok, p.log)
			}
		}
	})
	return p
}

// oauthResp is the initial response of mech for user and token.
func oauthResp(mech, user, token string) string {
	if mech == "XOAUTH2" {
		return proxytest.SASLXOAuth2(user, token)
	}
	return proxytest.SASLOAuthBearer(user, token)
}

// authenticate sends AUTHENTICATE mech with resp, as an initial
// response (SASL-IR) or after the continuation request.
func authenticate(c *proxytest.Conn, tag, mech, resp string, ir bool) {
	if ir {
		c.Send(tag + " AUTHENTICATE " + mech + " " + resp + "\r\n")
		return
	}
	c.Send(tag + " AUTHENTICATE " + mech + "\r\n")
	c.Expect("+ ")
	c.Send(resp + "\r\n")
}

// TestOAuthAdvertised: AUTH=OAUTHBEARER and AUTH=XOAUTH2 are in the
// pre-login capabilities when the upstream offers them, and only then;
// without the probe they show once a login has dialled the upstream.
func TestOAuthAdvertised(t *testing.T) {
	wantMechs := func(t *testing.T, caps []string, want bool) {
		t.Helper()
		for _, m := range []string{"AUTH=OAUTHBEARER", "AUTH=XOAUTH2"} {
			if got := proxytest.HasCap(caps, m); got != want {
				t.Errorf("%s in %v: got %v; want %v", m, caps, got, want)
			}
		}
	}
	t.Run("upstream offers them", func(t *testing.T) {
		p := startOAuth(t, proxy.Options{ProbeUpstream: true}, limits.Options{})
		c := proxytest.Dial(t, p.Addr)
		wantMechs(t, proxytest.Caps(c.Greeting()), true)
		u, st := c.Cmd("c", "CAPABILITY")
		wantPrefix(t, "CAPABILITY", st, "c OK")
		wantMechs(t, proxytest.Caps(proxytest.CapLine(u)), true)
		if n := p.dials.Dials.Load(); n != 1 {
			t.Errorf("upstream connections: got %d; want 1 (the probe)", n)
		}
	})
	t.Run("upstream lacks them", func(t *testing.T) {
		p := startOAuth(t, proxy.Options{ProbeUpstream: true}, limits.Options{},
			server.User{Username: "alice", Password: "secret"})
		c := proxytest.Dial(t, p.Addr)
		wantMechs(t, proxytest.Caps(c.Greeting()), false)
		// Not offered, not tried: no upstream connection beyond the probe.
		_, st := c.Cmd("a", "AUTHENTICATE OAUTHBEARER "+proxytest.SASLOAuthBearer("alice", aliceToken))
		wantLine(t, "AUTHENTICATE OAUTHBEARER", st, "a NO Unsupported authentication mechanism")
		if n := p.dials.Dials.Load(); n != 1 {
			t.Errorf("upstream connections: got %d; want 1 (the probe)", n)
		}
	})
	t.Run("learnt from a login", func(t *testing.T) {
		p := startOAuth(t, proxy.Options{}, limits.Options{})
		c := proxytest.Dial(t, p.Addr)
		wantMechs(t, proxytest.Caps(c.Greeting()), false)
		proxytest.Login(t, p.Addr, "alice", "secret").Logout("z")
		u, _ := c.Cmd("c", "CAPABILITY")
		wantMechs(t, proxytest.Caps(proxytest.CapLine(u)), true)
	})
}

// TestOAuthLogin: both mechanisms, with and without SASL-IR, log in with
// the right token, and the session relays.
func TestOAuthLogin(t *testing.T) {
	p := startOAuth(t, proxy.Options{ProbeUpstream: true}, limits.Options{})
	for _, mech := range []string{"OAUTHBEARER", "XOAUTH2"} {
		for _, ir := range []bool{true, false} {
			name := mech + "/SASL-IR"
			if !ir {
				name = mech + "/continuation"
			}
			t.Run(name, func(t *testing.T) {
				c := proxytest.Dial(t, p.Addr)
				c.Greeting()
				authenticate(c, "a", mech, oauthResp(mech, "alice", aliceToken), ir)
				_, st := c.Until("a")
				wantPrefix(t, "AUTHENTICATE "+mech, st, "a OK [CAPABILITY ")
				c.SelectAndLogout("* 1 EXISTS")
			})
		}
	}
	proxytest.WaitZero(t, p.Limiter)
}

// TestOAuthFailure: a wrong token gets the upstream's error challenge,
// relayed as it is; the client's dummy response goes back and the
// upstream's NO comes out as NO [AUTHENTICATIONFAILED], counted toward
// max_auth_failures and by the brute-force defence.
func TestOAuthFailure(t *testing.T) {
	p := startOAuth(t, proxy.Options{ProbeUpstream: true, MaxAuthFailures: 2}, limits.Options{})
	for _, tc := range []struct {
		mech, dummy, status string
		ir                  bool
	}{
		{"OAUTHBEARER", "AQ==", "invalid_token", true},
		{"XOAUTH2", "", "401", false},
	} {
		t.Run(tc.mech, func(t *testing.T) {
			c := proxytest.Dial(t, p.Addr)
			c.Greeting()
			for i, tag := range []string{"a", "b"} {
				authenticate(c, tag, tc.mech, oauthResp(tc.mech, "alice", wrongToken), tc.ir)
				ch := strings.TrimPrefix(c.ExpectPrefix("+ "), "+ ")
				js, err := base64.StdEncoding.DecodeString(ch)
				if err != nil || !strings.Contains(string(js), `"status":"`+tc.status+`"`) {
					t.Fatalf("challenge %q (%s, %v); want base64 of imapd's JSON with status %s", ch, js, err, tc.status)
				}
				c.Send(tc.dummy + "\r\n")
				_, st := c.Until(tag)
				wantLine(t, "the answer to the dummy response", st, tag+" NO [AUTHENTICATIONFAILED] Authentication failed")
				if i == 1 {
					c.Expect("* BYE Too many authentication failures (max_auth_failures=2)")
					c.ExpectClosed()
				}
			}
		})
	}
	var userFailures int
	for _, pen := range p.tracker.Penalties(p.clock.Now()) {
		if pen.Kind == "user" && pen.Key == "alice" {
			userFailures = pen.Failures
		}
	}
	if userFailures != 4 {
		t.Errorf("brute-force defence: got %d failures for alice; want 4", userFailures)
	}
	proxytest.WaitZero(t, p.Limiter)
}

// TestOAuthPerUser: the user for max_connections_per_user is the GS2
// authzid (escapes undone) or XOAUTH2's user=, checked after the
// upstream's OK.
func TestOAuthPerUser(t *testing.T) {
	p := startOAuth(t, proxy.Options{ProbeUpstream: true}, limits.Options{MaxConnectionsPerUser: 1})
	for _, tc := range []struct{ user, token string }{{"alice", aliceToken}, {bobUser, bobToken}} {
		first := greeted(t, "127.0.0.2", p.Addr)
		first.Send("a AUTHENTICATE OAUTHBEARER " + proxytest.SASLOAuthBearer(tc.user, tc.token) + "\r\n")
		_, st := first.Until("a")
		wantPrefix(t, "OAUTHBEARER as "+tc.user, st, "a OK ")
		proxytest.WaitCounts(t, p.Limiter, tc.user+" counted", func(c limits.Counts) bool { return c.PerUser[tc.user] == 1 })

		second := greeted(t, "127.0.0.3", p.Addr)
		second.Send("b AUTHENTICATE XOAUTH2 " + proxytest.SASLXOAuth2(tc.user, tc.token) + "\r\n")
		_, st = second.Until("b")
		wantLine(t, "XOAUTH2 as "+tc.user, st, noMaxPerUser("b", 1))
		// A wrong token is refused by the upstream before the cap is
		// looked at: the NO tells nothing of the user's sessions.
		second.Send("c AUTHENTICATE XOAUTH2 " + proxytest.SASLXOAuth2(tc.user, wrongToken) + "\r\n")
		second.ExpectPrefix("+ ")
		second.Send("\r\n")
		_, st = second.Until("c")
		wantLine(t, "XOAUTH2 with a wrong token", st, "c NO [AUTHENTICATIONFAILED] Authentication failed")
		first.Logout("z")
		second.Logout("y")
	}
	proxytest.WaitZero(t, p.Limiter)
}

// TestOAuthMalformed: initial responses the proxy can tell are malformed
// are answered without an upstream connection.
func TestOAuthMalformed(t *testing.T) {
	p := startOAuth(t, proxy.Options{ProbeUpstream: true}, limits.Options{})
	bearer := "\x01auth=Bearer " + aliceToken + "\x01\x01"
	for _, tc := range []struct{ name, mech, resp, want string }{
		{"not base64", "OAUTHBEARER", "not-base64!", "a BAD Invalid base64 in SASL response"},
		{"empty", "OAUTHBEARER", "=", "a BAD Malformed OAUTHBEARER response: the GS2 header must be n, or y, then a=user and a comma"},
		{"no authzid", "OAUTHBEARER", proxytest.Base64("n,," + bearer),
			"a BAD Malformed OAUTHBEARER response: the user is needed in the GS2 header (a=user)"},
		{"bad escape", "OAUTHBEARER", proxytest.Base64("n,a=al=2Cice=4X," + bearer),
			"a BAD Malformed OAUTHBEARER response: an = in the user must be =2C or =3D"},
		{"channel binding", "OAUTHBEARER", proxytest.Base64("p=tls-unique,a=alice," + bearer),
			"a BAD Malformed OAUTHBEARER response: channel binding (p=) cannot pass through a proxy that ends TLS"},
		{"no token", "OAUTHBEARER", proxytest.Base64("n,a=alice,\x01host=x\x01\x01"),
			"a BAD Malformed OAUTHBEARER response: it needs one auth=Bearer token, in key=value pairs each ended by ^A, and a final ^A"},
		{"no final ^A", "OAUTHBEARER", proxytest.Base64("n,a=alice,\x01auth=Bearer " + aliceToken + "\x01"),
			"a BAD Malformed OAUTHBEARER response: it needs one auth=Bearer token, in key=value pairs each ended by ^A, and a final ^A"},
		{"XOAUTH2 no user", "XOAUTH2", proxytest.Base64("user=" + bearer),
			"a BAD Malformed XOAUTH2 response: the user is needed in the GS2 header (a=user)"},
		{"XOAUTH2 basic", "XOAUTH2", proxytest.Base64("user=alice\x01auth=Basic " + aliceToken + "\x01\x01"),
			"a BAD Malformed XOAUTH2 response: want user=name ^A auth=Bearer token ^A ^A"},
		{"cancelled", "XOAUTH2", "*", "a BAD Authentication cancelled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := proxytest.Dial(t, p.Addr)
			c.Greeting()
			authenticate(c, "a", tc.mech, tc.resp, tc.resp != "*")
			_, st := c.Until("a")
			wantLine(t, tc.name, st, tc.want)
			if strings.Contains(st, aliceToken) {
				t.Errorf("the answer %q holds the token", st)
			}
			c.Logout("z")
		})
	}
	if n := p.dials.Dials.Load(); n != 1 {
		t.Errorf("upstream connections: got %d; want 1 (the probe)", n)
	}
}

// TestOAuthUpstreamExchange: with an upstream that has no SASL-IR, the
// initial response goes after its "+"; the error challenge is relayed as
// it is and the client's answer sent back; a second challenge is
// cancelled; the upstream's NO is the client's NO [AUTHENTICATIONFAILED].
func TestOAuthUpstreamExchange(t *testing.T) {
	const challenge = "eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIn0=" // {"status":"invalid_token"}
	got := make(chan string, 10)
	f := proxytest.StartFake(t, func(c *proxytest.FakeConn) {
		if c.Write("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN AUTH=OAUTHBEARER AUTH=XOAUTH2] hi\r\n") != nil {
			return
		}
		for {
			line, err := c.Line()
			if err != nil {
				return
			}
			tag, cmd, _ := strings.Cut(line, " ")
			switch cmd {
			case "LOGOUT":
				c.Write(proxytest.Logout(tag))
				return
			case "AUTHENTICATE OAUTHBEARER":
				for _, ch := range []string{"", challenge, "bW9yZQ=="} {
					if c.Write("+ "+ch+"\r\n") != nil {
						return
					}
					l, err := c.Line()
					if err != nil {
						return
					}
					got <- l
				}
				c.Write(tag + " NO [AUTHENTICATIONFAILED] denied\r\n")
			default:
				got <- line
				c.Write(tag + " BAD unexpected\r\n")
			}
		}
	})
	log := &proxytest.Buffer{}
	p := proxytest.Start(t, proxytest.Config{Upstream: f.Addr, Options: proxy.Options{ProbeUpstream: true},
		Logger: slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	proxytest.WaitFor(t, "the upstream's capabilities probed", func() bool { return p.Server.UpstreamCaps() != nil })

	c := proxytest.Dial(t, p.Addr)
	c.Greeting()
	ir := proxytest.SASLOAuthBearer("alice", wrongToken)
	c.Send("a AUTHENTICATE OAUTHBEARER " + ir + "\r\n")
	c.Expect("+ " + challenge)
	c.Send("AQ==\r\n")
	_, st := c.Until("a")
	wantLine(t, "after the dummy response", st, "a NO [AUTHENTICATIONFAILED] Authentication failed")
	for _, want := range []string{ir, "AQ==", "*"} {
		select {
		case l := <-got:
			wantLine(t, "what the upstream read", l, want)
		case <-time.After(proxytest.Timeout):
			t.Fatalf("the upstream read nothing; want %q", want)
		}
	}
	c.Logout("z")
	if strings.Contains(log.String(), wrongToken) || strings.Contains(log.String(), ir) {
		t.Errorf("the token is in the log:\n%s", log)
	}
	proxytest.WaitZero(t, p.Limiter)
}

// TestCLIOAuthSecrets runs the imapguard and imapd binaries, with OTLP
// traces and metrics and a Prometheus endpoint, logs in with OAUTHBEARER,
// fails with a wrong token through XOAUTH2 and sends a malformed
// response, and checks that no token and no initial response shows in
// the logs, the exports or the exposition (checkSecrets).
func TestCLIOAuthSecrets(t *testing.T) {
	t.Parallel()
	seen := &seenTexts{t: t, texts: map[string][]string{}}
	recv, collector := otlpreceiver.NewHTTP(t)
	upstream := startIMAPD(t, "-config", writeFile(t, "imapd.toml", `[[user]]
username = "`+watchedUser+`"
password = "`+watchedPass+`"
token = "`+aliceToken+`"
messages = 1
`))
	p := startImapguard(t, writeFile(t, "imapguard.toml", `[listen]
imap = "127.0.0.1:0"
[upstream]
address = "`+upstream+`"
[telemetry]
traces = "otlp"
metrics = "otlp"
otlp_endpoint = "`+collector.URL+`"
otlp_protocol = "http/protobuf"
metrics_listen = "127.0.0.1:0"
`))
	imapAddr := p.waitLog(listeningRe)[1]
	promURL := p.waitLog(promRe)[1]

	good := proxytest.SASLOAuthBearer(watchedUser, aliceToken)
	bad := proxytest.SASLXOAuth2(watchedUser, wrongToken)
	malformed := proxytest.Base64("n,," + "\x01auth=Bearer " + aliceToken + "\x01\x01")
	// The first connection may come before the first probe answered:
	// wait until the mechanisms are offered.
	proxytest.WaitFor(t, "AUTH=OAUTHBEARER offered", func() bool {
		c := proxytest.Dial(t, imapAddr)
		defer c.Close()
		return proxytest.HasCap(proxytest.Caps(c.Greeting()), "AUTH=OAUTHBEARER")
	})
	a := proxytest.Dial(t, imapAddr)
	a.Greeting()
	a.Send("a AUTHENTICATE OAUTHBEARER " + good + "\r\n")
	_, st := a.Until("a")
	wantPrefix(t, "OAUTHBEARER", st, "a OK ")
	a.SelectAndLogout("* 1 EXISTS")

	b := proxytest.Dial(t, imapAddr)
	b.Greeting()
	b.Send("b AUTHENTICATE XOAUTH2 " + bad + "\r\n")
	b.ExpectPrefix("+ ")
	b.Send("\r\n")
	_, st = b.Until("b")
	wantLine(t, "XOAUTH2 with a wrong token", st, "b NO [AUTHENTICATIONFAILED] Authentication failed")
	_, st = b.Cmd("c", "AUTHENTICATE OAUTHBEARER "+malformed)
	wantPrefix(t, "malformed OAUTHBEARER", st, "c BAD Malformed OAUTHBEARER response: ")
	b.Logout("z")

	f := scrape(t, seen, promURL, "")
	if got, _ := promValue(f, "imapguard_auth_attempts_total", "mechanism", "OAUTHBEARER", "result", "success"); got != 1 {
		t.Errorf("imapguard_auth_attempts_total{mechanism=OAUTHBEARER,result=success}: got %v; want 1", got)
	}
	if got, _ := promValue(f, "imapguard_auth_attempts_total", "mechanism", "XOAUTH2", "result", "failed"); got != 1 {
		t.Errorf("imapguard_auth_attempts_total{mechanism=XOAUTH2,result=failed}: got %v; want 1", got)
	}
	if err := p.stop(); err != nil {
		t.Fatalf("imapguard after SIGTERM: %v; want exit status 0; stderr:\n%s", err, p.output())
	}
	for _, raw := range recv.Raw() {
		seen.add("OTLP export", raw)
	}
	if len(recv.Raw()) == 0 {
		t.Error("no OTLP export received")
	}
	seen.add("imapguard stderr", []byte(p.output()))
	seen.add("imapguard stdout", []byte(p.stdout.String()))
	seen.checkSecrets(aliceToken, wrongToken, good, bad, malformed)
}

// TestOAuthDovecot: OAUTHBEARER and XOAUTH2 through the proxy to Dovecot
// with an oauth2 passdb, whose token introspection (RFC 7662, POST) is a
// local HTTP server of the test: the right token logs in, a wrong one
// gets Dovecot's error challenge and, after the dummy response, NO.
func TestOAuthDovecot(t *testing.T) {
	introspect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		w.Header().Set("Content-Type", "application/json")
		if r.Form.Get("token") == aliceToken {
			io.WriteString(w, `{"active":true,"username":"alice"}`)
			return
		}
		io.WriteString(w, `{"active":false}`)
	}))
	t.Cleanup(introspect.Close)
	dir := t.TempDir()
	conf := filepath.Join(dir, "oauth2.conf.ext")
	if err := os.WriteFile(conf, []byte("introspection_mode = post\nintrospection_url = "+introspect.URL+"/introspect\n"+
		"username_attribute = username\nactive_attribute = active\nactive_value = true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	inst := startDovecotWith(t, dovecot.Options{
		Users: []dovecotUser{{Username: "alice", Password: "secret"}},
		Extra: "auth_mechanisms = plain login oauthbearer xoauth2\npassdb {\n  driver = oauth2\n  mechanisms = oauthbearer xoauth2\n  args = " + conf + "\n}\n",
	})
	p := proxytest.Start(t, proxytest.Config{Upstream: inst.Addr, Options: proxy.Options{ProbeUpstream: true}})
	proxytest.WaitFor(t, "the upstream's capabilities probed", func() bool { return p.Server.UpstreamCaps() != nil })

	for _, mech := range []string{"OAUTHBEARER", "XOAUTH2"} {
		t.Run(mech, func(t *testing.T) {
			c := proxytest.Dial(t, p.Addr)
			if caps := proxytest.Caps(c.Greeting()); !proxytest.HasCap(caps, "AUTH="+mech) {
				t.Fatalf("greeting capabilities %v lack AUTH=%s", caps, mech)
			}
			c.Send("a AUTHENTICATE " + mech + " " + oauthResp(mech, "alice", wrongToken) + "\r\n")
			ch := strings.TrimPrefix(c.ExpectPrefix("+ "), "+ ")
			if js, err := base64.StdEncoding.DecodeString(ch); err != nil || !strings.Contains(string(js), "status") {
				t.Fatalf("challenge %q (%s, %v); want Dovecot's JSON status", ch, js, err)
			}
			c.Send("AQ==\r\n")
			_, st := c.Until("a")
			wantLine(t, "a wrong token", st, "a NO [AUTHENTICATIONFAILED] Authentication failed")

			authenticate(c, "b", mech, oauthResp(mech, "alice", aliceToken), mech == "OAUTHBEARER")
			_, st = c.Until("b")
			wantPrefix(t, "the right token", st, "b OK [CAPABILITY ")
			c.OK("s", "SELECT INBOX")
			c.Logout("z")
		})
	}
	proxytest.WaitZero(t, p.Limiter)
}

// TestOAuthProbeRefresh: the capabilities are probed again when older
// than 10 minutes (on the proxy's clock), by the next connection, and
// after a reload names another upstream, whose list then decides.
func TestOAuthProbeRefresh(t *testing.T) {
	p := startOAuth(t, proxy.Options{ProbeUpstream: true}, limits.Options{})
	first := proxytest.Dial(t, p.Addr)
	first.Greeting()
	first.Logout("z")
	if n := p.dials.Dials.Load(); n != 1 {
		t.Fatalf("upstream connections with fresh capabilities: got %d; want 1 (the first probe)", n)
	}
	p.clock.Advance(10 * time.Minute)
	c := proxytest.Dial(t, p.Addr)
	// Stale, not gone: this greeting still offers them.
	if caps := proxytest.Caps(c.Greeting()); !proxytest.HasCap(caps, "AUTH=OAUTHBEARER") {
		t.Errorf("greeting while probing again: %v lacks AUTH=OAUTHBEARER", caps)
	}
	c.Logout("z")
	proxytest.WaitFor(t, "a second probe", func() bool { return p.dials.Dials.Load() == 2 })

	// A reload to an upstream without tokens: nothing known of it at
	// first, then its list, without the mechanisms.
	opts := proxy.Options{ProbeUpstream: true, Dial: p.dials.Dial, Clock: p.clock, AuthTracker: p.tracker,
		UpstreamAddr: proxytest.Imapd(t, server.User{Username: "alice", Password: "secret"})}
	p.Server.SetOptions(opts)
	if caps := p.Server.UpstreamCaps(); caps != nil {
		t.Errorf("capabilities of the new upstream before any probe: got %v; want none", caps)
	}
	c = proxytest.Dial(t, p.Addr)
	c.Greeting()
	proxytest.WaitFor(t, "the new upstream probed", func() bool { return p.Server.UpstreamCaps() != nil })
	u, _ := c.Cmd("c", "CAPABILITY")
	if caps := proxytest.Caps(proxytest.CapLine(u)); proxytest.HasCap(caps, "AUTH=OAUTHBEARER") || proxytest.HasCap(caps, "AUTH=XOAUTH2") {
		t.Errorf("capabilities with an upstream without OAuth: got %v; want no AUTH=OAUTHBEARER or AUTH=XOAUTH2", caps)
	}
	c.Logout("z")
	proxytest.WaitZero(t, p.Limiter)
}

// TestOAuthChallengeAnswer: what the client may do instead of the dummy
// response. An answer over max_command_size is refused as any command
// would be, and the connection goes on; one that is not base64 cancels
// the exchange with the upstream, as "*" does, and both count as failures
// (the upstream had refused the token); a client that goes away leaves
// no count behind.
func TestOAuthChallengeAnswer(t *testing.T) {
	p := startOAuth(t, proxy.Options{ProbeUpstream: true, MaxCommandSize: 1024}, limits.Options{})
	c := proxytest.Dial(t, p.Addr)
	c.Greeting()
	for _, tc := range []struct{ tag, answer, want string }{
		{"a", strings.Repeat("A", 2000), "a BAD [TOOBIG] Command too long (max_command_size=1024)"},
		{"b", "not-base64!", "b NO [AUTHENTICATIONFAILED] Authentication failed"},
		// Cancelled after the upstream refused the token: still a
		// failure (imapd answers the "*" BAD).
		{"c", "*", "c NO [AUTHENTICATIONFAILED] Authentication failed"},
	} {
		c.Send(tc.tag + " AUTHENTICATE OAUTHBEARER " + proxytest.SASLOAuthBearer("alice", wrongToken) + "\r\n")
		c.ExpectPrefix("+ ")
		c.Send(tc.answer + "\r\n")
		_, st := c.Until(tc.tag)
		wantLine(t, "the answer "+tc.answer[:min(len(tc.answer), 12)], st, tc.want)
	}
	c.OK("n", "NOOP")
	var failures int
	for _, pen := range p.tracker.Penalties(p.clock.Now()) {
		if pen.Kind == "user" && pen.Key == "alice" {
			failures = pen.Failures
		}
	}
	if failures != 2 {
		t.Errorf("brute-force defence: got %d failures for alice; want 2 (the TOOBIG answer never reached the upstream)", failures)
	}

	gone := proxytest.Dial(t, p.Addr)
	gone.Greeting()
	gone.Send("a AUTHENTICATE XOAUTH2 " + proxytest.SASLXOAuth2("alice", wrongToken) + "\r\n")
	gone.ExpectPrefix("+ ")
	gone.Close()
	c.Logout("z")
	proxytest.WaitZero(t, p.Limiter)
	proxytest.WaitFor(t, "every upstream connection closed", func() bool { return p.dials.Open.Load() == 0 })
}

// TestOAuthUpstreamTLS: with upstream_tls = "starttls" the capabilities
// that count are those after the upstream's STARTTLS (an imapd that takes
// logins only over TLS offers no AUTH= before it), for implicit TLS the
// greeting's; OAuth works over both.
func TestOAuthUpstreamTLS(t *testing.T) {
	ca := newTestCA(t, "upstream CA")
	startAddr, implicitAddr := server.StartTLS(t, server.Options{
		Users:     []server.User{{Username: "alice", Password: "secret", Token: aliceToken, Messages: 1}},
		TLSConfig: ca.serverConfig(),
	})
	// Before its STARTTLS this imapd offers no AUTH=: a proxy that kept
	// the plaintext greeting's list would not offer OAuth.
	if caps := proxytest.Caps(proxytest.Dial(t, startAddr).Greeting()); proxytest.HasCap(caps, "AUTH=XOAUTH2") {
		t.Fatalf("imapd's plaintext greeting %v offers AUTH=XOAUTH2; the test needs it not to", caps)
	}
	for _, tc := range []struct{ mode, addr string }{{"starttls", startAddr}, {"implicit", implicitAddr}} {
		t.Run(tc.mode, func(t *testing.T) {
			p := proxytest.Start(t, proxytest.Config{Upstream: tc.addr, Options: proxy.Options{
				ProbeUpstream: true, UpstreamTLS: tc.mode, UpstreamTLSConfig: ca.upstreamConfig()}})
			proxytest.WaitFor(t, "the upstream's capabilities probed", func() bool { return p.Server.UpstreamCaps() != nil })
			c := proxytest.Dial(t, p.Addr)
			if caps := proxytest.Caps(c.Greeting()); !proxytest.HasCap(caps, "AUTH=XOAUTH2") {
				t.Fatalf("greeting: %v lacks AUTH=XOAUTH2", caps)
			}
			c.Send("a AUTHENTICATE XOAUTH2 " + proxytest.SASLXOAuth2("alice", aliceToken) + "\r\n")
			_, st := c.Until("a")
			wantPrefix(t, "XOAUTH2 over TLS", st, "a OK ")
			c.SelectAndLogout("* 1 EXISTS")
			proxytest.WaitZero(t, p.Limiter)
		})
	}
}
