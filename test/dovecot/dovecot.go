// Package dovecot starts private Dovecot 2.3 IMAP servers for imapguard's
// end-to-end tests (package test) and its benchmark harness (test/bench).
//
// Each instance runs in the foreground (dovecot -F) with a generated,
// self-contained configuration: nothing is read from /etc/dovecot (except,
// with TLS, Dovecot's own certificate), every file lives in the
// instance's directory, and it listens on free ports of 127.0.0.1 only.
// Users are a passwd-file passdb with plain passwords and a static userdb;
// mail is maildir under Instance.Dir/mail/USERNAME. Failed logins are
// answered without Dovecot's delay and per-IP penalty, unless
// Options.AuthPenalty keeps them; Options.HAProxy adds a listener that
// reads a PROXY header.
//
// It works as root (the login and mail processes then run as dovenull or
// nobody, since Dovecot refuses root for them) and as an ordinary user
// (every process runs as that user, without chroot).
//
// The configuration uses Dovecot 2.3 syntax; Version tells which Dovecot
// is installed (2.4 renamed most settings).
package dovecot

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// User is one account: LOGIN Username Password.
type User struct{ Username, Password string }

// Options configure an instance. The zero value starts Dovecot without
// users and without TLS.
type Options struct {
	// Users are the accounts. User names must not contain ':', '/', '\\',
	// '%', white space or control characters; passwords must not contain
	// ':' or line breaks.
	Users []User

	// TLS enables TLS: "ssl = yes" (STARTTLS on the plain listener) and
	// an imaps listener with implicit TLS on a second port
	// (Instance.TLSAddr). Plaintext logins stay allowed on both.
	TLS bool
	// TLSCert and TLSKey are PEM files of the certificate (optionally
	// followed by its chain) and its private key. Both empty with TLS:
	// Dovecot's own certificate (see DefaultCert).
	TLSCert, TLSKey string

	// Extra is appended to the generated configuration. Later settings
	// override earlier ones, and a section given again (service imap
	// { process_limit = 5000 }) is merged into the generated one.
	Extra string

	// Dir is the instance's directory; it is created if needed and left
	// in place by Stop. Empty: a new temporary directory that Stop
	// removes. Keep it short: Dovecot's Unix sockets live below it, and
	// socket paths are limited to about 100 bytes. Dovecot's unprivileged
	// processes must be able to traverse it.
	Dir string

	// Binary is the dovecot executable. Empty: Binary().
	Binary string

	// PrepareMail, if set, is called before Dovecot starts with the
	// directory that holds every user's maildir (mailDir/USERNAME), e.g.
	// to store messages. As root, the tree is then handed to the user
	// that accesses mail.
	PrepareMail func(mailDir string) error

	// AuthPenalty keeps Dovecot's stock penalty for failed logins:
	// auth_failure_delay (2s) and anvil's per-address auth penalty (2s,
	// doubling to 15s). Without it both are off, since every test
	// connects from loopback and the penalty would pile up across tests.
	AuthPenalty bool

	// TrustedNetworks is login_trusted_networks (and, with HAProxy,
	// haproxy_trusted_networks): from these Dovecot believes the client
	// address in an ID's x-originating-ip (and a PROXY header). Empty:
	// 127.0.0.0/8.
	TrustedNetworks string

	// HAProxy adds a listener with haproxy = yes (Instance.HAProxyAddr),
	// which reads a PROXY v1 or v2 header from TrustedNetworks before
	// the greeting.
	HAProxy bool

	// ReadyTimeout bounds the wait for Dovecot's first real greeting.
	// Zero: 20 seconds.
	ReadyTimeout time.Duration
}

// Instance is a running Dovecot.
type Instance struct {
	// Addr is the IMAP listener, "127.0.0.1:PORT" (with TLS it offers
	// STARTTLS).
	Addr string
	// TLSAddr is the imaps listener (implicit TLS); "" without TLS.
	TLSAddr string
	// HAProxyAddr is the listener that expects a PROXY header first;
	// "" without Options.HAProxy.
	HAProxyAddr string
	// CertPEM holds the PEM certificates Dovecot presents (leaf first);
	// nil without TLS. A client trusts it with ClientTLSConfig.
	CertPEM []byte
	// Dir is the instance's directory: dovecot.conf, passwd, the logs
	// and mail/USERNAME.
	Dir string
	// Binary and Version are the dovecot executable and its version.
	Binary, Version string

	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error // valid once exited is closed
	tempDir bool  // Dir was created by Start; Stop removes it

	stopOnce sync.Once
	stopErr  error
	mu       sync.Mutex
	finalLog string // the log as it was when Stop removed Dir
}

