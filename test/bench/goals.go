package main

import (
	"fmt"
	"io"
	"math"
	"strings"
)

// goalSpec is one of issue 14's targets for imapguard, as a bound on a
// row of the table: the imapguard column's figure against factor × the
// best figure among peers in the same run (the lowest where lower is
// better, the highest where higher is), or against a fixed reference
// ratio to HAProxy (the TLS rows: "no worse than today").
type goalSpec struct {
	name     string
	workload string // a workload, or "held" for every held count
	metric   string
	peers    []string
	factor   float64
	// refRatio, when set, is the ratio imapguard/haproxy of the
	// reference run the row must not be worse than (factor and peers
	// are then unused).
	refRatio float64
}

// goalSpecs are the targets of issue 14 ("As cheap per operation as
// nginx and HAProxy"), item 3.
var goalSpecs = []goalSpec{
	{name: "NOOP: CPU per round trip ≤ 1.0 × the better of HAProxy and nginx", workload: "noop", metric: "proxy CPU per round trip", peers: []string{"haproxy", "nginx"}, factor: 1},
	{name: "NOOP: round trips/s ≥ both", workload: "noop", metric: "round trips", peers: []string{"haproxy", "nginx"}, factor: 1},
	{name: "login: CPU per login ≤ 1.0 × HAProxy", workload: "login", metric: "proxy CPU per login", peers: []string{"haproxy"}, factor: 1},
	{name: "login: logins/s ≥ HAProxy", workload: "login", metric: "logins", peers: []string{"haproxy"}, factor: 1},
	{name: "login: p99 ≤ 1.1 × HAProxy", workload: "login", metric: "latency p99", peers: []string{"haproxy"}, factor: 1.1},
	{name: "memory per idle session ≤ HAProxy", workload: "held", metric: "resident memory per session", peers: []string{"haproxy"}, factor: 1},
	{name: "FETCH: CPU per GB ≤ 0.85 × HAProxy", workload: "fetch", metric: "proxy CPU per GB relayed", peers: []string{"haproxy"}, factor: 0.85},
	{name: "FETCH: throughput ≥ 1.0 × HAProxy", workload: "fetch", metric: "throughput", peers: []string{"haproxy"}, factor: 1},
	// "TLS rows no worse than today": today is the TLS run of
	// test/bench/README.md (section TLS), imapguard/haproxy there.
	{name: "fetch-tls: throughput, no worse than today", workload: "fetch-tls", metric: "throughput", refRatio: 1.15},
	{name: "fetch-tls: CPU per GB, no worse than today", workload: "fetch-tls", metric: "proxy CPU per GB relayed", refRatio: 0.79},
	{name: "noop-tls: round trips/s, no worse than today", workload: "noop-tls", metric: "round trips", refRatio: 0.96},
	{name: "noop-tls: CPU per round trip, no worse than today", workload: "noop-tls", metric: "proxy CPU per round trip", refRatio: 1.02},
}

// goalColumns are the columns the targets are computed for.
var goalColumns = []string{"imapguard", "imapguard-goroutines"}

// goal is one target computed from the table for one column.
type goal struct {
	Target   string   `json:"target"`
	Workload string   `json:"workload"`
	Column   string   `json:"column"`
	Unit     string   `json:"unit,omitempty"`
	Value    *float64 `json:"value"`
	// Bound is the figure Value must not exceed (lower is better) or
	// fall below (higher is better); Against says where it comes from.
	Bound   *float64 `json:"bound"`
	Against string   `json:"against"`
	Met     *bool    `json:"met"`
	// Result: "met (12% to spare)", "missed by 45%", or why it was not
	// computed.
	Result string `json:"result"`
}

// goals computes every target for every imapguard column of the table.
func (rep *report) goals() []goal {
	var out []goal
	has := map[string]bool{}
	for _, t := range rep.Targets {
		has[t] = true
	}
	for _, spec := range goalSpecs {
		for i := range rep.Rows {
			r := &rep.Rows[i]
			if r.Metric != spec.metric || !(r.Workload == spec.workload || spec.workload == "held" && r.Sessions > 0 && r.Workload != "held-tls") {
				continue
			}
			for _, col := range goalColumns {
				if has[col] {
					out = append(out, computeGoal(spec, r, col))
				}
			}
		}
	}
	return out
}

