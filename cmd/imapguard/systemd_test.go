package main

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/imapguard/imapguard/config"
)

// listenNotify listens on a unixgram socket named name, as systemd does
// for $NOTIFY_SOCKET, and sets NOTIFY_SOCKET to it.
func listenNotify(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", name)
	return c
}

// readNotify reads one datagram.
func readNotify(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("reading the notification: %v", err)
	}
	return string(buf[:n])
}

func TestSdNotify(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	cfg := &config.Config{}
	cfg.Upstream.Address = "127.0.0.1:10143"
	bound := []string{"[::]:143", "[::]:993"}
	for _, tt := range []struct {
		name   string
		socket func(t *testing.T) string
	}{
		{"path", func(t *testing.T) string { return filepath.Join(t.TempDir(), "notify") }},
		// The abstract namespace, as systemd's own tests use it.
		{"abstract", func(t *testing.T) string {
			return fmt.Sprintf("@imapguard-test-%d-%d", os.Getpid(), time.Now().UnixNano())
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := listenNotify(t, tt.socket(t))
			notifyReady(log, bound, cfg)
			if got, want := readNotify(t, c), "READY=1\nSTATUS=Serving on [::]:143, [::]:993 in front of 127.0.0.1:10143\n"; got != want {
				t.Errorf("ready: got %q; want %q", got, want)
			}
			notifyReloading(log)
			got := readNotify(t, c)
			if !regexp.MustCompile(`^RELOADING=1\nMONOTONIC_USEC=[1-9][0-9]*\nSTATUS=Reloading the configuration\n$`).MatchString(got) {
				t.Errorf("reloading: got %q; want RELOADING=1, MONOTONIC_USEC and STATUS", got)
			}
			notifyStopping(log)
			if got, want := readNotify(t, c), "STOPPING=1\nSTATUS=Shutting down\n"; got != want {
				t.Errorf("stopping: got %q; want %q", got, want)
			}
		})
	}
	t.Run("unset", func(t *testing.T) {
		t.Setenv("NOTIFY_SOCKET", "")
		if err := sdNotify("READY=1"); err != nil {
			t.Errorf("got %v; want nil without NOTIFY_SOCKET", err)
		}
	})
	t.Run("errors", func(t *testing.T) {
		for _, name := range []string{"vsock:2:1234", filepath.Join(t.TempDir(), "nobody-listens")} {
			t.Setenv("NOTIFY_SOCKET", name)
			if err := sdNotify("READY=1"); err == nil || !strings.Contains(err.Error(), "NOTIFY_SOCKET") {
				t.Errorf("NOTIFY_SOCKET=%s: got %v; want an error naming NOTIFY_SOCKET", name, err)
			}
		}
	})
}

func TestACMEStorage(t *testing.T) {
	for _, tt := range []struct {
		name, storage, env, want string
	}{
		{"storage wins", "/srv/acme", "/var/lib/imapguard", "/srv/acme"},
		{"state directory", "", "/var/lib/imapguard", "/var/lib/imapguard"},
		{"first of several", "", "/var/lib/imapguard:/var/lib/other", "/var/lib/imapguard"},
		{"certmagic's default", "", "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("STATE_DIRECTORY", tt.env)
			if got := acmeStorage(config.TLS{Storage: tt.storage}); got != tt.want {
				t.Errorf("got %q; want %q", got, tt.want)
			}
		})
	}
}
