package proxy

import (
	"container/list"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"

	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy/clock"
	"github.com/imapguard/imapguard/proxy/park"
)

// Server is the proxy. Create it with New.
type Server struct {
	limiter *limits.Limiter
	tracker *limits.Tracker // nil: no brute-force defence
	log     *slog.Logger
	opts    atomic.Pointer[Options]

	nextID atomic.Uint64
	tel    atomic.Pointer[telemetry]

	clock  clock.Clock
	parker park.Parker
	// onCommand, set by tests before Serve, is told of every command a
	// session's framer ends (imapwire.CommandFramer.OnCommand).
	onCommand func(tag []byte, size int, forwarded bool)
	ownParker bool // made by New: Shutdown closes it
	sweeper   park.Sweeper
	upCaps    upstreamCaps // the upstream's pre-login capabilities (upstream_caps.go)
	health    health       // of several upstreams (health.go)
	mapFile   routeMapFile // Options.RouteMapFile as last read (routemap.go)

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	preauth   list.List // admitted connections not logged in, oldest first
	bytesDone [2]int64  // relayed by finished sessions: to upstream, to client
	closing   bool
	drain     *drainState         // set by Drain (drain.go)
	drained   chan struct{}       // closed when a drain has ended
	drainReg  metric.Registration // imapguard.draining (instrumentDrain)
	// imapguard.backend.* (instrumentBackends)
	backendReg metric.Registration
	wg         sync.WaitGroup // live connection handlers

	parkerOnce sync.Once // closeParker
	loopsOnce  sync.Once // closeParker closes the loops too

	relay string // relayMode of the options New was given
	loops loops  // the event loops, with relay = "loop"
}

// New returns a Server that counts connections with limiter and logs to
// logger (nil: discard).
func New(opts Options, limiter *limits.Limiter, logger *slog.Logger) *Server {
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := &Server{
		limiter:   limiter,
		tracker:   opts.AuthTracker,
		log:       logger,
		clock:     opts.Clock,
		parker:    opts.Parker,
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*conn]struct{}),
		drained:   make(chan struct{}),
	}
	s.relay = relayMode(&opts)
	s.loops.n = eventLoopCount(&opts)
	if s.clock == nil {
		s.clock = clock.Real
	}
	if s.parker == nil {
		s.parker, s.ownParker = park.New(), true
	}
	s.sweeper = park.Sweeper{After: parkAfter, Every: sweepEvery, Clock: s.clock}
	s.SetOptions(opts)
	s.tel.Store(noopTelemetry())
	return s
}

// SetOptions replaces the options in force, without a restart: new
// connections take the new values at once; a session already relaying
// keeps the command size cap and idle timeout it started with. It reads
// Options.RouteMapFile again.
func (s *Server) SetOptions(opts Options) {
	o := opts.withDefaults()
	s.opts.Store(&o)
	s.refreshRouteMap(true)
	s.armHealth()
}

func (s *Server) options() *Options { return s.opts.Load() }

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("proxy: server closed")

// Serve accepts plaintext IMAP connections on ln (with STARTTLS when
// Options.TLSConfig is set) until the listener is closed. After Shutdown
// it returns ErrServerClosed. Temporary accept errors (such as EMFILE)
// are retried with a growing delay.
func (s *Server) Serve(ln net.Listener) error { return s.serve(ln, false) }

// ServeTLS is Serve for implicit TLS (imaps, RFC 8314): each connection
// starts with a TLS handshake under Options.TLSConfig, which must be set.
// The handshake counts toward the connection caps and preauth_timeout.
func (s *Server) ServeTLS(ln net.Listener) error {
	if s.options().TLSConfig == nil {
		return errors.New("proxy: ServeTLS without Options.TLSConfig")
	}
	return s.serve(ln, true)
}

func (s *Server) serve(ln net.Listener, implicitTLS bool) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	s.knownUpstreamCaps(s.options()) // the first probe, with ProbeUpstream
	s.startHealth()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()

	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing || errors.Is(err, net.ErrClosed) {
				if closing {
					return ErrServerClosed
				}
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed; retrying", "err", err, "delay", backoff)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		s.startConn(nc, ln.Addr().String(), implicitTLS)
	}
}

