// Command imapguard is an IMAP-aware reverse proxy with Exchange-style
// connection limits. config/README.md is the reference of its
// configuration file.
//
//	imapguard [-config FILE] [-check]
//	imapguard who [-user USER] [-address ADDRESS] [-config FILE | -admin URL] [-token TOKEN] [-json]
//	imapguard kick [-user USER] [-address ADDRESS] [-reason TEXT] [-config FILE | -admin URL] [-token TOKEN] [-json] [USER]
//	imapguard settings [-config FILE | -admin URL] [-token TOKEN] [-json]
//	imapguard penalties [-clear [-address ADDRESS] [-user USER | -all]] [-config FILE | -admin URL] [-token TOKEN] [-json] [USER]
//
// who, kick, settings and penalties talk to the admin API (admin.listen)
// of a running imapguard: they list its connections, close some, print
// its effective settings, and list or clear the failed logins its
// brute-force defence tracks. The token comes from -token, $IMAPGUARD_ADMIN_TOKEN
// or admin.token, in that order.
//
// Without -config it runs with the embedded demo configuration
// (config/demo.toml: loopback, the bundled upstream, self-signed TLS). With
// -check it validates the configuration, prints the effective settings one
// "name : value" per line, and exits. SIGHUP re-reads the file and applies
// new limits and timeouts without a restart; SIGINT and SIGTERM shut down
// gracefully.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof"
	"net/netip"
	"os"
	"os/signal"
	"reflect"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/imapguard/imapguard/config"
	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/proxy/admin"
	"github.com/imapguard/imapguard/proxy/telemetry"
	imaptls "github.com/imapguard/imapguard/tls"
)

// shutdownGrace is how long a shutdown waits for sessions to reach a
// response boundary and say BYE before they are cut.
const shutdownGrace = 10 * time.Second

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "who", "kick", "settings", "penalties":
			return runAdminCommand(args[0], args[1:], stdout, stderr)
		}
	}
	fs := flag.NewFlagSet("imapguard", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "configuration `file` (TOML); default: the embedded demo configuration (loopback, self-signed TLS)")
	check := fs.Bool("check", false, "validate the configuration, print the effective settings and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "imapguard: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	cfg, err := load(*path)
	if err != nil {
		fmt.Fprintf(stderr, "imapguard: %v\n", err)
		return 1
	}
	if *check {
		if err := cfg.WriteSettings(stdout); err != nil {
			fmt.Fprintf(stderr, "imapguard: %v\n", err)
			return 1
		}
		return 0
	}
	log := newLogger(cfg.Log, stderr)
	if addr := os.Getenv("IMAPGUARD_PPROF"); addr != "" {
		// Profiling for the performance work (test/bench/README.md): Go's
		// net/http/pprof on addr, which should be a loopback address.
		go func() {
			log.Info("pprof listening", "addr", addr)
			if err := http.ListenAndServe(addr, nil); err != nil {
				log.Error("pprof", "err", err)
			}
		}()
	}
	if err := serve(cfg, *path, stdout, log); err != nil {
		log.Error("imapguard stopped", "err", err)
		return 1
	}
	return 0
}

