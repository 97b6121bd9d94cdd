package test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/imapguard/imapguard/proxy/admin"
	"github.com/imapguard/imapguard/test/otlpreceiver"
	"github.com/imapguard/imapguard/test/proxytest"
)

// The observability tests run the real imapguard and imapd binaries with
// OTLP export to a receiver in the test (test/otlpreceiver), Prometheus
// endpoints and the admin API, drive them with raw IMAP, the admin
// commands (who, kick, settings) and HTTP, and check what each shows, and
// that no secret shows anywhere.

const (
	// watchedUser is distinctive so that its absence from OTLP exports (with
	// record_user = false) means something.
	watchedUser = "olivia.obs7d1c"
	watchedPass = "Right-pw-5c9e1f0a7b3d4e6f-obs"
	wrongPass   = "Wrong-pw-8a2d6c4e0f1b3a5c-obs"
	adminToken  = "obs7token7f3a9c1e5b7d9f1a2c4e6a8" // 32 characters
)

// secrets are the strings that must show nowhere: the passwords, the
// AUTHENTICATE PLAIN payload (RFC 4616) and the admin token.
var secrets = []string{
	watchedPass,
	wrongPass,
	proxytest.SASLPlain(watchedUser, watchedPass),
	adminToken,
}

// seenTexts collects everything the test saw, for the secret grep at the end.
type seenTexts struct {
	t     *testing.T
	texts map[string][]string // source → texts
}

func (s *seenTexts) add(source string, text []byte) {
	s.texts[source] = append(s.texts[source], string(text))
}

// checkSecrets fails for each secret found in what was seen.
func (s *seenTexts) checkSecrets(secrets ...string) {
	s.t.Helper()
	for source, texts := range s.texts {
		for i, text := range texts {
			for _, secret := range secrets {
				if strings.Contains(text, secret) {
					s.t.Errorf("secret %q found in %s #%d", secret, source, i)
				}
			}
		}
	}
}

// httpDo GETs url, with the bearer token if not empty, and returns the
// status and the body, which seen records.
func httpDo(t *testing.T, seen *seenTexts, method, url, token string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	seen.add("HTTP "+url, body)
	return resp.StatusCode, body
}

// getJSON GETs url with the token, wants 200, and decodes the body into v.
func getJSON(t *testing.T, seen *seenTexts, url string, v any) {
	t.Helper()
	code, body := httpDo(t, seen, http.MethodGet, url, adminToken)
	if code != http.StatusOK {
		t.Fatalf("GET %s: got status %d; want 200; body %s", url, code, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %v; body %s", url, err, body)
	}
}

// scrape GETs a Prometheus endpoint and parses the text exposition.
func scrape(t *testing.T, seen *seenTexts, url, token string) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := httpDo(t, seen, http.MethodGet, url, token)
	if code != http.StatusOK {
		t.Fatalf("GET %s: got status %d; want 200; body %q", url, code, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	return families
}

// promValue sums the values of the series of family name whose labels
// include labels (name=value pairs); a missing family sums to 0, and
// ok is false.
func promValue(families map[string]*dto.MetricFamily, name string, labels ...string) (sum float64, ok bool) {
	f := families[name]
	if f == nil {
		return 0, false
	}
series:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue series
			}
		}
		switch {
		case m.GetCounter() != nil:
			sum += m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			sum += m.GetGauge().GetValue()
		case m.GetHistogram() != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		case m.GetUntyped() != nil:
			sum += m.GetUntyped().GetValue()
		}
	}
	return sum, true
}

