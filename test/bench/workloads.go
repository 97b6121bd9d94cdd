package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/imapguard/imapguard/cmd/imapload/loadresult"
)

// workload is one row group of the table.
type workload struct {
	name     string
	load     string // imapload -workload
	upstream upstream
	mailbox  string
	tls      bool
	// sessions is the count held (held, held-tls: set per count by
	// heldWorkloads).
	sessions int
	// metricsOf names the workload whose rows this one has, when its
	// name is a label of its own (held-5k, held-9k: held's rows).
	metricsOf string
}

// metricSet is the workload whose metrics are w's rows.
func (w workload) metricSet() string {
	if w.metricsOf != "" {
		return w.metricsOf
	}
	return w.name
}

// expand returns the workloads measured for the selected name: held and
// held-tls once per held count, any other once.
func (h *harness) expand(name string) []workload {
	w := mustWorkload(name)
	if w.load == "held" {
		return h.heldWorkloads(w)
	}
	return []workload{w}
}

var workloads = []workload{
	{name: "fetch", load: "fetch", upstream: upDovecot, mailbox: bigMailbox},
	{name: "noop", load: "noop", upstream: upDovecot},
	{name: "fetchall", load: "fetchall", upstream: upDovecot, mailbox: "INBOX"},
	{name: "login", load: "login", upstream: upImapd},
	{name: "held", load: "held", upstream: upDovecot},
	{name: "fetch-tls", load: "fetch", upstream: upDovecot, mailbox: bigMailbox, tls: true},
	{name: "noop-tls", load: "noop", upstream: upDovecot, tls: true},
	{name: "held-tls", load: "held", upstream: upDovecot, tls: true},
}

func workloadNames() []string {
	var out []string
	for _, w := range workloads {
		out = append(out, w.name)
	}
	return out
}

func workloadByName(name string) (workload, bool) {
	for _, w := range workloads {
		if w.name == name {
			return w, true
		}
	}
	return workload{}, false
}

// concurrencyOf returns the connections imapload opens for w: its own
// -concurrency entry, else (fetch-tls, noop-tls) that of the plaintext
// workload it repeats over TLS.
func (h *harness) concurrencyOf(w workload) int {
	if n, ok := h.opts.concurrency[w.name]; ok {
		return n
	}
	return h.opts.concurrency[w.load]
}

func mustWorkload(name string) workload {
	w, ok := workloadByName(name)
	if !ok {
		panic("unknown workload " + name)
	}
	return w
}

// loadResult is imapload's JSON result, with what the harness adds.
type loadResult struct {
	loadresult.Result

	// LoadgenCPUSeconds is imapload's own CPU time (user + system), to
	// tell whether the load generator was the bottleneck.
	LoadgenCPUSeconds float64 `json:"loadgen_cpu_seconds"`
}

// runResult is one measurement: one workload against one target.
type runResult struct {
	Run      int    `json:"run"`
	Workload string `json:"workload"`
	Target   string `json:"target"`
	// Sessions and Upstream: held, held-tls.
	Sessions int    `json:"sessions,omitempty"`
	Upstream string `json:"upstream,omitempty"`
	// Profile is the CPU profile of imapguard taken during the run
	// (-profile), or why it could not be.
	Profile string      `json:"profile,omitempty"`
	Load    *loadResult `json:"imapload,omitempty"`
	Error   string      `json:"error,omitempty"`

	// The proxy's processes while the workload ran.
	ProxyCPUSeconds *float64 `json:"proxy_cpu_seconds,omitempty"`
	ProxyCPUPercent *float64 `json:"proxy_cpu_percent,omitempty"`

	// held: the proxy's resident memory (sum of VmRSS of its processes)
	// freshly started, with every session open, and at the end of the
	// idle window; its CPU over the idle window.
	RSSBaseKiB       *int64   `json:"rss_base_kib,omitempty"`
	RSSHeldKiB       *int64   `json:"rss_held_kib,omitempty"`
	RSSEndKiB        *int64   `json:"rss_end_kib,omitempty"`
	RSSPerSessionKiB *float64 `json:"rss_per_session_kib,omitempty"`
	IdleCPUPercent   *float64 `json:"idle_cpu_percent,omitempty"`
	ProxyProcs       int      `json:"proxy_processes,omitempty"`
	// held: Dovecot with every session open.
	DovecotProcs     int   `json:"dovecot_processes,omitempty"`
	DovecotBaseProcs int   `json:"dovecot_processes_before,omitempty"`
	DovecotPssKiB    int64 `json:"dovecot_pss_kib,omitempty"`
	DovecotRSSKiB    int64 `json:"dovecot_rss_kib,omitempty"`
}

