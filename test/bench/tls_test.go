package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/imapguard/imapguard/cmd/imapload/loadresult"
	"github.com/imapguard/imapguard/config"
)

func TestWriteTLSCert(t *testing.T) {
	dir := t.TempDir()
	f, err := writeTLSCert(dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(f.cert, f.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("public key %T, want ECDSA P-256", leaf.PublicKey)
	}
	if err := leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Error(err)
	}
	if err := leaf.VerifyHostname("localhost"); err != nil {
		t.Error(err)
	}
	if !bytes.Equal(f.certPEM, pemFile(t, f.cert)) {
		t.Error("certPEM differs from the certificate file")
	}
	// HAProxy's crt: the certificate and its key in one file.
	combined := pemFile(t, f.combined)
	var types []string
	for rest := combined; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		types = append(types, b.Type)
	}
	if strings.Join(types, ",") != "CERTIFICATE,PRIVATE KEY" {
		t.Errorf("combined PEM holds %v", types)
	}
	if _, err := tls.X509KeyPair(combined, combined); err != nil {
		t.Errorf("combined PEM: %v", err)
	}
	if st, err := os.Stat(f.key); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode: %v %v", st.Mode(), err)
	}
}

func pemFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The generated imapguard configurations must stay valid as the
// configuration format evolves.
func TestImapguardConfigs(t *testing.T) {
	dir := t.TempDir()
	f, err := writeTLSCert(dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for name, vars := range map[string]map[string]string{
		"plain": {"Listen": "127.0.0.1:1143", "Upstream": "127.0.0.1:2143", "LogLevel": "info"},
		"tls": {"Listen": "", "ListenTLS": "127.0.0.1:1993", "Upstream": "127.0.0.1:2143", "LogLevel": "warn",
			"CertFile": f.cert, "KeyFile": f.key},
	} {
		var buf bytes.Buffer
		if err := imapguardConfTemplate.Execute(&buf, vars); err != nil {
			t.Fatal(err)
		}
		c, err := config.Parse(name, buf.Bytes())
		if err != nil {
			t.Fatalf("%s: %v\n%s", name, err, buf.String())
		}
		if c.Listen.IMAP != vars["Listen"] || c.Listen.IMAPS != vars["ListenTLS"] {
			t.Errorf("%s: listen %+v", name, c.Listen)
		}
		wantMode := "off"
		if name == "tls" {
			wantMode = "files"
		}
		if c.TLS.Mode != wantMode && !(wantMode == "off" && c.TLS.Mode == "") {
			t.Errorf("%s: tls.mode %q, want %q", name, c.TLS.Mode, wantMode)
		}
		if c.Upstream.TLS != "" && c.Upstream.TLS != "none" {
			t.Errorf("%s: upstream.tls %q, want plaintext", name, c.Upstream.TLS)
		}
	}
}

func TestRelayTemplates(t *testing.T) {
	ls := []relayListen{
		{Name: "dovecot", Listen: "127.0.0.1:1001", Upstream: "127.0.0.1:143", AuthPath: "/dovecot"},
		{Name: "dovecot-tls", Listen: "127.0.0.1:1002", Upstream: "127.0.0.1:143", AuthPath: "/dovecot", TLS: true},
	}
	var buf bytes.Buffer
	if err := haproxyConfTemplate.Execute(&buf, map[string]any{"Dir": "/d", "MaxConn": 1000, "Listens": ls, "Combined": "/d/combined.pem"}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"bind 127.0.0.1:1001\n", "bind 127.0.0.1:1002 ssl crt /d/combined.pem prefer-client-ciphers\n", "listen dovecot-tls\n"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("haproxy.cfg lacks %q:\n%s", want, buf.String())
		}
	}
	buf.Reset()
	if err := nginxConfTemplate.Execute(&buf, map[string]any{"Dir": "/d", "Listens": ls, "Auth": "127.0.0.1:9", "Cert": "/d/cert.pem", "Key": "/d/key.pem", "Conns": 1024, "Files": 2048}); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"listen 127.0.0.1:1001;", "listen 127.0.0.1:1002 ssl;", "ssl_certificate /d/cert.pem;", "ssl_certificate_key /d/key.pem;", "ssl_protocols TLSv1.2 TLSv1.3;"} {
		if !strings.Contains(out, want) {
			t.Errorf("nginx.conf lacks %q:\n%s", want, out)
		}
	}
	if strings.Count(out, "ssl_certificate ") != 1 {
		t.Errorf("the plaintext server got a certificate:\n%s", out)
	}
}

