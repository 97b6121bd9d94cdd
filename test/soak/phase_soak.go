package main

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// The soak: many concurrent sessions, plain, imaps and STARTTLS, half of
// them idle in IDLE and half busy with FETCH, NOOP and APPEND (and now
// and then logging out and in again), for a long time. At each sample
// the suite holds every connection change still and compares what it has
// open with what the proxy says it has open.

// soakSample is one sample of the soak.
type soakSample struct {
	At            time.Time `json:"at"`
	Elapsed       float64   `json:"elapsed_seconds"`
	Ramp          bool      `json:"ramp"` // taken while sessions were still being opened
	Suite         counts    `json:"suite"`
	SuiteTLS      int       `json:"suite_imaps"` // authenticated on the imaps listener
	Metrics       counts    `json:"metrics"`
	MetricsTLS    int       `json:"metrics_imaps"`
	Sessions      counts    `json:"admin_sessions"`
	Exact         bool      `json:"exact"`
	SettleMS      int64     `json:"settle_ms"` // how long the counts took to agree
	RSS           int64     `json:"rss_bytes"`
	RSSPerSession float64   `json:"rss_per_session_bytes"`
	HeapInuse     int64     `json:"heap_inuse_bytes"`
	Goroutines    int       `json:"goroutines"`
	FDs           int       `json:"fds"`
	Ops           int64     `json:"ops"`
	Errors        int64     `json:"errors"`
	// The proxy's counters at the sample: imapguard_connections_closed_total
	// by outcome and imapguard_connections_refused_total by reason.
	Closed  map[string]float64 `json:"closed_by_outcome"`
	Refused map[string]float64 `json:"refused_by_reason"`
}

// soakUsers returns the users of the soak: one per ten sessions, idle and
// busy ones apart (so that the idle sessions' mailboxes do not change
// under them and they stay truly idle).
func soakUsers(sessions int) (idle, busy []user) {
	n := max(1, (sessions/2+9)/10)
	for i := range n {
		idle = append(idle, user{name: fmt.Sprintf("idle%05d", i), pass: fmt.Sprintf("pw-idle-%d", i), messages: 5, messageSize: 2000})
		busy = append(busy, user{name: fmt.Sprintf("busy%05d", i), pass: fmt.Sprintf("pw-busy-%d", i), messages: 10, messageSize: 4000})
	}
	return idle, busy
}

// soakState is the suite's own account of what it has open, and its
// errors.
type soakState struct {
	// change is held (read) by each connection change, from before the
	// dial to after the login (or the close), and taken (write) by the
	// sampler: while it holds it, the suite's counts do not move.
	change sync.RWMutex

	open, auth, authTLS atomic.Int64

	ops, logouts, fins atomic.Int64
	errCount           atomic.Int64
	errMu              sync.Mutex
	errs               []string
}

func (st *soakState) error(id int, err error) {
	st.errCount.Add(1)
	st.errMu.Lock()
	if len(st.errs) < 50 {
		st.errs = append(st.errs, fmt.Sprintf("session %d: %v", id, err))
	}
	st.errMu.Unlock()
}

// soakSession is one simulated client.
type soakSession struct {
	id   int
	t    transport
	u    user
	busy bool
	st   *soakState
	e    *env
	c    *client
	ops  chan string // busy sessions: what to do next
	dead bool
	// idleNC is an idle session's connection, set before its goroutine
	// starts: the stopper sets a past read deadline on it.
	idleNC net.Conn
}

// connect opens, logs in and selects INBOX (and, idle, starts IDLE),
// counting the connection.
func (ss *soakSession) connect() (idleTag string, err error) {
	ss.st.change.RLock()
	defer ss.st.change.RUnlock()
	c, err := ss.e.dialer.open(ss.e.ctx, ss.t)
	if err != nil {
		return "", err
	}
	ss.st.open.Add(1)
	if err := c.login(ss.u.name, ss.u.pass); err != nil {
		c.abort(rst)
		ss.st.open.Add(-1)
		return "", err
	}
	ss.c = c
	ss.st.auth.Add(1)
	if ss.t == imaps {
		ss.st.authTLS.Add(1)
	}
	if _, err := c.command("SELECT INBOX"); err != nil {
		return "", err
	}
	if !ss.busy {
		ss.idleNC = c.nc
		return c.idle()
	}
	return "", nil
}

