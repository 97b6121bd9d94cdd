// Command bench is imapguard's benchmark harness: it measures what the
// proxy costs next to HAProxy (a TCP relay that parses nothing) and
// nginx's mail proxy (an IMAP-aware relay in C), side by side in one run
// on one machine, all in front of the same upstream.
//
//	go run ./test/bench [-duration 10s] [-runs 3] [-out bench.json]
//	                    [-workloads fetch,noop,fetchall,login,held,fetch-tls,noop-tls,held-tls]
//	                    [-targets direct,imapguard,imapguard-goroutines,imapguard-redis,haproxy,nginx]
//	                    [-sessions 5000,50000] [-profile DIR]
//
// imapguard runs its default configuration (relay = "auto"), logging at
// info and tracing to a local OTLP collector, as an operator runs it;
// imapguard-goroutines the same with relay = "goroutines".
// imapguard-redis (imapguard with [cluster] store = "redis") is measured
// in the login workload only. After the table it prints issue 14's
// targets computed from it.
//
// It installs Dovecot, HAProxy and nginx's mail module with apt-get when
// they are missing (or says what is missing and skips what needs them),
// builds bin/imapguard, bin/imapd and bin/imapload, starts every server
// on loopback ports with configurations it generates in a temporary
// directory, runs bin/imapload against each target for each workload
// -runs times, and prints one table of medians, with the ratios
// imapguard/HAProxy and imapguard/nginx; -out gets the same as JSON,
// with every run's raw figures. Everything it starts is stopped when it
// ends, also on Ctrl-C. All traffic stays on 127.0.0.0/8. See
// test/bench/README.md for how to read the table.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/imapguard/imapguard/test/dovecot"
)

type options struct {
	duration          time.Duration
	runs              int
	out               string
	workloads         []string
	targets           []string
	concurrency       map[string]int
	sessions          []int // held: the counts to hold, each measured
	heldUpstream      string
	telemetry         bool
	profile           string
	openConcurrency   int
	idleWindow        time.Duration
	settle            time.Duration
	pause             time.Duration
	sources           string
	install           bool
	keep              bool
	maxTime           time.Duration
	messages          int
	bigSize           int
	imapguardLogLevel string
}

// harness is one benchmark run: its servers, targets and results.
type harness struct {
	ctx  context.Context
	opts options
	root string // repository root
	dir  string // temporary directory for configurations, data and logs
	log  io.Writer

	bins      binaries
	procs     children
	cleanups  []func()
	dovecot   *service
	imapd     *service
	targets   []*target
	uid       uint64 // UID of the large message in Big
	fileLimit int    // RLIMIT_NOFILE of the harness and its children
	// fileLimitWhy says why the open-file limit is below what the
	// largest held count needs ("" when it is not).
	fileLimitWhy string

	// tls is the certificate of every TLS listener (nil when no TLS
	// workload is selected, or when it could not be made: tlsWhy).
	tls    *tlsFiles
	tlsWhy string

	// held is the counts of held sessions measured, and in front of
	// which upstream (planHeld).
	held []heldRun
	// collector receives imapguard's spans and scrapes its metrics (nil
	// with -imapguard-telemetry=false).
	collector *collector
	// checked is imapguard -check's settings of each imapguard column.
	checked map[string]map[string]string

	results []runResult
	notes   []string
}

func (h *harness) logf(format string, args ...any) {
	fmt.Fprintf(h.log, "bench: "+format+"\n", args...)
}

func (h *harness) note(format string, args ...any) {
	n := fmt.Sprintf(format, args...)
	h.notes = append(h.notes, n)
	h.logf("note: %s", n)
}

var defaultConcurrency = map[string]int{"fetch": 4, "noop": 16, "fetchall": 4, "login": 16}

