package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// An env is one phase's world: cmd/imapd as the upstream, imapguard in
// front of it with a configuration the suite wrote, both real processes
// built from this repository, and a probe of imapguard.

// binaries are the programs under test.
type binaries struct {
	imapguard, imapd string
}

// build compiles cmd/imapguard and cmd/imapd of the module in src into
// dir.
func build(ctx context.Context, src, dir string, log io.Writer) (binaries, error) {
	b := binaries{imapguard: filepath.Join(dir, "imapguard"), imapd: filepath.Join(dir, "imapd")}
	for _, t := range []struct{ out, pkg string }{{b.imapguard, "./cmd/imapguard"}, {b.imapd, "./cmd/imapd"}} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", t.out, t.pkg)
		cmd.Dir = src
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Run(); err != nil {
			return b, fmt.Errorf("go build %s: %w", t.pkg, err)
		}
	}
	return b, nil
}

// repoRoot finds the directory of go.mod from the working directory up.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found: run from the repository")
		}
		dir = parent
	}
}

// raiseFileLimit raises RLIMIT_NOFILE (soft and hard) to at least want
// for the suite and, by inheritance, the processes it starts (a process
// that calls setrlimit passes its own limit on to exec'd children).
// Raising the hard limit needs root (CAP_SYS_RESOURCE); without it the
// soft limit goes up to the hard one.
func raiseFileLimit(want uint64) (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if lim.Cur >= want && lim.Max >= want {
		return lim.Cur, syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	next := syscall.Rlimit{Cur: want, Max: max(want, lim.Max)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &next); err != nil {
		lim.Cur = lim.Max
		if err2 := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err2 != nil {
			return 0, err2
		}
		return lim.Cur, fmt.Errorf("raising RLIMIT_NOFILE to %d: %w (run as root; staying at %d)", want, err, lim.Cur)
	}
	return want, nil
}

// freePort returns a loopback address with a port that was free a moment
// ago. The suite names every port in the configuration it writes, since
// IMAPGUARD_PPROF and the reloaded file need real ones.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// proc is a child process the suite started; it gets SIGKILL if the
// suite dies.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error // from Wait, once done is closed
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// startProc starts argv with stderr (and stdout unless stdout is given)
// appended to logPath.
func startProc(name, logPath string, env []string, stdout io.Writer, argv ...string) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child has its own descriptor
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = logf
	cmd.Stdout = logf
	if stdout != nil {
		cmd.Stdout = stdout
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// stop sends sig and waits up to grace for the process to exit, then
// kills it. It returns the exit code (-1 when it had to be killed).
func (p *proc) stop(sig syscall.Signal, grace time.Duration) int {
	if !p.exited() {
		p.cmd.Process.Signal(sig)
		select {
		case <-p.done:
		case <-time.After(grace):
			p.cmd.Process.Kill()
			<-p.done
			return -1
		}
	}
	return p.cmd.ProcessState.ExitCode()
}

// user is an account of cmd/imapd.
type user struct {
	name, pass  string
	messages    int
	messageSize int
}

// guardConfig is the part of imapguard's configuration a phase chooses.
type guardConfig struct {
	upstream        string
	maxConnections  int // 0: the default (no practical limit)
	maxConnsPerUser int
	preauthTimeout  string
	idleTimeout     string
	connectTimeout  string
	loginTimeout    string
	nofile          int // >0: start imapguard with RLIMIT_NOFILE at this (soft and hard)
}

// env is one phase's processes and addresses.
type env struct {
	name  string
	dir   string
	bins  binaries
	logw  io.Writer
	users []user
	cfg   guardConfig
	ctx   context.Context

	imapd     *proc
	imapdAddr string
	guard     *proc
	guardLog  string
	cfgPath   string
	imapAddr  string
	imapsAddr string
	metrics   string
	admin     string
	pprof     string
	probe     *probe
	dialer    *dialer
}

// newEnv starts cmd/imapd with users and imapguard with cfg (its upstream
// the imapd unless cfg.upstream is set) in a fresh directory under dir.
func newEnv(ctx context.Context, name, dir string, bins binaries, logw io.Writer, users []user, cfg guardConfig) (*env, error) {
	e := &env{name: name, dir: filepath.Join(dir, name), bins: bins, logw: logw, users: users, cfg: cfg, ctx: ctx}
	if err := os.MkdirAll(e.dir, 0o755); err != nil {
		return nil, err
	}
	var err error
	if e.imapdAddr, err = freePort(); err != nil {
		return nil, err
	}
	if err := e.writeImapdConfig(); err != nil {
		return nil, err
	}
	if err := e.startImapd(); err != nil {
		return nil, err
	}
	if e.cfg.upstream == "" {
		e.cfg.upstream = e.imapdAddr
	}
	for _, a := range []*string{&e.imapAddr, &e.imapsAddr, &e.metrics, &e.admin, &e.pprof} {
		if *a, err = freePort(); err != nil {
			e.close()
			return nil, err
		}
	}
	e.cfgPath = filepath.Join(e.dir, "imapguard.toml")
	if err := e.writeGuardConfig(); err != nil {
		e.close()
		return nil, err
	}
	if err := e.startGuard(); err != nil {
		e.close()
		return nil, err
	}
	e.dialer = &dialer{imapAddr: e.imapAddr, imapsAddr: e.imapsAddr, timeout: 30 * time.Second}
	return e, nil
}

func (e *env) writeImapdConfig() error {
	var b strings.Builder
	fmt.Fprintf(&b, "listen = %q\n", e.imapdAddr)
	for _, u := range e.users {
		fmt.Fprintf(&b, "\n[[user]]\nusername = %q\npassword = %q\nmessages = %d\nmessage_size = %d\n",
			u.name, u.pass, u.messages, u.messageSize)
	}
	return os.WriteFile(filepath.Join(e.dir, "imapd.toml"), []byte(b.String()), 0o644)
}

// startImapd starts cmd/imapd and waits for its "imapd listening on"
// line.
func (e *env) startImapd() error {
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	p, err := startProc("imapd", filepath.Join(e.dir, "imapd.log"), nil, pw,
		e.bins.imapd, "-config", filepath.Join(e.dir, "imapd.toml"))
	pw.Close()
	if err != nil {
		pr.Close()
		return err
	}
	ready := make(chan error, 1)
	go func() {
		defer pr.Close()
		line, err := bufio.NewReader(pr).ReadString('\n')
		if err == nil && !strings.HasPrefix(line, "imapd listening on ") {
			err = fmt.Errorf("imapd said %q", line)
		}
		ready <- err
		io.Copy(io.Discard, pr)
	}()
	select {
	case err = <-ready:
	case <-time.After(60 * time.Second):
		err = errors.New("imapd did not say it was listening within 60s")
	}
	if err != nil {
		p.stop(syscall.SIGKILL, time.Second)
		return fmt.Errorf("imapd: %w", err)
	}
	e.imapd = p
	return nil
}

func (e *env) writeGuardConfig() error {
	c := e.cfg
	or := func(v, def string) string {
		if v == "" {
			return def
		}
		return v
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# written by test/soak for phase %s\n", e.name)
	fmt.Fprintf(&b, "[listen]\nimap = %q\nimaps = %q\n\n", e.imapAddr, e.imapsAddr)
	fmt.Fprintf(&b, "[upstream]\naddress = %q\nconnect_timeout = %q\nlogin_timeout = %q\n\n",
		c.upstream, or(c.connectTimeout, "5s"), or(c.loginTimeout, "30s"))
	fmt.Fprintf(&b, "[tls]\nmode = \"self_signed\"\nallow_plaintext_auth = true\n\n")
	fmt.Fprintf(&b, "[limits]\n")
	if c.maxConnections > 0 {
		fmt.Fprintf(&b, "max_connections = %d\n", c.maxConnections)
	}
	fmt.Fprintf(&b, "max_connections_per_user = %d\n", max(c.maxConnsPerUser, 16))
	fmt.Fprintf(&b, "preauth_timeout = %q\nidle_timeout = %q\n\n", or(c.preauthTimeout, "1m"), or(c.idleTimeout, "30m"))
	fmt.Fprintf(&b, "[log]\nlevel = \"info\"\n\n")
	fmt.Fprintf(&b, "[telemetry]\nmetrics_listen = %q\n\n", e.metrics)
	fmt.Fprintf(&b, "[admin]\nlisten = %q\n", e.admin)
	return os.WriteFile(e.cfgPath, []byte(b.String()), 0o644)
}

// startGuard starts imapguard (under prlimit when cfg.nofile is set) and
// waits until its admin API, metrics, pprof and both listeners answer.
func (e *env) startGuard() error {
	e.guardLog = filepath.Join(e.dir, "imapguard.log")
	argv := []string{e.bins.imapguard, "-config", e.cfgPath}
	if e.cfg.nofile > 0 {
		// prlimit sets the limit and execs imapguard in the same process
		// (so the pid is imapguard's). Soft and hard: the Go runtime
		// raises the soft limit to the hard one at start.
		argv = append([]string{"prlimit", fmt.Sprintf("--nofile=%d:%d", e.cfg.nofile, e.cfg.nofile), "--"}, argv...)
	}
	p, err := startProc("imapguard", e.guardLog, []string{"IMAPGUARD_PPROF=" + e.pprof}, nil, argv...)
	if err != nil {
		return err
	}
	e.guard = p
	e.probe = newProbe(p.pid(), e.metrics, e.admin, e.pprof)
	err = waitFor(e.ctx, 30*time.Second, func() (bool, error) {
		if p.exited() {
			return false, fmt.Errorf("imapguard exited: %v (log %s)", p.err, e.guardLog)
		}
		for _, a := range []string{e.imapAddr, e.imapsAddr} {
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err != nil {
				return false, nil
			}
			c.Close()
		}
		if _, err := e.probe.get(e.ctx, e.probe.adminURL+"/healthz"); err != nil {
			return false, nil
		}
		if _, err := e.probe.metrics(e.ctx); err != nil {
			return false, nil
		}
		if _, err := e.probe.goroutines(e.ctx); err != nil {
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		p.stop(syscall.SIGKILL, time.Second)
		return fmt.Errorf("imapguard did not come up: %w", err)
	}
	return nil
}

// setUpstream rewrites the configuration with another upstream.address,
// sends SIGHUP and waits until the admin API's /settings shows it in
// force (it applies to new connections).
func (e *env) setUpstream(addr string) error {
	e.cfg.upstream = addr
	if err := e.writeGuardConfig(); err != nil {
		return err
	}
	if err := e.guard.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		return err
	}
	return waitFor(e.ctx, 15*time.Second, func() (bool, error) {
		v, err := e.probe.setting(e.ctx, "upstream.address")
		return err == nil && v == addr, nil
	})
}

// stopGuard stops imapguard with SIGTERM and returns its exit status.
func (e *env) stopGuard() int {
	if e.guard == nil {
		return -1
	}
	return e.guard.stop(syscall.SIGTERM, 30*time.Second)
}

// close stops whatever still runs.
func (e *env) close() {
	if e.guard != nil && !e.guard.exited() {
		e.guard.stop(syscall.SIGKILL, 5*time.Second)
	}
	if e.imapd != nil && !e.imapd.exited() {
		e.imapd.stop(syscall.SIGTERM, 10*time.Second)
	}
}

// guardLogHas counts the lines of imapguard's log that contain s.
func (e *env) guardLogHas(s string) int {
	b, err := os.ReadFile(e.guardLog)
	if err != nil {
		return 0
	}
	return strings.Count(string(b), s)
}

// waitFor polls cond until it is true, it fails, ctx ends or limit
// passes. Polling is how the suite waits for another process's state.
func waitFor(ctx context.Context, limit time.Duration, cond func() (bool, error)) error {
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("not within %s", limit)
		case <-tick.C:
		}
	}
}
