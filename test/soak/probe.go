package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// What the suite reads of a running imapguard, from outside: /proc, the
// Prometheus endpoint, the admin API and net/http/pprof.

// procStats is a process's resident memory and open descriptors.
type procStats struct {
	RSS     int64 `json:"rss_bytes"`
	FDs     int   `json:"fds"`
	Threads int   `json:"threads"`
}

// readProc reads /proc/PID/status and /proc/PID/fd.
func readProc(pid int) (procStats, error) {
	var st procStats
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return st, err
	}
	st.RSS, st.Threads = parseStatus(string(b))
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return st, err
	}
	st.FDs = len(ents)
	return st, nil
}

// parseStatus returns VmRSS in bytes and Threads from /proc/PID/status.
func parseStatus(s string) (rss int64, threads int) {
	for line := range strings.Lines(s) {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "VmRSS:":
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			rss = kb * 1024
		case "Threads:":
			threads, _ = strconv.Atoi(f[1])
		}
	}
	return rss, threads
}

// series is one sample of the Prometheus text format.
type series struct {
	name   string
	labels map[string]string
	value  float64
}

// metricSet is a parsed exposition.
type metricSet []series

// parseMetrics parses the Prometheus text exposition format (version
// 0.0.4): comments and blank lines are skipped; each other line is
// name{label="value",...} value [timestamp].
func parseMetrics(text string) (metricSet, error) {
	var out metricSet
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		s, err := parseSeries(line)
		if err != nil {
			return nil, fmt.Errorf("metrics line %d: %w: %q", n+1, err, line)
		}
		out = append(out, s)
	}
	return out, nil
}

func parseSeries(line string) (series, error) {
	s := series{labels: map[string]string{}}
	i := strings.IndexAny(line, "{ ")
	if i <= 0 {
		return s, errors.New("no value")
	}
	s.name = line[:i]
	rest := line[i:]
	if rest[0] == '{' {
		rest = rest[1:]
		for {
			rest = strings.TrimLeft(rest, " ,")
			if strings.HasPrefix(rest, "}") {
				rest = rest[1:]
				break
			}
			eq := strings.IndexByte(rest, '=')
			if eq <= 0 || len(rest) < eq+2 || rest[eq+1] != '"' {
				return s, errors.New("bad label")
			}
			key := strings.TrimSpace(rest[:eq])
			rest = rest[eq+2:]
			var val strings.Builder
			closed := false
			for j := 0; j < len(rest); j++ {
				switch ch := rest[j]; {
				case ch == '\\' && j+1 < len(rest):
					j++
					switch rest[j] {
					case 'n':
						val.WriteByte('\n')
					default:
						val.WriteByte(rest[j])
					}
				case ch == '"':
					rest = rest[j+1:]
					closed = true
				default:
					val.WriteByte(ch)
				}
				if closed {
					break
				}
			}
			if !closed {
				return s, errors.New("unterminated label value")
			}
			s.labels[key] = val.String()
		}
	}
	f := strings.Fields(rest)
	if len(f) == 0 {
		return s, errors.New("no value")
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return s, err
	}
	s.value = v
	return s, nil
}

// sum adds the values of the series named name whose labels include
// match.
func (m metricSet) sum(name string, match map[string]string) float64 {
	var total float64
	for _, s := range m {
		if s.name != name {
			continue
		}
		ok := true
		for k, v := range match {
			if s.labels[k] != v {
				ok = false
				break
			}
		}
		if ok {
			total += s.value
		}
	}
	return total
}

// byLabel returns the values of the series named name, summed by the
// value of label.
func (m metricSet) byLabel(name, label string) map[string]float64 {
	out := map[string]float64{}
	for _, s := range m {
		if s.name == name {
			out[s.labels[label]] += s.value
		}
	}
	return out
}

// Metric names the suite reads.
const (
	mOpen     = "imapguard_connections_open"
	mClosed   = "imapguard_connections_closed_total"
	mRefused  = "imapguard_connections_refused_total"
	mAccepted = "imapguard_connections_accepted_total"
	mAuth     = "imapguard_auth_attempts_total"
	mHeap     = "go_memstats_heap_inuse_bytes"
)

