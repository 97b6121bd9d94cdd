package main

import (
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"

	"github.com/caddyserver/certmagic"

	"github.com/imapguard/imapguard/config"
	"github.com/imapguard/imapguard/proxy"
)

// checkFiles loads, without serving, what a start would load beyond the
// configuration file itself, so that a file that passes -check starts:
// the certificate and key files (read, parsed, and matching), the CA
// files, the upstream's client certificate, the ACME storage directory
// (writable, or creatable), the admin token file, the backends' TLS
// files and upstream.map_file, and the listen
// addresses (their syntax and that their host resolves; nothing is
// bound, so a port in use is found only at start). The error joins every
// problem, each as "NAME: KEY: what is wrong", NAME being the
// configuration file's.
func checkFiles(c *config.Config, name string) error {
	var errs []error
	add := func(key string, err error) {
		errs = append(errs, fmt.Errorf("%s: %s: %w", name, key, err))
	}
	t, u := &c.TLS, &c.Upstream

	if t.Mode == "files" {
		checkPair(add, "tls.cert_file", t.CertFile, "tls.key_file", t.KeyFile)
	}
	if t.Mode == "acme" {
		if t.CARoot != "" {
			checkRoots(add, "tls.ca_root", t.CARoot)
		}
		key, dir := "tls.storage", acmeStorage(*t)
		if t.Storage == "" && dir != "" {
			key = "tls.storage ($STATE_DIRECTORY)"
		}
		if dir == "" {
			if fs, ok := certmagic.Default.Storage.(*certmagic.FileStorage); ok {
				key, dir = "tls.storage (certmagic's default)", fs.Path
			}
		}
		if dir != "" {
			if err := checkWritableDir(dir); err != nil {
				add(key, err)
			}
		}
	}
	if u.TLS != "" && u.TLS != "none" {
		if u.CAFile != "" {
			checkRoots(add, "upstream.ca_file", u.CAFile)
		}
		if u.CertFile != "" && u.KeyFile != "" {
			checkPair(add, "upstream.cert_file", u.CertFile, "upstream.key_file", u.KeyFile)
		}
	}
	for i, b := range u.Backend {
		if cmp.Or(b.TLS, u.TLS) == "none" {
			continue
		}
		key := fmt.Sprintf("upstream.backend[%d].", i+1)
		if b.CAFile != "" {
			checkRoots(add, key+"ca_file", b.CAFile)
		}
		if b.CertFile != "" && b.KeyFile != "" {
			checkPair(add, key+"cert_file", b.CertFile, key+"key_file", b.KeyFile)
		}
	}
	if u.Route == "map" {
		// The map file, its syntax and that it names configured backends.
		var bs []proxy.Backend
		for _, b := range u.Backend {
			bs = append(bs, proxy.Backend{Name: b.Name, Addr: b.Address})
		}
		if _, err := proxy.ReadRouteMap(u.MapFile, bs); err != nil {
			add("upstream.map_file", err)
		}
	}
	if c.Admin.TokenFile != "" {
		if _, err := c.Admin.ReadToken(); err != nil {
			// ReadToken's error begins with the key already.
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	for _, l := range []struct{ key, addr string }{
		{"listen.imap", c.Listen.IMAP},
		{"listen.imaps", c.Listen.IMAPS},
		{"telemetry.metrics_listen", c.Telemetry.MetricsListen},
		{"admin.listen", c.Admin.Listen},
	} {
		if l.addr == "" {
			continue
		}
		if _, err := net.ResolveTCPAddr("tcp", l.addr); err != nil {
			add(l.key, err)
		}
	}
	return errors.Join(errs...)
}

// checkPair reads a certificate chain and its private key and checks that
// they match, as tls.LoadX509KeyPair does at start, reporting each
// problem against the key of the file at fault.
func checkPair(add func(string, error), certKey, certFile, keyKey, keyFile string) {
	certPEM, certErr := os.ReadFile(certFile)
	if certErr != nil {
		add(certKey, certErr)
	}
	keyPEM, keyErr := os.ReadFile(keyFile)
	if keyErr != nil {
		add(keyKey, keyErr)
	}
	if certErr != nil || keyErr != nil {
		return
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		add(certKey+" and "+keyKey, fmt.Errorf("%s with %s: %w", certFile, keyFile, err))
		return
	}
	if _, err := x509.ParseCertificate(pair.Certificate[0]); err != nil {
		add(certKey, fmt.Errorf("%s: %w", certFile, err))
	}
}

// checkRoots reads a PEM file of CA certificates.
func checkRoots(add func(string, error), key, file string) {
	data, err := os.ReadFile(file)
	if err != nil {
		add(key, err)
		return
	}
	if !x509.NewCertPool().AppendCertsFromPEM(data) {
		add(key, fmt.Errorf("%s: no PEM CERTIFICATE found", file))
	}
}

// checkWritableDir checks that files can be created in dir: in dir itself
// when it exists, else in its nearest existing parent, where the
// directories up to dir would be created. It creates a temporary file
// there and removes it.
func checkWritableDir(dir string) error {
	d := filepath.Clean(dir)
	for {
		fi, err := os.Stat(d)
		if err == nil {
			if !fi.IsDir() {
				if d == filepath.Clean(dir) {
					return fmt.Errorf("%s is not a directory", dir)
				}
				return fmt.Errorf("%s cannot be created: %s is not a directory", dir, d)
			}
			break
		}
		// ENOTDIR: a component is a file, found on the way up.
		if !errors.Is(err, os.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
			return err
		}
		parent := filepath.Dir(d)
		if parent == d {
			return err
		}
		d = parent
	}
	f, err := os.CreateTemp(d, ".imapguard-check-*")
	if err != nil {
		if d != filepath.Clean(dir) {
			return fmt.Errorf("%s cannot be created: %w", dir, err)
		}
		return fmt.Errorf("%s is not writable: %w", dir, err)
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}
