package fleet_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/imapguard/imapguard/cmd/imapd/server"
	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/limits/redisstore"
	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/proxy/fleet"
	"github.com/imapguard/imapguard/test/proxytest"
	"github.com/imapguard/imapguard/test/redistest"
	"github.com/redis/go-redis/v9"
)

// TestMain keeps go-redis's own messages (a pool failing to dial while
// the test has stopped Redis) out of the output, as imapguard keeps them
// at debug level.
func TestMain(m *testing.M) {
	redis.SetLogger(quiet{})
	os.Exit(m.Run())
}

type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

// instance is one in-process imapguard of a fleet: a proxy whose limiter
// shares the Redis, and its Fleet.
type instance struct {
	p *proxytest.Proxy
	f *fleet.Fleet
}

func startInstance(t *testing.T, rs *redistest.Server, up, id string) instance {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: rs.Addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { c.Close() })
	st := redisstore.New(redisstore.Options{Client: c, Instance: id, Timeout: 500 * time.Millisecond})
	if err := st.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	p := proxytest.Start(t, proxytest.Config{Upstream: up,
		Shared: &limits.SharedOptions{Store: st, Timeout: 500 * time.Millisecond}})
	f := fleet.New(fleet.Options{Client: c, Instance: id, Local: p.Server, Timeout: 500 * time.Millisecond,
		KickWait: proxytest.Timeout / 2})
	if err := f.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return instance{p: p, f: f}
}

func sessions(t *testing.T, f *fleet.Fleet, m proxy.Match) ([]proxy.ConnInfo, string) {
	t.Helper()
	infos, note, err := f.Sessions(context.Background(), m)
	if err != nil {
		t.Fatalf("Sessions(%+v): %v", m, err)
	}
	return infos, note
}

// where lists "instance:user" of each session, in order.
func where(infos []proxy.ConnInfo) string {
	var s []string
	for _, i := range infos {
		s = append(s, i.Instance+":"+i.User)
	}
	return strings.Join(s, " ")
}