const (
	defaultReadyTimeout = 20 * time.Second
	// stopTimeout bounds how long Stop waits after SIGTERM before it
	// kills Dovecot's process group.
	stopTimeout = 10 * time.Second
	// portAttempts is how often Start picks new ports when Dovecot cannot
	// bind the ones it was given (another process took one between our
	// probe and Dovecot's bind).
	portAttempts = 3
)

// Binary locates the dovecot executable: $DOVECOT_BIN if set, else PATH,
// else the usual sbin directories, which are often not in a non-root PATH.
func Binary() (string, error) {
	if p := os.Getenv("DOVECOT_BIN"); p != "" {
		return exec.LookPath(p)
	}
	if p, err := exec.LookPath("dovecot"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/dovecot", "/usr/local/sbin/dovecot", "/sbin/dovecot", "/opt/homebrew/sbin/dovecot"} {
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", errors.New("dovecot binary not found in $DOVECOT_BIN, PATH, /usr/sbin, /usr/local/sbin or /sbin")
}

// Version returns the output of `bin --version`, e.g.
// "2.3.19.1 (9b53102964)".
func Version(bin string) (string, error) {
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s --version: %v: %s", bin, err, bytes.TrimSpace(out))
	}
	return strings.TrimSpace(string(out)), nil
}

// Start starts Dovecot and waits until it greets on Addr (and, with TLS,
// completes a handshake with the expected certificate on TLSAddr). On
// error nothing is left running and a temporary directory is removed;
// the error includes Dovecot's log.
func Start(opts Options) (*Instance, error) {
	for _, u := range opts.Users {
		if u.Username == "" || strings.ContainsAny(u.Username, ":/\\%\r\n\x00 \t") {
			return nil, fmt.Errorf("dovecot: unusable user name %q", u.Username)
		}
		if strings.ContainsAny(u.Password, ":\r\n\x00") {
			return nil, fmt.Errorf("dovecot: password of %q must not contain ':' or line breaks", u.Username)
		}
	}
	inst := &Instance{Binary: opts.Binary}
	c := conf{TLS: opts.TLS, Extra: strings.TrimRight(opts.Extra, "\n"),
		AuthPenalty: opts.AuthPenalty, TrustedNetworks: opts.TrustedNetworks}
	if strings.ContainsAny(c.TrustedNetworks, "\r\n{}") {
		return nil, fmt.Errorf("dovecot: unusable TrustedNetworks %q", c.TrustedNetworks)
	}
	var err error
	if opts.TLS {
		if c.CertFile, c.KeyFile, inst.CertPEM, err = tlsFiles(opts.TLSCert, opts.TLSKey); err != nil {
			return nil, fmt.Errorf("dovecot: %w", err)
		}
	} else if opts.TLSCert != "" || opts.TLSKey != "" {
		return nil, errors.New("dovecot: TLSCert and TLSKey need TLS")
	}
	if inst.Binary == "" {
		if inst.Binary, err = Binary(); err != nil {
			return nil, err
		}
	}
	if inst.Version, err = Version(inst.Binary); err != nil {
		return nil, fmt.Errorf("dovecot: %w", err)
	}
	if err := accounts(&c); err != nil {
		return nil, fmt.Errorf("dovecot: %w", err)
	}

	if opts.Dir == "" {
		// Short (see Options.Dir), and 0755 rather than MkdirTemp's 0700.
		if inst.Dir, err = os.MkdirTemp("", "imapguard-dovecot-"); err != nil {
			return nil, err
		}
		inst.tempDir = true
		if err := os.Chmod(inst.Dir, 0o755); err != nil {
			_ = os.RemoveAll(inst.Dir)
			return nil, err
		}
	} else {
		if inst.Dir, err = filepath.Abs(opts.Dir); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(inst.Dir, 0o755); err != nil {
			return nil, err
		}
	}
	c.Dir = inst.Dir
	ok := false
	defer func() {
		if !ok && inst.tempDir {
			_ = removeAll(inst.Dir)
		}
	}()
	if err := prepare(inst.Dir, &c, opts); err != nil {
		return nil, fmt.Errorf("dovecot: %w", err)
	}

	timeout := opts.ReadyTimeout
	if timeout <= 0 {
		timeout = defaultReadyTimeout
	}
	var lastErr error
	for attempt := 1; attempt <= portAttempts; attempt++ {
		n := 1
		if opts.TLS {
			n++
		}
		if opts.HAProxy {
			n++
		}
		ports, err := freePorts(n)
		if err != nil {
			return nil, fmt.Errorf("dovecot: finding a free port: %w", err)
		}
		c.Port = ports[0]
		inst.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(c.Port))
		if opts.TLS {
			c.TLSPort = ports[1]
			inst.TLSAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(c.TLSPort))
		}
		if opts.HAProxy {
			c.HAProxyPort = ports[n-1]
			inst.HAProxyAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(c.HAProxyPort))
		}
		retry, err := inst.run(&c, timeout)
		if err == nil {
			ok = true
			return inst, nil
		}
		lastErr = err
		if !retry {
			break
		}
	}
	return nil, fmt.Errorf("dovecot: %w", lastErr)
}

