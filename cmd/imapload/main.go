// Command imapload is imapguard's IMAP load generator. It speaks raw IMAP
// over net.Conn (no IMAP library in the hot loop, so that it measures the
// server and not the client), opens its connections from a rotating range
// of loopback source addresses, logs in and drives one workload for a
// fixed duration and concurrency:
//
//	fetch     UID FETCH <uid> BODY.PEEK[] of one (large) message, repeated: MB/s
//	noop      NOOP, one at a time per connection: round trips/s, p50/p99
//	fetchall  FETCH 1:* (FLAGS RFC822.SIZE ENVELOPE) of a whole mailbox: commands/s, messages/s
//	login     connect, greeting, LOGIN, LOGOUT: logins/s, p50/p99
//	held      open -sessions logged-in sessions, print "READY <n>", wait, NOOP and LOGOUT each
//
// Usage:
//
//	imapload -addr 127.0.0.1:1143 -user bench -pass bench -workload noop -duration 10s -concurrency 16
//
// Connections for fetch, noop and fetchall are opened and logged in
// before the clock starts. Errors are counted; a connection that fails is
// closed and replaced. Every read has a deadline (-timeout).
//
// With -json the result is one JSON object on the last line of stdout.
// For held, stdout first gets the line "READY <opened>" once every session
// is open; imapload then waits for a line on stdin (or EOF), or for -hold
// if it is set, before it sends NOOP and LOGOUT on each session. That is
// the moment to sample the server's memory and CPU.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/imapguard/imapguard/cmd/imapload/loadresult"
)

type options struct {
	addr            string
	user, pass      string
	workload        string
	mailbox         string
	duration        time.Duration
	timeout         time.Duration
	hold            time.Duration
	concurrency     int
	sessions        int
	openConcurrency int
	uid             uint64
	sources         string
	json            bool
	tls             bool
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	var o options
	fs := flag.NewFlagSet("imapload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.addr, "addr", "127.0.0.1:1143", "server `host:port`")
	fs.StringVar(&o.user, "user", "bench", "user name")
	fs.StringVar(&o.pass, "pass", "bench", "password")
	fs.StringVar(&o.workload, "workload", "noop", "fetch, noop, fetchall, login or held")
	fs.StringVar(&o.mailbox, "mailbox", "INBOX", "mailbox that fetch and fetchall EXAMINE")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "how long to drive fetch, noop, fetchall and login")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second, "deadline of every network read and write, and of each dial")
	fs.DurationVar(&o.hold, "hold", 0, "held: how long to keep the sessions idle after READY; 0 waits for a line on stdin")
	fs.IntVar(&o.concurrency, "concurrency", 8, "connections driving the workload at once")
	fs.IntVar(&o.sessions, "sessions", 5000, "held: sessions to open")
	fs.IntVar(&o.openConcurrency, "open-concurrency", 100, "held: sessions being opened (or NOOPed) at once")
	fs.Uint64Var(&o.uid, "uid", 0, "fetch: UID of the message to fetch; 0 takes the first message larger than 1 MB (UID SEARCH LARGER)")
	fs.StringVar(&o.sources, "sources", "127.0.0.2-127.0.0.254", "loopback source `addresses`, ranges and commas, used round-robin; empty lets the kernel choose")
	fs.BoolVar(&o.json, "json", false, "print the result as one JSON line")
	fs.BoolVar(&o.tls, "tls", false, "connect with implicit TLS (imaps); certificates are not verified (loopback only)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "imapload: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if o.concurrency < 1 || o.sessions < 1 || o.openConcurrency < 1 || o.duration <= 0 || o.timeout <= 0 {
		fmt.Fprintln(stderr, "imapload: -concurrency, -sessions, -open-concurrency, -duration and -timeout must be positive")
		return 2
	}
	sources, err := parseSources(o.sources)
	if err != nil {
		fmt.Fprintf(stderr, "imapload: -sources: %v\n", err)
		return 2
	}
	raiseFileLimit(stderr)

	d := &dialer{sources: sources, timeout: o.timeout, tls: o.tls, bufSize: bufSize(o.workload)}
	var res *result
	switch o.workload {
	case "fetch", "noop", "fetchall":
		res, err = runLoop(ctx, &o, d)
	case "login":
		res, err = runLogin(ctx, &o, d)
	case "held":
		res, err = runHeld(ctx, &o, d, stdin, stdout, stderr)
	default:
		fmt.Fprintf(stderr, "imapload: unknown -workload %q (want fetch, noop, fetchall, login or held)\n", o.workload)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "imapload: %v\n", err)
		return 1
	}
	res.Sources = len(sources)
	if o.json {
		b, err := json.Marshal(res)
		if err != nil {
			fmt.Fprintf(stderr, "imapload: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "%s\n", b)
	} else {
		printResult(stdout, res)
	}
	if ctx.Err() != nil {
		return 130
	}
	return 0
}

// bufSize is the read buffer per connection: large for streaming a big
// literal with few system calls, small where thousands of connections
// are held.
func bufSize(workload string) int {
	switch workload {
	case "fetch":
		return 256 << 10
	case "fetchall":
		return 64 << 10
	}
	return 4 << 10
}

// raiseFileLimit raises the soft RLIMIT_NOFILE to the hard limit: held
// sessions need one descriptor each.
func raiseFileLimit(stderr io.Writer) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		fmt.Fprintf(stderr, "imapload: getrlimit: %v\n", err)
		return
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			fmt.Fprintf(stderr, "imapload: setrlimit: %v\n", err)
		}
	}
}

