// Package redistest starts a private redis-server for a test, on a free
// loopback port, with no persistence, and stops it when the test ends. A
// test can stop it and start it again on the same port (Stop, Restart)
// to see what the proxy does while Redis is away. Without redis-server
// the test is skipped, or fails when CI is set (proxytest.Skip).
package redistest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imapguard/imapguard/test/proxytest"
	"github.com/redis/go-redis/v9"
)

// Server is a redis-server run by a test.
type Server struct {
	t    testing.TB
	bin  string
	Addr string // 127.0.0.1:port

	mu  sync.Mutex
	cmd *exec.Cmd
}

// Start starts a redis-server for t; t's cleanup stops it.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := proxytest.LookPath("redis-server")
	if err != nil {
		proxytest.Skip(t, "Redis suite", "redis-server not found: apt-get install redis-server")
	}
	s := &Server{t: t, bin: bin}
	var last error
	for range 10 { // a port picked free may be taken before redis binds it
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s.Addr = l.Addr().String()
		l.Close()
		if last = s.start(); last == nil {
			t.Cleanup(s.Stop)
			return s
		}
	}
	t.Fatalf("redis-server did not start: %v", last)
	return nil
}

func (s *Server) start() error {
	_, port, _ := net.SplitHostPort(s.Addr)
	cmd := exec.Command(s.bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--daemonize", "no", "--loglevel", "warning")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return err
	}
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
		close(lines)
	}()
	c := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			s.mu.Lock()
			s.cmd = cmd
			s.mu.Unlock()
			return nil
		}
		select {
		case l, ok := <-lines:
			if !ok { // exited: a bind failure, most likely
				cmd.Wait()
				return fmt.Errorf("redis-server exited on %s", s.Addr)
			}
			if strings.Contains(l, "Address already in use") {
				cmd.Process.Kill()
				cmd.Wait()
				return fmt.Errorf("%s: %s", s.Addr, l)
			}
		case <-time.After(50 * time.Millisecond): // poll interval while redis-server starts
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	return fmt.Errorf("redis-server on %s did not answer", s.Addr)
}

// URL is the redis:// URL of the server.
func (s *Server) URL() string { return "redis://" + s.Addr }

// Client returns a client of the server, closed at the end of the test.
func (s *Server) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	s.t.Cleanup(func() { c.Close() })
	return c
}

// Stop kills the server (its data goes with it); stopping a stopped
// server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd := s.cmd
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Kill()
	cmd.Wait()
}

// Restart starts the server again on the same port, empty.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	var err error
	for range 20 { // the port may linger for a moment
		if err = s.start(); err == nil {
			return
		}
	}
	s.t.Fatalf("redis-server did not restart on %s: %v", s.Addr, err)
}

// Port is the server's port.
func (s *Server) Port() int {
	_, p, _ := net.SplitHostPort(s.Addr)
	n, _ := strconv.Atoi(p)
	return n
}