// TestFleetWhoKick: two proxies sharing a Redis list each other's
// sessions with the instance holding them, and a kick asked of one
// closes a session held by the other, whose client gets the BYE.
func TestFleetWhoKick(t *testing.T) {
	rs := redistest.Start(t)
	up := proxytest.Imapd(t,
		server.User{Username: "alice", Password: "secret"},
		server.User{Username: "bob", Password: "hunter2"})
	a := startInstance(t, rs, up, "a")
	b := startInstance(t, rs, up, "b")

	bob := proxytest.LoginFrom(t, "127.0.0.2", a.p.Addr, "bob", "hunter2")
	alice := proxytest.LoginFrom(t, "127.0.0.3", b.p.Addr, "alice", "secret")
	pre := proxytest.DialFrom(t, "127.0.0.4", b.p.Addr) // not logged in: b lists it, a does not see it
	pre.Greeting()
	pre.Cmd("n1", "NOOP")

	for _, tc := range []struct {
		name string
		f    *fleet.Fleet
		m    proxy.Match
		want string
	}{
		{"all from a", a.f, proxy.Match{}, "a:bob b:alice"},
		{"all from b", b.f, proxy.Match{}, "b:alice b: a:bob"},
		{"user from a", a.f, proxy.Match{User: "ALICE"}, "b:alice"},
		{"address from a", a.f, proxy.Match{Address: "127.0.0.3"}, "b:alice"},
		{"prefix from b", b.f, proxy.Match{Address: "127.0.0.2/32"}, "a:bob"},
		{"nobody", a.f, proxy.Match{User: "carol"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			infos, note := sessions(t, tc.f, tc.m)
			if got := where(infos); got != tc.want || note != "" {
				t.Errorf("got %q, note %q; want %q, no note", got, note, tc.want)
			}
		})
	}
	if infos, _ := sessions(t, a.f, proxy.Match{User: "alice"}); len(infos) != 1 || infos[0].Client != "127.0.0.3" ||
		!infos[0].Authenticated || infos[0].Since.IsZero() {
		t.Errorf("alice as a sees her: %+v", infos)
	}
	if _, _, err := a.f.Sessions(context.Background(), proxy.Match{Address: "nonsense"}); err == nil {
		t.Error("Sessions(nonsense) succeeded")
	}
	if _, _, err := a.f.Kick(context.Background(), proxy.Match{}, ""); !errors.Is(err, proxy.ErrEmptyMatch) {
		t.Errorf("Kick(empty) = %v; want ErrEmptyMatch", err)
	}

	// A kick for nobody: every instance answers, none kicked.
	kicked, note, err := a.f.Kick(context.Background(), proxy.Match{User: "carol"}, "")
	if err != nil || len(kicked) != 0 || note != "" {
		t.Fatalf("Kick(carol) = %+v, %q, %v; want none, no note", kicked, note, err)
	}
	// Alice, on b, kicked through a.
	kicked, note, err = a.f.Kick(context.Background(), proxy.Match{User: "Alice"}, "Moving you")
	if err != nil || note != "" || where(kicked) != "b:alice" || kicked[0].ID == 0 {
		t.Fatalf("Kick(alice) = %+v, %q, %v; want alice on b, no note", kicked, note, err)
	}
	alice.ExpectBye("* BYE [UNAVAILABLE] Moving you")
	proxytest.WaitFor(t, "alice's slot released", func() bool {
		infos, _ := sessions(t, a.f, proxy.Match{User: "alice"})
		return len(infos) == 0
	})
	if _, st := bob.Cmd("n2", "NOOP"); !strings.HasPrefix(st, "n2 OK") {
		t.Fatalf("bob after the kick: %q", st)
	}

	// Redis down: both fall back to the instance asked, and say so.
	rs.Stop()
	infos, note := sessions(t, b.f, proxy.Match{})
	if where(infos) != "b:" || !strings.Contains(note, "this instance's sessions only") {
		t.Errorf("b without Redis lists %q, note %q; want its own connection and a note", where(infos), note)
	}
	kicked, note, err = a.f.Kick(context.Background(), proxy.Match{User: "bob"}, "")
	if err != nil || where(kicked) != "a:bob" || !strings.Contains(note, "this instance only") {
		t.Fatalf("Kick(bob) without Redis = %+v, %q, %v; want bob on a and a note", kicked, note, err)
	}
	bob.ExpectBye("* BYE [UNAVAILABLE] Session closed by the administrator")
	pre.Close()
}

// TestFleetKickSilentInstance: a subscriber of the kick channel that
// never answers (an instance hung, or gone mid-kick) costs the kick
// KickWait, not more, and the note names what is missing.
func TestFleetKickSilentInstance(t *testing.T) {
	rs := redistest.Start(t)
	up := proxytest.Imapd(t, server.User{Username: "alice", Password: "secret"})
	a := startInstance(t, rs, up, "a")
	silent := rs.Client()
	t.Cleanup(func() { silent.Close() })
	sub := silent.Subscribe(context.Background(), a.f.KickChannel())
	t.Cleanup(func() { sub.Close() })
	if _, err := sub.Receive(context.Background()); err != nil {
		t.Fatal(err)
	}
	alice := proxytest.LoginFrom(t, "127.0.0.2", a.p.Addr, "alice", "secret")

	const wait = 300 * time.Millisecond
	f := fleet.New(fleet.Options{Client: silent, Instance: "a", Local: a.p.Server, KickWait: wait})
	start := time.Now()
	kicked, note, err := f.Kick(context.Background(), proxy.Match{User: "alice"}, "")
	took := time.Since(start)
	if err != nil || where(kicked) != "a:alice" || note != "1 of 2 instances did not answer within 300ms" {
		t.Fatalf("Kick(alice) = %+v, %q, %v; want alice on a and a note on the silent one", kicked, note, err)
	}
	if took < wait || took > wait+proxytest.Timeout/2 {
		t.Errorf("the kick took %v; want about %v", took, wait)
	}
	alice.ExpectBye("* BYE [UNAVAILABLE] Session closed by the administrator")
}
