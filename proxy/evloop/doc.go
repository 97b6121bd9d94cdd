// Package evloop is the event loop behind relay = "loop": a goroutine
// locked to its thread, running edge-triggered epoll over raw
// non-blocking sockets that were accepted and dialled elsewhere (the
// proxy's login phase) and handed to it, with a task queue woken through
// an eventfd and a timer heap on the proxy's clock. It knows nothing of
// IMAP: the proxy's relay (proxy/relay_loop_linux.go) is its only user.
//
// Why not a library: gnet/v2 and cloudwego/netpoll own their
// connections' reads (into their own buffers, handed over by callback)
// and have no splice; gnet can enroll a net.Conn, but its loops are its
// engine's, sized by its options, and its OnTraffic buffers would be one
// more copy in front of the command framer. What the relay needs is
// small: register a socket, get its edges, post a function, one timer.
//
// Only Linux has it; Supported reports false elsewhere, and the proxy
// keeps its goroutine relay there.
package evloop
