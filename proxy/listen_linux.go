package proxy

import (
	"net"
	"os"
	"syscall"
)

// listenConfig sets the keep-alive options on the listening socket:
// Linux copies them to every socket it accepts (the socket is cloned from
// the listener, and its keep-alive timer armed when SO_KEEPALIVE is on),
// so Go need not set them on each connection (KeepAlive: -1). Go still
// sets TCP_NODELAY on each accepted connection, whatever the listener
// has; the net package offers no way to skip that one call.
func listenConfig() net.ListenConfig {
	return net.ListenConfig{KeepAlive: -1, Control: controlKeepAlive}
}

// controlKeepAlive turns keep-alive on for the socket behind c, with
// clientKeepAlive and clientKeepAliveCount.
func controlKeepAlive(_, _ string, c syscall.RawConn) error {
	secs := int(clientKeepAlive.Seconds())
	var err error
	cerr := c.Control(func(fd uintptr) {
		for _, o := range []struct{ level, opt, v int }{
			{syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
			{syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, secs},
			{syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, secs},
			{syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, clientKeepAliveCount},
		} {
			if err = syscall.SetsockoptInt(int(fd), o.level, o.opt, o.v); err != nil {
				err = os.NewSyscallError("setsockopt", err)
				return
			}
		}
	})
	if cerr != nil {
		return cerr
	}
	return err
}