// accounts works out which system accounts Dovecot's processes run as.
func accounts(c *conf) error {
	if os.Geteuid() != 0 {
		// Unprivileged: Dovecot cannot switch users, so every service runs
		// as us; the service users must name us, and chroot is impossible.
		u, err := user.Current()
		if err != nil {
			return fmt.Errorf("current user: %w", err)
		}
		g, err := user.LookupGroupId(u.Gid)
		if err != nil {
			return fmt.Errorf("group of current user: %w", err)
		}
		c.InternalUser, c.InternalGroup, c.LoginUser = u.Username, g.Name, u.Username
		c.NoChroot = true
		return nil
	}
	// Root: the master and the internal services (auth, anvil, ...) may run
	// as root, but imap-login refuses to ("This process must not be run as
	// root") and so does mail access ("Mail access for users with UID 0 not
	// permitted"). Use the unprivileged accounts that already exist; no
	// system user is created.
	c.InternalUser, c.InternalGroup = "root", "root"
	login, err := firstUser("dovenull", "nobody")
	if err != nil {
		return fmt.Errorf("no unprivileged login user: %w", err)
	}
	mail, err := firstUser("nobody")
	if err != nil {
		return fmt.Errorf("no unprivileged mail user: %w", err)
	}
	c.LoginUser = login.Username
	c.MailUID, c.MailGID = mail.Uid, mail.Gid
	return nil
}