func TestTLSWorkloads(t *testing.T) {
	h := &harness{opts: options{concurrency: map[string]int{"fetch": 4, "noop": 16}}}
	if got := h.concurrencyOf(mustWorkload("fetch-tls")); got != 4 {
		t.Errorf("fetch-tls concurrency %d, want fetch's 4", got)
	}
	if got := h.concurrencyOf(mustWorkload("noop-tls")); got != 16 {
		t.Errorf("noop-tls concurrency %d, want noop's 16", got)
	}
	args := strings.Join(h.loadArgs(mustWorkload("noop-tls"), "127.0.0.1:1", time.Second, 1), " ")
	if !strings.Contains(args, "-workload noop") || !strings.HasSuffix(args, " -tls") {
		t.Errorf("noop-tls args: %s", args)
	}
	// The TLS rows are those of the plaintext workloads.
	count := map[string]int{}
	for _, m := range metrics {
		count[m.workload]++
	}
	if count["fetch-tls"] != count["fetch"] || count["noop-tls"] != count["noop"] {
		t.Errorf("metrics per workload: %v", count)
	}

	// Without a certificate the TLS workloads are skipped as a whole.
	tg := &target{name: "imapguard", tlsAddr: "127.0.0.1:1"}
	if _, err := h.tlsTarget(tg); err == nil || !isSkip(err.Error()) {
		t.Errorf("tlsTarget without TLS: %v", err)
	}
	h.tls = &tlsFiles{}
	h.dovecot = &service{addr: "127.0.0.1:2", tlsAddr: "127.0.0.1:3"}
	if addr, err := h.tlsTarget(tg); err != nil || addr != "127.0.0.1:1" {
		t.Errorf("tlsTarget = %q, %v", addr, err)
	}
	tg.tlsSkip = "no ssl module"
	if _, err := h.tlsTarget(tg); err == nil || !isSkip(err.Error()) {
		t.Errorf("tlsTarget of a skipped target: %v", err)
	}
}

