package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// heldRun is one count of held sessions the held workload is measured at
// (-sessions 5000,50000): what was asked, what fits this machine, and in
// front of which upstream.
type heldRun struct {
	Requested int      `json:"requested"`
	Sessions  int      `json:"sessions"`
	Upstream  upstream `json:"upstream"`
	// Label is the workload column of its rows: "held" when there is one
	// count, else "held-5k", "held-9k" ...
	Label string `json:"label"`
	// Why says why Sessions or Upstream is not what was asked ("" when
	// it is).
	Why string `json:"why,omitempty"`
}

// Descriptors a proxy needs beyond two per held session (listeners,
// upstream health checks, log files, the Prometheus endpoint, HAProxy's
// splice pipes), and a held session's share of the ephemeral ports of
// 127.0.0.1 towards the one upstream port.
const (
	fdMargin   = 2000
	portMargin = 3000
)

// fdsFor is the RLIMIT_NOFILE a proxy needs to hold n sessions: a client
// and an upstream socket each.
func fdsFor(n int) int { return 2*n + fdMargin }

// raiseFileLimit sets RLIMIT_NOFILE, soft and hard, to at least want
// (within fs.nr_open), for the harness and so for every process it
// starts. Raising the hard limit needs CAP_SYS_RESOURCE: without it the
// soft limit is raised to the hard one. It returns the soft limit in
// force and, when want could not be had, why.
func raiseFileLimit(want int) (int, string) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, "getrlimit: " + err.Error()
	}
	why := ""
	if uint64(want) > lim.Max {
		target := uint64(want)
		if b, err := os.ReadFile("/proc/sys/fs/nr_open"); err == nil {
			if n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil && target > n {
				target = n
				why = fmt.Sprintf("fs.nr_open is %d", n)
			}
		}
		if target > lim.Max {
			try := syscall.Rlimit{Cur: target, Max: target}
			if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &try); err != nil {
				why = fmt.Sprintf("the hard limit is %d and could not be raised (setrlimit: %v)", lim.Max, err)
			}
		}
	}
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	if int(lim.Cur) >= want {
		why = ""
	}
	return int(lim.Cur), why
}

// localPorts is the size of net.ipv4.ip_local_port_range (0 if unknown).
func localPorts() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0
	}
	lo, err1 := strconv.Atoi(f[0])
	hi, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || hi < lo {
		return 0
	}
	return hi - lo + 1
}

// readProcInt reads an integer file of /proc/sys (0 if unknown).
func readProcInt(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

// machineLimits is what bounds the number of held sessions here.
type machineLimits struct {
	files       int // RLIMIT_NOFILE of the harness and its children
	filesWhy    string
	ports       int   // ephemeral ports (0: unknown)
	pidMax      int   // kernel.pid_max (0: unknown)
	memAvailKiB int64 // MemAvailable (0: unknown)
	dovecot     bool  // Dovecot is installed
}

// dovecotSessionKiB is what an idle Dovecot imap process costs (PSS,
// test/bench/README.md), rounded up; Dovecot runs one per session.
const dovecotSessionKiB = 512

// planHeld turns the requested counts into the counts measured here:
// each is cut to what the open-file limit and the ephemeral ports allow
// (rounded down to a thousand), duplicates dropped, and each runs in
// front of Dovecot when Dovecot can hold that many sessions (one process
// each: pid_max and memory), else in front of cmd/imapd (one process,
// one descriptor per session). choice is -held-upstream: "auto",
// "dovecot" or "imapd".
func planHeld(requested []int, m machineLimits, choice string) []heldRun {
	fit := (m.files - fdMargin) / 2
	fitWhy := ""
	if m.filesWhy != "" {
		fitWhy = fmt.Sprintf("the open-file limit is %d (%s)", m.files, m.filesWhy)
	} else {
		fitWhy = fmt.Sprintf("the open-file limit is %d", m.files)
	}
	if m.ports > 0 && m.ports-portMargin < fit {
		fit = m.ports - portMargin
		fitWhy = fmt.Sprintf("127.0.0.1 has %d ephemeral ports (net.ipv4.ip_local_port_range) for a proxy's connections to its upstream", m.ports)
	}
	if fit >= 1000 {
		fit -= fit % 1000
	}
	fit = max(fit, 1)
	var out []heldRun
	seen := map[int]bool{}
	for _, n := range requested {
		r := heldRun{Requested: n, Sessions: n}
		var why []string
		if n > fit {
			r.Sessions = fit
			why = append(why, fmt.Sprintf("%d sessions need about %d descriptors in each proxy and %s, so %d are held instead", n, fdsFor(n), fitWhy, fit))
		}
		if seen[r.Sessions] {
			continue
		}
		seen[r.Sessions] = true
		r.Upstream = upDovecot
		switch dovecotWhy := dovecotCannotHold(r.Sessions, m); {
		case choice == "imapd":
			r.Upstream = upImapd
		case choice == "dovecot":
		case dovecotWhy != "":
			r.Upstream = upImapd
			why = append(why, "in front of cmd/imapd, not Dovecot: "+dovecotWhy)
		}
		r.Why = strings.Join(why, "; ")
		out = append(out, r)
	}
	for i := range out {
		out[i].Label = "held"
		if len(out) > 1 {
			out[i].Label = "held-" + compactCount(out[i].Sessions)
		}
	}
	return out
}

// dovecotCannotHold says why Dovecot cannot hold n sessions on this
// machine, or "".
func dovecotCannotHold(n int, m machineLimits) string {
	switch {
	case !m.dovecot:
		return "Dovecot is not installed"
	case m.pidMax > 0 && n+2000 > m.pidMax*3/4:
		return fmt.Sprintf("Dovecot runs one process per session and kernel.pid_max is %d", m.pidMax)
	case m.memAvailKiB > 0 && int64(n)*dovecotSessionKiB > m.memAvailKiB/2:
		return fmt.Sprintf("Dovecot's %d imap processes would take about %d MiB, over half of the %d MiB available", n, int64(n)*dovecotSessionKiB/1024, m.memAvailKiB/1024)
	}
	return ""
}

// compactCount writes 5000 as 5k and 2500 as 2500.
func compactCount(n int) string {
	if n >= 1000 && n%1000 == 0 {
		return strconv.Itoa(n/1000) + "k"
	}
	return strconv.Itoa(n)
}

// heldWorkloads returns the held workload (the plain one, or held-tls)
// once per count measured: held-tls at the first count only.
func (h *harness) heldWorkloads(w workload) []workload {
	var out []workload
	for i, r := range h.held {
		if w.tls && i > 0 {
			break
		}
		c := w
		c.sessions = r.Sessions
		if !w.tls {
			c.name, c.metricsOf = r.Label, w.name
			c.upstream = r.Upstream
		}
		out = append(out, c)
	}
	return out
}

// dovecotHeldMax is the largest held count measured in front of Dovecot
// (held-tls always is), for its process limits.
func (h *harness) dovecotHeldMax() int {
	n := 0
	for i, r := range h.held {
		if r.Upstream == upDovecot || i == 0 {
			n = max(n, r.Sessions)
		}
	}
	return n
}