// result is the JSON result of a run (shared with test/bench).
type result = loadresult.Result

// printResult writes r for people to read.
func printResult(w io.Writer, r *result) {
	fmt.Fprintf(w, "workload     %s against %s (%d connections, %d source addresses)\n", r.Workload, r.Addr, r.Concurrency, r.Sources)
	fmt.Fprintf(w, "measured     %.2f s\n", r.Seconds)
	switch r.Workload {
	case "held":
		fmt.Fprintf(w, "sessions     %d of %d opened in %.2f s (%.0f/s), held %.1f s\n", r.SessionsOpened, r.Sessions, r.OpenSeconds, r.OpenPerSec, r.HeldSeconds)
		fmt.Fprintf(w, "final NOOP   %d ok, p50 %.3f ms, p99 %.3f ms\n", r.NoopOK, r.LatencyP50Ms, r.LatencyP99Ms)
	default:
		fmt.Fprintf(w, "operations   %d (%.1f/s)\n", r.Ops, r.OpsPerSec)
		fmt.Fprintf(w, "received     %.1f MB (%.2f MB/s)\n", float64(r.Bytes)/1e6, r.MBPerSec)
		if r.Messages > 0 {
			fmt.Fprintf(w, "messages     %d (%.1f/s)\n", r.Messages, r.MessagesPerSec)
		}
		fmt.Fprintf(w, "latency      p50 %.3f ms, p99 %.3f ms, mean %.3f ms, max %.3f ms\n", r.LatencyP50Ms, r.LatencyP99Ms, r.LatencyMeanMs, r.LatencyMaxMs)
	}
	fmt.Fprintf(w, "errors       %d", r.Errors)
	if r.FirstError != "" {
		fmt.Fprintf(w, " (first: %s)", r.FirstError)
	}
	fmt.Fprintln(w)
}

// stats collects what the workers measured.
type stats struct {
	mu       sync.Mutex
	ops      int64
	bytes    int64
	messages int64
	lat      []time.Duration
	errors   int64
	firstErr string
}

func (s *stats) add(ops, bytes, messages int64, lat []time.Duration) {
	s.mu.Lock()
	s.ops += ops
	s.bytes += bytes
	s.messages += messages
	s.lat = append(s.lat, lat...)
	s.mu.Unlock()
}

func (s *stats) fail(err error) {
	s.mu.Lock()
	s.errors++
	if s.firstErr == "" {
		s.firstErr = err.Error()
	}
	s.mu.Unlock()
}

