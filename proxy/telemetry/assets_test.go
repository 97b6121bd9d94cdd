package telemetry_test

// The alert rules (prometheus/) and the Grafana dashboard (grafana/)
// shipped beside this package (issue 12, item 7): promtool checks and
// unit-tests the rules, the dashboard loads without edits, and every
// metric and label either uses is one a running imapguard serves.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/proxy/telemetry"
	"github.com/imapguard/imapguard/test/proxytest"
)

const (
	rulesFile     = "prometheus/imapguard.rules.yml"
	rulesTestFile = "prometheus/imapguard.rules.test.yml"
	dashboardFile = "grafana/imapguard.json"
)

// promtool finds promtool (Debian: apt-get install prometheus), or skips
// the test (fails it when CI is set).
func promtool(t *testing.T) string {
	t.Helper()
	p, err := proxytest.LookPath("promtool")
	if err != nil {
		proxytest.Skip(t, "promtool checks of the alert rules and dashboard queries", "promtool not found: apt-get install prometheus")
	}
	return p
}

// runPromtool runs promtool with args in dir and fails t with its output
// if it fails.
func runPromtool(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command(promtool(t), args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestPrometheusRules: promtool accepts the rules and their unit tests
// pass (each alert fires on series shaped like imapguard's and stays quiet
// below its threshold).
func TestPrometheusRules(t *testing.T) {
	runPromtool(t, ".", "check", "rules", rulesFile)
	runPromtool(t, "prometheus", "test", "rules", filepath.Base(rulesTestFile))
}

// dashboard is the part of a Grafana dashboard the tests look at.
type dashboard struct {
	UID        string            `json:"uid"`
	Title      string            `json:"title"`
	Inputs     []json.RawMessage `json:"__inputs"`
	Templating struct {
		List []struct {
			Name       string      `json:"name"`
			Type       string      `json:"type"`
			Query      any         `json:"query"`
			Datasource *datasource `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *datasource `json:"datasource"`
	Targets    []struct {
		Datasource   *datasource `json:"datasource"`
		Expr         string      `json:"expr"`
		LegendFormat string      `json:"legendFormat"`
		RefID        string      `json:"refId"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // of a collapsed row
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(string(data)))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// allPanels flattens rows.
func allPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

// grafanaVars are what Grafana substitutes in a query, with values that
// make it plain PromQL for promtool.
var grafanaVars = strings.NewReplacer(
	"$__rate_interval", "5m",
	"$__interval", "1m",
	"$__range", "1h",
	"$instance", ".*",
)

// TestGrafanaDashboard: the dashboard loads without edits (no __inputs to
// fill in; every panel and query uses the $datasource variable, which
// lists Prometheus data sources), has the panels the issue asks for, and
// promtool parses every query (as recording rules, Grafana's variables
// replaced).
func TestGrafanaDashboard(t *testing.T) {
	d := readDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Errorf("uid %q, title %q; want both set (a provisioned dashboard needs a stable uid)", d.UID, d.Title)
	}
	if len(d.Inputs) > 0 {
		t.Errorf("__inputs: got %d; want none: provisioning does not fill them in", len(d.Inputs))
	}
	var hasDS bool
	for _, v := range d.Templating.List {
		if v.Name == "datasource" {
			hasDS = v.Type == "datasource" && v.Query == "prometheus"
		}
		if v.Datasource != nil && v.Datasource.UID != "${datasource}" {
			t.Errorf("variable %s: datasource uid %q; want ${datasource}", v.Name, v.Datasource.UID)
		}
	}
	if !hasDS {
		t.Errorf("templating: no variable datasource of type datasource, query prometheus")
	}

	ids := map[int]string{}
	var titles []string
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for _, p := range allPanels(d.Panels) {
		if other, ok := ids[p.ID]; ok {
			t.Errorf("panels %q and %q: same id %d", other, p.Title, p.ID)
		}
		ids[p.ID] = p.Title
		titles = append(titles, p.Title)
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" || p.Datasource.Type != "prometheus" {
			t.Errorf("panel %q: datasource %+v; want prometheus ${datasource}", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q: no queries", p.Title)
		}
		for _, q := range p.Targets {
			if q.Datasource == nil || q.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q, query %s: datasource %+v; want ${datasource}", p.Title, q.RefID, q.Datasource)
			}
			if strings.TrimSpace(q.Expr) == "" {
				t.Errorf("panel %q, query %s: empty", p.Title, q.RefID)
				continue
			}
			expr, _ := json.Marshal(grafanaVars.Replace(q.Expr)) // a JSON string is a YAML string
			fmt.Fprintf(&rules, "      - record: dashboard:panel%d:%s\n        expr: %s\n", p.ID, q.RefID, expr)
		}
	}
	// What issue 12 asks the dashboard to show.
	for _, want := range []string{"Connections open by state", "Refusals by limit or reason", "Logins by result", "Upstream login latency", "Bytes relayed"} {
		if !slices.Contains(titles, want) {
			t.Errorf("no panel %q; panels: %q", want, titles)
		}
	}
	if t.Failed() {
		return
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "dashboard.rules.yml"), []byte(rules.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	runPromtool(t, dir, "check", "rules", "dashboard.rules.yml")
}

// servedFamilies starts a proxy in front of cmd/imapd, instrumented as
// imapguard instruments it (telemetry.Setup with the Prometheus
// exposition, the brute-force defence on), makes the traffic that brings
// out the series the rules and the dashboard use (a session with bytes, a
// failed login, a refusal by max_connections_per_ip, an unavailable
// upstream), and returns a scrape of its /metrics over HTTP.
func servedFamilies(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	tel, err := telemetry.Setup(context.Background(), telemetry.Options{Prometheus: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tel.Shutdown(context.Background()) }) // after the proxy's
	metrics := httptest.NewServer(tel.MetricsHandler)
	t.Cleanup(metrics.Close)

	upstream := proxytest.Imapd(t)
	opts := proxy.Options{
		UpstreamAddr: upstream,
		AuthTracker:  limits.NewTracker(limits.AuthOptions{Window: time.Hour, MaxPerIP: 100, MaxPerUser: 100, Block: time.Minute}),
	}
	p := proxytest.Start(t, proxytest.Config{Upstream: upstream, Options: opts, Limits: limits.Options{MaxConnectionsPerIP: 1},
		Setup: func(s *proxy.Server) {
			if err := s.Instrument(tel.TracerProvider, tel.MeterProvider); err != nil {
				t.Fatal(err)
			}
		}})

	a := proxytest.LoginFrom(t, "127.0.0.2", p.Addr, "alice", "secret")
	a.OK("s", "SELECT INBOX")
	a.OK("f", "FETCH 1 (BODY.PEEK[])")
	refused := proxytest.DialFrom(t, "127.0.0.2", p.Addr) // over max_connections_per_ip
	refused.ExpectPrefix("* BYE [UNAVAILABLE]")
	a.Logout("z")

	b := proxytest.DialFrom(t, "127.0.0.3", p.Addr)
	b.Greeting()
	if _, st := b.Cmd("l", "LOGIN alice wrong"); !strings.HasPrefix(st, "l NO ") {
		t.Fatalf("LOGIN with a wrong password: got %q; want l NO ...", st)
	}
	b.Logout("z")

	// As after a SIGHUP that pointed the proxy at a dead upstream.
	opts.UpstreamAddr = proxytest.ClosedAddr(t)
	p.Server.SetOptions(opts)
	c := proxytest.DialFrom(t, "127.0.0.4", p.Addr)
	c.Greeting()
	if _, st := c.Cmd("l", "LOGIN alice secret"); !strings.HasPrefix(st, "l NO [UNAVAILABLE]") {
		t.Fatalf("LOGIN with the upstream down: got %q; want l NO [UNAVAILABLE] ...", st)
	}
	c.Logout("z")
	proxytest.WaitZero(t, p.Limiter)

	resp, err := http.Get(metrics.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return families
}

// series is what a scrape offers a query: for each sample name
// (histograms give _bucket, _sum and _count), its label names and the
// values each takes.
type series map[string]map[string][]string

func seriesOf(families map[string]*dto.MetricFamily) series {
	s := series{}
	add := func(name string, m *dto.Metric, extra ...string) {
		labels := s[name]
		if labels == nil {
			labels = map[string][]string{}
			s[name] = labels
		}
		for _, l := range m.GetLabel() {
			if !slices.Contains(labels[l.GetName()], l.GetValue()) {
				labels[l.GetName()] = append(labels[l.GetName()], l.GetValue())
			}
		}
		for _, e := range extra {
			if _, ok := labels[e]; !ok {
				labels[e] = nil
			}
		}
	}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			switch f.GetType() {
			case dto.MetricType_HISTOGRAM:
				add(name+"_bucket", m, "le")
				add(name+"_sum", m)
				add(name+"_count", m)
			case dto.MetricType_SUMMARY:
				add(name, m, "quantile")
				add(name+"_sum", m)
				add(name+"_count", m)
			default:
				add(name, m)
			}
		}
	}
	return s
}

var (
	// metricName matches the names of the metrics imapguard serves: its
	// own, and the Go client's.
	metricName = regexp.MustCompile(`\b(?:imapguard|go|process)_[a-zA-Z0-9_]+\b`)
	// selector is a metric name and its label matchers.
	selector = regexp.MustCompile(`\b((?:imapguard|go|process)_[a-zA-Z0-9_]+)\s*\{([^}]*)\}`)
	matcher  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"`)
	grouping = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
	legend   = regexp.MustCompile(`\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}`)
)

// targetLabels are added by Prometheus when it scrapes (and le by a
// histogram), not served by imapguard.
var targetLabels = []string{"instance", "job", "le"}

// checkQuery reports the metrics, labels and label values query uses that
// the scrape s does not have. With values, each label value a matcher
// asks for must be served too (a regular expression must match one).
func (s series) checkQuery(query string, values bool) []string {
	var probs []string
	for _, name := range metricName.FindAllString(query, -1) {
		if _, ok := s[name]; !ok {
			probs = append(probs, "no metric "+name)
		}
	}
	for _, sel := range selector.FindAllStringSubmatch(query, -1) {
		labels, ok := s[sel[1]]
		if !ok {
			continue
		}
		for _, m := range matcher.FindAllStringSubmatch(sel[2], -1) {
			name, op, value := m[1], m[2], m[3]
			if slices.Contains(targetLabels, name) {
				continue
			}
			served, ok := labels[name]
			if !ok {
				probs = append(probs, fmt.Sprintf("%s has no label %s", sel[1], name))
				continue
			}
			if !values || op == "!=" || op == "!~" {
				continue
			}
			re, err := regexp.Compile("^(?:" + value + ")$")
			if op == "=" {
				re = regexp.MustCompile("^" + regexp.QuoteMeta(value) + "$")
			} else if err != nil {
				probs = append(probs, fmt.Sprintf("%s{%s}: %v", sel[1], m[0], err))
				continue
			}
			if !slices.ContainsFunc(served, re.MatchString) {
				probs = append(probs, fmt.Sprintf("%s{%s}: served values %q", sel[1], m[0], served))
			}
		}
	}
	// Labels grouped by, or written in a legend, must be on one of the
	// query's metrics.
	var used []string
	for _, g := range grouping.FindAllStringSubmatch(query, -1) {
		for l := range strings.SplitSeq(g[1], ",") {
			used = append(used, strings.TrimSpace(l))
		}
	}
	for _, l := range legend.FindAllStringSubmatch(query, -1) {
		used = append(used, l[1])
	}
	names := metricName.FindAllString(query, -1)
	for _, l := range used {
		if l == "" || slices.Contains(targetLabels, l) {
			continue
		}
		if !slices.ContainsFunc(names, func(n string) bool { _, ok := s[n][l]; return ok }) {
			probs = append(probs, fmt.Sprintf("label %s is on none of %q", l, names))
		}
	}
	return probs
}

// TestRulesAndDashboardUseServedMetrics scrapes a running proxy and
// checks every metric name, label and label value the alert rules and
// the dashboard's queries use (and the metric and label names the rules'
// unit tests feed promtool), so that a rename breaks this test and not an
// operator's alerting.
func TestRulesAndDashboardUseServedMetrics(t *testing.T) {
	s := seriesOf(servedFamilies(t))
	for _, name := range []string{"imapguard_connections_refused_total", "imapguard_auth_attempts_total", "imapguard_upstream_login_duration_seconds_bucket"} {
		if _, ok := s[name]; !ok {
			t.Fatalf("the scrape lacks %s: the traffic did not bring it out", name)
		}
	}

	for _, f := range []struct {
		file   string
		values bool
	}{{rulesFile, true}, {rulesTestFile, false}} {
		data, err := os.ReadFile(f.file)
		if err != nil {
			t.Fatal(err)
		}
		if n := len(metricName.FindAllString(string(data), -1)); n == 0 {
			t.Errorf("%s: no metric names found", f.file)
		}
		for _, p := range s.checkQuery(string(data), f.values) {
			t.Errorf("%s: %s", f.file, p)
		}
	}

	for _, p := range allPanels(readDashboard(t).Panels) {
		for _, q := range p.Targets {
			for _, prob := range s.checkQuery(q.Expr+" "+q.LegendFormat, true) {
				t.Errorf("%s: panel %q, query %s: %s", dashboardFile, p.Title, q.RefID, prob)
			}
		}
	}
}

// TestPrometheusLabels: on a running proxy's /metrics, no series carries
// an otel_scope_* label or an empty label (issue 12), and
// imapguard_build_info is there.
func TestPrometheusLabels(t *testing.T) {
	families := servedFamilies(t)
	for name, f := range families {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if strings.HasPrefix(l.GetName(), "otel_scope_") || l.GetValue() == "" {
					t.Errorf("%s: label %s=%q; want no otel_scope_* and no empty label", name, l.GetName(), l.GetValue())
				}
			}
		}
	}
	if f := families["imapguard_build_info"]; f == nil || len(f.GetMetric()) != 1 || f.GetMetric()[0].GetGauge().GetValue() != 1 {
		t.Errorf("imapguard_build_info: got %v; want one series of value 1", f)
	}
	if f := families["imapguard_max_command_size_bytes"]; f == nil || len(f.GetMetric()) != 1 || f.GetMetric()[0].GetGauge().GetValue() != limits.DefaultMaxCommandSize {
		t.Errorf("imapguard_max_command_size_bytes: got %v; want %d", f, limits.DefaultMaxCommandSize)
	}
	for _, m := range families["imapguard_limit"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "limit" && l.GetValue() == "max_command_size" {
				t.Errorf("imapguard_limit{limit=max_command_size}: want it only as imapguard_max_command_size_bytes")
			}
		}
	}
}