// isTemporary reports accept errors that pass by themselves (EMFILE,
// ENFILE, ECONNABORTED), which the accept loop retries: those whose
// Temporary method says so. Any other error ends Serve.
func isTemporary(err error) bool {
	var se interface{ Temporary() bool }
	return errors.As(err, &se) && se.Temporary()
}

func (s *Server) startConn(nc net.Conn, listener string, implicitTLS bool) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		nc.Close()
		return
	}
	c := newConn(s, nc, listener, implicitTLS)
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go s.handle(c)
}

// handle serves a connection up to login and then starts its relay
// (sess.start): a plaintext session goes to an event loop, or, with the
// goroutine relay, runs on this goroutine (no goroutine more per login;
// the stack login grew is given up when the client direction parks); a
// session with TLS towards the client starts on a fresh goroutine with a
// small stack, since its client direction cannot park and the TLS
// handshake grew this one's. The session finishes the connection when
// it ends.
func (s *Server) handle(c *conn) {
	if sess := c.serveRecovered(); sess != nil {
		sess.start()
	}
}

// serveRecovered is c.serve, which a panic ends like an error: the
// connection is finished and there is no session.
func (c *conn) serveRecovered() (sess relayer) {
	defer func() {
		if v := recover(); v != nil {
			logPanic(c.log, v)
			sess = nil
		}
		if sess == nil {
			c.finish(nil)
		}
	}()
	return c.serve()
}

// unauthenticated notes an admitted connection that has not logged in.
func (s *Server) unauthenticated(c *conn) {
	s.mu.Lock()
	c.preauthElem = s.preauth.PushBack(c)
	s.mu.Unlock()
}

// authenticated takes c off the unauthenticated list (it logged in, or
// ends).
func (s *Server) authenticated(c *conn) {
	s.mu.Lock()
	if c.preauthElem != nil {
		s.preauth.Remove(c.preauthElem)
		c.preauthElem = nil
	}
	s.mu.Unlock()
}

// oldestUnauthenticated takes the oldest admitted connection that has not
// logged in off that list and returns it, or nil.
func (s *Server) oldestUnauthenticated() *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.preauth.Front()
	if e == nil {
		return nil
	}
	c := s.preauth.Remove(e).(*conn)
	c.preauthElem = nil
	return c
}

// forget takes a finished connection off the registry.
func (s *Server) forget(c *conn, res *result) {
	s.mu.Lock()
	// With the connection's removal, under the same lock, so that the
	// bytes metric never counts a session twice or goes back.
	if res != nil {
		s.bytesDone[0] += res.toUpstream
		s.bytesDone[1] += res.toClient
	}
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

// Shutdown stops accepting, tells every client "* BYE" (authenticated
// sessions at a response boundary) and closes their connections, then
// waits for the handlers to unwind until ctx is done, when it closes what
// is left at once. Drain is the gentler stop, its BYEs spread out; a
// Shutdown during a drain ends it (see Drain).
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for ln := range s.listeners {
		ln.Close()
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()

	// During a drain: the sessions whose turn has not come get their BYE
	// now (a connection told already is not told again).
	s.stopDrain()
	s.stopHealth()
	for _, c := range conns {
		c.shutdown(shutdownText)
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		s.closeParker()
		return nil
	case <-ctx.Done():
		// Closed outside the lock: a closed session may finish on this
		// goroutine, and finishing takes the lock (forget).
		s.mu.Lock()
		left := make([]*conn, 0, len(s.conns))
		for c := range s.conns {
			left = append(left, c)
		}
		s.mu.Unlock()
		for _, c := range left {
			c.close()
		}
		<-done
		s.closeParker()
		return ctx.Err()
	}
}

// closeParker closes the parker New made, once nothing can park, and
// the event loops, once no session is left on them. Once: a Shutdown may
// follow a drain.
func (s *Server) closeParker() {
	if s.ownParker {
		s.parkerOnce.Do(func() { s.parker.Close() })
	}
	s.loopsOnce.Do(s.loops.close)
}
