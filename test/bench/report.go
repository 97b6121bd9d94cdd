package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
)

// metric is one row of the table: a figure of one workload.
type metric struct {
	workload string
	name     string
	unit     string
	better   string // "higher", "lower" or "" (context only)
	// proxyOnly rows have no value for direct.
	proxyOnly bool
	value     func(r runResult) (float64, bool)
}

func loadValue(f func(l *loadResult) float64) func(runResult) (float64, bool) {
	return func(r runResult) (float64, bool) {
		if r.Load == nil || r.Error != "" {
			return 0, false
		}
		return f(r.Load), true
	}
}

func ptrValue(f func(r runResult) *float64) func(runResult) (float64, bool) {
	return func(r runResult) (float64, bool) {
		if r.Load == nil || r.Error != "" {
			return 0, false
		}
		p := f(r)
		if p == nil {
			return 0, false
		}
		return *p, true
	}
}

// perOp is the proxy's CPU time per operation, in unit (1e6: µs).
func perOp(unit float64, ops func(l *loadResult) float64) func(runResult) (float64, bool) {
	return func(r runResult) (float64, bool) {
		if r.Load == nil || r.Error != "" || r.ProxyCPUSeconds == nil || ops(r.Load) <= 0 {
			return 0, false
		}
		return *r.ProxyCPUSeconds * unit / ops(r.Load), true
	}
}

func proxyCPU(r runResult) *float64 { return r.ProxyCPUPercent }

func loadgenCPU(l *loadResult) float64 {
	if l.Seconds <= 0 {
		return 0
	}
	return l.LoadgenCPUSeconds / l.Seconds * 100
}

var metrics = []metric{
	{"fetch", "throughput", "MB/s", "higher", false, loadValue(func(l *loadResult) float64 { return l.MBPerSec })},
	{"fetch", "latency p50, one message", "ms", "lower", false, loadValue(func(l *loadResult) float64 { return l.LatencyP50Ms })},
	{"fetch", "proxy CPU", "% of a core", "lower", true, ptrValue(proxyCPU)},
	{"fetch", "proxy CPU per GB relayed", "CPU s", "lower", true, perOp(1, func(l *loadResult) float64 { return float64(l.Bytes) / 1e9 })},

	{"noop", "round trips", "/s", "higher", false, loadValue(func(l *loadResult) float64 { return l.OpsPerSec })},
	{"noop", "latency p50", "µs", "lower", false, loadValue(func(l *loadResult) float64 { return l.LatencyP50Ms * 1000 })},
	{"noop", "latency p99", "µs", "lower", false, loadValue(func(l *loadResult) float64 { return l.LatencyP99Ms * 1000 })},
	{"noop", "proxy CPU", "% of a core", "lower", true, ptrValue(proxyCPU)},
	{"noop", "proxy CPU per round trip", "µs", "lower", true, perOp(1e6, func(l *loadResult) float64 { return float64(l.Ops) })},

	{"fetchall", "FETCH 1:* commands", "/s", "higher", false, loadValue(func(l *loadResult) float64 { return l.OpsPerSec })},
	{"fetchall", "FETCH responses", "/s", "higher", false, loadValue(func(l *loadResult) float64 { return l.MessagesPerSec })},
	{"fetchall", "latency p50", "ms", "lower", false, loadValue(func(l *loadResult) float64 { return l.LatencyP50Ms })},
	{"fetchall", "latency p99", "ms", "lower", false, loadValue(func(l *loadResult) float64 { return l.LatencyP99Ms })},
	{"fetchall", "proxy CPU", "% of a core", "lower", true, ptrValue(proxyCPU)},
	{"fetchall", "proxy CPU per FETCH 1:*", "ms", "lower", true, perOp(1e3, func(l *loadResult) float64 { return float64(l.Ops) })},

	{"login", "logins", "/s", "higher", false, loadValue(func(l *loadResult) float64 { return l.OpsPerSec })},
	{"login", "latency p50", "ms", "lower", false, loadValue(func(l *loadResult) float64 { return l.LatencyP50Ms })},
	{"login", "latency p99", "ms", "lower", false, loadValue(func(l *loadResult) float64 { return l.LatencyP99Ms })},
	{"login", "proxy CPU", "% of a core", "lower", true, ptrValue(proxyCPU)},
	{"login", "proxy CPU per login", "µs", "lower", true, perOp(1e6, func(l *loadResult) float64 { return float64(l.Ops) })},

	{"held", "sessions held", "", "higher", false, loadValue(func(l *loadResult) float64 { return float64(l.SessionsOpened) })},
	{"held", "sessions opened", "/s", "higher", false, loadValue(func(l *loadResult) float64 { return l.OpenPerSec })},
	{"held", "resident memory per session", "KiB", "lower", true, ptrValue(func(r runResult) *float64 { return r.RSSPerSessionKiB })},
	{"held", "CPU while idle", "% of a core", "lower", true, ptrValue(func(r runResult) *float64 { return r.IdleCPUPercent })},
	{"held", "NOOP after idling, p99", "ms", "lower", false, loadValue(func(l *loadResult) float64 { return l.LatencyP99Ms })},
}

