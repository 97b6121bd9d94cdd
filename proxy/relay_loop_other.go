//go:build !linux

package proxy

import (
	"errors"
	"net"

	"github.com/imapguard/imapguard/proxy/clock"
	"github.com/imapguard/imapguard/proxy/evloop"
)

// The event-loop relay needs Linux; elsewhere every session keeps the
// goroutine relay (relayMode never picks the loop).

type eventLoop struct{ *evloop.Loop }

func loopSupported() bool { return false }

func newEventLoop(clock.Clock) (*eventLoop, error) {
	return nil, errors.New("proxy: the event-loop relay needs Linux")
}

func loopable(client, up net.Conn) bool { return false }

func newLoopSession(c *conn, up net.Conn, lp *eventLoop) relayer { return nil }