// runCLI runs "imapguard args..." with the extra environment and wants
// exit status 0; it returns stdout, and seen records stdout and stderr.
func runCLI(t *testing.T, seen *seenTexts, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command(binary(t, "imapguard"), args...)
	cmd.Env = append(binaryEnv(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	seen.add("imapguard "+args[0]+" stdout", stdout.Bytes())
	seen.add("imapguard "+args[0]+" stderr", stderr.Bytes())
	if err != nil {
		t.Fatalf("imapguard %s: %v; stderr %s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return stdout.String()
}

var (
	listeningRe = regexp.MustCompile(`msg="imapguard listening" imap=(\S+)`)
	sideRe      = regexp.MustCompile(`msg="(?:Prometheus metrics|admin API) listening"`)
	promRe      = regexp.MustCompile(`msg="Prometheus metrics listening" addr=(http://\S+/metrics)`)
	adminRe     = regexp.MustCompile(`msg="admin API listening" addr=(http://\S+) token=(true|false)`)
	traceIDRe   = regexp.MustCompile(`\btrace_id=([0-9a-f]{32})\b`)
)

// TestCLIObservability runs imapguard with OTLP export of traces and
// metrics, a Prometheus endpoint and the admin API, makes three
// connections (a LOGIN session, an AUTHENTICATE PLAIN session that the
// admin kicks, a wrong password) and checks the admin API and commands,
// both Prometheus expositions, the exported spans and metrics, that log
// lines and spans share trace ids, and that no secret leaks anywhere.
func TestCLIObservability(t *testing.T) {
	t.Parallel()
	seen := &seenTexts{t: t, texts: map[string][]string{}}
	recv, collector := otlpreceiver.NewHTTP(t)
	upstream := startIMAPD(t, "-user", watchedUser+":"+watchedPass)
	path := writeFile(t, "imapguard.toml", `[listen]
imap = "127.0.0.1:0"
[upstream]
address = "`+upstream+`"
[telemetry]
traces = "otlp"
metrics = "otlp"
otlp_endpoint = "`+collector.URL+`"
otlp_protocol = "http/protobuf"
metrics_interval = "1s"
metrics_listen = "127.0.0.1:0"
record_user = false
[admin]
listen = "127.0.0.1:0"
token = "`+adminToken+`"
`)
	p := startImapguard(t, path)
	imapAddr := p.waitLog(listeningRe)[1]
	p.waitLog(sideRe)
	p.waitLog(sideRe)
	promURL := promRe.FindStringSubmatch(p.output())
	adminMatch := adminRe.FindStringSubmatch(p.output())
	if promURL == nil || adminMatch == nil {
		t.Fatalf("log lacks the Prometheus or admin address:\n%s", p.output())
	}
	metricsURL, adminURL := promURL[1], adminMatch[1]
	if got, want := adminMatch[2], "true"; got != want {
		t.Errorf("admin API listening token=%s; want %s", got, want)
	}

	// 1. LOGIN, SELECT, FETCH, LOGOUT.
	a := proxytest.Login(t, imapAddr, watchedUser, watchedPass)
	if _, st := a.Cmd("s", "SELECT INBOX"); !strings.HasPrefix(st, "s OK") {
		t.Fatalf("SELECT: got %q; want OK", st)
	}
	if untagged, st := a.Cmd("f", "FETCH 1:* (FLAGS RFC822.SIZE)"); !strings.HasPrefix(st, "f OK") || len(untagged) == 0 {
		t.Fatalf("FETCH: got %q after %d untagged lines; want OK after some", st, len(untagged))
	}
	a.Logout("o")

	// 2. AUTHENTICATE PLAIN with an initial response (RFC 4959), kept open.
	b := proxytest.Dial(t, imapAddr)
	b.Greeting()
	b.Send("a AUTHENTICATE PLAIN " + proxytest.SASLPlain(watchedUser, watchedPass) + "\r\n")
	if _, st := b.Until("a"); !strings.HasPrefix(st, "a OK") {
		t.Fatalf("AUTHENTICATE PLAIN: got %q; want OK", st)
	}

	// 3. A wrong password, then LOGOUT.
	c := proxytest.Dial(t, imapAddr)
	c.Greeting()
	if _, st := c.Cmd("l", "LOGIN "+proxytest.Quote(watchedUser)+" "+proxytest.Quote(wrongPass)); !strings.HasPrefix(st, "l NO") {
		t.Fatalf("LOGIN with a wrong password: got %q; want NO", st)
	}
	c.Logout("o")
	const connections = 3

	t.Run("admin API", func(t *testing.T) {
		// Only b is left once the server has unwound a and c.
		var list admin.SessionList
		proxytest.WaitFor(t, "GET /sessions lists one connection", func() bool {
			getJSON(t, seen, adminURL+"/sessions", &list)
			return list.Count == 1
		})
		if s := list.Sessions[0]; s.User != watchedUser || s.State != "authenticated" {
			t.Errorf("GET /sessions: got user %q state %q; want %q authenticated", s.User, s.State, watchedUser)
		}
		for _, tt := range []struct {
			path, token string
			want        int
		}{
			{"/sessions", "", http.StatusUnauthorized},
			{"/sessions", "wrong-token-wrong-token-wrong-tok", http.StatusUnauthorized},
			{"/settings", "", http.StatusUnauthorized},
			{"/metrics", "", http.StatusUnauthorized},
			{"/healthz", "", http.StatusOK},
			{"/readyz", "", http.StatusOK},
		} {
			if code, body := httpDo(t, seen, http.MethodGet, adminURL+tt.path, tt.token); code != tt.want {
				t.Errorf("GET %s (token %q): got status %d; want %d; body %s", tt.path, tt.token, code, tt.want, body)
			}
		}
		var settings admin.SettingList
		getJSON(t, seen, adminURL+"/settings", &settings)
		found := false
		for _, s := range settings.Settings {
			if s.Name == "admin.token" {
				found = true
				if s.Value != "(redacted)" {
					t.Errorf("GET /settings admin.token: got %q; want (redacted)", s.Value)
				}
			}
		}
		if !found {
			t.Errorf("GET /settings: no admin.token among %d settings", len(settings.Settings))
		}
		// The wrong password is tracked by address and by user.
		var pen admin.PenaltyList
		getJSON(t, seen, adminURL+"/penalties", &pen)
		if pen.Count != 2 || len(pen.Penalties) != 2 || pen.Penalties[0].Key != "127.0.0.1/32" ||
			pen.Penalties[1].Key != watchedUser || pen.Penalties[1].Failures != 1 {
			t.Errorf("GET /penalties: got %+v; want 127.0.0.1 and %s with a failure each", pen, watchedUser)
		}
	})

	t.Run("Prometheus while open", func(t *testing.T) {
		// The control for "open is 0" below: the gauge counts b.
		f := scrape(t, seen, metricsURL, "")
		if got, _ := promValue(f, "imapguard_connections_open", "state", "authenticated"); got != 1 {
			t.Errorf("imapguard_connections_open{state=authenticated} with one session: got %v; want 1", got)
		}
	})

	t.Run("commands", func(t *testing.T) {
		b := b.For(t) // b's failures are this subtest's
		env := []string{"IMAPGUARD_ADMIN_TOKEN="}
		out := runCLI(t, seen, env, "who", "-admin", adminURL, "-token", adminToken)
		if !regexp.MustCompile(`(?m)^ID +USER +CLIENT +STATE +TLS +SINCE +UP +DOWN$`).MatchString(out) ||
			!strings.Contains(out, watchedUser) || !strings.Contains(out, "authenticated") || !strings.Contains(out, "1 connection\n") {
			t.Errorf("imapguard who: got\n%s\nwant the header and one authenticated session of %s", out, watchedUser)
		}
		out = runCLI(t, seen, []string{"IMAPGUARD_ADMIN_TOKEN=" + adminToken}, "settings", "-admin", adminURL)
		if !regexp.MustCompile(`(?m)^admin\.token +: \(redacted\)$`).MatchString(out) {
			t.Errorf("imapguard settings: got\n%s\nwant admin.token : (redacted)", out)
		}

		out = runCLI(t, seen, env, "penalties", "-admin", adminURL, "-token", adminToken)
		if !strings.Contains(out, "address  127.0.0.1/32") || !strings.Contains(out, "2 tracked keys\n") {
			t.Errorf("imapguard penalties: got\n%s\nwant 127.0.0.1 and %s", out, watchedUser)
		}

		// kick, with the token from the environment (out of ps).
		out = runCLI(t, seen, []string{"IMAPGUARD_ADMIN_TOKEN=" + adminToken}, "kick", "-admin", adminURL, watchedUser)
		if !strings.HasPrefix(out, "kicked 1 connection\n") {
			t.Errorf("imapguard kick: got\n%s\nwant kicked 1 connection", out)
		}
		if l := b.Line(); !strings.HasPrefix(l, "* BYE [UNAVAILABLE] ") {
			t.Errorf("kicked client: got %q; want * BYE [UNAVAILABLE] ...", l)
		}
		b.ExpectClosed()
	})

	t.Run("Prometheus", func(t *testing.T) {
		for _, ep := range []struct{ url, token string }{{metricsURL, ""}, {adminURL + "/metrics", adminToken}} {
			var f map[string]*dto.MetricFamily
			proxytest.WaitFor(t, "imapguard_connections_open at "+ep.url+" back to 0", func() bool {
				f = scrape(t, seen, ep.url, ep.token)
				open, ok := promValue(f, "imapguard_connections_open")
				return ok && open == 0
			})
			for _, tt := range []struct {
				name    string
				labels  []string
				want    float64
				atLeast bool
			}{
				{name: "imapguard_connections_accepted_total", want: connections},
				{name: "imapguard_connections_closed_total", want: connections},
				{name: "imapguard_auth_attempts_total", labels: []string{"result", "failed"}, want: 1},
				{name: "imapguard_auth_attempts_total", labels: []string{"result", "success"}, want: 2},
				{name: "imapguard_auth_attempts_total", labels: []string{"mechanism", "PLAIN", "result", "success"}, want: 1},
				{name: "imapguard_limit", labels: []string{"limit", "max_connections_per_user"}, want: 16},
				{name: "imapguard_max_command_size_bytes", want: 10240},
				{name: "imapguard_build_info", labels: []string{"goversion", runtime.Version()}, want: 1},
				{name: "imapguard_upstream_login_duration_seconds", want: 3, atLeast: true},
				{name: "imapguard_upstream_dial_duration_seconds", want: 3, atLeast: true},
				{name: "imapguard_session_duration_seconds", want: 2},
				{name: "imapguard_session_bytes_total", labels: []string{"direction", "to_client"}, want: 1, atLeast: true},
				{name: "imapguard_session_bytes_total", labels: []string{"direction", "to_upstream"}, want: 1, atLeast: true},
			} {
				got, ok := promValue(f, tt.name, tt.labels...)
				if !ok {
					t.Errorf("%s: family %s missing", ep.url, tt.name)
					continue
				}
				if (tt.atLeast && got < tt.want) || (!tt.atLeast && got != tt.want) {
					t.Errorf("%s: %s%q: got %v; want %v (at least: %v)", ep.url, tt.name, tt.labels, got, tt.want, tt.atLeast)
				}
			}
			// No scope and no empty labels (issue 12).
			for name, fam := range f {
				for _, m := range fam.GetMetric() {
					for _, l := range m.GetLabel() {
						if strings.HasPrefix(l.GetName(), "otel_scope_") || l.GetValue() == "" {
							t.Errorf("%s: %s has label %s=%q; want no otel_scope_* and no empty label", ep.url, name, l.GetName(), l.GetValue())
						}
					}
				}
			}
			if t.Failed() {
				var names []string
				for name := range f {
					if strings.HasPrefix(name, "imapguard") {
						names = append(names, name)
					}
				}
				t.Logf("imapguard families at %s: %q", ep.url, names)
			}
		}
	})

	// SIGTERM: imapguard flushes spans and metrics and exits 0. The
	// exporters return only once the receiver answered, so everything is
	// recorded once the process has exited.
	if err := p.stop(); err != nil {
		t.Fatalf("imapguard after SIGTERM: %v; want exit status 0; stderr:\n%s", err, p.output())
	}
	snap := recv.Snapshot()
	for _, raw := range recv.Raw() {
		seen.add("OTLP export", raw)
	}
	seen.add("imapguard stderr", []byte(p.output()))
	seen.add("imapguard stdout", []byte(p.stdout.String()))

	t.Run("spans", func(t *testing.T) {
		spans := snap.Spans()
		if len(spans) == 0 {
			t.Fatalf("no spans received; paths %q", snap.Paths)
		}
		byID := map[string]otlpreceiver.Span{}
		traceIDs := map[string]bool{}
		for _, s := range spans {
			if got := otlpreceiver.Attrs(s.Resource.GetAttributes())["service.name"]; got != "imapguard" {
				t.Errorf("span %s: resource service.name %v; want imapguard", s.GetName(), got)
			}
			byID[hex.EncodeToString(s.GetSpanId())] = s
			traceIDs[hex.EncodeToString(s.GetTraceId())] = true
		}
		var roots []otlpreceiver.Span
		for _, s := range spans {
			if len(s.GetParentSpanId()) == 0 {
				roots = append(roots, s)
				if s.GetName() != "imapguard.connection" {
					t.Errorf("root span %q; want only imapguard.connection", s.GetName())
				}
			}
		}
		if len(roots) != connections {
			t.Errorf("root spans: got %d; want %d (one per connection)", len(roots), connections)
		}
		// Each authentication: its result, status, command, and the
		// upstream dial and login as children.
		results := map[string]int{}
		for _, s := range spans {
			if s.GetName() != "imap.authenticate" {
				continue
			}
			attrs := otlpreceiver.Attrs(s.GetAttributes())
			result, _ := attrs["imapguard.auth.result"].(string)
			command, _ := attrs["imap.command"].(string)
			results[result+" "+command]++
			if isErr := s.GetStatus().GetCode() == tracepb.Status_STATUS_CODE_ERROR; isErr != (result == "failed") {
				t.Errorf("imap.authenticate %s: status %v; want error only for failed", result, s.GetStatus())
			}
			if root := byID[hex.EncodeToString(s.GetParentSpanId())]; root.Span == nil || root.GetName() != "imapguard.connection" {
				t.Errorf("imap.authenticate %s: parent is not an imapguard.connection span", result)
			}
			children := map[string]bool{}
			for _, ch := range spans {
				if bytes.Equal(ch.GetParentSpanId(), s.GetSpanId()) {
					children[ch.GetName()] = true
				}
			}
			if !children["upstream.dial"] || !children["upstream.login"] {
				t.Errorf("imap.authenticate %s: children %v; want upstream.dial and upstream.login", result, children)
			}
		}
		want := map[string]int{"success LOGIN": 1, "success AUTHENTICATE": 1, "failed LOGIN": 1}
		if len(results) != len(want) || results["success LOGIN"] != 1 || results["success AUTHENTICATE"] != 1 || results["failed LOGIN"] != 1 {
			t.Errorf("imap.authenticate spans by result and command: got %v; want %v", results, want)
		}

		// Logs and traces join: every trace id on a log line is a
		// received trace, and every connection's trace is on a log line.
		logged := map[string]bool{}
		for _, m := range traceIDRe.FindAllStringSubmatch(p.output(), -1) {
			logged[m[1]] = true
		}
		if len(logged) == 0 {
			t.Fatalf("no trace_id= on any log line:\n%s", p.output())
		}
		for id := range logged {
			if !traceIDs[id] {
				t.Errorf("log trace_id=%s: no span received with that trace id", id)
			}
		}
		for _, r := range roots {
			if id := hex.EncodeToString(r.GetTraceId()); !logged[id] {
				t.Errorf("connection trace %s: on no log line", id)
			}
		}
	})

	t.Run("OTLP metrics", func(t *testing.T) {
		if len(snap.ResourceMetrics) == 0 {
			t.Fatalf("no metrics received; paths %q", snap.Paths)
		}
		m, res := snap.FindMetric("imapguard.connections.accepted")
		if m == nil {
			t.Fatalf("imapguard.connections.accepted not received")
		}
		if got := otlpreceiver.Attrs(res.GetAttributes())["service.name"]; got != "imapguard" {
			t.Errorf("metrics resource service.name: got %v; want imapguard", got)
		}
		var sum int64
		for _, dp := range m.GetSum().GetDataPoints() {
			sum += dp.GetAsInt()
		}
		if sum != connections {
			t.Errorf("imapguard.connections.accepted in the last export: got %d; want %d", sum, connections)
		}
	})

	// No secret anywhere; and with record_user = false, no user name in
	// the exports or the Prometheus expositions.
	seen.checkSecrets(secrets...)
	for _, raw := range recv.Raw() {
		if bytes.Contains(raw, []byte(watchedUser)) {
			t.Errorf("record_user = false: user name %q found in an OTLP export", watchedUser)
			break
		}
	}
	for source, texts := range seen.texts {
		if !strings.Contains(source, "/metrics") {
			continue
		}
		for _, text := range texts {
			if strings.Contains(text, watchedUser) {
				t.Errorf("record_user = false: user name %q found in %s", watchedUser, source)
				break
			}
		}
	}
}