// targetNames are the columns, in the table's order.
var targetNames = []string{"direct", "imapguard", "imapguard-goroutines", "imapguard-redis", "haproxy", "nginx"}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	opts, err := parseFlags(args)
	if err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, opts.maxTime)
	defer cancel()

	h := &harness{ctx: ctx, opts: opts, log: os.Stderr, checked: map[string]map[string]string{}}
	defer h.cleanup()
	if err := h.main(); err != nil {
		h.logf("%v", err)
		if ctx.Err() != nil {
			h.logf("stopped: %v", context.Cause(ctx))
		}
		return 1
	}
	return 0
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "how long each throughput workload runs against each target")
	fs.IntVar(&o.runs, "runs", 3, "runs of every workload against every target; the table shows the median")
	fs.StringVar(&o.out, "out", "bench.json", "write the table, the environment and every run's figures here as JSON (empty: don't)")
	workloads := fs.String("workloads", strings.Join(workloadNames(), ","), "comma-separated workloads")
	targets := fs.String("targets", strings.Join(targetNames, ","), "comma-separated targets")
	conc := fs.String("concurrency", "fetch=4,noop=16,fetchall=4,login=16", "connections per workload, name=N,...")
	sessions := fs.String("sessions", "5000,50000", "held: comma-separated counts of sessions to open and hold, each measured (held-tls: the first); a count the open-file limit cannot hold is cut to one it can")
	fs.StringVar(&o.heldUpstream, "held-upstream", "auto", "held: the upstream, dovecot or imapd; auto: Dovecot where it can hold the count (a process per session: pid_max, memory), else cmd/imapd")
	fs.BoolVar(&o.telemetry, "imapguard-telemetry", true, "imapguard traces every connection to a local OTLP collector and serves Prometheus metrics, scraped every 15s, as an operator runs it; false: telemetry off, its default")
	fs.StringVar(&o.profile, "profile", "", "write imapguard's CPU profile during the first run of noop and login, for each imapguard column, into this `directory`")
	fs.IntVar(&o.openConcurrency, "open-concurrency", 100, "held: sessions opened at once")
	fs.DurationVar(&o.idleWindow, "idle-window", 10*time.Second, "held: window over which the proxy's idle CPU is measured")
	fs.DurationVar(&o.settle, "settle", 2*time.Second, "held: wait after the last session is open before sampling")
	fs.DurationVar(&o.pause, "pause", time.Second, "pause between two measurements")
	fs.StringVar(&o.sources, "sources", "127.0.0.2-127.0.0.254", "loopback source addresses for imapload")
	fs.BoolVar(&o.install, "install", true, "apt-get install missing packages (needs root)")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary directory (configurations, logs, maildir)")
	fs.DurationVar(&o.maxTime, "max-time", 2*time.Hour, "stop everything after this long, whatever is left")
	fs.IntVar(&o.messages, "messages", 1000, "small messages in INBOX (fetchall)")
	fs.IntVar(&o.bigSize, "message-size", 10<<20, "size in bytes of the large message (fetch)")
	fs.StringVar(&o.imapguardLogLevel, "imapguard-log-level", "info", "imapguard's log.level: info is its default (a line per login and per connection); warn turns those off")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	for _, f := range splitList(*sessions) {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return o, fmt.Errorf("-sessions: want positive counts separated by commas, got %q", f)
		}
		o.sessions = append(o.sessions, n)
	}
	if o.runs < 1 || o.duration <= 0 || len(o.sessions) == 0 || o.openConcurrency < 1 || o.messages < 1 || o.bigSize < 1<<20 {
		return o, fmt.Errorf("-runs, -duration, -sessions, -open-concurrency and -messages must be positive, -message-size at least 1 MiB")
	}
	if !slices.Contains([]string{"auto", "dovecot", "imapd"}, o.heldUpstream) {
		return o, fmt.Errorf("-held-upstream: want auto, dovecot or imapd, got %q", o.heldUpstream)
	}
	if o.profile != "" {
		if err := os.MkdirAll(o.profile, 0o755); err != nil {
			return o, fmt.Errorf("-profile: %w", err)
		}
		if abs, err := filepath.Abs(o.profile); err == nil {
			o.profile = abs
		}
	}
	for _, w := range splitList(*workloads) {
		if _, ok := workloadByName(w); !ok {
			return o, fmt.Errorf("-workloads: unknown workload %q (known: %s)", w, strings.Join(workloadNames(), ", "))
		}
		o.workloads = append(o.workloads, w)
	}
	for _, t := range splitList(*targets) {
		if !slices.Contains(targetNames, t) {
			return o, fmt.Errorf("-targets: unknown target %q (known: %s)", t, strings.Join(targetNames, ", "))
		}
		o.targets = append(o.targets, t)
	}
	o.concurrency = map[string]int{}
	for k, v := range defaultConcurrency {
		o.concurrency[k] = v
	}
	for _, kv := range splitList(*conc) {
		k, v, ok := strings.Cut(kv, "=")
		n, err := strconv.Atoi(v)
		if !ok || err != nil || n < 1 {
			return o, fmt.Errorf("-concurrency: want name=N, got %q", kv)
		}
		if _, known := defaultConcurrency[k]; !known {
			return o, fmt.Errorf("-concurrency: unknown workload %q", k)
		}
		o.concurrency[k] = n
	}
	return o, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// cleanup stops every child and removes the temporary directory.