// counts is what the proxy says is open.
type counts struct {
	Open          int `json:"open"`
	Authenticated int `json:"authenticated"`
	Preauth       int `json:"preauth"`
}

func (m metricSet) openCounts() counts {
	a := int(m.sum(mOpen, map[string]string{"state": "authenticated"}))
	p := int(m.sum(mOpen, map[string]string{"state": "preauth"}))
	return counts{Open: a + p, Authenticated: a, Preauth: p}
}

// probe reads one imapguard process.
type probe struct {
	pid        int
	metricsURL string // http://host:port/metrics
	adminURL   string // http://host:port
	pprofURL   string // http://host:port
	hc         *http.Client
}

func newProbe(pid int, metricsAddr, adminAddr, pprofAddr string) *probe {
	return &probe{
		pid:        pid,
		metricsURL: "http://" + metricsAddr + "/metrics",
		adminURL:   "http://" + adminAddr,
		pprofURL:   "http://" + pprofAddr,
		// No keep-alive: an idle HTTP connection would be a descriptor
		// and a goroutine of the proxy's that the suite itself left.
		hc: &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}},
	}
}

func (p *probe) get(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := p.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(b)))
	}
	return b, nil
}

func (p *probe) metrics(ctx context.Context) (metricSet, error) {
	b, err := p.get(ctx, p.metricsURL)
	if err != nil {
		return nil, err
	}
	return parseMetrics(string(b))
}

// goroutineProfile returns pprof's goroutine profile in its debug=1 text
// form (stacks grouped, with counts).
func (p *probe) goroutineProfile(ctx context.Context) (string, error) {
	b, err := p.get(ctx, p.pprofURL+"/debug/pprof/goroutine?debug=1")
	return string(b), err
}

func (p *probe) goroutines(ctx context.Context) (int, error) {
	prof, err := p.goroutineProfile(ctx)
	if err != nil {
		return 0, err
	}
	return goroutineTotal(prof)
}

// goroutineTotal reads "goroutine profile: total N".
func goroutineTotal(prof string) (int, error) {
	first, _, _ := strings.Cut(prof, "\n")
	n, ok := strings.CutPrefix(first, "goroutine profile: total ")
	if !ok {
		return 0, fmt.Errorf("not a goroutine profile: %q", first)
	}
	return strconv.Atoi(strings.TrimSpace(n))
}

// goroutineGroups parses a debug=1 goroutine profile into stack
// signatures (the functions, innermost first, joined by " < ") and their
// counts.
func goroutineGroups(prof string) map[string]int {
	out := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(prof))
	sc.Buffer(make([]byte, 1<<16), 1<<22)
	count := 0
	var funcs []string
	flush := func() {
		if count > 0 {
			out[strings.Join(funcs, " < ")] += count
		}
		count, funcs = 0, nil
	}
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.Contains(line, " @ 0x"):
			flush()
			n, _, _ := strings.Cut(line, " @")
			count, _ = strconv.Atoi(n)
		case strings.HasPrefix(line, "#\t"):
			f := strings.Fields(line)
			if len(f) >= 3 {
				funcs = append(funcs, f[2])
			}
		}
	}
	flush()
	return out
}

// extraGoroutines lists the stacks of after that outnumber those of
// before, most first, at most limit of them.
func extraGoroutines(before, after map[string]int, limit int) []string {
	type extra struct {
		stack string
		n     int
	}
	var ex []extra
	for s, n := range after {
		if d := n - before[s]; d > 0 {
			ex = append(ex, extra{s, d})
		}
	}
	sort.Slice(ex, func(i, j int) bool { return ex[i].n > ex[j].n || ex[i].n == ex[j].n && ex[i].stack < ex[j].stack })
	var out []string
	for i, e := range ex {
		if i == limit {
			break
		}
		out = append(out, fmt.Sprintf("%d x %s", e.n, e.stack))
	}
	return out
}

