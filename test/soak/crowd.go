package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Groups of clients and the checks the faults and flood phases make with
// them, and the admin API's kick.

// crowd is a set of logged-in sessions that must keep working through a
// fault: everyone else.
type crowd struct {
	cs []*client
}

// openCrowd logs n sessions in over every transport in turn and selects
// INBOX.
func (e *env) openCrowd(n int, users []user) (*crowd, error) {
	cr := &crowd{}
	for i := range n {
		c, err := e.dialer.open(e.ctx, transport(i%3))
		if err != nil {
			cr.close()
			return nil, err
		}
		cr.cs = append(cr.cs, c)
		u := users[i%len(users)]
		if err := c.login(u.name, u.pass); err != nil {
			cr.close()
			return nil, err
		}
		if _, err := c.command("SELECT INBOX"); err != nil {
			cr.close()
			return nil, err
		}
	}
	return cr, nil
}

// exercise runs NOOP and a FETCH on every session.
func (cr *crowd) exercise() error {
	var errs []error
	for i, c := range cr.cs {
		if _, err := c.command("NOOP"); err != nil {
			errs = append(errs, fmt.Errorf("session %d: %w", i, err))
			continue
		}
		if _, err := c.command("FETCH 1 (FLAGS BODY.PEEK[HEADER])"); err != nil {
			errs = append(errs, fmt.Errorf("session %d: %w", i, err))
		}
	}
	return errors.Join(errs...)
}

func (cr *crowd) close() {
	for _, c := range cr.cs {
		c.logout()
	}
}

// openPreauth opens n greeted, not logged-in connections.
func (e *env) openPreauth(n int) ([]*client, error) {
	var cs []*client
	for i := range n {
		c, err := e.dialer.open(e.ctx, transport(i%3))
		if err != nil {
			closeAll(cs)
			return nil, err
		}
		cs = append(cs, c)
	}
	return cs, nil
}

func closeAll(cs []*client) {
	for _, c := range cs {
		c.raw.Close()
	}
}

// noopAll sends NOOP on each connection.
func noopAll(cs []*client) error {
	var errs []error
	for i, c := range cs {
		if _, err := c.command("NOOP"); err != nil {
			errs = append(errs, fmt.Errorf("connection %d: %w", i, err))
		}
	}
	return errors.Join(errs...)
}

// loginUnavailable sends LOGIN on c and expects "NO [UNAVAILABLE]"; it
// returns how long the answer took.
func loginUnavailable(c *client, u user) (time.Duration, error) {
	start := time.Now()
	r, err := c.commandAny("LOGIN " + quote(u.name) + " " + quote(u.pass))
	took := time.Since(start)
	if err != nil {
		return took, err
	}
	if r.status != "NO" || !strings.HasPrefix(r.text, "[UNAVAILABLE]") {
		return took, fmt.Errorf("LOGIN: %s %s; want NO [UNAVAILABLE]: %w", r.status, r.text, errUnexpected)
	}
	return took, nil
}

// unavailableLogins opens n connections (every transport in turn) and
// expects each LOGIN to be answered NO [UNAVAILABLE] within limit. It
// returns the connections, still open, for a retry once the fault ends.
func (e *env) unavailableLogins(r *phaseResult, what string, n int, u user, limit time.Duration) []*client {
	cs, err := e.openPreauth(n)
	if err != nil {
		r.check(what+": clients connect and are greeted", false, "%v", err)
		return nil
	}
	var mu sync.Mutex
	var errs []error
	var slowest time.Duration
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			took, err := loginUnavailable(c, u)
			mu.Lock()
			defer mu.Unlock()
			slowest = max(slowest, took)
			if err == nil && took > limit {
				err = fmt.Errorf("answered after %s", took.Round(time.Millisecond))
			}
			if err != nil {
				errs = append(errs, err)
			}
		}()
	}
	wg.Wait()
	r.check(what+": LOGIN answered NO [UNAVAILABLE] within "+limit.String(), len(errs) == 0,
		"%d of %d logins; slowest %s; %v", n-len(errs), n, slowest.Round(time.Millisecond), orNone(errors.Join(errs...)))
	return cs
}

