package imaptls

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imapguard/imapguard/test/proxytest"
)

// pebbleInstall installs the ACME test server this test runs (make test
// does it when it is missing).
const pebbleInstall = "go install github.com/letsencrypt/pebble/v2/cmd/pebble@v2.10.1"

// pebbleMinica is the root of pebble's own HTTPS certificate
// (testdata/pebble/README.md).
const pebbleMinica = "testdata/pebble/pebble.minica.pem"

// TestACME runs the acme mode end to end against Pebble, Let's Encrypt's
// test ACME server, on loopback. Pebble is told to take every challenge
// as solved (PEBBLE_VA_ALWAYS_VALID): the names are not real, and nothing
// here can answer for them from outside. The Manager still binds the
// challenge ports it is given while a challenge is open.
func TestACME(t *testing.T) {
	p := startPebble(t, findPebble(t))
	base := func(t *testing.T) Options {
		return Options{
			Mode:                 ModeACME,
			CA:                   p.directory,
			CARoot:               pebbleMinica,
			Storage:              t.TempDir(),
			HTTPChallengePort:    p.httpPort,
			TLSALPNChallengePort: p.tlsPort,
			ChallengeHost:        "127.0.0.1",
		}
	}

	// The on-demand cases come first and without an email: certmagic
	// remembers the first email it sees process-wide, and these check that
	// no email means no prompt on standard input (unattendedIssuer).
	t.Run("on demand allow-list", func(t *testing.T) {
		o := base(t)
		o.OnDemand = true
		o.OnDemandDomains = []string{"a.example.test"}
		m := newACMEManager(t, o)
		if fp := m.Fingerprint(); fp != "" {
			t.Errorf("Fingerprint() before any handshake = %q; want \"\"", fp)
		}
		cfg := m.ServerConfig()
		if !slices.Equal(cfg.NextProtos, []string{"imap", "acme-tls/1"}) {
			t.Errorf("NextProtos = %q; want [imap acme-tls/1]", cfg.NextProtos)
		}
		addr := serveTLS(t, cfg)

		client := &tls.Config{RootCAs: p.roots, ServerName: "a.example.test", NextProtos: []string{"imap"}}
		leaf, st := mustHandshake(t, addr, client)
		if !slices.Equal(leaf.DNSNames, []string{"a.example.test"}) {
			t.Errorf("certificate names %v; want [a.example.test]", leaf.DNSNames)
		}
		if st.NegotiatedProtocol != "imap" {
			t.Errorf("ALPN: got %q; want imap", st.NegotiatedProtocol)
		}
		again, _ := mustHandshake(t, addr, client)
		if !bytes.Equal(again.Raw, leaf.Raw) {
			t.Error("second handshake: got a new certificate; want the cached one")
		}

		for _, name := range []string{"b.example.test", ""} { // "" = no SNI: the local IP, never allowed
			if _, err := handshake(t, addr, &tls.Config{ServerName: name, InsecureSkipVerify: true}); err == nil {
				t.Errorf("handshake with SNI %q: got a certificate; want a refusal", name)
			}
		}
	})

	t.Run("on demand permission URL", func(t *testing.T) {
		var mu sync.Mutex
		var asked []string
		ask := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			d := r.URL.Query().Get("domain")
			mu.Lock()
			asked = append(asked, d)
			mu.Unlock()
			if d != "c.example.test" {
				http.Error(w, "not ours", http.StatusForbidden)
			}
		}))
		t.Cleanup(ask.Close)

		o := base(t)
		o.OnDemand = true
		o.OnDemandPermissionURL = ask.URL + "/check?token=x"
		m := newACMEManager(t, o)
		addr := serveTLS(t, m.ServerConfig())

		leaf, _ := mustHandshake(t, addr, &tls.Config{RootCAs: p.roots, ServerName: "c.example.test"})
		if !slices.Equal(leaf.DNSNames, []string{"c.example.test"}) {
			t.Errorf("certificate names %v; want [c.example.test]", leaf.DNSNames)
		}
		if _, err := handshake(t, addr, &tls.Config{RootCAs: p.roots, ServerName: "d.example.test"}); err == nil {
			t.Error("handshake with SNI d.example.test (refused by the URL): got a certificate; want a refusal")
		}
		mu.Lock()
		defer mu.Unlock()
		if !slices.Contains(asked, "c.example.test") || !slices.Contains(asked, "d.example.test") {
			t.Errorf("permission URL was asked for %q; want c.example.test and d.example.test", asked)
		}
	})

	// Before any subtest with an email, for the same reason.
	t.Run("domains at start without email", func(t *testing.T) {
		o := base(t)
		o.Domains = []string{"noemail.example.test"}
		var m *Manager
		printed := captureStdout(t, func() { m = newACMEManager(t, o) })
		if printed != "" {
			t.Errorf("New printed %q on standard output; want no prompt (no one is at a daemon's terminal)", printed)
		}
		if m.Fingerprint() == "" {
			t.Error("Fingerprint() after New = \"\"; want the obtained certificate's")
		}
	})

	t.Run("domains at start", func(t *testing.T) {
		o := base(t)
		o.Domains = []string{"mail.example.test"}
		o.Email = "postmaster@example.test"
		m := newACMEManager(t, o)
		fp := m.Fingerprint()
		if fp == "" {
			t.Fatal("Fingerprint() after New = \"\"; want the obtained certificate's")
		}
		addr := serveTLS(t, m.ServerConfig())

		leaf, st := mustHandshake(t, addr, &tls.Config{RootCAs: p.roots, ServerName: "mail.example.test", NextProtos: []string{"imap"}})
		if got := fingerprint(leaf.Raw); got != fp {
			t.Errorf("served certificate %s; want Fingerprint() %s", got, fp)
		}
		if st.NegotiatedProtocol != "imap" {
			t.Errorf("ALPN: got %q; want imap", st.NegotiatedProtocol)
		}
		// A client without SNI, or with another name, gets the same
		// certificate (and its own verification decides).
		for _, name := range []string{"", "127.0.0.1"} {
			leaf, _ := mustHandshake(t, addr, &tls.Config{ServerName: name, InsecureSkipVerify: true})
			if got := fingerprint(leaf.Raw); got != fp {
				t.Errorf("server name %q: served %s; want %s", name, got, fp)
			}
		}

		// A restart on the same storage loads the certificate, not a new one.
		m.Close()
		m2 := newACMEManager(t, o)
		if got := m2.Fingerprint(); got != fp {
			t.Errorf("after a restart: Fingerprint() = %s; want the stored %s", got, fp)
		}
	})

	t.Run("CA refuses", func(t *testing.T) {
		o := base(t)
		o.Domains = []string{"blocked-domain.example"} // on the generated config's block list
		o.Email = "postmaster@example.test"
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		m, err := New(ctx, o)
		if err == nil {
			m.Close()
			t.Fatal("New for a name the CA refuses: got nil error; want one")
		}
		t.Logf("New: %v", err)
		if !strings.Contains(err.Error(), "blocked-domain.example") {
			t.Errorf("error %q does not name the domain", err)
		}
	})
}

