package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/imapguard/imapguard/config"
	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/limits/redisstore"
	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/proxy/admin"
	"github.com/imapguard/imapguard/proxy/fleet"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/metric"
)

// redisLog writes go-redis's own messages (a pool failing to dial) to
// the log at debug level: the store logs the state changes that matter
// once, and a down Redis would otherwise fill standard error.
type redisLog struct{ log *slog.Logger }

func (l redisLog) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, "redis: "+fmt.Sprintf(format, v...))
}

// startCluster attaches the fleet-wide store of [cluster] store = "redis"
// to limiter (session counts) and tracker (the brute-force state), and
// registers the gauge imapguard.cluster.store.up (1 while
// Redis answers, else 0; the Prometheus name is
// imapguard_cluster_store_up). It returns the function that stops the
// store, and the Redis client and instance id for the fleet-wide who and
// kick (startFleet); with store = "local" it does nothing and returns a
// nil client. Redis unreachable at
// start is not fatal: the store keeps trying, and redis_failure says
// what logins get meanwhile.
func startCluster(cfg *config.Config, limiter *limits.Limiter, tracker *limits.Tracker, mp metric.MeterProvider, log *slog.Logger) (stop func(), client redis.UniversalClient, id string, err error) {
	c := cfg.Cluster
	if c.Store != "redis" {
		return func() {}, nil, "", nil
	}
	redis.SetLogger(redisLog{log})
	client, err = redisstore.NewClient(redisstore.ClientOptions{URL: c.RedisURL, Sentinels: c.RedisSentinel, Master: c.RedisMaster})
	if err != nil {
		return nil, nil, "", fmt.Errorf("cluster.%w", err)
	}
	id = c.InstanceID
	if id == "" {
		if id, err = os.Hostname(); err != nil {
			client.Close()
			return nil, nil, "", fmt.Errorf("cluster.instance_id is empty and the host name is unknown: %w", err)
		}
	}
	// Every call to Redis is bounded well inside a login's
	// connect_timeout, so a hung Redis cannot hang a login.
	timeout := min(time.Duration(cfg.Upstream.ConnectTimeout)/2, time.Second)
	log = log.With("instance", id)
	st := redisstore.New(redisstore.Options{Client: client, Instance: id, Lease: time.Duration(c.LeaseTTL),
		Timeout: timeout, Log: log})
	mode := limits.FailureLocal
	if c.RedisFailure == "deny" {
		mode = limits.FailureDeny
	}
	var seq atomic.Uint64
	limiter.SetShared(limits.SharedOptions{Store: st, OnFailure: mode, Timeout: timeout,
		NewID: func() string { return strconv.FormatUint(seq.Add(1), 36) }})
	tracker.SetShared(&redisstore.Auth{Client: client}, timeout)
	if err := st.Start(); err != nil {
		log.Warn("cluster store unreachable at start; retrying", "redis_failure", c.RedisFailure, "err", err)
	} else {
		log.Info("cluster store: redis", "lease_ttl", c.LeaseTTL.String(), "redis_failure", c.RedisFailure)
	}
	m := mp.Meter("github.com/imapguard/imapguard/cmd/imapguard")
	g, err := m.Int64ObservableGauge("imapguard.cluster.store.up",
		metric.WithDescription("1 while the fleet-wide store ([cluster] store = \"redis\") answers, else 0"))
	if err == nil {
		_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
			var v int64
			if st.Up() {
				v = 1
			}
			o.ObserveInt64(g, v)
			return nil
		}, g)
	}
	if err != nil {
		st.Close()
		client.Close()
		return nil, nil, "", err
	}
	return func() {
		st.Close()
		client.Close()
	}, client, id, nil
}

// startFleet makes who and kick of the admin API fleet-wide (package
// proxy/fleet) when [cluster] store = "redis" (client not nil): it
// subscribes to the fleet's kicks, and returns the function that stops
// that, and the admin.Fleet to set (nil with store = "local"). Redis
// unreachable at start is not fatal: go-redis keeps subscribing.
func startFleet(client redis.UniversalClient, id string, srv *proxy.Server, cfg *config.Config, log *slog.Logger) (func(), admin.Fleet) {
	if client == nil {
		return func() {}, nil
	}
	f := fleet.New(fleet.Options{Client: client, Instance: id, Local: srv,
		Timeout: min(time.Duration(cfg.Upstream.ConnectTimeout)/2, time.Second),
		Log:     log.With("instance", id, "component", "fleet")})
	if err := f.Start(); err != nil {
		log.Warn("fleet kicks: cannot subscribe yet; retrying", "err", err)
	}
	return f.Close, f
}