// The TLS workloads repeat fetch, noop and held over imaps: the same
// rows.
func init() {
	var tlsRows []metric
	for _, w := range workloads {
		if !w.tls {
			continue
		}
		for _, m := range metrics {
			if m.workload == w.load {
				m.workload = w.name
				tlsRows = append(tlsRows, m)
			}
		}
	}
	metrics = append(metrics, tlsRows...)
}

// row is one line of the table.
type row struct {
	Workload string              `json:"workload"`
	Metric   string              `json:"metric"`
	Unit     string              `json:"unit"`
	Better   string              `json:"better,omitempty"`
	Values   map[string]*float64 `json:"values"`
	Counted  map[string]int      `json:"runs_counted"`
	Ratios   map[string]*float64 `json:"ratios"`
	Skipped  string              `json:"skipped,omitempty"`
	// Sessions is the count of held sessions (held rows).
	Sessions int `json:"sessions,omitempty"`
	// SkippedTargets are the targets not measured in this row's
	// workload alone (a TLS workload), with the reason.
	SkippedTargets map[string]string `json:"skipped_targets,omitempty"`
	integer        bool              // counts: printed without decimals
}

// report is the harness's output, printed as a table and written as
// JSON.
type report struct {
	Environment environment       `json:"environment"`
	Targets     []string          `json:"targets"`
	Skipped     map[string]string `json:"skipped_targets,omitempty"`
	// SkippedTLS are the targets skipped in the TLS workloads only.
	SkippedTLS map[string]string `json:"skipped_tls_targets,omitempty"`
	Rows       []row             `json:"table"`
	// Goals are issue 14's targets computed from the table (the
	// targets block).
	Goals []goal      `json:"targets_block"`
	Notes []string    `json:"notes"`
	Runs  []runResult `json:"runs"`
}