// retryLogins logs in again on connections that were refused during a
// fault: once it has ended, the same connection must get in.
func retryLogins(r *phaseResult, what string, cs []*client, u user) {
	var errs []error
	for _, c := range cs {
		if err := c.login(u.name, u.pass); err != nil {
			errs = append(errs, err)
			continue
		}
		if _, err := c.command("SELECT INBOX"); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := c.logout(); err != nil {
			errs = append(errs, err)
		}
	}
	r.check(what+": the refused connections log in once it has ended", len(errs) == 0,
		"%d of %d; %v", len(cs)-len(errs), len(cs), orNone(errors.Join(errs...)))
}

// waitClosed reads each connection until it ends or deadline passes and
// returns, for those that ended, how long after since they did.
func waitClosed(cs []*client, deadline, since time.Time) []time.Duration {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var out []time.Duration
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.nc.SetReadDeadline(deadline)
			_, err := io.Copy(io.Discard, c.br)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return
			}
			mu.Lock()
			out = append(out, time.Since(since))
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// kick posts a kick to the admin API.
func (e *env) kick(body string) error {
	req, err := http.NewRequestWithContext(e.ctx, "POST", e.probe.adminURL+"/sessions/kick", strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.probe.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("kick: %s: %s", resp.Status, b)
	}
	return nil
}

// dumpGoroutines saves imapguard's goroutines with full stacks in the
// phase's directory and returns the file's path.
func (e *env) dumpGoroutines(name string) string {
	b, err := e.probe.get(e.ctx, e.probe.pprofURL+"/debug/pprof/goroutine?debug=2")
	if err != nil {
		return err.Error()
	}
	path := filepath.Join(e.dir, name)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return err.Error()
	}
	return path
}

// fakeScene is the setting of a fault played by a fake upstream: the
// crowd on cmd/imapd that must keep working, the fake the proxy points
// at, and the sessions logged in to the fake (hit; empty when the fake
// logs nobody in).
type fakeScene struct {
	e       *env
	others  *crowd
	fake    *fakeUpstream
	hit     *crowd
	pointed bool // the proxy's upstream.address is the fake's
}

// openFakeScene opens 9 sessions on cmd/imapd, starts a fake upstream
// with handler, points the proxy at it, and logs n sessions in to it
// (what names the fake in the error). close undoes all of it.
func (e *env) openFakeScene(handler func(*fakeUpstream, net.Conn), n int, users []user, what string) (*fakeScene, error) {
	sc := &fakeScene{e: e, hit: &crowd{}}
	var err error
	if sc.others, err = e.openCrowd(9, users); err != nil {
		return nil, err
	}
	if sc.fake, err = startFake(handler); err != nil {
		sc.close()
		return nil, err
	}
	if err := e.setUpstream(sc.fake.addr()); err != nil {
		sc.close()
		return nil, err
	}
	sc.pointed = true
	if n > 0 {
		if sc.hit, err = e.openCrowd(n, users); err != nil {
			sc.close()
			return nil, fmt.Errorf("logging in to %s: %w", what, err)
		}
	}
	return sc, nil
}

// restore points the proxy back at cmd/imapd.
func (sc *fakeScene) restore() error {
	if !sc.pointed {
		return nil
	}
	sc.pointed = false
	return sc.e.setUpstream(sc.e.imapdAddr)
}

// close closes the sessions on the fake, points the proxy back, stops
// the fake and closes the crowd.
func (sc *fakeScene) close() {
	if sc.hit != nil {
		closeAll(sc.hit.cs)
	}
	sc.restore()
	if sc.fake != nil {
		sc.fake.close()
	}
	if sc.others != nil {
		sc.others.close()
	}
}