func (h *harness) cleanup() {
	h.procs.stopAll()
	for i := len(h.cleanups) - 1; i >= 0; i-- {
		h.cleanups[i]()
	}
	if h.dir == "" {
		return
	}
	if h.opts.keep {
		// Everything is stopped: nothing for a later run to clean up.
		_ = os.Remove(filepath.Join(h.dir, ownerFile))
		h.logf("kept %s", h.dir)
		return
	}
	for range 10 {
		if err := os.RemoveAll(h.dir); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	h.logf("could not remove %s", h.dir)
}

func (h *harness) main() error {
	var err error
	if h.root, err = findRepoRoot(); err != nil {
		return err
	}
	if over := overriddenEnv(); len(over) > 0 {
		h.note("%s in the harness's environment not passed to imapguard: its columns run as their configuration says", strings.Join(over, ", "))
	}
	for _, msg := range reapStale(filepath.Join(os.TempDir(), "imapguard-bench-*")) {
		h.logf("%s", msg)
	}
	h.ensurePackages()
	h.planHeld()
	if h.dir, err = os.MkdirTemp("", "imapguard-bench-"); err != nil {
		return err
	}
	// Dovecot's unprivileged processes must traverse it.
	if err := os.Chmod(h.dir, 0o755); err != nil {
		return err
	}
	if err := h.procs.recordChildren(h.dir); err != nil {
		return err
	}
	h.logf("building bin/imapguard, bin/imapd, bin/imapload")
	if err := h.build(); err != nil {
		return err
	}
	h.logf("working in %s", h.dir)
	h.setupTLS()
	if h.opts.telemetry && h.wantImapguard() {
		if err := h.startCollector(); err != nil {
			return err
		}
	}

	if err := h.startUpstreams(); err != nil {
		return err
	}
	h.startTargets()
	if err := h.warmUp(); err != nil {
		return err
	}
	h.smokeTest()
	h.smokeTestTLS()

	env := h.describe()
	if load := loadAverage1(); load > 0.5*float64(env.CPUs) {
		h.note("the machine was busy before the measurements began (load average %.1f on %d CPUs): other processes compete with the targets for the same cores", load, env.CPUs)
	}
	printEnvironment(os.Stdout, env, h)
	start := time.Now()
	h.measure()
	h.logf("measured in %v", time.Since(start).Round(time.Second))
	if err := h.ctx.Err(); err != nil {
		return fmt.Errorf("interrupted: %w", err)
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		env.LoadAvgEnd = strings.TrimSpace(string(b))
	}
	// imapguard first, gracefully: its exporters flush what they hold.
	h.procs.stopNamed("imapguard")
	h.countTelemetry(env.Telemetry)
	rep := h.report(env)
	rep.printTable(os.Stdout)
	if h.opts.out != "" {
		if err := rep.writeJSON(h.opts.out); err != nil {
			return err
		}
		abs, _ := filepath.Abs(h.opts.out)
		h.logf("wrote %s", abs)
	}
	return nil
}

// startUpstreams starts Dovecot (when a selected workload needs it and
// it is installed) and cmd/imapd (for the login rate).
func (h *harness) startUpstreams() error {
	need := map[upstream]bool{}
	for _, name := range h.opts.workloads {
		w, _ := workloadByName(name)
		need[w.upstream] = true
	}
	if need[upDovecot] {
		switch {
		case h.bins.dovecot == "":
			h.note("Dovecot is not installed: fetch, noop, fetchall, held, fetch-tls, noop-tls and held-tls are skipped")
		default:
			if v, err := dovecot.Version(h.bins.dovecot); err == nil && !strings.HasPrefix(v, "2.3.") {
				h.note("Dovecot %s: the harness generates a Dovecot 2.3 configuration; it may not start", v)
			}
			if err := h.startDovecot(); err != nil {
				return err
			}
			if h.dovecot.tlsAddr != "" {
				h.logf("dovecot on %s, imaps on %s", h.dovecot.addr, h.dovecot.tlsAddr)
			} else {
				h.logf("dovecot on %s", h.dovecot.addr)
			}
		}
	}
	for _, r := range h.held {
		if r.Upstream == upImapd && slices.Contains(h.opts.workloads, "held") {
			need[upImapd] = true
		}
	}
	if need[upImapd] {
		if err := h.startImapd(); err != nil {
			return err
		}
		h.logf("imapd on %s", h.imapd.addr)
	}
	return nil
}

func (h *harness) startTargets() {
	for _, name := range h.opts.targets {
		var t *target
		switch name {
		case "direct":
			t = h.directTarget()
		case "imapguard":
			t = h.startImapguard()
		case "imapguard-goroutines":
			t = h.startImapguardGoroutines()
		case "imapguard-redis":
			t = h.startImapguardRedis()
		case "haproxy":
			t = h.startHAProxy()
		case "nginx":
			t = h.startNginx()
		}
		if t.skip != "" {
			h.logf("%s is skipped: %s", name, trimLines(t.skip, 12))
		} else {
			var addrs []string
			for _, u := range h.upstreams() {
				addrs = append(addrs, fmt.Sprintf("%s→%s", t.addrs[u], u))
			}
			if t.tlsAddr != "" {
				addrs = append(addrs, fmt.Sprintf("%s (imaps)→%s", t.tlsAddr, upDovecot))
			} else if t.tlsSkip != "" {
				addrs = append(addrs, "no imaps: "+trimLines(t.tlsSkip, 12))
			}
			h.logf("%s on %s", name, strings.Join(addrs, ", "))
		}
		h.targets = append(h.targets, t)
	}
}

// warmUp reads the large message and the whole INBOX once straight from
// Dovecot, so that its indexes and caches are built before anything is
// measured, and learns the UID of the large message.
func (h *harness) warmUp() error {
	if h.dovecot == nil {
		return nil
	}
	h.logf("warming up Dovecot (indexes, caches)")
	for _, w := range []workload{mustWorkload("fetch"), mustWorkload("fetchall")} {
		args := h.loadArgs(w, h.dovecot.addr, time.Second, 1)
		res, err := h.runLoad(args, nil)
		if err != nil {
			return fmt.Errorf("warm-up %s against Dovecot: %w", w.name, err)
		}
		if res.Ops == 0 || res.Errors > 0 {
			return fmt.Errorf("warm-up %s against Dovecot: %d operations, %d errors (%s)", w.name, res.Ops, res.Errors, res.FirstError)
		}
		if w.name == "fetch" {
			h.uid = res.UID
		}
		if w.name == "fetchall" && res.Messages != int64(res.Ops)*int64(h.opts.messages) {
			return fmt.Errorf("warm-up fetchall: %d FETCH responses for %d commands, want %d each", res.Messages, res.Ops, h.opts.messages)
		}
	}
	return nil
}

// smokeTest logs in through every target once; a target that cannot is
// skipped, with the reason, instead of failing every measurement.
func (h *harness) smokeTest() {
	for _, t := range h.targets {
		if t.skip != "" {
			continue
		}
		for _, u := range h.upstreams() {
			w := mustWorkload("noop")
			if u == upImapd {
				w = mustWorkload("login")
			}
			res, err := h.runLoad(h.loadArgs(w, t.addrs[u], 300*time.Millisecond, 1), nil)
			if err == nil && (res.Ops == 0 || res.Errors > 0) {
				err = fmt.Errorf("%d operations, %d errors (%s)", res.Ops, res.Errors, res.FirstError)
			}
			if err != nil {
				t.skip = fmt.Sprintf("smoke test in front of %s failed: %v", u, err)
				h.note("%s is skipped: %s", t.name, t.skip)
				break
			}
		}
	}
}

func printEnvironment(w io.Writer, e environment, h *harness) {
	fmt.Fprintf(w, "imapguard benchmark, %s\n", e.Date)
	fmt.Fprintf(w, "machine   %s, %d CPUs, %d MiB, Linux %s, load average at start %s, open files %s\n", e.CPU, e.CPUs, e.MemoryMiB, e.Kernel, e.LoadAvg, e.FileLimit)
	if e.FileLimitWhy != "" {
		fmt.Fprintf(w, "          open files: %s\n", e.FileLimitWhy)
	}
	fmt.Fprintf(w, "software  %s; imapguard %s\n", e.Go, e.Commit)
	for _, k := range []string{"dovecot", "haproxy", "nginx"} {
		fmt.Fprintf(w, "          %s: %s\n", k, e.Versions[k])
	}
	var conc []string
	for _, k := range []string{"fetch", "noop", "fetchall", "login"} {
		conc = append(conc, fmt.Sprintf("%s=%d", k, e.Concurrency[k]))
	}
	if h.wantTLS() {
		conc = append(conc, "(fetch-tls, noop-tls: as fetch, noop)")
	}
	var held []string
	for _, r := range e.Held {
		held = append(held, fmt.Sprintf("%s %d sessions in front of %s", r.Label, r.Sessions, r.Upstream))
	}
	if slices.Contains(h.opts.workloads, "held-tls") && len(e.Held) > 0 {
		held = append(held, fmt.Sprintf("held-tls %d", e.Held[0].Sessions))
	}
	fmt.Fprintf(w, "settings  %s per workload and target, median of %d runs; concurrency %s; idle window %s; imapguard log level %s\n",
		e.Duration, e.Runs, strings.Join(conc, " "), e.IdleWindow, e.ImapguardLog)
	if len(held) > 0 && (slices.Contains(h.opts.workloads, "held") || slices.Contains(h.opts.workloads, "held-tls")) {
		fmt.Fprintf(w, "          %s\n", strings.Join(held, "; "))
	}
	if te := e.Telemetry; te != nil && len(te.Settings) > 0 {
		var cols []string
		for _, t := range h.targets {
			if s := te.Settings[t.name]; s != nil {
				cols = append(cols, fmt.Sprintf("%s relay=%s traces=%s metrics_listen=%s", t.name, s["performance.relay"], s["telemetry.traces"], orNone(s["telemetry.metrics_listen"])))
			}
		}
		fmt.Fprintf(w, "          imapguard: %s\n", strings.Join(cols, "; "))
		if te.Collector != "" {
			fmt.Fprintf(w, "          spans to the %s; sample_ratio %s; %s\n", te.Collector, te.sampleRatio(), te.Scrape)
		}
	}
	fmt.Fprintf(w, "          sources %s; upstream Dovecot (login: cmd/imapd); working directory %s\n", e.Sources, h.dir)
	if h.tls != nil {
		fmt.Fprintf(w, "          TLS workloads: imaps (implicit TLS) to every target, ECDSA P-256 self-signed certificate; the proxies relay to Dovecot in plaintext\n")
	}
	fmt.Fprintln(w)
}

func orNone(s string) string {
	if s == "" {
		return `""`
	}
	return s
}

// wantImapguard reports whether an imapguard column is selected.
func (h *harness) wantImapguard() bool {
	for _, t := range h.opts.targets {
		if strings.HasPrefix(t, "imapguard") {
			return true
		}
	}
	return false
}

// planHeld raises the open-file limit for the largest held count and
// decides which counts are measured, in front of which upstream.
func (h *harness) planHeld() {
	want := fdsFor(slices.Max(h.opts.sessions))
	files, why := raiseFileLimit(want)
	h.fileLimit, h.fileLimitWhy = files, why
	m := machineLimits{
		files: files, filesWhy: why, ports: localPorts(),
		pidMax: readProcInt("/proc/sys/kernel/pid_max"), dovecot: h.bins.dovecot != "",
	}
	if kib, err := statusKiB("/proc/meminfo", "MemAvailable"); err == nil {
		m.memAvailKiB = kib
	}
	h.held = planHeld(h.opts.sessions, m, h.opts.heldUpstream)
	if !slices.Contains(h.opts.workloads, "held") && !slices.Contains(h.opts.workloads, "held-tls") {
		return
	}
	for _, r := range h.held {
		if r.Why != "" {
			h.note("%s: %s", r.Label, r.Why)
		}
	}
}
