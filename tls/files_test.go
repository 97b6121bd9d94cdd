package imaptls

import (
	"bytes"
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func newFilesManager(t *testing.T, certFile, keyFile string) *Manager {
	t.Helper()
	m, err := New(context.Background(), Options{Mode: ModeFiles, CertFile: certFile, KeyFile: keyFile})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func TestFilesReload(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	first := ca.issue(t, "localhost", "127.0.0.1")
	certFile, keyFile := first.writePair(t, dir)

	m := newFilesManager(t, certFile, keyFile)
	addr := serveTLS(t, m.ServerConfig())
	client := &tls.Config{RootCAs: ca.pool(), ServerName: "localhost"}

	wantServed(t, addr, client, first, "first handshake: got another certificate; want the one in cert_file")
	if got, want := m.Fingerprint(), fingerprint(first.der); got != want {
		t.Fatalf("Fingerprint() = %s; want %s", got, want)
	}

	// Replace both files, as a renewal would; Reload serves the new pair.
	second := ca.issue(t, "localhost", "127.0.0.1")
	second.writePair(t, dir)
	if err := m.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	wantServed(t, addr, client, second, "after Reload: got the old certificate; want the new one")
	if got, want := m.Fingerprint(), fingerprint(second.der); got != want {
		t.Fatalf("Fingerprint() after Reload = %s; want %s", got, want)
	}

	// A broken pair (a new certificate with the old key) is refused and
	// the certificate in use stays.
	third := ca.issue(t, "localhost")
	writeFile(t, dir, "cert.pem", third.certPEM)
	writeFile(t, dir, "key.pem", first.keyPEM)
	err := m.Reload()
	if err == nil {
		t.Fatal("Reload with a mismatched pair: got nil error; want one")
	}
	for _, want := range []string{certFile, keyFile, "keeping the certificate in use"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Reload error %q does not mention %q", err, want)
		}
	}
	wantServed(t, addr, client, second, "after a failed Reload: the certificate changed; want the previous one kept")
}

// TestFilesAutoCheck: handshakes notice changed files by themselves, at
// most once per FileCheckInterval (time injected, no sleeping).
func TestFilesAutoCheck(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	first := ca.issue(t, "localhost")
	certFile, keyFile := first.writePair(t, dir)

	m := newFilesManager(t, certFile, keyFile)
	var now atomic.Int64
	now.Store(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	m.files.now = func() time.Time { return time.Unix(0, now.Load()) }
	addr := serveTLS(t, m.ServerConfig())
	client := &tls.Config{RootCAs: ca.pool(), ServerName: "localhost"}

	// The first handshake checks (nothing changed) and arms the interval.
	wantServed(t, addr, client, first, "first handshake: got another certificate; want the first")

	second := ca.issue(t, "localhost")
	second.writePair(t, dir)
	wantServed(t, addr, client, first, "handshake within FileCheckInterval: got the new certificate; want no check yet")

	now.Add(int64(FileCheckInterval))
	wantServed(t, addr, client, second, "handshake after FileCheckInterval: got the old certificate; want the changed files reloaded")

	// A broken change is logged and skipped; the certificate stays.
	writeFile(t, dir, "key.pem", []byte("not a key\n"))
	now.Add(int64(FileCheckInterval))
	wantServed(t, addr, client, second, "after a broken key_file: the certificate changed; want it kept")
}

func TestFilesBad(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	good := ca.issue(t, "localhost")
	other := ca.issue(t, "localhost")
	certFile, keyFile := good.writePair(t, dir)
	otherKey := writeFile(t, dir, "other-key.pem", other.keyPEM)
	garbage := writeFile(t, dir, "garbage.pem", []byte("hello\n"))
	missing := filepath.Join(dir, "missing.pem")

	tests := []struct {
		name              string
		certFile, keyFile string
		want              []string // substrings of the error
	}{
		{"missing cert", missing, keyFile, []string{"cert_file", missing, "no such file"}},
		{"missing key", certFile, missing, []string{"key_file", missing, "no such file"}},
		{"cert not PEM", garbage, keyFile, []string{"cert_file " + garbage, "no PEM CERTIFICATE"}},
		{"key not PEM", certFile, garbage, []string{"key_file " + garbage, "no PEM PRIVATE KEY"}},
		{"key is a certificate", certFile, certFile, []string{"key_file " + certFile, "no PEM PRIVATE KEY"}},
		{"mismatched pair", certFile, otherKey, []string{certFile, otherKey, "does not match"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := New(context.Background(), Options{Mode: ModeFiles, CertFile: tt.certFile, KeyFile: tt.keyFile})
			if err == nil {
				m.Close()
			}
			wantErrorContaining(t, err, tt.want)
		})
	}
}

// TestFilesChain: cert_file may carry the intermediates after the leaf;
// the client gets them all.
func TestFilesChain(t *testing.T) {
	root := newTestCA(t)
	inter := root.intermediate(t)
	leaf := inter.issue(t, "localhost")
	dir := t.TempDir()
	chain := append(append([]byte(nil), leaf.certPEM...), inter.PEM...)
	m := newFilesManager(t, writeFile(t, dir, "chain.pem", chain), writeFile(t, dir, "key.pem", leaf.keyPEM))
	addr := serveTLS(t, m.ServerConfig())
	got, st := mustHandshake(t, addr, &tls.Config{RootCAs: root.pool(), ServerName: "localhost"})
	if !bytes.Equal(got.Raw, leaf.der) {
		t.Fatal("got another leaf; want the first certificate of cert_file")
	}
	if n := len(st.PeerCertificates); n != 2 {
		t.Fatalf("got %d certificates from the server; want 2 (leaf and intermediate)", n)
	}
	if got, want := m.Fingerprint(), fingerprint(leaf.der); got != want {
		t.Fatalf("Fingerprint() = %s; want the leaf's %s", got, want)
	}
}

// TestFilesConcurrent: handshakes (each due for a file check) while
// Reload swaps certificates; run with -race. Every handshake gets one of
// the pairs written, never an error.
func TestFilesConcurrent(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	pairs := []issued{ca.issue(t, "localhost"), ca.issue(t, "localhost")}
	certFile, keyFile := pairs[0].writePair(t, dir)
	m := newFilesManager(t, certFile, keyFile)
	var now atomic.Int64
	m.files.now = func() time.Time { return time.Unix(0, now.Add(int64(FileCheckInterval))) }
	addr := serveTLS(t, m.ServerConfig())

	errs := make(chan error, 4)
	for range 4 {
		go func() {
			client := &tls.Config{RootCAs: ca.pool(), ServerName: "localhost"}
			for range 10 {
				if _, err := handshake(t, addr, client); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for i := range 10 {
		p := pairs[i%2]
		// Write to temporary names and rename, as careful tools do, so a
		// check never sees half a file.
		writeFile(t, dir, "cert.tmp", p.certPEM)
		writeFile(t, dir, "key.tmp", p.keyPEM)
		if err := os.Rename(filepath.Join(dir, "key.tmp"), keyFile); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, "cert.tmp"), certFile); err != nil {
			t.Fatal(err)
		}
		if err := m.Reload(); err != nil {
			t.Errorf("Reload %d: %v", i, err)
		}
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Errorf("handshake during reloads: %v", err)
		}
	}
}