func load(path string) (*config.Config, error) {
	if path == "" {
		return config.Parse("(embedded demo configuration)", config.DemoTOML)
	}
	return config.Load(path)
}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	switch c.Level {
	case "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// limitOptions and proxyOptions map the configuration onto each package's
// own options; only this command knows the configuration file.
func limitOptions(c *config.Config) limits.Options {
	l := c.Limits
	o := limits.Options{
		MaxConnections:          l.MaxConnections,
		MaxConnectionsPerIP:     l.MaxConnectionsPerIP,
		MaxConnectionsPerUser:   l.MaxConnectionsPerUser,
		IPv6PrefixLength:        l.IPv6PrefixLength,
		MaxConnectionsPerUserIP: l.MaxConnectionsPerUserIP,
		MaxConnectionRatePerIP:  l.MaxConnectionRatePerIP,
		ExemptNetworks:          networks(l.ExemptNetworks),
		RateTrackingEntries:     l.AuthTrackingEntries,
	}
	for _, e := range l.Override {
		o.Overrides = append(o.Overrides, limits.Override{
			Users:                   e.Users,
			Networks:                networks(e.Networks),
			MaxConnectionsPerIP:     e.MaxConnectionsPerIP,
			MaxConnectionsPerUser:   e.MaxConnectionsPerUser,
			MaxConnectionsPerUserIP: e.MaxConnectionsPerUserIP,
			MaxConnectionRatePerIP:  e.MaxConnectionRatePerIP,
		})
	}
	return o
}

// networks parses networks that config has validated (config.ParseNetwork).
func networks(ss []string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		if p, err := config.ParseNetwork(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// authOptions maps the brute-force keys of [limits] onto the tracker's
// options; 0 is off there as in the file.
func authOptions(c *config.Config) limits.AuthOptions {
	l := c.Limits
	return limits.AuthOptions{
		Window:           time.Duration(l.AuthFailureWindow),
		MaxPerIP:         l.MaxAuthFailuresPerIP,
		MaxPerUser:       l.MaxAuthFailuresPerUser,
		Block:            time.Duration(l.AuthFailureBlock),
		Delay:            time.Duration(l.AuthFailureDelay),
		Entries:          l.AuthTrackingEntries,
		IPv6PrefixLength: l.IPv6PrefixLength,
	}
}

// tlsOptions maps the [tls] table onto the tls package's options.
func tlsOptions(c *config.Config, log *slog.Logger) imaptls.Options {
	t := c.TLS
	return imaptls.Options{
		Mode: t.Mode, CertFile: t.CertFile, KeyFile: t.KeyFile,
		Domains: t.Domains, Email: t.Email, CA: t.CA, CARoot: t.CARoot, Storage: t.Storage,
		HTTPChallengePort: t.HTTPChallengePort, TLSALPNChallengePort: t.TLSALPNChallengePort,
		OnDemand: t.OnDemand, OnDemandDomains: t.OnDemandDomains, OnDemandPermissionURL: t.OnDemandPermissionURL,
		SelfSignedNames: t.SelfSignedNames,
		Logger:          log.With("component", "tls"),
	}
}

// upstreamTLS builds the TLS configuration towards the upstream, or nil
// with upstream.tls = "none".
func upstreamTLS(c *config.Config) (*tls.Config, error) {
	if c.Upstream.TLS == "" || c.Upstream.TLS == "none" {
		return nil, nil
	}
	return imaptls.UpstreamConfig(imaptls.UpstreamOptions{
		ServerName: c.Upstream.ServerName, CAFile: c.Upstream.CAFile,
		InsecureSkipVerify: c.Upstream.InsecureSkipVerify,
		CertFile:           c.Upstream.CertFile, KeyFile: c.Upstream.KeyFile,
	})
}

func proxyOptions(c *config.Config, serverTLS, upTLS *tls.Config) proxy.Options {
	trusted := networks(c.Listen.TrustedProxies)
	return proxy.Options{
		ProxyProtocol:       c.Listen.ProxyProtocol,
		TrustedProxies:      trusted,
		TLSConfig:           serverTLS,
		AllowPlaintextAuth:  c.TLS.PlaintextAuthAllowed(),
		UpstreamTLS:         c.Upstream.TLS,
		UpstreamTLSConfig:   upTLS,
		UpstreamAddr:        c.Upstream.Address,
		ForwardClient:       c.Upstream.ForwardClient,
		ConnectTimeout:      time.Duration(c.Upstream.ConnectTimeout),
		LoginTimeout:        time.Duration(c.Upstream.LoginTimeout),
		MaxCommandSize:      c.Limits.MaxCommandSize,
		PreauthTimeout:      time.Duration(c.Limits.PreauthTimeout),
		IdleTimeout:         time.Duration(c.Limits.IdleTimeout),
		MaxBadCommands:      c.Limits.MaxBadCommands,
		MaxAuthFailures:     c.Limits.MaxAuthFailures,
		KeepUnauthenticated: !c.Limits.EvictUnauthenticated,
		RecordUser:          c.Telemetry.RecordUser,
		// Learns whether to offer OAUTHBEARER and XOAUTH2 (issue 12).
		ProbeUpstream: true,
	}
}

// telemetryOptions maps the [telemetry] table onto the telemetry
// package's options. The Prometheus exposition is built when something
// serves it: telemetry.metrics_listen or the admin API's /metrics.
func telemetryOptions(c *config.Config, stdout io.Writer, log *slog.Logger) telemetry.Options {
	t := c.Telemetry
	return telemetry.Options{
		Traces: t.Traces, Metrics: t.Metrics,
		OTLPEndpoint: t.OTLPEndpoint, OTLPProtocol: t.OTLPProtocol, OTLPInsecure: t.OTLPInsecure,
		SampleRatio: t.SampleRatio, MetricsInterval: time.Duration(t.MetricsInterval),
		Prometheus: t.MetricsListen != "" || c.Admin.Listen != "",
		Stdout:     stdout,
		Logger:     log.With("component", "telemetry"),
	}
}

// adminSettings is c's effective settings as the admin API shows them.
// The API has its own Setting type, so that proxy/admin does not import
// config; imapguard settings converts back (adminClient.settings).
func adminSettings(c *config.Config) []admin.Setting {
	settings := c.Settings()
	out := make([]admin.Setting, len(settings))
	for i, s := range settings {
		out[i] = admin.Setting(s)
	}
	return out
}

// httpServer is a small HTTP server beside the proxy (the Prometheus
// endpoint), with the same bounds as the admin API's.
func httpServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

func serve(cfg *config.Config, path string, stdout io.Writer, log *slog.Logger) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// From the start, so that a signal during start-up (when the
	// listeners are up and a supervisor may already send one) is handled,
	// not fatal.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	tel, err := telemetry.Setup(ctx, telemetryOptions(cfg, stdout, log))
	if err != nil {
		return err
	}
	defer func() {
		// Spans still queued are exported before the process ends.
		fctx, fcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer fcancel()
		if err := tel.Shutdown(fctx); err != nil {
			log.Warn("telemetry: flushing at shutdown", "err", err)
		}
	}()
	certs, err := imaptls.New(ctx, tlsOptions(cfg, log))
	if err != nil {
		return err
	}
	var serverTLS *tls.Config
	if certs != nil {
		defer certs.Close()
		serverTLS = certs.ServerConfig() // the tls package logs the certificate and its fingerprint
	} else {
		log.Warn("TLS is off: clients log in over plaintext; use only on loopback or a trusted network")
	}
	if cfg.Upstream.TLS != "" && cfg.Upstream.TLS != "none" && cfg.Upstream.InsecureSkipVerify {
		log.Warn("upstream.insecure_skip_verify is on: the upstream's certificate is NOT verified, and anyone on the path can read the passwords")
	}
	upTLS, err := upstreamTLS(cfg)
	if err != nil {
		return err
	}
	limiter := limits.New(limitOptions(cfg))
	popts := proxyOptions(cfg, serverTLS, upTLS)
	popts.AuthTracker = limits.NewTracker(authOptions(cfg))
	srv := proxy.New(popts, limiter, log)
	if err := srv.Instrument(tel.TracerProvider, tel.MeterProvider); err != nil {
		return err
	}
	var live atomic.Pointer[config.Config] // what /settings shows, after reloads
	live.Store(cfg)

	served := make(chan error, 2)
	listeners := 0
	for _, l := range []struct {
		addr     string
		implicit bool
	}{{cfg.Listen.IMAP, false}, {cfg.Listen.IMAPS, true}} {
		if l.addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", l.addr)
		if err != nil {
			srv.Shutdown(ctx)
			return err
		}
		listeners++
		if l.implicit {
			log.Info("imapguard listening", "imaps", ln.Addr().String(), "upstream", cfg.Upstream.Address)
			go func() { served <- srv.ServeTLS(ln) }()
		} else {
			log.Info("imapguard listening", "imap", ln.Addr().String(), "upstream", cfg.Upstream.Address,
				"starttls", serverTLS != nil, "plaintext_auth", cfg.TLS.PlaintextAuthAllowed())
			go func() { served <- srv.Serve(ln) }()
		}
	}

	// The admin API and the Prometheus endpoint. Each failing to listen
	// stops the start, like a proxy listener.
	var side []func(context.Context) error
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		for _, stop := range side {
			stop(sctx)
		}
	}()
	if addr := cfg.Telemetry.MetricsListen; addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			srv.Shutdown(ctx)
			return fmt.Errorf("telemetry.metrics_listen: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", tel.MetricsHandler)
		hs := httpServer(mux, log)
		side = append(side, hs.Shutdown)
		log.Info("Prometheus metrics listening", "addr", "http://"+ln.Addr().String()+"/metrics")
		go func() {
			if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics endpoint stopped", "err", err)
			}
		}()
	}
	if addr := cfg.Admin.Listen; addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			srv.Shutdown(ctx)
			return fmt.Errorf("admin.listen: %w", err)
		}
		api := admin.New(admin.Options{
			Token:     cfg.Admin.Token,
			Sessions:  srv,
			Penalties: srv,
			Settings:  func() []admin.Setting { return adminSettings(live.Load()) },
			Metrics:   tel.MetricsHandler,
			Listeners: listeners,
			Logger:    log.With("component", "admin"),
		})
		side = append(side, api.Shutdown)
		adminErr := make(chan error, 1)
		go func() { adminErr <- api.Serve(ln) }()
		// Serve refuses a public address without a token at once; wait
		// for that answer or for the server to be up.
		select {
		case err := <-adminErr:
			srv.Shutdown(ctx)
			return fmt.Errorf("admin.listen: %w", err)
		case <-api.Started():
		}
		log.Info("admin API listening", "addr", "http://"+ln.Addr().String(), "token", cfg.Admin.Token != "")
	}

	for {
		select {
		case err := <-served:
			if errors.Is(err, proxy.ErrServerClosed) {
				return nil
			}
			srv.Shutdown(ctx)
			return err
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				cfg = reload(cfg, path, limiter, srv, certs, serverTLS, log)
				live.Store(cfg)
				continue
			}
			log.Info("shutting down", "signal", sig.String())
			sctx, scancel := context.WithTimeout(ctx, shutdownGrace)
			err := srv.Shutdown(sctx)
			scancel()
			for ; listeners > 0; listeners-- {
				<-served
			}
			if errors.Is(err, context.DeadlineExceeded) {
				// Connections that did not reach a response boundary in
				// time (a client that stopped reading) were closed: the
				// stop is still the one asked for, not a failure.
				log.Info("closed the connections that did not finish within the shutdown grace", "grace", shutdownGrace)
				err = nil
			}
			return err
		}
	}
}