// disconnect ends the connection (LOGOUT, or FIN with fin) and uncounts
// it. The caller holds st.change for reading.
func (ss *soakSession) disconnect(logout bool) error {
	var err error
	if logout {
		err = ss.c.logout()
		ss.st.logouts.Add(1)
	} else {
		if _, closed := ss.c.abort(fin); !closed {
			err = errors.New("the proxy did not close within 15s of the client's FIN")
		}
		ss.st.fins.Add(1)
	}
	ss.uncount()
	return err
}

func (ss *soakSession) uncount() {
	ss.st.open.Add(-1)
	ss.st.auth.Add(-1)
	if ss.t == imaps {
		ss.st.authTLS.Add(-1)
	}
	ss.c = nil
}

// kill ends a session that failed: RST, uncounted, not reopened.
func (ss *soakSession) kill(err error) {
	ss.st.error(ss.id, err)
	ss.st.change.RLock()
	if ss.c != nil {
		ss.c.abort(rst)
		ss.uncount()
	}
	ss.st.change.RUnlock()
	ss.dead = true
}

// runBusy does what the scheduler sends until stop closes.
func (ss *soakSession) runBusy(stop <-chan struct{}, rng *rand.Rand) {
	msg := make([]byte, 1024+rng.IntN(3072))
	for i := range msg {
		msg[i] = 'a' + byte(i%26)
		if i%76 == 75 {
			msg[i-1], msg[i] = '\r', '\n'
		}
	}
	copy(msg, "Subject: soak\r\n\r\n")
	for {
		select {
		case <-stop:
			return
		case op := <-ss.ops:
			if err := ss.do(op, msg); err != nil {
				ss.kill(fmt.Errorf("%s: %w", op, err))
				return
			}
			ss.st.ops.Add(1)
		}
	}
}

func (ss *soakSession) do(op string, msg []byte) error {
	c := ss.c
	switch op {
	case "fetch":
		_, err := c.command("FETCH 1:5 (FLAGS BODY.PEEK[])")
		return err
	case "noop":
		_, err := c.command("NOOP")
		return err
	case "append":
		uid, err := c.appendMessage(msg)
		if err != nil {
			return err
		}
		if uid == 0 {
			return errors.New("APPEND: no APPENDUID")
		}
		// Keep the mailbox at its size: flag and expunge what was added.
		if _, err := c.command(fmt.Sprintf("UID STORE %d +FLAGS.SILENT (\\Deleted)", uid)); err != nil {
			return err
		}
		_, err = c.command(fmt.Sprintf("UID EXPUNGE %d", uid))
		return err
	case "reconnect":
		ss.st.change.RLock()
		err := ss.disconnect(true)
		ss.st.change.RUnlock()
		if err != nil {
			return err
		}
		_, err = ss.connect()
		return err
	}
	return fmt.Errorf("unknown op %q", op)
}

// runIdle waits in IDLE, reading what the server sends, until stop
// closes; the stopper sets a past read deadline to end the wait.
func (ss *soakSession) runIdle(tag string, stop <-chan struct{}) {
	c := ss.c
	c.nc.SetDeadline(time.Time{})
	for {
		line, err := c.readResponse()
		if err != nil {
			select {
			case <-stop:
				if err := c.done(tag); err != nil {
					ss.kill(err)
				}
				return
			default:
			}
			ss.kill(fmt.Errorf("in IDLE: %w", err))
			return
		}
		if len(line) >= 5 && line[:5] == "* BYE" {
			ss.kill(fmt.Errorf("in IDLE: %q", line))
			return
		}
	}
}

