package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/imapguard/imapguard/test/dovecot"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat;
// it is 100 on every Linux architecture Go supports.
const clockTicks = 100

// child is a process the harness started. Each child leads its own
// process group, so that stopping it also stops the workers it forked
// (nginx, Dovecot), and it gets SIGKILL if the harness dies.
type child struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	waitErr error
	stopped bool
}

// children tracks every process the harness started, for cleanup. The
// process groups are also listed in a file of the working directory, so
// that a later run can stop what a killed harness left behind (nginx's
// workers outlive their master).
type children struct {
	mu     sync.Mutex
	list   []*child
	record func(pgid int, name string)
}

// start runs bin with args in dir, output appended to dir/name.log.
func (cs *children) start(dir, name, bin string, args ...string) (*child, error) {
	return cs.startEnv(dir, name, bin, nil, args...)
}

// startEnv is start with the environment env (nil: the harness's own).
func (cs *children) startEnv(dir, name, bin string, env []string, args ...string) (*child, error) {
	logPath := filepath.Join(dir, name+".log")
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer out.Close() // the child has its own descriptor
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	cs.recordGroup(c.pid(), name)
	go func() {
		c.waitErr = cmd.Wait()
		close(c.done)
	}()
	cs.mu.Lock()
	cs.list = append(cs.list, c)
	cs.mu.Unlock()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the child's process group, waits up to grace for
// the child to exit, then SIGKILLs whatever is left of the group.
func (c *child) stop(grace time.Duration) {
	if c.stopped {
		return
	}
	c.stopped = true
	pgid := c.pid() // Setpgid: the group is the child's own pid
	if !c.exited() {
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(grace):
		}
	}
	// Workers of nginx or Dovecot may outlive their master for a moment;
	// the group id stays ours while any member lives.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
	}
}

// stopNamed stops the children whose name starts with prefix, last
// started first.
func (cs *children) stopNamed(prefix string) {
	cs.mu.Lock()
	list := append([]*child(nil), cs.list...)
	cs.mu.Unlock()
	for i := len(list) - 1; i >= 0; i-- {
		if strings.HasPrefix(list[i].name, prefix) {
			list[i].stop(10 * time.Second)
		}
	}
}

// stopAll stops every child, last started first.
func (cs *children) stopAll() {
	cs.mu.Lock()
	list := append([]*child(nil), cs.list...)
	cs.mu.Unlock()
	for i := len(list) - 1; i >= 0; i-- {
		list[i].stop(5 * time.Second)
	}
}

// Files in the working directory that let a later run clean up after a
// harness that was killed (SIGKILL runs no cleanup).
const (
	ownerFile    = "harness.pid" // "PID EXE" of the harness
	childrenFile = "children"    // "PGID NAME" per child started
)

// recordChildren makes cs list each child it starts in dir/children.
func (cs *children) recordChildren(dir string) error {
	exe, _ := os.Executable()
	if err := os.WriteFile(filepath.Join(dir, ownerFile), fmt.Appendf(nil, "%d %s\n", os.Getpid(), exe), 0o644); err != nil {
		return err
	}
	cs.record = func(pgid int, name string) {
		f, err := os.OpenFile(filepath.Join(dir, childrenFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return
		}
		defer f.Close()
		fmt.Fprintf(f, "%d %s\n", pgid, name)
	}
	return nil
}

// recordGroup lists a process group for reapStale: the group of a child,
// or that of a process started elsewhere (Dovecot, by test/dovecot).
func (cs *children) recordGroup(pgid int, name string) {
	if cs.record != nil {
		cs.record(pgid, name)
	}
}

// reapStale stops the leftovers of earlier harness runs that died
// without cleaning up: for each working directory whose harness is gone,
// every process still in one of its children's process groups that
// started after that harness gets SIGKILL, and the directory is removed.
// It returns what it did.
func reapStale(pattern string) []string {
	dirs, _ := filepath.Glob(pattern)
	var out []string
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			continue // not ours, or still being set up
		}
		var pid int
		var exe string
		if _, err := fmt.Sscan(string(b), &pid, &exe); err != nil {
			continue
		}
		if pid == os.Getpid() || sameExe(pid, exe) {
			continue // that harness is still running
		}
		st, err := os.Stat(filepath.Join(dir, ownerFile))
		if err != nil {
			continue
		}
		since := st.ModTime().Add(-time.Second)
		killed := 0
		if b, err := os.ReadFile(filepath.Join(dir, childrenFile)); err == nil {
			for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
				var pgid int
				if _, err := fmt.Sscan(line, &pgid); err != nil || pgid <= 1 {
					continue
				}
				killed += killGroup(pgid, since)
			}
		}
		_ = os.RemoveAll(dir)
		out = append(out, fmt.Sprintf("removed %s of an earlier run that did not clean up (%d leftover processes stopped)", dir, killed))
	}
	return out
}

// sameExe reports whether pid is alive and runs exe.
func sameExe(pid int, exe string) bool {
	p, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	return err == nil && p == exe
}

