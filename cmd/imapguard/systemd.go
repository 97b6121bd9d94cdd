package main

// What imapguard does for systemd (the unit in systemd/imapguard.service).
//
// Its notification protocol (sd_notify(3)), for Type=notify: READY=1
// once every listener is bound and serving, RELOADING=1 and READY=1
// around a SIGHUP reload, STOPPING=1 when a graceful stop begins. The
// protocol is a few lines: one datagram of newline-separated KEY=VALUE
// assignments to the unix socket named by $NOTIFY_SOCKET, a name
// starting with "@" being in the abstract namespace (Go's net package
// maps the "@" to the leading NUL byte itself). Written here rather than
// imported from github.com/coreos/go-systemd/v22/daemon (issue 12): that
// module is not among those this project's builds can fetch, it would
// be a dependency for about forty lines, and its SdNotify leaves
// MONOTONIC_USEC, which RELOADING=1 needs (systemd 253's
// Type=notify-reload requires it; 252, Debian bookworm's, takes it), to
// the caller anyway. The vsock addresses ("vsock:CID:PORT") of systemd
// 254 for virtual machines are not supported: a warning says so and the
// service goes on.
//
// And its StateDirectory=: $STATE_DIRECTORY is the default ACME storage
// (acmeStorage).

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/imapguard/imapguard/config"
)

// sdNotify sends state, KEY=VALUE lines, to $NOTIFY_SOCKET. Without
// NOTIFY_SOCKET (not started by systemd, or not with Type=notify) it does
// nothing and returns nil.
func sdNotify(state ...string) error {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return nil
	}
	if name[0] != '/' && name[0] != '@' {
		return fmt.Errorf("NOTIFY_SOCKET=%q: only unix socket paths and abstract names (@...) are supported", name)
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("NOTIFY_SOCKET: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(strings.Join(state, "\n") + "\n")); err != nil {
		return fmt.Errorf("NOTIFY_SOCKET: %w", err)
	}
	return nil
}

// notify is sdNotify whose failure is logged: systemd not hearing of a
// state change is worth a warning, not a stop.
func notify(log *slog.Logger, state ...string) {
	if err := sdNotify(state...); err != nil {
		log.Warn("systemd notification not sent", "state", state[0], "err", err)
	}
}

// notifyReady tells systemd the service is ready: every listener is
// bound, on the addresses bound, and serving (after start-up, and after
// a reload). The status names them and cfg's upstream.
func notifyReady(log *slog.Logger, bound []string, cfg *config.Config) {
	notify(log, "READY=1", "STATUS="+readyStatus(bound, cfg))
}

// readyStatus is the one line systemctl status shows while serving.
func readyStatus(bound []string, cfg *config.Config) string {
	return "Serving on " + strings.Join(bound, ", ") + " in front of " + cfg.Upstream.Address
}

// notifyReloading tells systemd a reload (SIGHUP) has begun; READY=1
// (notifyReady) ends it. MONOTONIC_USEC is CLOCK_MONOTONIC at the start,
// which systemd uses to tell this reload from an earlier one.
func notifyReloading(log *slog.Logger) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		log.Warn("systemd notification not sent", "state", "RELOADING=1", "err", err)
		return
	}
	usec := ts.Nano() / 1000
	notify(log, "RELOADING=1", fmt.Sprintf("MONOTONIC_USEC=%d", usec), "STATUS=Reloading the configuration")
}

// notifyStopping tells systemd a graceful stop has begun.
func notifyStopping(log *slog.Logger) {
	notify(log, "STOPPING=1", "STATUS=Shutting down")
}

// acmeStorage is the directory for ACME accounts and certificates:
// tls.storage, or else $STATE_DIRECTORY (the directory systemd made for
// the unit's StateDirectory=, the first one if it lists several), or else
// "" for certmagic's default under the home directory.
func acmeStorage(t config.TLS) string {
	if t.Storage != "" {
		return t.Storage
	}
	dir, _, _ := strings.Cut(os.Getenv("STATE_DIRECTORY"), ":")
	return dir
}