func TestReportTLS(t *testing.T) {
	h := &harness{opts: options{workloads: []string{"noop-tls"}}}
	h.tls = &tlsFiles{}
	h.dovecot = &service{addr: "127.0.0.1:2", tlsAddr: "127.0.0.1:3"}
	h.targets = []*target{{name: "direct"}, {name: "imapguard"}, {name: "haproxy"}, {name: "nginx", tlsSkip: "no mail ssl module"}}
	cpu := 2.0
	for run := 1; run <= 3; run++ {
		for i, tg := range []string{"direct", "imapguard", "haproxy"} {
			r := runResult{Run: run, Workload: "noop-tls", Target: tg, Load: &loadResult{Result: loadresult.Result{
				Seconds: 10, Ops: 100000, OpsPerSec: float64(1000 * (i + 1)), LatencyP50Ms: 0.5, LatencyP99Ms: 1,
			}}}
			if tg != "direct" {
				r.ProxyCPUSeconds, r.ProxyCPUPercent = &cpu, &cpu
			}
			h.results = append(h.results, r)
		}
	}
	rep := h.report(environment{})
	var buf bytes.Buffer
	rep.printTable(&buf)
	out := buf.String()
	for _, want := range []string{"proxy CPU per round trip (µs)", "errors, all runs", "imapload CPU (context)", "0.67x", "skipped target nginx in the TLS workloads", "no mail ssl module"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	for _, r := range rep.Rows {
		if r.Skipped != "" {
			t.Errorf("row %s %s skipped: %s", r.Workload, r.Metric, r.Skipped)
		}
		if r.Metric == "round trips" && (r.Values["imapguard"] == nil || *r.Values["imapguard"] != 2000 || r.Values["nginx"] != nil) {
			t.Errorf("round trips row: %+v", r)
		}
	}
	found := false
	for l := range strings.Lines(out) {
		if strings.HasPrefix(l, "noop-tls") && strings.Contains(l, "round trips") {
			found = true
			if !strings.Contains(l, "skipped") {
				t.Errorf("nginx column of %q is not \"skipped\"", l)
			}
		}
	}
	if !found {
		t.Errorf("no noop-tls round trips line:\n%s", out)
	}
}

func TestHeldTLSWorkload(t *testing.T) {
	h := &harness{opts: options{sessions: []int{5000}, openConcurrency: 100, sources: "127.0.0.2-127.0.0.9"}}
	h.held = []heldRun{{Requested: 5000, Sessions: 5000, Upstream: upDovecot, Label: "held"}}
	ws := h.expand("held-tls")
	if len(ws) != 1 {
		t.Fatalf("held-tls expands to %d workloads", len(ws))
	}
	w := ws[0]
	if w.load != "held" || !w.tls || w.upstream != upDovecot || w.name != "held-tls" {
		t.Fatalf("held-tls: %+v", w)
	}
	args := strings.Join(h.loadArgs(w, "127.0.0.1:1", time.Second, 100), " ")
	for _, want := range []string{"-workload held", "-sessions 5000", "-open-concurrency 100", " -tls"} {
		if !strings.Contains(args, want) {
			t.Errorf("held-tls args lack %q: %s", want, args)
		}
	}
	// The same rows as held.
	var heldRows, tlsRows []string
	for _, m := range metrics {
		switch m.workload {
		case "held":
			heldRows = append(heldRows, m.name)
		case "held-tls":
			tlsRows = append(tlsRows, m.name)
		}
	}
	if strings.Join(heldRows, "|") != strings.Join(tlsRows, "|") {
		t.Errorf("held rows %v, held-tls rows %v", heldRows, tlsRows)
	}
	// The measured process is the one behind the imaps listener.
	tg := &target{name: "imapguard", pidsFor: func(upstream) []int { return []int{1} }, tlsPids: func() []int { return []int{2} }}
	if got := tg.proxyPids(w); len(got) != 1 || got[0] != 2 {
		t.Errorf("held-tls pids %v, want the imaps instance's", got)
	}
}

func TestReportHeldTLS(t *testing.T) {
	h := &harness{opts: options{workloads: []string{"held", "held-tls"}}}
	h.held = []heldRun{{Requested: 5000, Sessions: 5000, Upstream: upDovecot, Label: "held"}}
	h.tls = &tlsFiles{}
	h.dovecot = &service{addr: "127.0.0.1:2", tlsAddr: "127.0.0.3:3"}
	h.targets = []*target{{name: "direct"}, {name: "imapguard"}, {name: "haproxy"}}
	for run := 1; run <= 3; run++ {
		for _, w := range []string{"held", "held-tls"} {
			for i, tg := range []string{"direct", "imapguard", "haproxy"} {
				r := runResult{Run: run, Workload: w, Target: tg, Sessions: 5000, Load: &loadResult{Result: loadresult.Result{
					SessionsOpened: 5000, OpenPerSec: 150, LatencyP99Ms: 2, Seconds: 1,
				}}, DovecotProcs: 5010, DovecotBaseProcs: 10, DovecotPssKiB: 5000 * 400}
				if tg != "direct" {
					kib := float64(10 * i)
					if w == "held-tls" {
						kib *= 2.5
					}
					r.RSSPerSessionKiB, r.IdleCPUPercent = ptr(kib), ptr(0.1)
				}
				h.results = append(h.results, r)
			}
		}
	}
	rep := h.report(environment{})
	var buf bytes.Buffer
	rep.printTable(&buf)
	out := buf.String()
	var tlsLines int
	for l := range strings.Lines(out) {
		if strings.HasPrefix(l, "held-tls") {
			tlsLines++
			if strings.Contains(l, "imapload CPU") {
				t.Errorf("held-tls has an imapload CPU row: %q", l)
			}
		}
		if strings.HasPrefix(l, "held-tls") && strings.Contains(l, "resident memory per session") && !strings.Contains(l, "25.0") {
			t.Errorf("held-tls memory row: %q", l)
		}
	}
	if tlsLines != 6 { // five figures and the errors
		t.Errorf("%d held-tls lines:\n%s", tlsLines, out)
	}
	for _, want := range []string{"held-tls / held", "imapguard 2.50x (25.0 / 10.0 KiB)", "held-tls through haproxy: Dovecot ran 5000 more processes"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