// ratioPairs are the ratio columns: imapguard divided by each of these.
var ratioPairs = []string{"haproxy", "nginx"}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func (h *harness) report(env environment) *report {
	rep := &report{Environment: env, Skipped: map[string]string{}, SkippedTLS: map[string]string{}, Runs: h.results}
	tlsWhy := h.tlsUnavailable()
	for _, t := range h.targets {
		rep.Targets = append(rep.Targets, t.name)
		if t.skip != "" {
			rep.Skipped[t.name] = t.skip
		} else if t.tlsSkip != "" && tlsWhy == "" && h.wantTLS() {
			rep.SkippedTLS[t.name] = t.tlsSkip
		}
	}
	selected := map[string]bool{}
	for _, w := range h.opts.workloads {
		selected[w] = true
	}
	for _, wl := range h.rowGroups() {
		w := wl.name
		for _, m := range metrics {
			if m.workload != wl.metricSet() {
				continue
			}
			r := row{Workload: w, Metric: m.name, Unit: m.unit, Better: m.better, Sessions: wl.sessions,
				Values: map[string]*float64{}, Counted: map[string]int{}, Ratios: map[string]*float64{},
				integer: m.name == "sessions held"}
			if wl.tls {
				if tlsWhy != "" {
					r.Skipped = tlsWhy
				}
				r.SkippedTargets = rep.SkippedTLS
			}
			for _, t := range rep.Targets {
				var vals []float64
				for _, res := range h.results {
					if res.Workload != w || res.Target != t {
						continue
					}
					if v, ok := m.value(res); ok && !math.IsNaN(v) && !math.IsInf(v, 0) {
						vals = append(vals, v)
					}
				}
				r.Counted[t] = len(vals)
				if len(vals) > 0 && (!m.proxyOnly || t != "direct") {
					r.Values[t] = ptr(median(vals))
				} else {
					r.Values[t] = nil
				}
			}
			for _, other := range ratioPairs {
				ig, o := r.Values["imapguard"], r.Values[other]
				if ig != nil && o != nil && *o != 0 {
					r.Ratios["imapguard/"+other] = ptr(*ig / *o)
				} else {
					r.Ratios["imapguard/"+other] = nil
				}
			}
			rep.Rows = append(rep.Rows, r)
		}
		// Errors: every failed operation and failed measurement, all
		// runs added up.
		r := row{Workload: w, Metric: "errors, all runs", Better: "lower", Sessions: wl.sessions,
			Values: map[string]*float64{}, Counted: map[string]int{}, Ratios: map[string]*float64{}, integer: true}
		if wl.tls {
			r.SkippedTargets = rep.SkippedTLS
		}
		for _, t := range rep.Targets {
			var n float64
			counted := 0
			for _, res := range h.results {
				if res.Workload != w || res.Target != t {
					continue
				}
				counted++
				if res.Load != nil {
					n += float64(res.Load.Errors)
				}
				if res.Error != "" && !isSkip(res.Error) {
					n++
				}
			}
			r.Counted[t] = counted
			if counted > 0 {
				r.Values[t] = ptr(n)
			} else {
				r.Values[t] = nil
			}
		}
		// A TLS workload that cannot run has its one "skipped" row per
		// metric and no more.
		if wl.tls && tlsWhy != "" {
			continue
		}
		rep.Rows = append(rep.Rows, r)
		// imapload's own CPU, to see whether the load generator (on the
		// same cores) was the limit.
		if wl.load != "held" {
			lg := metric{w, "imapload CPU (context)", "% of a core", "", false, loadValue(loadgenCPU)}
			r := row{Workload: w, Metric: lg.name, Unit: lg.unit, Values: map[string]*float64{}, Counted: map[string]int{}, Ratios: map[string]*float64{}}
			if wl.tls {
				r.SkippedTargets = rep.SkippedTLS
			}
			for _, t := range rep.Targets {
				var vals []float64
				for _, res := range h.results {
					if res.Workload == w && res.Target == t {
						if v, ok := lg.value(res); ok {
							vals = append(vals, v)
						}
					}
				}
				r.Counted[t] = len(vals)
				r.Values[t] = nil
				if len(vals) > 0 {
					r.Values[t] = ptr(median(vals))
				}
			}
			rep.Rows = append(rep.Rows, r)
		}
	}
	rep.Goals = rep.goals()
	rep.Notes = append(rep.Notes, h.notes...)
	rep.Notes = append(rep.Notes, h.dovecotNotes()...)
	rep.Notes = append(rep.Notes, heldTLSNotes(rep)...)
	return rep
}

// rowGroups are the workloads of the table, in order: each selected
// one, held once per count.
func (h *harness) rowGroups() []workload {
	var out []workload
	for _, name := range h.opts.workloads {
		out = append(out, h.expand(name)...)
	}
	return out
}

// dovecotNotes describes Dovecot with every held session open.
func (h *harness) dovecotNotes() []string {
	var out []string
	for _, wl := range h.rowGroups() {
		if wl.load != "held" {
			continue
		}
		w := wl.name
		for _, t := range h.targets {
			var procs, pss []float64
			for _, r := range h.results {
				if r.Workload == w && r.Target == t.name && r.Load != nil && r.DovecotProcs > 0 && r.Load.SessionsOpened > 0 {
					procs = append(procs, float64(r.DovecotProcs-r.DovecotBaseProcs))
					pss = append(pss, float64(r.DovecotPssKiB)/float64(r.Load.SessionsOpened))
				}
			}
			if len(procs) > 0 {
				out = append(out, fmt.Sprintf("%s through %s: Dovecot ran %.0f more processes (one imap process per session) and %.0f KiB of PSS per session in total (median of %d runs)",
					w, t.name, median(procs), median(pss), len(procs)))
			}
		}
	}
	return out
}