func ptr[T any](v T) *T { return &v }

// loadArgs builds imapload's command line for w against addr.
func (h *harness) loadArgs(w workload, addr string, d time.Duration, conc int) []string {
	args := []string{
		"-addr", addr, "-user", benchUser, "-pass", benchPass,
		"-workload", w.load, "-duration", d.String(),
		"-concurrency", strconv.Itoa(conc), "-sources", h.opts.sources,
		"-timeout", "30s", "-json",
	}
	if w.mailbox != "" {
		args = append(args, "-mailbox", w.mailbox)
	}
	if w.load == "fetch" && h.uid != 0 {
		args = append(args, "-uid", strconv.FormatUint(h.uid, 10))
	}
	if w.load == "held" {
		args = append(args, "-sessions", strconv.Itoa(w.sessions), "-open-concurrency", strconv.Itoa(h.opts.openConcurrency))
	}
	if w.tls {
		args = append(args, "-tls")
	}
	return args
}

// runLoad runs imapload and returns its result. For held, onReady runs
// when every session is open (imapload waits meanwhile); when it returns,
// imapload wakes the sessions and logs them out.
func (h *harness) runLoad(args []string, onReady func(opened int)) (*loadResult, error) {
	limit := 2 * time.Minute
	for i, a := range args {
		if a == "-duration" && i+1 < len(args) {
			if d, err := time.ParseDuration(args[i+1]); err == nil {
				limit += d
			}
		}
	}
	if onReady != nil {
		limit = 20*time.Minute + h.opts.idleWindow
	}
	ctx, cancel := context.WithTimeout(h.ctx, limit)
	defer cancel()

	cmd := exec.CommandContext(ctx, h.bins.imapload, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &limitedWriter{w: &stderr, n: 64 << 10}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stdin io.WriteCloser
	if onReady != nil {
		if stdin, err = cmd.StdinPipe(); err != nil {
			return nil, err
		}
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	var last string
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if n, ok := strings.CutPrefix(line, "READY "); ok && onReady != nil {
			opened, _ := strconv.Atoi(strings.TrimSpace(n))
			onReady(opened)
			_, _ = io.WriteString(stdin, "\n")
			stdin.Close()
			continue
		}
		if strings.TrimSpace(line) != "" {
			last = line
		}
	}
	if stdin != nil {
		stdin.Close()
	}
	werr := cmd.Wait()
	if ctx.Err() != nil {
		return nil, fmt.Errorf("imapload stopped (%v): %s", context.Cause(ctx), lastLines(stderr.String(), 5))
	}
	if werr != nil {
		return nil, fmt.Errorf("imapload %s: %v: %s", strings.Join(redact(args), " "), werr, lastLines(stderr.String(), 5))
	}
	var res loadResult
	if err := json.Unmarshal([]byte(last), &res); err != nil {
		return nil, fmt.Errorf("imapload printed no result (%v): %q", err, last)
	}
	if ps := cmd.ProcessState; ps != nil {
		res.LoadgenCPUSeconds = (ps.UserTime() + ps.SystemTime()).Seconds()
	}
	return &res, nil
}

// redact hides the password in a logged command line.
func redact(args []string) []string {
	out := append([]string(nil), args...)
	for i := range out {
		if out[i] == "-pass" && i+1 < len(out) {
			out[i+1] = "***"
		}
	}
	return out
}

type limitedWriter struct {
	w io.Writer
	n int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.n <= 0 {
		return len(p), nil
	}
	k := min(len(p), l.n)
	l.n -= k
	_, err := l.w.Write(p[:k])
	return len(p), err
}

// measure runs every selected workload against every target, -runs
// times. Within a run the order of the targets rotates, so that no
// target always goes first after a pause or last after a heavy one.
func (h *harness) measure() {
	for run := 1; run <= h.opts.runs; run++ {
		for _, name := range h.opts.workloads {
			for _, w := range h.expand(name) {
				if w.tls {
					if why := h.tlsUnavailable(); why != "" {
						if run == 1 {
							h.note("%s is skipped: %s", w.name, why)
						}
						continue
					}
				}
				n := len(h.targets)
				for i := range n {
					if h.ctx.Err() != nil {
						return
					}
					t := h.targets[(i+run-1)%n]
					if t.skip != "" || (w.tls && t.tlsSkip != "") || (t.only != "" && w.name != t.only) {
						continue
					}
					r := h.measureOne(run, w, t)
					h.results = append(h.results, r)
					h.logf("run %d/%d %-9s %-20s %s", run, h.opts.runs, w.name, t.name, summary(r))
					sleepCtx(h.ctx, h.opts.pause)
				}
			}
		}
	}
}

func (h *harness) measureOne(run int, w workload, t *target) runResult {
	r := runResult{Run: run, Workload: w.name, Target: t.name}
	if w.load == "held" {
		r.Sessions, r.Upstream = w.sessions, string(w.upstream)
	}
	if h.upstreamAddr(w.upstream) == "" {
		r.Error = fmt.Sprintf("skipped: %s is not running", w.upstream)
		return r
	}
	addr, err := h.targetAddr(t, w)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	if w.load == "held" {
		h.measureHeld(&r, w, t, addr)
		return r
	}
	var pids []int
	if t.isProxy() {
		pids = t.proxyPids(w)
	}
	profiled := h.startProfile(run, w, t)
	before := sample(pids, false)
	res, err := h.runLoad(h.loadArgs(w, addr, h.opts.duration, h.concurrencyOf(w)), nil)
	after := sample(pids, false)
	r.Profile = profiled()
	if err != nil {
		r.Error = err.Error()
		return r
	}
	r.Load = res
	if t.isProxy() {
		r.ProxyCPUSeconds = ptr(after.cpuSeconds() - before.cpuSeconds())
		r.ProxyCPUPercent = ptr(cpuPercent(before, after))
	}
	return r
}

// measureHeld opens -sessions sessions through t and measures what the
// proxy holds for them. A proxy is restarted first, so that its memory
// baseline is a fresh process (allocators keep freed memory, which would
// make every run after the first look free). For held-tls the process
// restarted and measured is the one that serves imaps: imapguard's
// separate imaps instance (imapguard-tls), HAProxy's or nginx's only
// process.
func (h *harness) measureHeld(r *runResult, w workload, t *target, addr string) {
	dovecotPid := 0
	if h.dovecot != nil && w.upstream == upDovecot {
		dovecotPid = h.dovecot.pid
	}
	var pids func() []int
	if t.isProxy() {
		first := mustWorkload("noop")
		var err error
		if w.tls {
			first = mustWorkload("noop-tls")
			if t.tlsRestart == nil {
				err = errors.New("no way to restart its imaps listener")
			} else if err = t.tlsRestart(); err == nil {
				addr, err = h.tlsTarget(t)
			}
		} else if err = t.restart(w.upstream); err == nil {
			addr = t.addrs[w.upstream]
		}
		if err != nil {
			r.Error = fmt.Sprintf("restarting %s: %v", t.name, err)
			if w.tls {
				t.tlsSkip = r.Error
			} else {
				t.skip = r.Error
			}
			return
		}
		// One session first: whatever a proxy sets up on its first
		// connection is not a per-session cost.
		if _, err := h.runLoad(h.loadArgs(first, addr, 300*time.Millisecond, 1), nil); err != nil {
			r.Error = fmt.Sprintf("first session after restart: %v", err)
			return
		}
		sleepCtx(h.ctx, time.Second)
		pids = func() []int { return t.proxyPids(w) }
	} else {
		pids = func() []int { return nil }
	}
	base := sample(pids(), false)
	var dovBase usage
	if dovecotPid != 0 {
		dovBase = sampleTree(dovecotPid, false)
	}
	r.DovecotBaseProcs = dovBase.procs

	var held, idle0, idle1 usage
	var dov usage
	res, err := h.runLoad(h.loadArgs(w, addr, h.opts.duration, h.opts.openConcurrency), func(opened int) {
		h.logf("%s: %d sessions open through %s; sampling", w.name, opened, t.name)
		sleepCtx(h.ctx, h.opts.settle)
		held = sample(pids(), false)
		idle0 = held
		sleepCtx(h.ctx, h.opts.idleWindow)
		idle1 = sample(pids(), false)
		// Dovecot last: reading thousands of smaps costs CPU.
		if dovecotPid != 0 {
			dov = sampleTree(dovecotPid, true)
		}
	})
	if err != nil {
		r.Error = err.Error()
	}
	r.Load = res
	if res != nil {
		r.DovecotProcs, r.DovecotPssKiB, r.DovecotRSSKiB = dov.procs, dov.pssKiB, dov.rssKiB
		if t.isProxy() && held.procs > 0 {
			r.ProxyProcs = held.procs
			r.RSSBaseKiB = ptr(base.rssKiB)
			r.RSSHeldKiB = ptr(held.rssKiB)
			r.RSSEndKiB = ptr(idle1.rssKiB)
			if res.SessionsOpened > 0 {
				r.RSSPerSessionKiB = ptr(float64(idle1.rssKiB-base.rssKiB) / float64(res.SessionsOpened))
			}
			r.IdleCPUPercent = ptr(cpuPercent(idle0, idle1))
		}
	}
	if dovecotPid != 0 {
		h.waitDovecotDrained(dovBase.procs)
	}
}

// waitDovecotDrained waits (at most a minute) until the imap processes
// of logged-out sessions are gone, so that their exit does not load the
// next measurement.
func (h *harness) waitDovecotDrained(baseline int) {
	if h.dovecot == nil {
		return
	}
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) && h.ctx.Err() == nil {
		if n := len(tree(h.dovecot.pid)); n <= baseline+10 {
			return
		}
		sleepCtx(h.ctx, 200*time.Millisecond)
	}
	h.logf("Dovecot still has %d processes a minute after the sessions ended", len(tree(h.dovecot.pid)))
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// summary is the one-line progress report of a measurement.
func summary(r runResult) string {
	if r.Error != "" && r.Load == nil {
		return "ERROR " + firstLine(r.Error)
	}
	l := r.Load
	var s string
	kind := r.Workload
	if r.Sessions > 0 {
		kind = "held" // held-5k, held-9k ...
	}
	switch kind {
	case "fetch", "fetch-tls":
		s = fmt.Sprintf("%.1f MB/s, p50 %.1f ms", l.MBPerSec, l.LatencyP50Ms)
	case "noop", "noop-tls":
		s = fmt.Sprintf("%.0f round trips/s, p50 %.0f µs, p99 %.0f µs", l.OpsPerSec, l.LatencyP50Ms*1000, l.LatencyP99Ms*1000)
	case "fetchall":
		s = fmt.Sprintf("%.1f FETCH 1:*/s, %.0f messages/s, p50 %.1f ms", l.OpsPerSec, l.MessagesPerSec, l.LatencyP50Ms)
	case "login":
		s = fmt.Sprintf("%.0f logins/s, p50 %.2f ms, p99 %.2f ms", l.OpsPerSec, l.LatencyP50Ms, l.LatencyP99Ms)
	case "held", "held-tls":
		s = fmt.Sprintf("%d sessions (%.0f/s) in front of %s", l.SessionsOpened, l.OpenPerSec, r.Upstream)
		if r.RSSPerSessionKiB != nil {
			s += fmt.Sprintf(", %.1f KiB/session, idle CPU %.2f%%", *r.RSSPerSessionKiB, *r.IdleCPUPercent)
		}
		if r.DovecotProcs > 0 {
			s += fmt.Sprintf(", Dovecot %d processes", r.DovecotProcs)
		}
	}
	if r.ProxyCPUPercent != nil {
		s += fmt.Sprintf(", proxy CPU %.0f%%", *r.ProxyCPUPercent)
	}
	if l.Errors > 0 {
		s += fmt.Sprintf(", %d ERRORS (%s)", l.Errors, l.FirstError)
	}
	if r.Error != "" {
		s += ", ERROR " + firstLine(r.Error)
	}
	return s
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// isSkip reports whether an error only says that something cannot run.
func isSkip(msg string) bool {
	return strings.HasPrefix(msg, "skipped") || strings.Contains(msg, errSkipped.Error()+":")
}
