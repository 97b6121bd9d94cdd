package main

import (
	"context"
	"errors"
	"log/slog"
	"strings"

	"github.com/imapguard/imapguard/config"
	"github.com/imapguard/imapguard/proxy/admin"
)

// reloadState is what a reload changes beside the proxy's options.
type reloadState struct {
	logs  *logSwitch    // nil: [log] is not reloaded
	api   *admin.Server // nil: no admin API
	token string        // the admin token in force
}

// reloadReply is the loop's answer to a POST /reload.
type reloadReply struct {
	res admin.ReloadResult
	err error
}

// request returns admin.Options.Reload: it hands the request to serve's
// loop, which reloads as for SIGHUP, and waits for the answer, the
// request's end, or the end of serve (stopped closed).
func (st *reloadState) request(reloads chan<- chan reloadReply, stopped <-chan struct{}) func(context.Context) (admin.ReloadResult, error) {
	return func(ctx context.Context) (admin.ReloadResult, error) {
		reply := make(chan reloadReply, 1)
		select {
		case reloads <- reply:
		case <-ctx.Done():
			return admin.ReloadResult{}, ctx.Err()
		case <-stopped:
			return admin.ReloadResult{}, errShuttingDown
		}
		select {
		case r := <-reply:
			return r.res, r.err
		case <-stopped:
			return admin.ReloadResult{}, errShuttingDown
		}
	}
}

var errShuttingDown = errors.New("imapguard is shutting down")

// logSwitchOf returns the logSwitch behind log, or nil for another
// logger.
func logSwitchOf(log *slog.Logger) *logSwitch {
	if h, ok := log.Handler().(*switchHandler); ok {
		return h.sw
	}
	return nil
}

// needsRestart reports whether a change of key takes effect only after a
// restart: [listen] but trusted_proxies (which needs one too when
// proxy_protocol changes), [tls] (SIGHUP re-reads the certificate files,
// not the keys), [telemetry] but record_user, admin.listen, [cluster] and
// [performance].
func needsRestart(key string, protocolChanged bool) bool {
	switch {
	case key == "listen.trusted_proxies":
		return protocolChanged
	case key == "telemetry.record_user":
		return false
	case key == "admin.listen":
		return true
	case strings.HasPrefix(key, "cluster."):
		return true // the store is made once, at start
	case strings.HasPrefix(key, "performance."):
		return true // the event loops are started once, with the server
	}
	return strings.HasPrefix(key, "listen.") || strings.HasPrefix(key, "tls.") || strings.HasPrefix(key, "telemetry.")
}

// splitRestart splits changed keys into those a reload applies and those
// that need a restart.
func splitRestart(changed []string) (applied, restart []string) {
	protocolChanged := false
	for _, k := range changed {
		protocolChanged = protocolChanged || k == "listen.proxy_protocol"
	}
	for _, k := range changed {
		if needsRestart(k, protocolChanged) {
			restart = append(restart, k)
		} else {
			applied = append(applied, k)
		}
	}
	return applied, restart
}

// keepRestartKeys sets in cfg, the new configuration, the values in force
// (old's) of the keys that need a restart, so that cfg is the
// configuration in force after the reload (what /settings shows).
func keepRestartKeys(old, cfg *config.Config) {
	trusted := cfg.Listen.TrustedProxies
	protocolSame := cfg.Listen.ProxyProtocol == old.Listen.ProxyProtocol
	cfg.Listen, cfg.TLS = old.Listen, old.TLS
	if protocolSame {
		cfg.Listen.TrustedProxies = trusted
	}
	record := cfg.Telemetry.RecordUser
	cfg.Telemetry = old.Telemetry
	cfg.Telemetry.RecordUser = record
	cfg.Admin.Listen = old.Admin.Listen
	cfg.Cluster = old.Cluster
	cfg.Performance = old.Performance
}

// keyList joins key names for a log line; "none" for none.
func keyList(keys []string) string {
	if len(keys) == 0 {
		return "none"
	}
	return strings.Join(keys, ", ")
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