// heldTLSNotes compares each proxy's resident memory per held session
// over TLS with the plaintext figure (the issue asks imapguard for at
// most 3x), when both were measured.
func heldTLSNotes(rep *report) []string {
	const metric = "resident memory per session"
	plain, tls := map[string]*float64{}, map[string]*float64{}
	tlsSessions := 0
	for _, r := range rep.Rows {
		if r.Metric == metric && r.Workload == "held-tls" {
			tls, tlsSessions = r.Values, r.Sessions
		}
	}
	for _, r := range rep.Rows {
		if r.Metric == metric && r.Workload != "held-tls" && r.Sessions == tlsSessions {
			plain = r.Values
		}
	}
	var parts []string
	for _, t := range rep.Targets {
		p, q := plain[t], tls[t]
		if p == nil || q == nil || *p <= 0 {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %.2fx (%s / %s KiB)", t, *q / *p, fmtNum(*q), fmtNum(*p)))
	}
	if len(parts) == 0 {
		return nil
	}
	return []string{"resident memory per held session, held-tls / held (imapguard's goal: at most 3x): " + strings.Join(parts, ", ")}
}

func fmtNum(v float64) string {
	a := math.Abs(v)
	switch {
	case v == 0:
		return "0"
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

// printTable prints the table: one row per figure, one column per target,
// then the ratios.
func (rep *report) printTable(w io.Writer) {
	header := []string{"workload", "metric", "better"}
	header = append(header, rep.Targets...)
	for _, o := range ratioPairs {
		header = append(header, "imapguard/"+o)
	}
	lines := [][]string{header}
	for _, r := range rep.Rows {
		name := r.Metric
		if r.Unit != "" {
			name += " (" + r.Unit + ")"
		}
		line := []string{r.Workload, name, r.Better}
		if r.Skipped != "" {
			line = append(line, "skipped")
			for range len(rep.Targets) - 1 + len(ratioPairs) {
				line = append(line, "")
			}
			lines = append(lines, line)
			continue
		}
		for _, t := range rep.Targets {
			v := r.Values[t]
			switch {
			case v != nil && r.integer:
				line = append(line, fmt.Sprintf("%.0f", *v))
			case v != nil:
				line = append(line, fmtNum(*v))
			case rep.Skipped[t] != "" || r.SkippedTargets[t] != "":
				line = append(line, "skipped")
			default:
				line = append(line, "-")
			}
		}
		for _, o := range ratioPairs {
			if v := r.Ratios["imapguard/"+o]; v != nil {
				line = append(line, fmt.Sprintf("%.2fx", *v))
			} else {
				line = append(line, "-")
			}
		}
		lines = append(lines, line)
	}
	widths := make([]int, len(header))
	for _, l := range lines {
		for i, c := range l {
			widths[i] = max(widths[i], len([]rune(c)))
		}
	}
	prev := ""
	for n, l := range lines {
		if n > 0 && l[0] != prev {
			fmt.Fprintln(w)
		}
		prev = l[0]
		var b strings.Builder
		for i, c := range l {
			pad := widths[i] - len([]rune(c))
			if i >= 3 { // numbers: right-aligned
				b.WriteString(strings.Repeat(" ", pad))
				b.WriteString(c)
			} else {
				b.WriteString(c)
				b.WriteString(strings.Repeat(" ", pad))
			}
			if i < len(l)-1 {
				b.WriteString("  ")
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Medians over runs. imapguard/X divides imapguard's figure by X's: where better is \"higher\" a ratio below 1.00x means")
	fmt.Fprintln(w, "imapguard does worse; where it is \"lower\", above 1.00x does. \"-\" means not measured or not applicable.")
	rep.printGoals(w)
	fmt.Fprintln(w)
	fmt.Fprintf(w, "load average at start %s, at end %s\n", rep.Environment.LoadAvg, rep.Environment.LoadAvgEnd)
	for _, t := range rep.Targets {
		if why := rep.Skipped[t]; why != "" {
			fmt.Fprintf(w, "skipped target %s:\n    %s\n", t, strings.ReplaceAll(trimLines(why, 8), "\n", "\n    "))
		}
		if why := rep.SkippedTLS[t]; why != "" {
			fmt.Fprintf(w, "skipped target %s in the TLS workloads:\n    %s\n", t, strings.ReplaceAll(trimLines(why, 8), "\n", "\n    "))
		}
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}

func (rep *report) writeJSON(path string) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
