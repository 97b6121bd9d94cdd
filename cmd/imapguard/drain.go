package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"syscall"
	"time"

	"github.com/imapguard/imapguard/config"
	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/proxy/admin"
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

// drainUsage is the synopsis of imapguard drain.
const drainUsage = "imapguard drain [-wait] [flags]\n\n" +
	"Starts a drain of a running imapguard (POST /drain): it stops accepting,\n" +
	"/readyz answers 503, and its sessions get \"* BYE [UNAVAILABLE] Server\n" +
	"shutting down\" spread over shutdown.disconnect_spread. The process stays\n" +
	"up until SIGTERM. With -wait, returns once every connection has ended."

// drainPoll is how often drain -wait asks how many connections are left.
const drainPoll = 500 * time.Millisecond

// drain starts a drain and, with wait, polls /sessions until no
// connection is left (the drain's drain_timeout bounds that).
func (c *adminClient) drain(w io.Writer, wait, raw bool) error {
	var res admin.DrainResult
	if err := c.get(w, http.MethodPost, "/drain", admin.DrainRequest{}, &res, raw); err != nil {
		return err
	}
	if !raw {
		what := "drain started"
		if !res.Started {
			what = "already draining"
		}
		if _, err := fmt.Fprintf(w, "%s: %s open; not accepting, /readyz answers 503\n", what, plural(res.Connections, "connection")); err != nil {
			return err
		}
	}
	for wait {
		var list admin.SessionList
		if err := c.get(w, http.MethodGet, "/sessions", nil, &list, false); err != nil {
			return err
		}
		if list.Count == 0 {
			if raw {
				return nil
			}
			_, err := fmt.Fprintln(w, "drained: no connection left")
			return err
		}
		time.Sleep(drainPoll)
	}
	return nil
}