// killGroup SIGKILLs the processes of group pgid that started after
// since (so that a group id reused by someone else is left alone).
func killGroup(pgid int, since time.Time) int {
	boot := bootTime()
	if boot.IsZero() {
		return 0
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readStat(pid)
		if err != nil || st.pgrp != pgid {
			continue
		}
		started := boot.Add(time.Duration(st.startTick) * time.Second / clockTicks)
		if started.Before(since) {
			continue
		}
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			n++
		}
	}
	return n
}

// bootTime is when the machine booted (btime in /proc/stat).
func bootTime() time.Time {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			if sec, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
				return time.Unix(sec, 0)
			}
		}
	}
	return time.Time{}
}

// tail returns the last n bytes of the child's log.
func (c *child) tail(n int64) string {
	return tailFile(c.logPath, n)
}

func tailFile(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		_, _ = f.Seek(st.Size()-n, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return strings.TrimSpace(string(b))
}

// procStat is what the harness reads of one process.
type procStat struct {
	ppid      int
	pgrp      int
	ticks     int64 // utime + stime, all threads
	startTick int64 // start time, in clock ticks after boot
}

// readStat parses /proc/PID/stat. The command name is in parentheses
// and may contain spaces, so fields are counted after the last ')'.
func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] state, f[1] ppid, f[2] pgrp, ... f[11] utime, f[12] stime,
	// ... f[19] starttime
	if len(f) < 20 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ppid, _ := strconv.Atoi(f[1])
	pgrp, _ := strconv.Atoi(f[2])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	start, _ := strconv.ParseInt(f[19], 10, 64)
	return procStat{ppid: ppid, pgrp: pgrp, ticks: ut + st, startTick: start}, nil
}

// statusKiB returns a "Name:   N kB" field of /proc/PID/status (VmRSS)
// or /proc/PID/smaps_rollup (Pss).
func statusKiB(path, field string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			v := strings.Fields(rest)
			if len(v) == 0 {
				break
			}
			return strconv.ParseInt(v[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("%s: no %s", path, field)
}

// tree returns root and all its descendants.
func tree(root int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return []int{root}
	}
	children := make(map[int][]int)
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readStat(pid)
		if err != nil {
			continue
		}
		children[st.ppid] = append(children[st.ppid], pid)
	}
	out := []int{root}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// usage is a sample of a set of processes.
type usage struct {
	procs  int
	rssKiB int64 // sum of VmRSS
	pssKiB int64 // sum of Pss (only when asked for)
	ticks  int64 // sum of utime+stime
	at     time.Time
}

func (u usage) cpuSeconds() float64 { return float64(u.ticks) / clockTicks }

// sampleTree samples root and its descendants.
func sampleTree(root int, withPss bool) usage {
	return sample(tree(root), withPss)
}

func sample(pids []int, withPss bool) usage {
	u := usage{at: time.Now()}
	for _, pid := range pids {
		st, err := readStat(pid)
		if err != nil {
			continue // exited meanwhile
		}
		rss, err := statusKiB("/proc/"+strconv.Itoa(pid)+"/status", "VmRSS")
		if err != nil {
			continue
		}
		u.procs++
		u.ticks += st.ticks
		u.rssKiB += rss
		if withPss {
			if pss, err := statusKiB("/proc/"+strconv.Itoa(pid)+"/smaps_rollup", "Pss"); err == nil {
				u.pssKiB += pss
			}
		}
	}
	return u
}

// cpuPercent is the CPU used between two samples as a percentage of one
// core over the wall-clock time between them.
func cpuPercent(a, b usage) float64 {
	wall := b.at.Sub(a.at).Seconds()
	if wall <= 0 {
		return 0
	}
	return (b.cpuSeconds() - a.cpuSeconds()) / wall * 100
}

// freeLoopbackPort returns a TCP port that was free on 127.0.0.1 a moment
// ago.
func freeLoopbackPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitGreeting dials addr until it answers with an IMAP "* OK" greeting
// (Dovecot's "Waiting for authentication process" does not count), the
// child exits, or timeout passes; over implicit TLS if withTLS.
func waitGreeting(addr string, withTLS bool, c *child, timeout time.Duration) error {
	var cfg *tls.Config
	over := ""
	if withTLS {
		cfg, over = clientTLSConfig(), " over TLS"
	}
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if c != nil && c.exited() {
			return fmt.Errorf("%s exited (%v) before it greeted%s on %s:\n%s", c.name, c.waitErr, over, addr, c.tail(2000))
		}
		g, _, err := dovecot.Greeting(addr, cfg, 3*time.Second)
		if err == nil {
			if strings.HasPrefix(g, "* OK") && !strings.Contains(g, "Waiting for authentication") {
				return nil
			}
			err = fmt.Errorf("greeting %q", g)
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("no IMAP greeting%s on %s after %v: %v", over, addr, timeout, last)
}

// errSkipped marks a target or workload that cannot run here; the
// message says why.
var errSkipped = errors.New("skipped")
