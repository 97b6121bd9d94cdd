package test

import (
	"slices"
	"testing"
	"time"

	"github.com/imapguard/imapguard/cmd/imapd/server"
	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/limits/redisstore"
	"github.com/imapguard/imapguard/test/proxytest"
	"github.com/imapguard/imapguard/test/redistest"
)

// BenchmarkLoginStore measures what [cluster] store = "redis" adds to a
// login: whole sessions (greeting, LOGIN, NOOP, LOGOUT against the
// bundled upstream on loopback, one after another) through a proxy
// counting in memory ("local") and in a redis-server on loopback
// ("redis": one admit script at login, one release script at the end).
// It reports logins/s and the p99 of a session:
//
//	go test -run '^$' -bench LoginStore -benchtime 2000x ./test
func BenchmarkLoginStore(b *testing.B) {
	up := server.Start(b, server.Options{Users: []server.User{{Username: "alice", Password: "secret"}}, InsecureAuth: true})
	for _, store := range []string{"local", "redis"} {
		b.Run(store, func(b *testing.B) {
			cfg := proxytest.Config{Upstream: up}
			if store == "redis" {
				rs := redistest.Start(b)
				st := redisstore.New(redisstore.Options{Client: rs.Client(), Instance: "bench", Lease: 30 * time.Second})
				if err := st.Start(); err != nil {
					b.Fatal(err)
				}
				b.Cleanup(st.Close)
				cfg.Shared = &limits.SharedOptions{Store: st, OnFailure: limits.FailureDeny}
			}
			p := proxytest.Start(b, cfg)
			var took []time.Duration
			b.ResetTimer()
			start := time.Now()
			for b.Loop() {
				t0 := time.Now()
				if err := benchSession(p.Addr); err != nil {
					b.Fatal(err)
				}
				took = append(took, time.Since(t0))
			}
			elapsed := time.Since(start)
			slices.Sort(took)
			b.ReportMetric(float64(len(took))/elapsed.Seconds(), "logins/s")
			b.ReportMetric(float64(took[len(took)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}
