// Command imapguard is an IMAP-aware reverse proxy with Exchange-style
// connection limits. config/README.md is the reference of its
// configuration file, cmd/imapguard/README.md that of the command.
//
//	imapguard [-config FILE] [-check]
//	imapguard -version | version
//	imapguard -h | --help | help
//	imapguard who [-user USER] [-address ADDRESS] [-config FILE | -admin URL] [-token TOKEN] [-json]
//	imapguard kick [-user USER] [-address ADDRESS] [-reason TEXT] [-config FILE | -admin URL] [-token TOKEN] [-json] [USER]
//	imapguard settings [-config FILE | -admin URL] [-token TOKEN] [-json]
//	imapguard penalties [-clear [-address ADDRESS] [-user USER | -all]] [-config FILE | -admin URL] [-token TOKEN] [-json] [USER]
//	imapguard drain [-wait] [-config FILE | -admin URL] [-token TOKEN] [-json]
//	imapguard reload [-config FILE | -admin URL] [-token TOKEN] [-json]
//
// who, kick, settings, penalties, drain and reload talk to the admin API
// (admin.listen) of a running imapguard: they list its connections, close
// some, print its effective settings, list or clear the failed logins
// its brute-force defence tracks, start a drain, and make it re-read its
// configuration. The token comes from -token, $IMAPGUARD_ADMIN_TOKEN or
// admin.token (admin.token_file), in that order.
//
// Without -config it runs with the embedded demo configuration
// (config/demo.toml: loopback, the bundled upstream, self-signed TLS), and
// says so. With -check it validates the configuration and loads the files
// it names (checkFiles), prints the effective settings one "name : value"
// per line, and exits. SIGHUP (and POST /reload) re-reads the file and
// applies new limits, timeouts, [log] and the admin token without a
// restart; SIGINT and SIGTERM drain (shutdown.drain_timeout,
// shutdown.disconnect_spread) and exit 0; a second one closes everything
// at once. Exit codes: 0 done, 1 a failure at run time, 2 bad arguments
// or configuration.
package main

import (
	"cmp"
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
	"slices"
	"strings"
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

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "who", "kick", "settings", "penalties", "drain", "reload", "backends":
			return runAdminCommand(args[0], args[1:], stdout, stderr)
		case "version":
			if len(args) > 1 {
				fmt.Fprintf(stderr, "imapguard version: unexpected argument %q\n", args[1])
				return exitUsage
			}
			writeVersion(stdout)
			return exitOK
		}
	}
	fs := flag.NewFlagSet("imapguard", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "configuration `file` (TOML); default: the embedded demo configuration (loopback, self-signed TLS)")
	check := fs.Bool("check", false, "validate the configuration and the files it names, print the effective settings and exit")
	showVersion := fs.Bool("version", false, "print the version, the commit and the Go version, and exit")
	// Usage is left to run: -h's help goes to stdout, a bad flag gets a
	// hint on stderr after the flag package's message.
	fs.Usage = func() {}
	if len(args) > 0 && args[0] == "help" {
		usage(stdout, fs)
		return exitOK
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			// -h and --help: the help was asked for, on stdout.
			usage(stdout, fs)
			return exitOK
		}
		fmt.Fprintln(stderr, "imapguard -h lists the commands and flags")
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "imapguard: unexpected argument %q (imapguard -h lists the commands)\n", fs.Arg(0))
		return exitUsage
	}
	if *showVersion {
		writeVersion(stdout)
		return exitOK
	}
	cfg, err := load(*path)
	if err != nil {
		fmt.Fprintf(stderr, "imapguard: %v\n", err)
		return exitUsage
	}
	// The same checks at start as with -check: a file that passes
	// -check starts, and one that does not fails alike, exit 2.
	if err := checkFiles(cfg, configName(*path)); err != nil {
		fmt.Fprintf(stderr, "imapguard: %v\n", err)
		return exitUsage
	}
	if *check {
		if err := cfg.WriteSettings(stdout); err != nil {
			fmt.Fprintf(stderr, "imapguard: %v\n", err)
			return exitFailure
		}
		return exitOK
	}
	log := newLogger(cfg.Log, stderr)
	if *path == "" {
		log.Info("no -config: serving the embedded demo configuration (config/demo.toml) on loopback; give a file with imapguard -config FILE")
	}
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
		return exitFailure
	}
	return exitOK
}

