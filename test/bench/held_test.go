package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/imapguard/imapguard/cmd/imapload/loadresult"
)

func TestPlanHeld(t *testing.T) {
	sandbox := machineLimits{files: 20000, filesWhy: "the hard limit is 20000", ports: 28232, pidMax: 32768, memAvailKiB: 20 << 20, dovecot: true}
	got := planHeld([]int{5000, 50000}, sandbox, "auto")
	if len(got) != 2 || got[0].Sessions != 5000 || got[0].Upstream != upDovecot || got[0].Label != "held-5k" || got[0].Why != "" ||
		got[1].Requested != 50000 || got[1].Sessions != 9000 || got[1].Upstream != upDovecot || got[1].Label != "held-9k" ||
		!strings.Contains(got[1].Why, "the open-file limit is 20000 (the hard limit is 20000)") {
		t.Errorf("sandbox: %+v", got)
	}

	// Descriptors enough: the ports bound the count, and Dovecot cannot
	// run a process per session under pid_max.
	big := sandbox
	big.files, big.filesWhy = 110000, ""
	got = planHeld([]int{5000, 50000}, big, "auto")
	if len(got) != 2 || got[1].Sessions != 25000 || got[1].Upstream != upImapd ||
		!strings.Contains(got[1].Why, "ephemeral ports") || !strings.Contains(got[1].Why, "pid_max") {
		t.Errorf("large limit: %+v", got)
	}
	roomy := big
	roomy.ports, roomy.pidMax, roomy.memAvailKiB = 64000, 4<<20, 64<<20
	got = planHeld([]int{50000}, roomy, "auto")
	if len(got) != 1 || got[0].Sessions != 50000 || got[0].Upstream != upDovecot || got[0].Label != "held" || got[0].Why != "" {
		t.Errorf("roomy: %+v", got)
	}
	roomy.memAvailKiB = 16 << 20
	if got = planHeld([]int{50000}, roomy, "auto"); got[0].Upstream != upImapd || !strings.Contains(got[0].Why, "MiB") {
		t.Errorf("roomy, less memory: %+v", got)
	}

	// A count cut to one already measured is measured once.
	small := sandbox
	small.files = 12000
	if got = planHeld([]int{5000, 50000}, small, "auto"); len(got) != 1 || got[0].Sessions != 5000 || got[0].Label != "held" {
		t.Errorf("small limit: %+v", got)
	}
	if got = planHeld([]int{5000}, sandbox, "imapd"); got[0].Upstream != upImapd {
		t.Errorf("-held-upstream imapd: %+v", got)
	}
	noDovecot := sandbox
	noDovecot.dovecot = false
	if got = planHeld([]int{5000}, noDovecot, "auto"); got[0].Upstream != upImapd {
		t.Errorf("without Dovecot: %+v", got)
	}
}

