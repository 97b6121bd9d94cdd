// Command soak is imapguard's soak and fault suite (issue 10, "Soak and
// faults"): it runs the real binaries, cmd/imapd as the upstream and
// imapguard in front of it, on loopback, and checks from outside that
// the proxy's counters, memory and connection outcomes hold under long
// load, abrupt disconnects, upstream faults and connection floods.
//
//	go run ./test/soak [-phase soak|abrupt|faults|flood|all] [-duration 10m]
//	                   [-sessions 10000] [-abrupt 100000] [-out FILE] [-keep]
//
// Each phase starts its own imapd and imapguard (with a configuration it
// writes: a plaintext and an imaps listener with a self-signed
// certificate, the admin API, the Prometheus endpoint and
// IMAPGUARD_PPROF, all on 127.0.0.1), measures a baseline, applies its
// load, and returns its figures and verdicts; see README.md beside this
// file for what each phase does and what it showed. It exits 1 when a
// check failed. `make soak` runs every phase with the defaults; it is not
// part of `make test`.
//
// It needs many descriptors: it raises RLIMIT_NOFILE for itself and its
// children to -nofile (default 200000), which needs root (or
// CAP_SYS_RESOURCE) above the hard limit. All traffic stays on
// 127.0.0.0/8; every loop is bounded in count and time.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

type options struct {
	phases []string
	src    string // the tree the binaries are built from; "": this repository
	out    string
	keep   bool
	nofile uint64

	// soak
	sessions        int
	duration        time.Duration
	sampleEvery     time.Duration
	opsPerSec       int
	churn           float64
	openConcurrency int

	// abrupt
	abruptConns int
	abruptConc  int

	// flood
	floodConns int
	floodMax   int
}

var allPhases = []string{"soak", "abrupt", "faults", "flood"}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	phase := fs.String("phase", "all", "phases to run, comma-separated: soak, abrupt, faults, flood, or all")
	fs.StringVar(&o.out, "out", "", "write the results as JSON to `file`")
	fs.StringVar(&o.src, "src", "", "build imapguard and imapd from the module in `dir` (another checkout, such as a branch under review) instead of this repository")
	fs.BoolVar(&o.keep, "keep", false, "keep the working directory (configurations, logs) even when every check passed")
	fs.Uint64Var(&o.nofile, "nofile", 200000, "raise RLIMIT_NOFILE of the suite and its children to `n`")
	fs.IntVar(&o.sessions, "sessions", 10000, "soak: concurrent sessions")
	fs.DurationVar(&o.duration, "duration", 10*time.Minute, "soak: how long the sessions stay up once all are open")
	fs.DurationVar(&o.sampleEvery, "sample", 20*time.Second, "soak: sampling interval")
	fs.IntVar(&o.opsPerSec, "ops", 400, "soak: operations per second handed to the busy sessions")
	fs.Float64Var(&o.churn, "churn", 0.05, "soak: fraction of operations that are a logout and a new login")
	fs.IntVar(&o.openConcurrency, "open-concurrency", 64, "soak: sessions opened (and closed) at a time")
	fs.IntVar(&o.abruptConns, "abrupt", 100000, "abrupt: connections ended abruptly, over all cases together")
	fs.IntVar(&o.abruptConc, "abrupt-concurrency", 64, "abrupt: connections at a time")
	fs.IntVar(&o.floodConns, "flood", 2000, "flood: idle pre-auth connections in the flood")
	fs.IntVar(&o.floodMax, "flood-max", 200, "flood: max_connections of the flooded proxy")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	for _, p := range strings.Split(*phase, ",") {
		switch p = strings.TrimSpace(p); p {
		case "all":
			o.phases = append(o.phases, allPhases...)
		case "soak", "abrupt", "faults", "flood":
			o.phases = append(o.phases, p)
		default:
			return o, fmt.Errorf("unknown phase %q (want soak, abrupt, faults, flood or all)", p)
		}
	}
	switch {
	case o.sessions < 6:
		return o, fmt.Errorf("-sessions %d: want at least 6", o.sessions)
	case o.abruptConns < len(abruptCases)*2:
		return o, fmt.Errorf("-abrupt %d: want at least %d (one per case and ending)", o.abruptConns, len(abruptCases)*2)
	case o.floodMax < 40:
		return o, fmt.Errorf("-flood-max %d: want at least 40", o.floodMax)
	case o.floodConns < o.floodMax:
		return o, fmt.Errorf("-flood %d: want at least -flood-max (%d)", o.floodConns, o.floodMax)
	case o.opsPerSec < 0 || o.churn < 0 || o.churn > 1 || o.openConcurrency < 1 || o.abruptConc < 1 || o.sampleEvery <= 0:
		return o, fmt.Errorf("-ops, -churn, -open-concurrency, -abrupt-concurrency or -sample out of range")
	}
	return o, nil
}

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	opts, err := parseFlags(args)
	if err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		fmt.Fprintf(os.Stderr, "soak: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	s := &suite{ctx: ctx, opts: opts}
	lim, err := raiseFileLimit(opts.nofile)
	if err != nil {
		s.logf("%v", err)
	}
	s.fileLimit = lim
	s.logf("RLIMIT_NOFILE %d for the suite and its children", lim)
	if s.root, err = repoRoot(); err != nil {
		s.logf("%v", err)
		return 2
	}
	if s.dir, err = os.MkdirTemp("", "imapguard-soak-"); err != nil {
		s.logf("%v", err)
		return 2
	}
	s.logf("working directory %s", s.dir)
	src, binDir := s.root, filepath.Join(s.root, "bin")
	if opts.src != "" {
		src, binDir = opts.src, filepath.Join(s.dir, "bin")
	}
	s.logf("building imapguard and imapd from %s", src)
	if s.bins, err = build(ctx, src, binDir, os.Stderr); err != nil {
		s.logf("%v", err)
		return 2
	}
	if s.binText, err = os.ReadFile(s.bins.imapguard); err != nil {
		s.logf("%v", err)
		return 2
	}

	started := time.Now()
	var results []*phaseResult
	for _, p := range opts.phases {
		if ctx.Err() != nil {
			break
		}
		s.logf("phase %s", p)
		var r *phaseResult
		switch p {
		case "soak":
			r = s.phaseSoak()
		case "abrupt":
			r = s.phaseAbrupt()
		case "faults":
			r = s.phaseFaults()
		case "flood":
			r = s.phaseFlood()
		}
		r.print(os.Stdout)
		results = append(results, r)
	}

	ok := ctx.Err() == nil
	fmt.Printf("\n== summary (%s)\n", time.Since(started).Round(time.Second))
	for _, r := range results {
		verdict := "PASS"
		if !r.passed() {
			verdict, ok = "FAIL", false
		}
		failed, gaps := 0, 0
		for _, c := range r.Checks {
			if !c.OK {
				failed++
				if c.Gap != "" {
					gaps++
				}
			}
		}
		fmt.Printf("   %-7s %s  %d checks, %d failed (%d of them known gaps)\n", r.Phase, verdict, len(r.Checks), failed, gaps)
	}
	if opts.out != "" {
		b, _ := json.MarshalIndent(results, "", "  ")
		os.MkdirAll(filepath.Dir(opts.out), 0o755)
		if err := os.WriteFile(opts.out, b, 0o644); err != nil {
			s.logf("%v", err)
			ok = false
		}
	}
	if ok && !opts.keep {
		os.RemoveAll(s.dir)
	} else {
		fmt.Printf("   configurations and logs: %s\n", s.dir)
	}
	if !ok {
		return 1
	}
	return 0
}
