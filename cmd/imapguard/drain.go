package main

import (
	"context"
	"log/slog"
	"os"
	"syscall"
	"time"

	"github.com/imapguard/imapguard/config"
	"github.com/imapguard/imapguard/proxy"
)

// startDrain starts a drain of srv with the [shutdown] settings of c
// (those in force: SIGHUP applies them to the next drain) and reports
// whether it started one.
func startDrain(srv *proxy.Server, c *config.Config) bool {
	return srv.Drain(time.Duration(c.Shutdown.DrainTimeout), time.Duration(c.Shutdown.DisconnectSpread))
}

// drainAndStop is the stop asked for by SIGTERM or SIGINT: it drains srv
// (or joins the drain POST /drain started), waits until every connection
// has ended, which drain_timeout bounds, and shuts srv down. A second
// SIGTERM or SIGINT meanwhile is a hard stop: every connection is closed
// at once. SIGHUP during a drain is ignored. Either way the stop is the
// one asked for, not a failure: the process exits 0.
func drainAndStop(srv *proxy.Server, c *config.Config, sigs <-chan os.Signal, log *slog.Logger) error {
	startDrain(srv, c)
	ctx := context.Background()
wait:
	for {
		select {
		case <-srv.Drained():
			break wait
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				log.Info("SIGHUP during a drain: ignored")
				continue
			}
			log.Info("second signal during the drain: closing every connection now", "signal", sig.String())
			var cancel context.CancelFunc
			ctx, cancel = context.WithCancel(ctx)
			cancel()
			break wait
		}
	}
	// After the drain this only closes what is left: nothing, or all of it
	// on a hard stop (the context is done).
	srv.Shutdown(ctx)
	return nil
}
