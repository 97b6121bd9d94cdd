// Command imapguard is an IMAP-aware reverse proxy with Exchange-style
// connection limits. See the README for its configuration.
//
//	imapguard [-config FILE] [-check]
//
// Without -config it runs with the embedded default configuration. With
// -check it validates the configuration, prints the effective settings one
// "name : value" per line, and exits. SIGHUP re-reads the file and applies
// new limits and timeouts without a restart; SIGINT and SIGTERM shut down
// gracefully.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/imapguard/imapguard/config"
	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy"
)

// shutdownGrace is how long a shutdown waits for sessions to reach a
// response boundary and say BYE before they are cut.
const shutdownGrace = 10 * time.Second

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("imapguard", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "configuration `file` (TOML); default: the embedded default configuration")
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
		// Profiling for the performance work (README, Performance): Go's
		// net/http/pprof on addr, which should be a loopback address.
		go func() {
			log.Info("pprof listening", "addr", addr)
			if err := http.ListenAndServe(addr, nil); err != nil {
				log.Error("pprof", "err", err)
			}
		}()
	}
	if err := serve(cfg, *path, log); err != nil {
		log.Error("imapguard stopped", "err", err)
		return 1
	}
	return 0
}

func load(path string) (*config.Config, error) {
	if path == "" {
		return config.Parse("(embedded default)", config.DefaultTOML)
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
	return limits.Options{
		MaxConnections:        c.Limits.MaxConnections,
		MaxConnectionsPerIP:   c.Limits.MaxConnectionsPerIP,
		MaxConnectionsPerUser: c.Limits.MaxConnectionsPerUser,
		IPv6PrefixLength:      c.Limits.IPv6PrefixLength,
	}
}

func proxyOptions(c *config.Config) proxy.Options {
	return proxy.Options{
		UpstreamAddr:    c.Upstream.Address,
		ConnectTimeout:  time.Duration(c.Upstream.ConnectTimeout),
		LoginTimeout:    time.Duration(c.Upstream.LoginTimeout),
		MaxCommandSize:  c.Limits.MaxCommandSize,
		PreauthTimeout:  time.Duration(c.Limits.PreauthTimeout),
		IdleTimeout:     time.Duration(c.Limits.IdleTimeout),
		MaxBadCommands:  c.Limits.MaxBadCommands,
		MaxAuthFailures: c.Limits.MaxAuthFailures,
	}
}

func serve(cfg *config.Config, path string, log *slog.Logger) error {
	limiter := limits.New(limitOptions(cfg))
	srv := proxy.New(proxyOptions(cfg), limiter, log)
	ln, err := net.Listen("tcp", cfg.Listen.IMAP)
	if err != nil {
		return err
	}
	log.Info("imapguard listening", "imap", ln.Addr().String(), "upstream", cfg.Upstream.Address)
	log.Warn("no TLS configured: clients log in over plaintext; use only on loopback or a trusted network")

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	for {
		select {
		case err := <-served:
			if errors.Is(err, proxy.ErrServerClosed) {
				return nil
			}
			return err
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				cfg = reload(cfg, path, limiter, srv, log)
				continue
			}
			log.Info("shutting down", "signal", sig.String())
			ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
			err := srv.Shutdown(ctx)
			cancel()
			<-served
			return err
		}
	}
}

// reload re-reads the configuration file and applies what can change
// without a restart: every limit and timeout, and the upstream. A bad file
// changes nothing.
func reload(old *config.Config, path string, limiter *limits.Limiter, srv *proxy.Server, log *slog.Logger) *config.Config {
	if path == "" {
		log.Info("SIGHUP: running on the embedded default configuration; nothing to reload")
		return old
	}
	cfg, err := config.Load(path)
	if err != nil {
		log.Error("SIGHUP: configuration not reloaded", "err", err)
		return old
	}
	if cfg.Listen != old.Listen || cfg.Log != old.Log {
		log.Warn("SIGHUP: [listen] and [log] changes take effect only after a restart")
	}
	limiter.SetOptions(limitOptions(cfg))
	srv.SetOptions(proxyOptions(cfg))
	for _, s := range cfg.Settings() {
		log.Info("setting", "name", s.Name, "value", s.Value)
	}
	log.Info("SIGHUP: configuration reloaded", "file", path)
	return cfg
}