// fill computes the rates and percentiles of r from s over elapsed.
func (s *stats) fill(r *result, elapsed time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sec := elapsed.Seconds()
	r.Seconds = sec
	r.Ops, r.Bytes, r.Messages = s.ops, s.bytes, s.messages
	r.Errors, r.FirstError = s.errors, s.firstErr
	if sec > 0 {
		r.OpsPerSec = float64(s.ops) / sec
		r.MBPerSec = float64(s.bytes) / 1e6 / sec
		r.MessagesPerSec = float64(s.messages) / sec
	}
	p := percentiles(s.lat)
	r.LatencyP50Ms, r.LatencyP99Ms, r.LatencyMeanMs, r.LatencyMaxMs = ms(p.p50), ms(p.p99), ms(p.mean), ms(p.max)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

type pcts struct{ p50, p99, mean, max time.Duration }

// percentiles returns exact nearest-rank percentiles of lat (which it
// sorts).
func percentiles(lat []time.Duration) pcts {
	if len(lat) == 0 {
		return pcts{}
	}
	slices.Sort(lat)
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	return pcts{
		p50:  rank(lat, 0.50),
		p99:  rank(lat, 0.99),
		mean: sum / time.Duration(len(lat)),
		max:  lat[len(lat)-1],
	}
}

// rank is the nearest-rank percentile p (0 < p <= 1) of sorted.
func rank(sorted []time.Duration, p float64) time.Duration {
	i := int(float64(len(sorted))*p+0.999999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// session opens a connection, reads the greeting and logs in.
func session(ctx context.Context, o *options, d *dialer) (*conn, error) {
	c, err := d.dial(ctx, o.addr)
	if err != nil {
		return nil, err
	}
	if err := c.greeting(); err != nil {
		c.close()
		return nil, err
	}
	if err := c.login(o.user, o.pass); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// loopConn is a logged-in connection prepared for fetch, noop or fetchall.
type loopConn struct {
	*conn
	cmd string
}

// prepare logs in and selects what the workload needs.
func prepare(ctx context.Context, o *options, d *dialer) (*loopConn, uint64, error) {
	c, err := session(ctx, o, d)
	if err != nil {
		return nil, 0, err
	}
	lc := &loopConn{conn: c}
	var uid uint64
	switch o.workload {
	case "noop":
		lc.cmd = "NOOP"
	case "fetchall":
		if _, err := c.command("EXAMINE " + quote(o.mailbox)); err != nil {
			c.close()
			return nil, 0, err
		}
		lc.cmd = "FETCH 1:* (FLAGS RFC822.SIZE ENVELOPE)"
	case "fetch":
		if _, err := c.command("EXAMINE " + quote(o.mailbox)); err != nil {
			c.close()
			return nil, 0, err
		}
		uid = o.uid
		if uid == 0 {
			res, err := c.command("UID SEARCH LARGER 1000000")
			if err != nil {
				c.close()
				return nil, 0, err
			}
			if len(res.searchUIDs) == 0 {
				c.close()
				return nil, 0, fmt.Errorf("no message larger than 1 MB in %s (set -uid)", o.mailbox)
			}
			uid = slices.Min(res.searchUIDs)
		}
		lc.cmd = "UID FETCH " + strconv.FormatUint(uid, 10) + " BODY.PEEK[]"
	}
	return lc, uid, nil
}

// runLoop drives fetch, noop or fetchall: -concurrency connections, each
// sending its command one at a time for -duration.
func runLoop(ctx context.Context, o *options, d *dialer) (*result, error) {
	res := &result{Workload: o.workload, Addr: o.addr, Concurrency: o.concurrency}

	// Open and prepare every connection before the clock starts.
	conns := make([]*loopConn, o.concurrency)
	var wg sync.WaitGroup
	var setupErr error
	var mu sync.Mutex
	for i := range conns {
		wg.Go(func() {
			lc, uid, err := prepare(ctx, o, d)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if setupErr == nil {
					setupErr = err
				}
				return
			}
			conns[i] = lc
			if uid != 0 {
				res.UID = uid
			}
		})
	}
	wg.Wait()
	if setupErr != nil {
		for _, c := range conns {
			if c != nil {
				c.close()
			}
		}
		return nil, fmt.Errorf("setting up connections: %w", setupErr)
	}
	if o.workload == "fetch" && o.uid == 0 {
		o.uid = res.UID // reconnects fetch the same message
	}

	var st stats
	start := time.Now()
	end := start.Add(o.duration)
	for _, lc := range conns {
		wg.Go(func() { loopWorker(ctx, o, d, lc, end, &st) })
	}
	wg.Wait()
	st.fill(res, time.Since(start))
	return res, nil
}

func loopWorker(ctx context.Context, o *options, d *dialer, lc *loopConn, end time.Time, st *stats) {
	lat := make([]time.Duration, 0, 1024)
	var ops, bytes, messages int64
	defer func() {
		if lc != nil {
			lc.close()
		}
		st.add(ops, bytes, messages, lat)
	}()
	for ctx.Err() == nil {
		if lc == nil {
			// Replace a failed connection; setup time is not an operation.
			var err error
			if lc, _, err = prepare(ctx, o, d); err != nil {
				st.fail(err)
				lc = nil
				if !sleepUntil(ctx, time.Now().Add(100*time.Millisecond), end) {
					return
				}
				continue
			}
		}
		t0 := time.Now()
		if !t0.Before(end) {
			return
		}
		before := lc.bytes
		r, err := lc.command(lc.cmd)
		t1 := time.Now()
		bytes += lc.bytes - before
		if err != nil {
			st.fail(err)
			lc.close()
			lc = nil
			continue
		}
		ops++
		messages += int64(r.fetches)
		lat = append(lat, t1.Sub(t0))
	}
}

// sleepUntil sleeps until t, but not past end or ctx; it reports whether
// the workload goes on.
func sleepUntil(ctx context.Context, t, end time.Time) bool {
	if t.After(end) {
		t = end
	}
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
	}
	return time.Now().Before(end)
}

// runLogin drives the login rate: connect, greeting, LOGIN, LOGOUT,
// close, in a loop on each of -concurrency workers.
func runLogin(ctx context.Context, o *options, d *dialer) (*result, error) {
	res := &result{Workload: o.workload, Addr: o.addr, Concurrency: o.concurrency}
	// One login up front, so that a wrong address or password is an
	// error and not a run full of failures.
	c, err := session(ctx, o, d)
	if err != nil {
		return nil, fmt.Errorf("first login: %w", err)
	}
	_, _ = c.command("LOGOUT")
	c.close()

	var st stats
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(o.duration)
	for range o.concurrency {
		wg.Go(func() {
			lat := make([]time.Duration, 0, 1024)
			var ops, bytes int64
			defer func() { st.add(ops, bytes, 0, lat) }()
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(end) {
					return
				}
				c, err := session(ctx, o, d)
				if err == nil {
					_, err = c.command("LOGOUT")
					bytes += c.bytes
					c.close()
				}
				if err != nil {
					st.fail(err)
					if !sleepUntil(ctx, time.Now().Add(10*time.Millisecond), end) {
						return
					}
					continue
				}
				ops++
				lat = append(lat, time.Since(t0))
			}
		})
	}
	wg.Wait()
	st.fill(res, time.Since(start))
	return res, nil
}

// runHeld opens -sessions sessions, -open-concurrency at a time, logs
// each in, announces "READY <n>" on stdout and waits; then it sends one
// NOOP on each (the latency of a session woken after idling) and logs it
// out.
func runHeld(ctx context.Context, o *options, d *dialer, stdin io.Reader, stdout, stderr io.Writer) (*result, error) {
	res := &result{Workload: o.workload, Addr: o.addr, Concurrency: o.openConcurrency, Sessions: o.sessions}
	var st stats
	conns := make([]*conn, o.sessions)
	sem := make(chan struct{}, o.openConcurrency)
	var wg sync.WaitGroup

	start := time.Now()
	lastReport := start
	for i := range conns {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c, err := session(ctx, o, d)
			if err != nil {
				st.fail(err)
				return
			}
			conns[i] = c
		})
		if time.Since(lastReport) > 5*time.Second {
			lastReport = time.Now()
			fmt.Fprintf(stderr, "imapload: held: %d of %d sessions started\n", i+1, o.sessions)
		}
	}
	wg.Wait()
	res.OpenSeconds = time.Since(start).Seconds()
	for _, c := range conns {
		if c != nil {
			res.SessionsOpened++
		}
	}
	if res.OpenSeconds > 0 {
		res.OpenPerSec = float64(res.SessionsOpened) / res.OpenSeconds
	}
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.close()
			}
		}
	}()

	fmt.Fprintf(stdout, "READY %d\n", res.SessionsOpened)
	heldFrom := time.Now()
	waitHold(ctx, o.hold, stdin)
	res.HeldSeconds = time.Since(heldFrom).Seconds()

	// Wake every session: one NOOP each, then LOGOUT.
	var mu sync.Mutex
	var lat []time.Duration
	noopStart := time.Now()
	for i, c := range conns {
		if c == nil || ctx.Err() != nil {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			t0 := time.Now()
			_, err := c.command("NOOP")
			dt := time.Since(t0)
			if err != nil {
				st.fail(fmt.Errorf("after holding: %w", err))
			} else {
				mu.Lock()
				lat = append(lat, dt)
				res.NoopOK++
				mu.Unlock()
				_, _ = c.command("LOGOUT")
			}
			c.close()
			conns[i] = nil
		})
	}
	wg.Wait()
	st.add(int64(res.NoopOK), 0, 0, lat)
	st.fill(res, time.Since(noopStart))
	return res, nil
}

// waitHold waits for hold, or with hold 0 for a line (or EOF) on stdin,
// or for ctx.
func waitHold(ctx context.Context, hold time.Duration, stdin io.Reader) {
	if hold > 0 {
		t := time.NewTimer(hold)
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		return
	}
	line := make(chan error, 1)
	go func() {
		_, err := bufio.NewReader(stdin).ReadString('\n')
		if errors.Is(err, io.EOF) {
			err = nil
		}
		line <- err
	}()
	select {
	case <-ctx.Done():
	case <-line:
	}
}