// reload re-reads the configuration file and applies what can change
// without a restart: every limit and timeout, the upstream and its TLS,
// and the certificate files (tls.mode = "files"). A bad file changes
// nothing.
func reload(old *config.Config, path string, limiter *limits.Limiter, srv *proxy.Server, certs *imaptls.Manager, serverTLS *tls.Config, log *slog.Logger) *config.Config {
	if certs != nil {
		if err := certs.Reload(); err != nil {
			log.Error("SIGHUP: certificate not reloaded; keeping the old one", "err", err)
		}
	}
	if path == "" {
		log.Info("SIGHUP: running on the embedded configuration; nothing else to reload")
		return old
	}
	cfg, err := config.Load(path)
	if err != nil {
		log.Error("SIGHUP: configuration not reloaded", "err", err)
		return old
	}
	// Telemetry's exporters and the side listeners are set up once;
	// record_user is a proxy option and applies at once.
	tel := cfg.Telemetry
	tel.RecordUser = old.Telemetry.RecordUser
	// trusted_proxies applies to new connections at once, unless
	// proxy_protocol changed (which needs a restart): a new list for
	// the proxy_protocol in force.
	listen, trusted := cfg.Listen, cfg.Listen.TrustedProxies
	reloadTrusted := listen.ProxyProtocol == old.Listen.ProxyProtocol
	if reloadTrusted {
		listen.TrustedProxies = old.Listen.TrustedProxies
	}
	if !reflect.DeepEqual(listen, old.Listen) || cfg.Log != old.Log || !reflect.DeepEqual(cfg.TLS, old.TLS) ||
		tel != old.Telemetry || cfg.Admin != old.Admin {
		log.Warn("SIGHUP: [listen] (but trusted_proxies), [log], [tls], [telemetry] (but record_user) and [admin] changes take effect only after a restart (certificate files are re-read)")
		cfg.Listen, cfg.Log, cfg.TLS, cfg.Admin = old.Listen, old.Log, old.TLS, old.Admin
		record := cfg.Telemetry.RecordUser
		cfg.Telemetry = old.Telemetry
		cfg.Telemetry.RecordUser = record
		if reloadTrusted {
			cfg.Listen.TrustedProxies = trusted
		}
	}
	upTLS, err := upstreamTLS(cfg)
	if err != nil {
		log.Error("SIGHUP: configuration not reloaded", "err", err)
		return old
	}
	limiter.SetOptions(limitOptions(cfg))
	if t := srv.AuthTracker(); t != nil {
		// New window, maxima, block and delay apply at once;
		// auth_tracking_entries resizes the tables.
		t.SetOptions(authOptions(cfg))
	}
	srv.SetOptions(proxyOptions(cfg, serverTLS, upTLS))
	for _, s := range cfg.Settings() {
		log.Info("setting", "name", s.Name, "value", s.Value)
	}
	log.Info("SIGHUP: configuration reloaded", "file", path)
	return cfg
}
