package proxy

import (
	"context"
	"net"
	"time"
)

// Keep-alive towards clients, as Go's net package sets it on every
// connection by default: probes after 15 s without traffic, every 15 s,
// and the connection is dropped after 9 unanswered ones.
const (
	clientKeepAlive      = 15 * time.Second
	clientKeepAliveCount = 9
)

// Listen opens a TCP listener for Serve or ServeTLS on addr. Its
// connections have TCP keep-alive on (clientKeepAlive,
// clientKeepAliveCount) and TCP_NODELAY, as net.Listen's do; on Linux the
// keep-alive options are set once on the listening socket, which the
// accepted sockets inherit, instead of four setsockopt calls per accepted
// connection (listen_linux.go).
func Listen(ctx context.Context, network, addr string) (net.Listener, error) {
	lc := listenConfig()
	return lc.Listen(ctx, network, addr)
}

// upstreamDialer is the dialer of the connections to the upstream: with
// keep-alive only when Options.UpstreamKeepAlive is set (Go's default,
// 15 s, costs four setsockopt calls per login), with probes every
// keepAlive after keepAlive without traffic, 9 of them.
func upstreamDialer(keepAlive time.Duration) *net.Dialer {
	d := &net.Dialer{KeepAlive: -1}
	if keepAlive > 0 {
		d.KeepAliveConfig = net.KeepAliveConfig{Enable: true, Idle: keepAlive, Interval: keepAlive, Count: clientKeepAliveCount}
	}
	return d
}