func TestHeldWorkloads(t *testing.T) {
	h := &harness{opts: options{openConcurrency: 100, sources: "127.0.0.2-127.0.0.9"}}
	h.held = []heldRun{{Sessions: 5000, Upstream: upDovecot, Label: "held-5k"}, {Sessions: 9000, Upstream: upImapd, Label: "held-9k"}}
	ws := h.expand("held")
	if len(ws) != 2 || ws[0].name != "held-5k" || ws[1].name != "held-9k" || ws[1].upstream != upImapd || ws[1].metricSet() != "held" {
		t.Fatalf("held expands to %+v", ws)
	}
	if args := strings.Join(h.loadArgs(ws[1], "127.0.0.1:1", 0, 100), " "); !strings.Contains(args, "-sessions 9000") {
		t.Errorf("held-9k args: %s", args)
	}
	if tls := h.expand("held-tls"); len(tls) != 1 || tls[0].sessions != 5000 || tls[0].upstream != upDovecot {
		t.Errorf("held-tls expands to %+v", tls)
	}
	if h.dovecotHeldMax() != 5000 {
		t.Errorf("dovecotHeldMax %d, want 5000 (9,000 run in front of imapd)", h.dovecotHeldMax())
	}

	// Each count has its own rows.
	h.opts.workloads = []string{"held"}
	h.targets = []*target{{name: "imapguard"}, {name: "haproxy"}}
	for _, w := range ws {
		for _, tg := range []string{"imapguard", "haproxy"} {
			kib := 3.0
			if tg == "imapguard" {
				kib = float64(w.sessions) / 1000
			}
			h.results = append(h.results, runResult{Run: 1, Workload: w.name, Target: tg, Sessions: w.sessions, Upstream: string(w.upstream),
				Load: &loadResult{Result: loadresult.Result{SessionsOpened: w.sessions, Seconds: 1}}, RSSPerSessionKiB: ptr(kib), IdleCPUPercent: ptr(0.1)})
		}
	}
	rep := h.report(environment{})
	var buf bytes.Buffer
	rep.printTable(&buf)
	out := buf.String()
	for _, want := range []string{"held-5k   sessions held", "held-9k   sessions held", "memory per idle session ≤ HAProxy, 9000 sessions  imapguard  9.00 KiB  3.00 KiB", "MISSED by 200%", "MISSED by 67%"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestGoals(t *testing.T) {
	rows := []row{
		{Workload: "noop", Metric: "proxy CPU per round trip", Unit: "µs", Better: "lower", Values: map[string]*float64{"imapguard": ptr(19.0), "imapguard-goroutines": ptr(25.0), "haproxy": ptr(20.0), "nginx": ptr(18.0)}},
		{Workload: "noop", Metric: "round trips", Unit: "/s", Better: "higher", Values: map[string]*float64{"imapguard": ptr(30000.0), "haproxy": ptr(29000.0), "nginx": ptr(31000.0)}},
		{Workload: "login", Metric: "latency p99", Unit: "ms", Better: "lower", Values: map[string]*float64{"imapguard": ptr(5.4), "haproxy": ptr(5.0)}},
		{Workload: "fetch", Metric: "proxy CPU per GB relayed", Unit: "CPU s", Better: "lower", Values: map[string]*float64{"imapguard": ptr(0.3), "haproxy": ptr(0.4)}},
		{Workload: "noop-tls", Metric: "round trips", Unit: "/s", Better: "higher", Values: map[string]*float64{"imapguard": ptr(9000.0), "haproxy": ptr(10000.0)}},
		{Workload: "login", Metric: "logins", Unit: "/s", Better: "higher", Values: map[string]*float64{"imapguard": ptr(5000.0)}},
	}
	rep := &report{Targets: []string{"direct", "imapguard", "imapguard-goroutines", "haproxy", "nginx"}, Rows: rows}
	got := map[string]goal{}
	for _, g := range rep.goals() {
		got[g.Workload+"|"+g.Target+"|"+g.Column] = g
	}
	check := func(key string, bound float64, met bool, result string) {
		t.Helper()
		g, ok := got[key]
		if !ok {
			t.Errorf("no goal %q among %v", key, got)
			return
		}
		if g.Bound == nil || *g.Bound < bound-1e-9 || *g.Bound > bound+1e-9 || g.Met == nil || *g.Met != met || g.Result != result {
			t.Errorf("%s: bound %v met %v %q; want %v %v %q", key, deref(g.Bound), g.Met, g.Result, bound, met, result)
		}
	}
	// The better peer: the lower CPU, the higher rate.
	check("noop|NOOP: CPU per round trip ≤ 1.0 × the better of HAProxy and nginx|imapguard", 18, false, "MISSED by 6%")
	check("noop|NOOP: CPU per round trip ≤ 1.0 × the better of HAProxy and nginx|imapguard-goroutines", 18, false, "MISSED by 39%")
	check("noop|NOOP: round trips/s ≥ both|imapguard", 31000, false, "MISSED by 3%")
	check("login|login: p99 ≤ 1.1 × HAProxy|imapguard", 5.5, true, "met (2% to spare)")
	check("fetch|FETCH: CPU per GB ≤ 0.85 × HAProxy|imapguard", 0.34, true, "met (12% to spare)")
	check("noop-tls|noop-tls: round trips/s, no worse than today|imapguard", 9600, false, "MISSED by 6%")
	if g := got["noop|NOOP: round trips/s ≥ both|imapguard-goroutines"]; g.Met != nil || !strings.HasPrefix(g.Result, "not measured: no figure for imapguard-goroutines") {
		t.Errorf("goroutines column without a figure: %+v", g)
	}
	if g := got["login|login: logins/s ≥ HAProxy|imapguard"]; g.Met != nil || g.Result != "not measured: no figure for haproxy" {
		t.Errorf("login rate without HAProxy: %+v", g)
	}
}

func deref(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}

func TestParseCheck(t *testing.T) {
	out := []byte("telemetry.traces                   : otlp\ntelemetry.otlp_protocol            :\nperformance.relay                  : goroutines\nnot a setting\n")
	m := parseCheck(out)
	if m["telemetry.traces"] != "otlp" || m["performance.relay"] != "goroutines" || m["telemetry.otlp_protocol"] != "" || len(m) != 3 {
		t.Errorf("parseCheck: %v", m)
	}
}