// phaseSoak runs the soak.
func (s *suite) phaseSoak() *phaseResult {
	r := newResult("soak")
	defer r.finish()
	o := s.opts
	if n := s.sessionsThatFit(o.sessions); n < o.sessions {
		r.figure("NOTE: %d sessions asked for, %d run: imapguard holds two descriptors per session (client and upstream) and RLIMIT_NOFILE is %d here, which this process cannot raise (no CAP_SYS_RESOURCE)", o.sessions, n, s.fileLimit)
		o.sessions = n
	}
	idleUsers, busyUsers := soakUsers(o.sessions)
	users := append(slices.Clone(idleUsers), busyUsers...)
	e, err := newEnv(s.ctx, "soak", s.dir, s.bins, os.Stderr, users, guardConfig{maxConnsPerUser: 40})
	if err != nil {
		r.fail(err)
		return r
	}
	defer e.close()
	base, err := e.ready(busyUsers[0])
	if err != nil {
		r.fail(err)
		return r
	}
	r.figure("baseline: goroutines %d, fds %d, RSS %s, heap in use %s",
		base.snap.Goroutines, base.snap.Proc.FDs, mib(float64(base.snap.Proc.RSS)), mib(float64(base.snap.HeapInuse)))

	st := &soakState{}
	sessions := make([]*soakSession, o.sessions)
	for i := range sessions {
		busy := i%2 == 1
		pool := idleUsers
		if busy {
			pool = busyUsers
		}
		sessions[i] = &soakSession{
			id: i, t: transport(i % 3), u: pool[(i/2)%len(pool)], busy: busy, st: st, e: e,
			ops: make(chan string, 1),
		}
	}

	// Ramp up with bounded concurrency, sampling as it goes.
	start := time.Now()
	stop := make(chan struct{})
	idleTags := make([]string, len(sessions))
	var wg sync.WaitGroup
	rampDone := make(chan struct{})
	go func() {
		defer close(rampDone)
		sem := make(chan struct{}, o.openConcurrency)
		var rwg sync.WaitGroup
		for i, ss := range sessions {
			sem <- struct{}{}
			rwg.Add(1)
			go func() {
				defer rwg.Done()
				defer func() { <-sem }()
				tag, err := ss.connect()
				if err != nil {
					ss.kill(fmt.Errorf("opening: %w", err))
					return
				}
				idleTags[i] = tag
				wg.Add(1)
				go func() {
					defer wg.Done()
					if ss.busy {
						ss.runBusy(stop, rand.New(rand.NewPCG(uint64(i), 7)))
					} else {
						ss.runIdle(tag, stop)
					}
				}()
			}()
		}
		rwg.Wait()
	}()

	var samples []soakSample
	sample := func(ramp bool) {
		smp := s.soakSample(e, st, start, ramp)
		samples = append(samples, smp)
		s.logf("soak: %5.0fs ramp=%-5v suite open %d (imaps %d); metrics %d/%d auth (imaps %d); /sessions %d; exact=%v in %dms; RSS %s = %s/session; heap %s; goroutines %d; fds %d; ops %d; errors %d",
			smp.Elapsed, smp.Ramp, smp.Suite.Open, smp.SuiteTLS, smp.Metrics.Open, smp.Metrics.Authenticated, smp.MetricsTLS,
			smp.Sessions.Open, smp.Exact, smp.SettleMS, mib(float64(smp.RSS)), kib(smp.RSSPerSession), mib(float64(smp.HeapInuse)),
			smp.Goroutines, smp.FDs, smp.Ops, smp.Errors)
	}
	tick := time.NewTicker(o.sampleEvery)
	defer tick.Stop()
ramp:
	for {
		select {
		case <-rampDone:
			break ramp
		case <-tick.C:
			sample(true)
		case <-s.ctx.Done():
			close(stop)
			r.fail(s.ctx.Err())
			return r
		}
	}
	rampTime := time.Since(start)
	r.figure("opened %d sessions (%d plain, %d imaps, %d STARTTLS; half idle in IDLE, half busy) in %s with %d at a time",
		st.open.Load(), (o.sessions+2)/3, (o.sessions+1)/3, o.sessions/3, rampTime.Round(time.Second), o.openConcurrency)
	sample(false)

	// Steady state: the scheduler hands operations to busy sessions at
	// opsPerSec; the sampler samples.
	var busy []*soakSession
	for _, ss := range sessions {
		if ss.busy && !ss.dead {
			busy = append(busy, ss)
		}
	}
	steadyEnd := time.NewTimer(o.duration)
	defer steadyEnd.Stop()
	sched := time.NewTicker(10 * time.Millisecond)
	defer sched.Stop()
	rng := rand.New(rand.NewPCG(1, 2))
	perTick := float64(o.opsPerSec) / 100
	carry := 0.0
	var skipped int64
steady:
	for {
		select {
		case <-steadyEnd.C:
			break steady
		case <-s.ctx.Done():
			break steady
		case <-tick.C:
			sample(false)
		case <-sched.C:
			carry += perTick
			for ; carry >= 1 && len(busy) > 0; carry-- {
				ss := busy[rng.IntN(len(busy))]
				op := pickOp(rng, o.churn)
				select {
				case ss.ops <- op:
				default:
					skipped++ // that session is still busy with its last one
				}
			}
		}
	}
	sample(false)
	steadyTime := time.Since(start) - rampTime

	// Stop: every session finishes what it does (idle ones answer DONE),
	// then half log out and half close with a FIN.
	close(stop)
	for _, ss := range sessions {
		if ss.idleNC != nil {
			ss.idleNC.SetReadDeadline(time.Unix(1, 0))
		}
	}
	wg.Wait()
	before, _ := e.probe.metrics(s.ctx)
	var cwg sync.WaitGroup
	sem := make(chan struct{}, o.openConcurrency)
	finalLogouts, finalFins := st.logouts.Load(), st.fins.Load()
	for i, ss := range sessions {
		if ss.c == nil {
			continue
		}
		sem <- struct{}{}
		cwg.Add(1)
		go func() {
			defer cwg.Done()
			defer func() { <-sem }()
			st.change.RLock()
			err := ss.disconnect(i%4 < 2)
			st.change.RUnlock()
			if err != nil {
				st.error(ss.id, fmt.Errorf("closing: %w", err))
			}
		}()
	}
	cwg.Wait()
	finalLogouts, finalFins = st.logouts.Load()-finalLogouts, st.fins.Load()-finalFins
	r.Samples = samples

	// Verdicts.
	r.figure("steady state %s: %d operations (%.0f/s; %d not sent because the session was still busy), %d logouts and reconnects",
		steadyTime.Round(time.Second), st.ops.Load(), float64(st.ops.Load())/steadyTime.Seconds(), skipped, st.logouts.Load()-finalLogouts)
	errs := st.errCount.Load()
	st.errMu.Lock()
	r.check("no client-visible error", errs == 0, "%d errors: %s", errs, firstN(st.errs, 10))
	st.errMu.Unlock()
	r.check("every session stayed up to the end", countAlive(sessions) == len(sessions),
		"%d of %d", countAlive(sessions), len(sessions))
	inexact := 0
	var worst int64
	for _, smp := range samples {
		if !smp.Exact {
			inexact++
		}
		worst = max(worst, smp.SettleMS)
	}
	r.check("counters equal the suite's at every sample", inexact == 0,
		"%d of %d samples disagreed after 10s (connections open by state and listener, admin /sessions); longest settle %dms", inexact, len(samples), worst)
	s.judgeMemory(r, samples, base.snap.Proc.RSS)
	after := e.settle(r, base, 60*time.Second, o.sessions)
	if before != nil {
		d := delta(before.outcomes(), after.m.outcomes())
		s.checkOutcomes(r, "final LOGOUTs end as logout", map[string]int{"logout": d["logout"]}, int(finalLogouts), "logout")
		s.checkOutcomes(r, "final FINs end as client_closed", without(d, "logout"), int(finalFins), "client_closed")
	}
	all := delta(base.outcome, after.m.outcomes())
	r.figure("outcomes over the whole soak: %s", formatCounts(all))
	e.stillServes(r, busyUsers[0], "after the soak")
	e.checkExit(r)
	return r
}