// newACMEManager starts an acme Manager whose logs are shown if the test
// fails (or IMAPTLS_DEBUG is set), and closes it at cleanup.
func newACMEManager(t *testing.T, o Options) *Manager {
	t.Helper()
	var buf proxytest.Buffer
	o.Logger = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("IMAPTLS_DEBUG") != "" {
			t.Logf("manager log:\n%s", buf.String())
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m, err := New(ctx, o)
	if err != nil {
		t.Fatalf("New: %v\nlog:\n%s", err, buf.String())
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// captureStdout returns what fn wrote to os.Stdout, where certmagic
// prints its terms-and-email prompt (the tests here do not run in
// parallel, so the swap is theirs alone).
func captureStdout(t *testing.T, fn func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string)
	go func() {
		b, _ := io.ReadAll(r)
		got <- string(b)
	}()
	old := os.Stdout
	os.Stdout = w
	defer func() {
		os.Stdout = old
		w.Close()
	}()
	fn()
	os.Stdout = old
	w.Close()
	return <-got
}

// findPebble looks for the pebble binary in PATH and where go install
// puts it (make test installs it there). Missing, the test is skipped,
// except in CI (CI set), where it fails.
func findPebble(t *testing.T) string {
	t.Helper()
	p, err := proxytest.LookPath("pebble")
	if err != nil {
		proxytest.Skip(t, "ACME suite", "pebble not found; make test installs it, or run "+pebbleInstall)
	}
	return p
}

// pebble is a running Pebble.
type pebble struct {
	directory         string         // ACME directory URL
	httpPort, tlsPort int            // where it would connect for http-01 and tls-alpn-01
	roots             *x509.CertPool // the root it issues under
}

// startPebble runs bin on free loopback ports with a generated config and
// returns once it answers; cleanup kills it (its output is shown if the
// test failed).
func startPebble(t *testing.T, bin string) *pebble {
	t.Helper()
	ports := freePorts(t, 4)
	listen := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	mgmt := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))
	abs := func(p string) string {
		a, err := filepath.Abs(p)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	type profile struct {
		Description    string `json:"description"`
		ValidityPeriod int    `json:"validityPeriod"`
	}
	var cfg struct {
		Pebble struct {
			ListenAddress           string             `json:"listenAddress"`
			ManagementListenAddress string             `json:"managementListenAddress"`
			Certificate             string             `json:"certificate"`
			PrivateKey              string             `json:"privateKey"`
			HTTPPort                int                `json:"httpPort"`
			TLSPort                 int                `json:"tlsPort"`
			DomainBlocklist         []string           `json:"domainBlocklist"`
			KeyAlgorithm            string             `json:"keyAlgorithm"`
			Profiles                map[string]profile `json:"profiles"`
			RetryAfter              struct {
				Authz int `json:"authz"`
				Order int `json:"order"`
			} `json:"retryAfter"`
		} `json:"pebble"`
	}
	c := &cfg.Pebble
	c.ListenAddress, c.ManagementListenAddress = listen, mgmt
	c.Certificate, c.PrivateKey = abs("testdata/pebble/cert.pem"), abs("testdata/pebble/key.pem")
	c.HTTPPort, c.TLSPort = ports[2], ports[3]
	c.DomainBlocklist = []string{"blocked-domain.example"}
	c.KeyAlgorithm = "ecdsa"
	c.Profiles = map[string]profile{"default": {Description: "imaptls test", ValidityPeriod: 90 * 24 * 3600}}
	c.RetryAfter.Authz, c.RetryAfter.Order = 1, 1 // the polling acmez waits on
	data, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfgFile := writeFile(t, t.TempDir(), "pebble-config.json", data)

	cmd := exec.Command(bin, "-config", cfgFile)
	cmd.Env = append(os.Environ(),
		"PEBBLE_VA_ALWAYS_VALID=1", // every challenge passes without a connection
		"PEBBLE_VA_NOSLEEP=1",      // no random validation delay
		"PEBBLE_WFE_NONCEREJECT=0", // no deliberate badNonce errors (5% by default)
	)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	var log proxytest.Buffer
	listening := make(chan struct{})
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		sc := bufio.NewScanner(out)
		said := false
		for sc.Scan() {
			fmt.Fprintln(&log, sc.Text())
			if !said && strings.Contains(sc.Text(), "Listening on") {
				said = true
				close(listening)
			}
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-ended
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("pebble output:\n%s", log.String())
		}
	})
	select {
	case <-listening:
	case <-ended:
		t.Fatalf("pebble exited before listening:\n%s", log.String())
	case <-time.After(10 * time.Second):
		t.Fatalf("pebble did not start within 10s:\n%s", log.String())
	}
	// Pebble logs "Listening on" just before it binds, and binds its
	// management port in a goroutine: there is no later signal, so dial
	// both until they answer (bounded).
	for _, addr := range []string{listen, mgmt} {
		waitListening(t, addr)
	}

	// Pebble makes a new root at every start; the management API serves it.
	minica, err := loadRoots(pebbleMinica, false)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: minica}}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get("https://" + mgmt + "/roots/0")
	if err != nil {
		t.Fatalf("fetching pebble's root: %v", err)
	}
	defer resp.Body.Close()
	rootPEM, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("fetching pebble's root: %s, %v", resp.Status, err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(rootPEM) {
		t.Fatalf("pebble's /roots/0 is not PEM: %q", rootPEM)
	}
	return &pebble{
		directory: "https://" + listen + "/dir",
		httpPort:  ports[2],
		tlsPort:   ports[3],
		roots:     roots,
	}
}

// freePorts returns n distinct ports that were free on 127.0.0.1 a moment
// ago (the kernel does not hand a just-closed ephemeral port out again at
// once).
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

func waitListening(t *testing.T, addr string) {
	t.Helper()
	proxytest.WaitFor(t, "pebble listening on "+addr, func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// TestACMEContext: New gives up when ctx ends, even if the CA never
// answers (here: a listener that accepts and then stays silent).
func TestACMEContext(t *testing.T) {
	ca := proxytest.StartFake(t, proxytest.Hold(""))

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	m, err := New(ctx, Options{
		Mode:    ModeACME,
		Domains: []string{"mail.example.test"},
		Email:   "postmaster@example.test",
		CA:      "https://" + ca.Addr + "/dir",
		Storage: t.TempDir(),
	})
	if err == nil {
		m.Close()
		t.Fatal("New with a silent CA: got nil error; want one")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("New returned after %v; want soon after ctx ended (300ms)", d)
	}
	if !strings.Contains(err.Error(), "mail.example.test") {
		t.Errorf("error %q does not name the domain", err)
	}
}
