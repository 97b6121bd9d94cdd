//go:build !linux

package proxy

import "net"

// listenConfig leaves keep-alive to Go, which sets it on each accepted
// connection: not every system copies it from the listening socket.
func listenConfig() net.ListenConfig {
	return net.ListenConfig{KeepAlive: clientKeepAlive, KeepAliveConfig: net.KeepAliveConfig{
		Enable: true, Idle: clientKeepAlive, Interval: clientKeepAlive, Count: clientKeepAliveCount}}
}