func computeGoal(spec goalSpec, r *row, col string) goal {
	g := goal{Target: spec.name, Workload: r.Workload, Column: col, Unit: r.Unit, Value: r.Values[col]}
	if r.Workload != spec.workload {
		g.Target = fmt.Sprintf("%s, %d sessions", spec.name, r.Sessions)
	}
	lower := r.Better == "lower"
	if spec.refRatio != 0 {
		hp := r.Values["haproxy"]
		if hp != nil {
			g.Bound = ptr(*hp * spec.refRatio)
			g.Against = fmt.Sprintf("%.2f × haproxy %s, today's ratio", spec.refRatio, fmtNum(*hp))
		}
	} else {
		var best *float64
		var who []string
		for _, p := range spec.peers {
			v := r.Values[p]
			if v == nil {
				continue
			}
			who = append(who, fmt.Sprintf("%s %s", p, fmtNum(*v)))
			if best == nil || lower && *v < *best || !lower && *v > *best {
				best = v
			}
		}
		if best != nil {
			g.Bound = ptr(*best * spec.factor)
			g.Against = strings.Join(who, ", ")
			if spec.factor != 1 {
				g.Against = fmt.Sprintf("%.2f × %s", spec.factor, g.Against)
			}
		}
	}
	switch {
	case g.Value == nil:
		g.Result = "not measured: no figure for " + col
	case g.Bound == nil && spec.refRatio != 0:
		g.Result = "not measured: no figure for haproxy"
	case g.Bound == nil:
		g.Result = "not measured: no figure for " + strings.Join(spec.peers, " or ")
	case *g.Bound == 0 || math.IsNaN(*g.Bound):
		g.Result = "not computed: the bound is 0"
	default:
		v, b := *g.Value, *g.Bound
		met := lower && v <= b || !lower && v >= b
		g.Met = &met
		// How far from the bound, as a share of it.
		off := math.Abs(v/b-1) * 100
		if met {
			g.Result = fmt.Sprintf("met (%.0f%% to spare)", off)
		} else {
			g.Result = fmt.Sprintf("MISSED by %.0f%%", off)
		}
	}
	return g
}

// printGoals prints the targets block after the table.
func (rep *report) printGoals(w io.Writer) {
	if len(rep.Goals) == 0 {
		return
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "targets (issue 14), computed from the table above: each imapguard column against the bound")
	lines := [][]string{{"target", "column", "value", "bound", "from", "result"}}
	for _, g := range rep.Goals {
		val, bound := "-", "-"
		if g.Value != nil {
			val = fmtNum(*g.Value)
		}
		if g.Bound != nil {
			bound = fmtNum(*g.Bound)
			if g.Unit != "" && g.Unit != "/s" {
				bound += " " + g.Unit
			}
			if r := g.Value; r != nil && g.Unit != "" && g.Unit != "/s" {
				val += " " + g.Unit
			}
		}
		lines = append(lines, []string{g.Target, g.Column, val, bound, g.Against, g.Result})
	}
	widths := make([]int, len(lines[0]))
	for _, l := range lines {
		for i, c := range l {
			widths[i] = max(widths[i], len([]rune(c)))
		}
	}
	for _, l := range lines {
		var b strings.Builder
		for i, c := range l {
			pad := widths[i] - len([]rune(c))
			if i == 2 || i == 3 {
				b.WriteString(strings.Repeat(" ", pad) + c)
			} else {
				b.WriteString(c + strings.Repeat(" ", pad))
			}
			if i < len(l)-1 {
				b.WriteString("  ")
			}
		}
		fmt.Fprintln(w, "  "+strings.TrimRight(b.String(), " "))
	}
	fmt.Fprintln(w, "\"missed by N%\" is how far the figure is past its bound, as a share of the bound. The peers are this run's medians;")
	fmt.Fprintln(w, "the TLS rows' bound is today's imapguard/haproxy ratio (test/bench/README.md, TLS) times this run's HAProxy figure.")
}
