package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/imapguard/imapguard/test/dovecot"
)

// binaries are the programs the harness runs.
type binaries struct {
	imapguard, imapd, imapload string // built from this repository
	dovecot, haproxy, nginx    string // installed; "" when missing
	redis                      string // redis-server, for imapguard-redis; "" when missing
	nginxMailModule            string // "" when nginx has it built in (or is missing)
}

// findBinary looks name up in PATH and in the sbin directories, which
// are often not in a non-root PATH.
func findBinary(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// nginxMailModules are where distributions put the dynamic mail module.
var nginxMailModules = []string{
	"/usr/lib/nginx/modules/ngx_mail_module.so",
	"/usr/lib64/nginx/modules/ngx_mail_module.so",
	"/usr/share/nginx/modules/ngx_mail_module.so",
	"/usr/local/nginx/modules/ngx_mail_module.so",
}

// nginxMail returns the mail module to load, whether nginx has mail
// support at all, and why not.
func nginxMail(nginx string) (module string, ok bool, why string) {
	for _, p := range nginxMailModules {
		if _, err := os.Stat(p); err == nil {
			return p, true, ""
		}
	}
	out, _ := exec.Command(nginx, "-V").CombinedOutput()
	if strings.Contains(string(out), "--with-mail ") || strings.HasSuffix(strings.TrimSpace(string(out)), "--with-mail") {
		return "", true, ""
	}
	return "", false, "nginx has no mail module (apt-get install libnginx-mod-mail)"
}

// dependency is a Debian package set the harness needs for some targets.
type dependency struct {
	what     string
	packages []string
	present  func(b *binaries) bool
}

var dependencies = []dependency{
	{"Dovecot (the upstream of every workload but login)", []string{"dovecot-imapd"}, func(b *binaries) bool { return b.dovecot != "" }},
	{"HAProxy", []string{"haproxy"}, func(b *binaries) bool { return b.haproxy != "" }},
	{"Redis (the store of imapguard-redis)", []string{"redis-server"}, func(b *binaries) bool { return b.redis != "" }},
	{"nginx with its mail module", []string{"nginx-light", "libnginx-mod-mail"}, func(b *binaries) bool {
		if b.nginx == "" {
			return false
		}
		_, ok, _ := nginxMail(b.nginx)
		return ok
	}},
}

func (b *binaries) locate() {
	b.dovecot, _ = dovecot.Binary() // also $DOVECOT_BIN
	b.haproxy = findBinary("haproxy")
	b.redis = findBinary("redis-server")
	b.nginx = findBinary("nginx")
	b.nginxMailModule = ""
	if b.nginx != "" {
		if m, ok, _ := nginxMail(b.nginx); ok {
			b.nginxMailModule = m
		} else {
			b.nginx = ""
		}
	}
}

// ensurePackages finds Dovecot, HAProxy and nginx, installs the missing
// ones with apt-get when allowed, and reports what is still missing.
func (h *harness) ensurePackages() {
	h.bins.locate()
	var missing []string
	for _, d := range dependencies {
		if !d.present(&h.bins) {
			missing = append(missing, d.packages...)
		}
	}
	if len(missing) > 0 && h.opts.install {
		switch {
		case os.Geteuid() != 0:
			h.logf("missing packages %s; not root, so not installing them", strings.Join(missing, " "))
		case findBinary("apt-get") == "":
			h.logf("missing packages %s; no apt-get on this machine", strings.Join(missing, " "))
		default:
			h.logf("installing %s", strings.Join(missing, " "))
			if err := h.aptInstall(missing); err != nil {
				h.logf("apt-get install failed: %v", err)
			}
			h.bins.locate()
		}
	}
	for _, d := range dependencies {
		if !d.present(&h.bins) {
			h.logf("MISSING: %s (apt-get install -y %s); the targets that need it are skipped", d.what, strings.Join(d.packages, " "))
		}
	}
}

func (h *harness) aptInstall(pkgs []string) error {
	install := func() error {
		cmd := exec.CommandContext(h.ctx, "apt-get", append([]string{"install", "-y", "--no-install-recommends"}, pkgs...)...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v\n%s", err, lastLines(string(out), 15))
		}
		return nil
	}
	if err := install(); err == nil {
		return nil
	}
	// The package lists may be missing or stale on a fresh machine.
	h.logf("apt-get install failed; running apt-get update and trying again")
	cmd := exec.CommandContext(h.ctx, "apt-get", "update")
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get update: %v\n%s", err, lastLines(string(out), 15))
	}
	return install()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// findRepoRoot walks up from the working directory to the module root.
func findRepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/imapguard/imapguard\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the imapguard repository (no go.mod of github.com/imapguard/imapguard above the working directory)")
		}
		dir = parent
	}
}