func firstUser(names ...string) (*user.User, error) {
	var errs []error
	for _, n := range names {
		u, err := user.Lookup(n)
		if err == nil {
			return u, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// prepare writes the passwd file and the mail directory.
func prepare(dir string, c *conf, opts Options) error {
	var passwd strings.Builder
	for _, u := range opts.Users {
		fmt.Fprintf(&passwd, "%s:{PLAIN}%s::::::\n", u.Username, u.Password)
	}
	if err := os.WriteFile(filepath.Join(dir, "passwd"), []byte(passwd.String()), 0o644); err != nil {
		return err
	}
	mail := filepath.Join(dir, "mail")
	if err := os.MkdirAll(mail, 0o755); err != nil {
		return err
	}
	if opts.PrepareMail != nil {
		if err := opts.PrepareMail(mail); err != nil {
			return fmt.Errorf("preparing mail: %w", err)
		}
	}
	if c.MailUID == "" {
		return nil
	}
	uid, uerr := strconv.Atoi(c.MailUID)
	gid, gerr := strconv.Atoi(c.MailGID)
	if err := errors.Join(uerr, gerr); err != nil {
		return fmt.Errorf("mail user ids: %w", err)
	}
	return filepath.Walk(mail, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}

// freePorts returns n distinct TCP ports that were free on 127.0.0.1 a
// moment ago.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close() // held until all are picked, so they differ
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func (i *Instance) confPath() string   { return filepath.Join(i.Dir, "dovecot.conf") }
func (i *Instance) logPath() string    { return filepath.Join(i.Dir, "dovecot.log") }
func (i *Instance) stderrPath() string { return filepath.Join(i.Dir, "dovecot.stderr") }

// run writes the configuration and starts Dovecot with it. On failure
// Dovecot has exited again and retry reports whether it failed because a
// port was taken.
func (i *Instance) run(c *conf, timeout time.Duration) (retry bool, err error) {
	data, err := c.render()
	if err != nil {
		return false, err
	}
	if err := os.WriteFile(i.confPath(), data, 0o644); err != nil {
		return false, err
	}
	// Start every attempt afresh: its own logs, and no sockets left over
	// from a failed attempt.
	for _, p := range []string{filepath.Join(i.Dir, "run"), filepath.Join(i.Dir, "state")} {
		if err := os.RemoveAll(p); err != nil {
			return false, err
		}
	}
	for _, p := range []string{i.logPath(), i.stderrPath()} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return false, err
		}
	}
	// Output Dovecot writes before its log process is up (and fatal
	// start-up errors) goes to stdout/stderr.
	out, err := os.Create(i.stderrPath())
	if err != nil {
		return false, err
	}
	defer out.Close() // the child holds its own descriptor

	cmd := exec.Command(i.Binary, "-F", "-c", i.confPath())
	cmd.Dir = i.Dir
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return false, fmt.Errorf("starting %s: %w", i.Binary, err)
	}
	i.cmd = cmd
	i.exited = make(chan struct{})
	go func() {
		i.waitErr = cmd.Wait()
		close(i.exited)
	}()

	if err := i.waitReady(timeout); err != nil {
		select {
		case <-i.exited:
			l := i.readLog()
			return strings.Contains(l, "Address already in use"),
				fmt.Errorf("dovecot exited before it was ready (%v): %v\n%s", i.waitErr, err, l)
		default:
		}
		_ = i.terminate()
		return false, fmt.Errorf("%v\n%s", err, i.readLog())
	}
	return false, nil
}

// waitReady dials Addr until Dovecot answers with its real greeting. When
// the auth process is not connected yet, imap-login first sends "* OK
// Waiting for authentication process to respond.."; that does not count as
// ready. With TLS, TLSAddr must then greet over TLS with CertPEM's leaf.
func (i *Instance) waitReady(timeout time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	probes := []func() (string, error){func() (string, error) { return readGreeting(i.Addr, nil) }}
	if i.TLSAddr != "" {
		cfg, err := pinnedTLSConfig(i.CertPEM)
		if err != nil {
			return err
		}
		probes = append(probes, func() (string, error) { return readGreeting(i.TLSAddr, cfg) })
	}
	var last error
	for len(probes) > 0 {
		select {
		case <-i.exited:
			return fmt.Errorf("dovecot exited; last probe: %v", last)
		default:
		}
		greeting, err := probes[0]()
		if err == nil {
			if strings.HasPrefix(greeting, "* OK") && !strings.Contains(greeting, "Waiting for authentication") {
				probes = probes[1:]
				continue
			}
			err = fmt.Errorf("greeting %q", greeting)
		}
		last = err
		select {
		case <-i.exited:
			return fmt.Errorf("dovecot exited; last probe: %v", last)
		case <-deadline.C:
			return fmt.Errorf("dovecot not ready after %v; last probe: %v", timeout, last)
		case <-tick.C:
		}
	}
	return nil
}

// Pid is the process id of Dovecot's master process, which leads its own
// process group.
func (i *Instance) Pid() int { return i.cmd.Process.Pid }

// Stop terminates Dovecot (SIGTERM; after 10 seconds SIGKILL to its process
// group), waits for it to exit and removes a temporary Dir. It reports
// whether Dovecot had to be killed, had exited on its own before, or Dir
// could not be removed. It is safe to call more than once.
func (i *Instance) Stop() error {
	i.stopOnce.Do(func() {
		var errs []error
		select {
		case <-i.exited:
			errs = append(errs, fmt.Errorf("dovecot exited before Stop: %v", i.waitErr))
			killGroup(i.cmd.Process) // its workers may still run
		default:
			errs = append(errs, i.terminate())
		}
		if i.tempDir {
			i.mu.Lock()
			i.finalLog = i.readLog()
			i.mu.Unlock()
			errs = append(errs, removeAll(i.Dir))
		}
		i.stopErr = errors.Join(errs...)
	})
	return i.stopErr
}

// terminate stops the running master and the rest of its process group.
func (i *Instance) terminate() error {
	_ = i.cmd.Process.Signal(syscall.SIGTERM)
	timer := time.NewTimer(stopTimeout)
	defer timer.Stop()
	var err error
	select {
	case <-i.exited:
		if !isTermination(i.waitErr) {
			err = fmt.Errorf("dovecot exited with %v", i.waitErr)
		}
	case <-timer.C:
		err = fmt.Errorf("dovecot (pid %d) did not exit %v after SIGTERM; killed it", i.cmd.Process.Pid, stopTimeout)
	}
	// The master shuts its children down before it exits; whatever is
	// left of the group (it keeps the master's id while any member lives)
	// is killed.
	killGroup(i.cmd.Process)
	<-i.exited
	return err
}

// isTermination reports whether err is how Dovecot ends after SIGTERM.
func isTermination(err error) bool {
	if err == nil {
		return true
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGTERM
}

// Log returns Dovecot's log and whatever it wrote to stdout and stderr.
// After Stop has removed a temporary Dir, it returns the log as it was
// then.
func (i *Instance) Log() string {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.finalLog != "" {
		return i.finalLog
	}
	return i.readLog()
}

func (i *Instance) readLog() string {
	var b strings.Builder
	for _, p := range []string{i.logPath(), i.stderrPath()} {
		data, err := os.ReadFile(p)
		switch {
		case errors.Is(err, os.ErrNotExist):
			continue
		case err != nil:
			fmt.Fprintf(&b, "--- %s: %v\n", filepath.Base(p), err)
		case len(bytes.TrimSpace(data)) > 0:
			fmt.Fprintf(&b, "--- %s:\n%s\n", filepath.Base(p), bytes.TrimRight(data, "\n"))
		}
	}
	if b.Len() == 0 {
		return "(dovecot wrote no log)"
	}
	return b.String()
}

// removeAll removes dir, retrying while processes that just exited may
// still be closing files in it.
func removeAll(dir string) error {
	var err error
	for range 10 {
		if err = os.RemoveAll(dir); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("dovecot: removing %s: %w", dir, err)
}