// sessionsThatFit returns how many soak sessions imapguard can hold
// under the suite's RLIMIT_NOFILE (which its children inherit): two
// descriptors each, and 100 for the listeners, the probes and the
// sessions reconnecting; rounded down to a hundred.
func (s *suite) sessionsThatFit(want int) int {
	if s.fileLimit == 0 || uint64(2*want+100) <= s.fileLimit {
		return want
	}
	return max(6, int(s.fileLimit-100)/2/100*100)
}

// without returns d less key.
func without(d map[string]int, key string) map[string]int {
	out := map[string]int{}
	for k, v := range d {
		if k != key {
			out[k] = v
		}
	}
	return out
}

func countAlive(ss []*soakSession) int {
	n := 0
	for _, s := range ss {
		if !s.dead {
			n++
		}
	}
	return n
}

// pickOp chooses a busy session's next operation: FETCH and NOOP most
// often, APPEND a quarter of the time, and with probability churn a
// logout and a new login.
func pickOp(rng *rand.Rand, churn float64) string {
	x := rng.Float64()
	switch {
	case x < churn:
		return "reconnect"
	case x < churn+(1-churn)*0.375:
		return "fetch"
	case x < churn+(1-churn)*0.75:
		return "noop"
	}
	return "append"
}

// soakSample holds every connection change still, then reads the proxy
// until its counts agree with the suite's (or 10s pass).
func (s *suite) soakSample(e *env, st *soakState, start time.Time, ramp bool) soakSample {
	st.change.Lock()
	defer st.change.Unlock()
	smp := soakSample{At: time.Now(), Elapsed: time.Since(start).Seconds(), Ramp: ramp}
	smp.Suite = counts{Open: int(st.open.Load()), Authenticated: int(st.auth.Load())}
	smp.Suite.Preauth = smp.Suite.Open - smp.Suite.Authenticated
	smp.SuiteTLS = int(st.authTLS.Load())
	t0 := time.Now()
	var snap snapshot
	err := waitFor(s.ctx, 10*time.Second, func() (bool, error) {
		var err error
		snap, err = e.probe.snap(s.ctx, true)
		if err != nil {
			return false, nil
		}
		smp.MetricsTLS = int(snap.m.sum(mOpen, map[string]string{"state": "authenticated", "listener": e.imapsAddr}))
		return snap.Metrics == smp.Suite && snap.Sessions == smp.Suite && smp.MetricsTLS == smp.SuiteTLS, nil
	})
	smp.Exact = err == nil
	smp.SettleMS = time.Since(t0).Milliseconds()
	smp.Metrics, smp.Sessions = snap.Metrics, snap.Sessions
	smp.RSS, smp.FDs, smp.Goroutines, smp.HeapInuse = snap.Proc.RSS, snap.Proc.FDs, snap.Goroutines, snap.HeapInuse
	if smp.Suite.Open > 0 {
		smp.RSSPerSession = float64(smp.RSS) / float64(smp.Suite.Open)
	}
	smp.Ops, smp.Errors = st.ops.Load(), st.errCount.Load()
	if snap.m != nil {
		smp.Closed, smp.Refused = snap.m.outcomes(), snap.m.byLabel(mRefused, "reason")
	}
	return smp
}