// sessionInfo is one entry of the admin API's /sessions.
type sessionInfo struct {
	ID       uint64 `json:"id"`
	Client   string `json:"client"`
	Listener string `json:"listener"`
	User     string `json:"user"`
	State    string `json:"state"`
	TLS      bool   `json:"tls"`
}

func (p *probe) sessions(ctx context.Context) ([]sessionInfo, error) {
	b, err := p.get(ctx, p.adminURL+"/sessions")
	if err != nil {
		return nil, err
	}
	var v struct {
		Count    int           `json:"count"`
		Sessions []sessionInfo `json:"sessions"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("/sessions: %w", err)
	}
	if v.Count != len(v.Sessions) {
		return nil, fmt.Errorf("/sessions: count %d but %d entries", v.Count, len(v.Sessions))
	}
	return v.Sessions, nil
}

// sessionCounts counts /sessions entries as counts.
func sessionCounts(ss []sessionInfo) counts {
	var c counts
	for _, s := range ss {
		c.Open++
		if s.State == "authenticated" {
			c.Authenticated++
		} else {
			c.Preauth++
		}
	}
	return c
}

// setting returns the value of one setting from the admin API's /settings.
func (p *probe) setting(ctx context.Context, name string) (string, error) {
	b, err := p.get(ctx, p.adminURL+"/settings")
	if err != nil {
		return "", err
	}
	var v struct {
		Settings []struct {
			Name  string `json:"name"`
			Value string `json:"value"`
		} `json:"settings"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return "", fmt.Errorf("/settings: %w", err)
	}
	for _, s := range v.Settings {
		if s.Name == name {
			return s.Value, nil
		}
	}
	return "", fmt.Errorf("/settings has no %s", name)
}

// snapshot is everything read of the proxy at one moment.
type snapshot struct {
	At         time.Time `json:"at"`
	Proc       procStats `json:"proc"`
	Goroutines int       `json:"goroutines"`
	Metrics    counts    `json:"metrics_open"`
	Sessions   counts    `json:"admin_sessions"`
	HeapInuse  int64     `json:"heap_inuse_bytes"`
	m          metricSet
}

// snap reads all of it. The admin API's list is read only when withSessions.
func (p *probe) snap(ctx context.Context, withSessions bool) (snapshot, error) {
	s := snapshot{At: time.Now()}
	var errs []error
	var err error
	if s.Proc, err = readProc(p.pid); err != nil {
		errs = append(errs, err)
	}
	if s.Goroutines, err = p.goroutines(ctx); err != nil {
		errs = append(errs, err)
	}
	if s.m, err = p.metrics(ctx); err != nil {
		errs = append(errs, err)
	} else {
		s.Metrics = s.m.openCounts()
		s.HeapInuse = int64(s.m.sum(mHeap, nil))
	}
	if withSessions {
		ss, err := p.sessions(ctx)
		if err != nil {
			errs = append(errs, err)
		}
		s.Sessions = sessionCounts(ss)
	}
	return s, errors.Join(errs...)
}

// outcomes returns imapguard_connections_closed_total by outcome.
func (m metricSet) outcomes() map[string]float64 { return m.byLabel(mClosed, "outcome") }

// delta returns after - before for each key, leaving out zeros.
func delta(before, after map[string]float64) map[string]int {
	out := map[string]int{}
	for k, v := range after {
		if d := int(v - before[k]); d != 0 {
			out[k] = d
		}
	}
	for k, v := range before {
		if _, ok := after[k]; !ok && v != 0 {
			out[k] = -int(v)
		}
	}
	return out
}

// total sums the values of a delta.
func total(d map[string]int) int {
	n := 0
	for _, v := range d {
		n += v
	}
	return n
}

// formatCounts prints a delta as "a=1 b=2", keys sorted.
func formatCounts(d map[string]int) string {
	keys := make([]string, 0, len(d))
	for k := range d {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%d", k, d[k])
	}
	if b.Len() == 0 {
		return "(none)"
	}
	return b.String()
}
