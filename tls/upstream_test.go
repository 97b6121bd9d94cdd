package imaptls

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"path/filepath"
	"testing"
)

func TestUpstreamConfig(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	caFile := writeFile(t, dir, "ca.pem", ca.PEM)
	server := ca.issue(t, "upstream.test")
	addr := serveTLS(t, &tls.Config{Certificates: []tls.Certificate{server.tlsCert(t)}})

	tests := []struct {
		name    string
		o       UpstreamOptions
		wantErr func(error) bool // nil: the handshake succeeds
	}{
		{"ca file trusted", UpstreamOptions{ServerName: "upstream.test", CAFile: caFile}, nil},
		{"wrong server name", UpstreamOptions{ServerName: "other.test", CAFile: caFile}, errorsAs[x509.HostnameError]},
		{"system roots do not know the CA", UpstreamOptions{ServerName: "upstream.test"}, func(err error) bool {
			// x509.UnknownAuthorityError, or a platform verifier's own error
			return err != nil
		}},
		{"insecure skip verify", UpstreamOptions{ServerName: "other.test", InsecureSkipVerify: true}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := UpstreamConfig(tt.o)
			if err != nil {
				t.Fatalf("UpstreamConfig: %v", err)
			}
			if cfg.MinVersion != tls.VersionTLS12 {
				t.Errorf("MinVersion = %x; want TLS 1.2", cfg.MinVersion)
			}
			_, err = handshake(t, addr, cfg)
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("handshake: %v; want success", err)
			case tt.wantErr != nil && !tt.wantErr(err):
				t.Fatalf("handshake: got %v (%T); want the expected verification error", err, err)
			}
		})
	}
}

func TestUpstreamClientCertificate(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	server := ca.issue(t, "upstream.test")
	client := ca.issue(t, "imapguard")
	seen := make(chan []byte, 1)
	addr := serveTLS(t, &tls.Config{
		Certificates: []tls.Certificate{server.tlsCert(t)},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca.pool(),
		VerifyConnection: func(cs tls.ConnectionState) error {
			seen <- cs.PeerCertificates[0].Raw
			return nil
		},
	})
	cfg, err := UpstreamConfig(UpstreamOptions{
		ServerName: "upstream.test",
		CAFile:     writeFile(t, dir, "ca.pem", ca.PEM),
		CertFile:   writeFile(t, dir, "client.pem", client.certPEM),
		KeyFile:    writeFile(t, dir, "client-key.pem", client.keyPEM),
	})
	if err != nil {
		t.Fatalf("UpstreamConfig: %v", err)
	}
	if _, err := handshake(t, addr, cfg); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	if got := <-seen; !bytes.Equal(got, client.der) {
		t.Fatal("the upstream saw another client certificate; want the configured one")
	}
}

func TestUpstreamConfigErrors(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	cert := ca.issue(t, "imapguard")
	certFile := writeFile(t, dir, "client.pem", cert.certPEM)
	garbage := writeFile(t, dir, "garbage.pem", []byte("nothing here\n"))
	missing := filepath.Join(dir, "missing.pem")
	tests := []struct {
		name string
		o    UpstreamOptions
		want []string
	}{
		{"missing ca file", UpstreamOptions{CAFile: missing}, []string{"ca_file", missing}},
		{"ca file without certificates", UpstreamOptions{CAFile: garbage}, []string{"ca_file", garbage, "no PEM CERTIFICATE"}},
		{"cert without key", UpstreamOptions{CertFile: certFile}, []string{"needs both cert_file and key_file"}},
		{"bad key", UpstreamOptions{CertFile: certFile, KeyFile: garbage}, []string{"client certificate", "key_file " + garbage}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := UpstreamConfig(tt.o)
			wantErrorContaining(t, err, tt.want)
		})
	}
}