func load(path string) (*config.Config, error) {
	if path == "" {
		return config.Parse("(embedded demo configuration)", config.DemoTOML)
	}
	return config.Load(path)
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
		Domains: t.Domains, Email: t.Email, CA: t.CA, CARoot: t.CARoot, Storage: acmeStorage(t),
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
		Relay:         c.Performance.Relay,
		EventLoops:    c.Performance.EventLoops,
		// Keep-alive towards clients is set on the listeners.
		UpstreamKeepAlive: time.Duration(c.Performance.UpstreamKeepAlive),
	}
}

// telemetryOptions maps the [telemetry] table onto the telemetry
// package's options. The Prometheus exposition is built when something
// serves it: telemetry.metrics_listen or the admin API's /metrics.
func telemetryOptions(c *config.Config, stdout io.Writer, log *slog.Logger) telemetry.Options {
	t := c.Telemetry
	ver, rev, _ := buildInfo() // what -version prints, in build_info and service.version
	return telemetry.Options{
		ServiceVersion: ver, Revision: rev,
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
	for i, b := range cfg.Upstream.Backend {
		if b.InsecureSkipVerify && cmp.Or(b.TLS, cfg.Upstream.TLS) != "none" {
			log.Warn(fmt.Sprintf("upstream.backend[%d].insecure_skip_verify is on: the backend's certificate is NOT verified, and anyone on the path can read the passwords", i+1), "backend", cmp.Or(b.Name, b.Address))
		}
	}
	upTLS, err := upstreamTLS(cfg)
	if err != nil {
		return err
	}
	limiter := limits.New(limitOptions(cfg))
	popts := proxyOptions(cfg, serverTLS, upTLS)
	if err := routeOptions(cfg, &popts); err != nil {
		return err
	}
	popts.AuthTracker = limits.NewTracker(authOptions(cfg))
	stopCluster, redisClient, instance, err := startCluster(cfg, limiter, popts.AuthTracker, tel.MeterProvider, log)
	if err != nil {
		return err
	}
	defer stopCluster()
	srv := proxy.New(popts, limiter, log)
	if err := srv.Instrument(tel.TracerProvider, tel.MeterProvider); err != nil {
		return err
	}
	stopFleet, fleetAPI := startFleet(redisClient, instance, srv, cfg, log)
	defer stopFleet()
	var live atomic.Pointer[config.Config] // what /settings shows, after reloads
	live.Store(cfg)
	// What a reload changes beside the proxy; POST /reload's requests
	// come to the loop below, one at a time with SIGHUP's.
	st := &reloadState{logs: logSwitchOf(log)}
	if st.token, err = cfg.Admin.ReadToken(); err != nil {
		srv.Shutdown(ctx)
		return err
	}
	reloads, stopped := make(chan chan reloadReply), make(chan struct{})

	served := make(chan error, 2)
	listeners := 0
	var bound []string // the listeners' addresses, for systemd's STATUS=
	for _, l := range []struct {
		addr     string
		implicit bool
	}{{cfg.Listen.IMAP, false}, {cfg.Listen.IMAPS, true}} {
		if l.addr == "" {
			continue
		}
		// Keep-alive set once on the listening socket (proxy.Listen).
		ln, err := proxy.Listen(ctx, "tcp", l.addr)
		if err != nil {
			srv.Shutdown(ctx)
			return err
		}
		listeners++
		bound = append(bound, ln.Addr().String())
		if l.implicit {
			log.Info("imapguard listening", "imaps", ln.Addr().String(), "upstream", upstreamDesc(cfg))
			go func() { served <- srv.ServeTLS(ln) }()
		} else {
			log.Info("imapguard listening", "imap", ln.Addr().String(), "upstream", upstreamDesc(cfg),
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
	// Before the admin API's shutdown above (deferred calls run last
	// first), so that a POST /reload waiting for the loop ends at once.
	defer close(stopped)
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
			Token:     st.token,
			Reload:    st.request(reloads, stopped),
			Sessions:  srv,
			Penalties: srv,
			Backends:  srv.Route,
			Fleet:     fleetAPI,
			Settings:  func() []admin.Setting { return adminSettings(live.Load()) },
			Metrics:   tel.MetricsHandler,
			Drain:     func() bool { return startDrain(srv, live.Load()) },
			Draining:  srv.Draining,
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
		st.api = api
		log.Info("admin API listening", "addr", "http://"+ln.Addr().String(), "token", st.token != "")
	}
	notifyReady(log, bound, cfg) // systemd (Type=notify): every listener is up

	for {
		select {
		case req := <-reloads:
			var res admin.ReloadResult
			var err error
			notifyReloading(log)
			cfg, res, err = reload(cfg, path, limiter, srv, certs, serverTLS, log, st, "admin API")
			live.Store(cfg)
			notifyReady(log, bound, cfg)
			req <- reloadReply{res, err}
		case err := <-served:
			listeners--
			if errors.Is(err, proxy.ErrServerClosed) {
				// A drain closed the listeners (POST /drain): the process
				// stays up, not ready, until SIGTERM or SIGINT.
				continue
			}
			srv.Shutdown(ctx)
			return err
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				notifyReloading(log)
				cfg, _, _ = reload(cfg, path, limiter, srv, certs, serverTLS, log, st, "SIGHUP")
				live.Store(cfg)
				notifyReady(log, bound, cfg)
				continue
			}
			log.Info("shutting down", "signal", sig.String())
			notifyStopping(log)
			err := drainAndStop(srv, cfg, sigs, log)
			for ; listeners > 0; listeners-- {
				<-served
			}
			return err
		}
	}
}

// reload re-reads the configuration file and applies what can change
// without a restart: every limit and timeout, the upstream and its TLS,
// the certificate files (tls.mode = "files"), [log], and the admin
// token (admin.token, or admin.token_file read again). It writes one
// INFO line naming the changed keys, "configuration reloaded", after,
// when some changed keys need a restart, one WARN line naming those; it
// returns the configuration in
// force. A bad file changes nothing: the error, an *admin.ReloadError,
// has its problems, and is logged. source says who asked ("SIGHUP",
// "admin API"); st, when not nil, holds the logger and the admin API to
// update and the token in force.
func reload(old *config.Config, path string, limiter *limits.Limiter, srv *proxy.Server, certs *imaptls.Manager, serverTLS *tls.Config,
	log *slog.Logger, st *reloadState, source string) (*config.Config, admin.ReloadResult, error) {
	if certs != nil {
		if err := certs.Reload(); err != nil {
			log.Error("reload: certificate not reloaded; keeping the old one", "source", source, "err", err)
		}
	}
	if path == "" {
		log.Info("reload: running on the embedded configuration; nothing else to reload", "source", source)
		return old, admin.ReloadResult{Changed: []string{}, RestartNeeded: []string{}}, nil
	}
	fail := func(err error) (*config.Config, admin.ReloadResult, error) {
		log.Error("reload: configuration not reloaded; nothing changed", "source", source, "file", path, "err", err)
		return old, admin.ReloadResult{}, &admin.ReloadError{Problems: strings.Split(err.Error(), "\n")}
	}
	cfg, err := config.Load(path)
	if err != nil {
		return fail(err)
	}
	token, err := cfg.Admin.ReadToken()
	if err != nil {
		return fail(err)
	}
	changed := config.ChangedKeys(old, cfg)
	if st != nil && token != st.token && !slices.Contains(changed, "admin.token") && !slices.Contains(changed, "admin.token_file") {
		changed = append(changed, "admin.token_file") // the same file, a new token in it
	}
	applied, restart := splitRestart(changed)
	keepRestartKeys(old, cfg)
	if st != nil && st.api != nil && token == "" && !config.IsLoopbackListen(old.Admin.Listen) {
		return fail(fmt.Errorf("admin.token: the admin API listens on %s, not a loopback address, so it keeps a token until a restart", old.Admin.Listen))
	}
	upTLS, err := upstreamTLS(cfg)
	if err != nil {
		return fail(err)
	}
	popts := proxyOptions(cfg, serverTLS, upTLS)
	if err := routeOptions(cfg, &popts); err != nil {
		return fail(err)
	}
	limiter.SetOptions(limitOptions(cfg))
	if t := srv.AuthTracker(); t != nil {
		// New window, maxima, block and delay apply at once;
		// auth_tracking_entries resizes the tables.
		t.SetOptions(authOptions(cfg))
	}
	srv.SetOptions(popts)
	if st != nil {
		if st.api != nil {
			st.api.SetToken(token)
		}
		st.token = token
	}
	// The WARN first: "configuration reloaded" is the reload's last line.
	if len(restart) > 0 {
		log.Warn("reload: these changed keys take effect only after a restart", "source", source, "keys", keyList(restart))
	}
	log.Info("configuration reloaded", "source", source, "file", path, "changed", keyList(applied))
	// Last, so that the lines above are in the format and at the level
	// the reload started with.
	if st != nil && st.logs != nil {
		st.logs.Set(cfg.Log)
	}
	return cfg, admin.ReloadResult{File: path, Changed: nonNil(applied), RestartNeeded: nonNil(restart)}, nil
}