// judgeMemory checks that memory per session is flat over the steady
// state: the median RSS per session of its last third is within 10% of
// that of its first third (the first minute is left out: the heap grows
// to its working size there).
func (s *suite) judgeMemory(r *phaseResult, samples []soakSample, baseRSS int64) {
	var steady []soakSample
	var above []string
	for _, smp := range samples {
		if !smp.Ramp && smp.Suite.Open > 0 {
			steady = append(steady, smp)
		}
	}
	if len(steady) > 0 {
		var line []string
		for _, smp := range steady {
			line = append(line, fmt.Sprintf("%.0fs:%.1f", smp.Elapsed, smp.RSSPerSession/1024))
			above = append(above, fmt.Sprintf("%.0fs:%.1f", smp.Elapsed, float64(smp.RSS-baseRSS)/float64(smp.Suite.Open)/1024))
		}
		r.figure("RSS per session (KiB) at each steady sample: %s", firstN(line, 60))
		r.figure("RSS above the baseline per session (KiB): %s", firstN(above, 60))
	}
	if len(steady) > 0 && steady[len(steady)-1].Elapsed-steady[0].Elapsed > 120 {
		first := steady[0].Elapsed
		var warm []soakSample
		for _, smp := range steady {
			if smp.Elapsed-first >= 60 {
				warm = append(warm, smp)
			}
		}
		steady = warm
	}
	if len(steady) < 6 || steady[len(steady)-1].Elapsed-steady[0].Elapsed < 120 {
		r.skip("memory per session flat over time", "%d steady samples after the first minute, over less than 2 minutes: too short to judge (the heap is still growing to its working size); run with -duration 3m or more", len(steady))
		return
	}
	third := len(steady) / 3
	a, b := medianRSS(steady[:third]), medianRSS(steady[len(steady)-third:])
	ha, hb := medianHeap(steady[:third]), medianHeap(steady[len(steady)-third:])
	growth := (b - a) / a
	r.check("memory per session flat over time", growth <= 0.10,
		"median RSS per session %s in the first third of the steady state, %s in the last (%+.1f%%; want <= +10%%); heap in use per session %s -> %s",
		kib(a), kib(b), 100*growth, kib(ha), kib(hb))
}

func medianRSS(ss []soakSample) float64 {
	v := make([]float64, len(ss))
	for i, s := range ss {
		v[i] = s.RSSPerSession
	}
	return median(v)
}

func medianHeap(ss []soakSample) float64 {
	v := make([]float64, len(ss))
	for i, s := range ss {
		if s.Suite.Open > 0 {
			v[i] = float64(s.HeapInuse) / float64(s.Suite.Open)
		}
	}
	return median(v)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}