// goTool returns the go command: from PATH, else from the usual place.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

// build compiles imapguard, imapd and imapload into bin/ and runs
// copies of them from the working directory, so that a rebuild of bin/
// during the run (make build) cannot mix two versions in one table.
func (h *harness) build() error {
	bin := filepath.Join(h.root, "bin")
	cmd := exec.CommandContext(h.ctx, goTool(), "build", "-o", bin+"/", "./cmd/imapguard", "./cmd/imapd", "./cmd/imapload")
	cmd.Dir = h.root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}
	own := filepath.Join(h.dir, "bin")
	if err := os.MkdirAll(own, 0o755); err != nil {
		return err
	}
	for _, b := range []struct {
		name string
		path *string
	}{{"imapguard", &h.bins.imapguard}, {"imapd", &h.bins.imapd}, {"imapload", &h.bins.imapload}} {
		data, err := os.ReadFile(filepath.Join(bin, b.name))
		if err != nil {
			return err
		}
		*b.path = filepath.Join(own, b.name)
		if err := os.WriteFile(*b.path, data, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// environment describes the machine and the software measured.
type environment struct {
	Date         string            `json:"date"`
	CPU          string            `json:"cpu"`
	CPUs         int               `json:"cpus"`
	MemoryMiB    int64             `json:"memory_mib"`
	Kernel       string            `json:"kernel"`
	Go           string            `json:"go"`
	Versions     map[string]string `json:"versions"`
	Commit       string            `json:"commit,omitempty"`
	LoadAvg      string            `json:"loadavg_at_start"`
	LoadAvgEnd   string            `json:"loadavg_at_end"`
	FileLimit    string            `json:"file_limit"`
	Duration     string            `json:"duration"`
	Runs         int               `json:"runs"`
	Concurrency  map[string]int    `json:"concurrency"`
	FileLimitWhy string            `json:"file_limit_short,omitempty"`
	Held         []heldRun         `json:"held"`
	IdleWindow   string            `json:"idle_window"`
	Sources      string            `json:"sources"`
	ImapguardLog string            `json:"imapguard_log_level"`
	// Telemetry is what imapguard's columns ran with: tracing, metrics,
	// relay, and what the collector received.
	Telemetry *telemetryEnv `json:"imapguard_telemetry,omitempty"`
}

func (h *harness) describe() environment {
	e := environment{
		Date:         time.Now().UTC().Format(time.RFC3339),
		CPUs:         runtime.NumCPU(),
		Go:           runtime.Version(),
		Versions:     map[string]string{},
		Duration:     h.opts.duration.String(),
		Runs:         h.opts.runs,
		Concurrency:  h.opts.concurrency,
		Held:         h.held,
		FileLimitWhy: h.fileLimitWhy,
		Telemetry:    h.describeTelemetry(),
		IdleWindow:   h.opts.idleWindow.String(),
		Sources:      h.opts.sources,
		ImapguardLog: h.opts.imapguardLogLevel,
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				e.CPU = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if kib, err := statusKiB("/proc/meminfo", "MemTotal"); err == nil {
		e.MemoryMiB = kib / 1024
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		e.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		e.LoadAvg = strings.TrimSpace(string(b))
	}
	if out, err := exec.Command(goTool(), "version").Output(); err == nil {
		e.Go = strings.TrimSpace(string(out))
	}
	if out, err := exec.Command("git", "-C", h.root, "describe", "--always", "--dirty").Output(); err == nil {
		e.Commit = strings.TrimSpace(string(out))
	}
	version := func(name, bin string, args ...string) {
		if bin == "" {
			e.Versions[name] = "not installed"
			return
		}
		out, _ := exec.Command(bin, args...).CombinedOutput()
		e.Versions[name] = strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	}
	version("dovecot", h.bins.dovecot, "--version")
	version("haproxy", h.bins.haproxy, "-v")
	version("nginx", h.bins.nginx, "-v")
	e.FileLimit = strconv.Itoa(h.fileLimit)
	return e
}

// loadAverage1 is the one-minute load average.
func loadAverage1() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}
