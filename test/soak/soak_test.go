package main

import (
	"bufio"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Tests of the suite's own helpers. The phases themselves run only in
// `make soak`.

func TestParseMetrics(t *testing.T) {
	text := `# HELP imapguard_connections_open Client connections open now.
# TYPE imapguard_connections_open gauge
imapguard_connections_open{listener="127.0.0.1:1143",otel_scope_name="x",state="authenticated"} 7
imapguard_connections_open{listener="127.0.0.1:1993",otel_scope_name="x",state="authenticated"} 3
imapguard_connections_open{listener="127.0.0.1:1143",otel_scope_name="x",state="preauth"} 2
imapguard_connections_closed_total{outcome="client_closed",weird="a \"quoted\" \\ value\n"} 12
imapguard_connections_closed_total{outcome="logout"} 1e+03
go_memstats_heap_inuse_bytes 4.194304e+06
process_start_time_seconds 1.7e+09 1700000000000
`
	m, err := parseMetrics(text)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		got   float64
		want  float64
		match map[string]string
	}{
		{"all open", m.sum(mOpen, nil), 12, nil},
		{"authenticated", m.sum(mOpen, map[string]string{"state": "authenticated"}), 10, nil},
		{"imaps authenticated", m.sum(mOpen, map[string]string{"state": "authenticated", "listener": "127.0.0.1:1993"}), 3, nil},
		{"heap", m.sum(mHeap, nil), 4194304, nil},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: got %v; want %v", tc.name, tc.got, tc.want)
		}
	}
	if got, want := m.openCounts(), (counts{Open: 12, Authenticated: 10, Preauth: 2}); got != want {
		t.Errorf("openCounts: got %+v; want %+v", got, want)
	}
	o := m.outcomes()
	if o["client_closed"] != 12 || o["logout"] != 1000 {
		t.Errorf("outcomes: got %v; want client_closed=12 logout=1000", o)
	}
	for _, s := range m {
		if s.name == mClosed && s.labels["outcome"] == "client_closed" {
			if got, want := s.labels["weird"], "a \"quoted\" \\ value\n"; got != want {
				t.Errorf("escaped label: got %q; want %q", got, want)
			}
		}
	}
}

func TestParseMetricsErrors(t *testing.T) {
	for _, line := range []string{
		`name{a="b"`,
		`name{a=b} 1`,
		`name{a="b"} x`,
		`name`,
	} {
		if _, err := parseMetrics(line + "\n"); err == nil {
			t.Errorf("%q: got no error; want one", line)
		}
	}
}

const profile = `goroutine profile: total 5
3 @ 0x1 0x2 0x3
#	0x43	internal/poll.runtime_pollWait+0x85	/go/src/runtime/netpoll.go:351
#	0x44	github.com/imapguard/imapguard/proxy.(*session).copyClientToUpstream+0x1	/x/relay.go:1

1 @ 0x1 0x2
#	0x45	github.com/imapguard/imapguard/proxy/park.(*epoll).loop+0x1	/x/epoll.go:1

1 @ 0x9
#	0x46	runtime/pprof.writeGoroutine+0x1	/x/pprof.go:1
`

func TestGoroutineProfile(t *testing.T) {
	n, err := goroutineTotal(profile)
	if err != nil || n != 5 {
		t.Fatalf("goroutineTotal: got %d, %v; want 5", n, err)
	}
	if _, err := goroutineTotal("not a profile"); err == nil {
		t.Error("goroutineTotal of garbage: got no error")
	}
	g := goroutineGroups(profile)
	want := "internal/poll.runtime_pollWait+0x85 < github.com/imapguard/imapguard/proxy.(*session).copyClientToUpstream+0x1"
	if g[want] != 3 || len(g) != 3 {
		t.Fatalf("goroutineGroups: got %v", g)
	}
	base := map[string]int{want: 1}
	extra := extraGoroutines(base, g, 1)
	if len(extra) != 1 || !strings.HasPrefix(extra[0], "2 x internal/poll") {
		t.Errorf("extraGoroutines: got %q; want the session stack, 2 more", extra)
	}
}

func TestParseStatus(t *testing.T) {
	rss, threads := parseStatus("Name:\timapguard\nVmRSS:\t  25600 kB\nThreads:\t7\n")
	if rss != 25600*1024 || threads != 7 {
		t.Errorf("got %d, %d; want %d, 7", rss, threads, 25600*1024)
	}
}

func TestLiteralSize(t *testing.T) {
	for _, tc := range []struct {
		line string
		want int64
	}{
		{"* 1 FETCH (BODY[] {120}", 120},
		{"a APPEND INBOX {5+}", 5},
		{"* 1 FETCH (BINARY[] ~{7}", 7},
		{"* OK done", -1},
		{"* 1 FETCH (BODY[] {x}", -1},
		{"{}", -1},
		{"}", -1},
	} {
		if got := literalSize(tc.line); got != tc.want {
			t.Errorf("%q: got %d; want %d", tc.line, got, tc.want)
		}
	}
}

func TestAppendUID(t *testing.T) {
	for _, tc := range []struct {
		text string
		want uint32
	}{
		{"[APPENDUID 1 42] APPEND completed", 42},
		{"[APPENDUID 1] x", 0},
		{"APPEND completed", 0},
	} {
		if got := appendUID(tc.text); got != tc.want {
			t.Errorf("%q: got %d; want %d", tc.text, got, tc.want)
		}
	}
}

// TestReadTagged reads a response with literals, untagged lines and a
// tagged OK, and counts the literal octets.
func TestReadTagged(t *testing.T) {
	stream := "* 1 FETCH (BODY[] {5}\r\nab\r\nc FLAGS ())\r\n* 2 EXISTS\r\nt1 OK FETCH done\r\n"
	c := &client{br: bufio.NewReader(strings.NewReader(stream))}
	r, err := c.readTagged("t1", "FETCH")
	if err != nil {
		t.Fatal(err)
	}
	if r.status != "OK" || r.text != "FETCH done" || len(r.untagged) != 2 || c.literalBytes != 5 {
		t.Errorf("got %+v, %d literal bytes", r, c.literalBytes)
	}
	if r.untagged[0] != "* 1 FETCH (BODY[] {5} FLAGS ())" {
		t.Errorf("literal line: got %q", r.untagged[0])
	}
	c = &client{br: bufio.NewReader(strings.NewReader("* BYE shutting down\r\n"))}
	if _, err := c.readTagged("t1", "NOOP"); !errors.Is(err, errUnexpected) {
		t.Errorf("BYE: got %v; want errUnexpected", err)
	}
	c = &client{br: bufio.NewReader(strings.NewReader("* 1 FETCH (BODY[] {50}\r\nshort"))}
	if _, err := c.readTagged("t1", "FETCH"); err == nil {
		t.Error("short literal: got no error")
	}
}

func TestQuote(t *testing.T) {
	if got, want := quote(`a"b\c`), `"a\"b\\c"`; got != want {
		t.Errorf("got %s; want %s", got, want)
	}
}

// TestAbortConn checks that the two endings are what the peer sees: EOF
// after a FIN (and the drain returns once the peer closes), a reset after
// an RST.
func TestAbortConn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for _, tc := range []struct {
		e    ending
		want error
	}{
		{fin, io.EOF},
		{rst, syscall.ECONNRESET},
	} {
		t.Run(tc.e.String(), func(t *testing.T) {
			cc, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			sc, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer sc.Close()
			done := make(chan struct{})
			var closed bool
			go func() {
				defer close(done)
				_, closed = abortConn(cc.(*net.TCPConn), tc.e)
			}()
			sc.SetReadDeadline(time.Now().Add(5 * time.Second))
			if tc.e == rst {
				<-done // the RST is sent by the close
			}
			_, err = sc.Read(make([]byte, 1))
			if !errors.Is(err, tc.want) {
				t.Errorf("server read: got %v; want %v", err, tc.want)
			}
			sc.Close()
			<-done
			if !closed {
				t.Error("closed: got false; want true")
			}
		})
	}
}

// TestRelayHoldLogin runs the relay in front of a tiny server: the login
// line is held until released, and everything else passes.
func TestRelayHoldLogin(t *testing.T) {
	target, err := startFake((&fakeIMAP{}).serve)
	if err != nil {
		t.Fatal(err)
	}
	defer target.close()
	rl := &relay{target: target.addr(), holdLogin: make(chan *hold)}
	f, err := startFake(rl.serve)
	if err != nil {
		t.Fatal(err)
	}
	defer f.close()
	nc, err := net.Dial("tcp", f.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(nc)
	if line, _ := br.ReadString('\n'); !strings.HasPrefix(line, "* OK") {
		t.Fatalf("greeting: got %q", line)
	}
	io.WriteString(nc, "a AUTHENTICATE PLAIN AGRlbW8AZGVtbw==\r\n")
	var h *hold
	select {
	case h = <-rl.holdLogin:
	case <-time.After(5 * time.Second):
		t.Fatal("no hold offered for the login")
	}
	nc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if line, err := br.ReadString('\n'); err == nil {
		t.Fatalf("the login was answered while held: %q", line)
	}
	close(h.release)
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if line, _ := br.ReadString('\n'); !strings.HasPrefix(line, "a OK") {
		t.Fatalf("login answer: got %q; want a OK", line)
	}
	io.WriteString(nc, "b NOOP\r\n")
	if line, _ := br.ReadString('\n'); !strings.HasPrefix(line, "b OK") {
		t.Fatalf("NOOP: got %q; want b OK", line)
	}
}

// TestFakeHeal checks that a healed fake relays new connections.
func TestFakeHeal(t *testing.T) {
	target, err := startFake((&fakeIMAP{}).serve)
	if err != nil {
		t.Fatal(err)
	}
	defer target.close()
	f, err := startFake(neverGreet)
	if err != nil {
		t.Fatal(err)
	}
	defer f.close()
	f.heal(target.addr())
	nc, err := net.Dial("tcp", f.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	if line, _ := bufio.NewReader(nc).ReadString('\n'); !strings.HasPrefix(line, "* OK") {
		t.Fatalf("greeting after heal: got %q", line)
	}
}

func TestDelta(t *testing.T) {
	d := delta(map[string]float64{"a": 1, "b": 2, "gone": 3}, map[string]float64{"a": 4, "b": 2, "c": 1})
	if got, want := formatCounts(d), "a=3 c=1 gone=-3"; got != want {
		t.Errorf("got %s; want %s", got, want)
	}
	if total(d) != 1 {
		t.Errorf("total: got %d; want 1", total(d))
	}
	if got := formatCounts(nil); got != "(none)" {
		t.Errorf("empty: got %s", got)
	}
}

func TestCheckOutcomes(t *testing.T) {
	s := &suite{binText: []byte("...client closed...upstream closed...client error...")}
	for _, tc := range []struct {
		name   string
		d      map[string]int
		want   []string
		ok     bool
		hasGap string
	}{
		{"exact", map[string]int{"client_closed": 3}, []string{"client_closed"}, true, ""},
		{"one of two", map[string]int{"client_error": 2, "client_reset": 1}, []string{"client_reset", "client_error"}, true, ""},
		{"extra outcome", map[string]int{"client_closed": 3, "closed": 1}, []string{"client_closed"}, false, ""},
		{"label not in build", map[string]int{"connection_error": 3}, []string{"client_reset"}, false, "does not exist in this build"},
		{"finding 3", map[string]int{"upstream_closed": 3}, []string{"client_closed"}, false, "finding 3"},
		{"real failure", map[string]int{"connection_error": 3}, []string{"client_closed"}, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newResult("t")
			c := s.checkOutcomes(r, tc.name, tc.d, 3, tc.want...)
			if c.OK != tc.ok {
				t.Errorf("ok: got %v; want %v (%s)", c.OK, tc.ok, c.Detail)
			}
			if tc.hasGap == "" && c.Gap != "" || !strings.Contains(c.Gap, tc.hasGap) {
				t.Errorf("gap: got %q; want one containing %q", c.Gap, tc.hasGap)
			}
		})
	}
}

func TestPickOp(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	n := map[string]int{}
	for range 100000 {
		n[pickOp(rng, 0.05)]++
	}
	for op, want := range map[string]float64{"reconnect": 0.05, "fetch": 0.35625, "noop": 0.35625, "append": 0.2375} {
		if got := float64(n[op]) / 100000; got < want-0.01 || got > want+0.01 {
			t.Errorf("%s: got %.3f; want %.3f", op, got, want)
		}
	}
}

func TestMedianAndFit(t *testing.T) {
	if got := median([]float64{3, 1, 2}); got != 2 {
		t.Errorf("odd: got %v", got)
	}
	if got := median([]float64{4, 1, 2, 3}); got != 2.5 {
		t.Errorf("even: got %v", got)
	}
	s := &suite{fileLimit: 20000}
	if got := s.sessionsThatFit(10000); got != 9900 {
		t.Errorf("sessionsThatFit(10000) under 20000: got %d; want 9900", got)
	}
	if got := s.sessionsThatFit(300); got != 300 {
		t.Errorf("sessionsThatFit(300): got %d; want 300", got)
	}
}

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"-phase", "soak,flood", "-duration", "1m"})
	if err != nil || len(o.phases) != 2 || o.duration != time.Minute {
		t.Fatalf("got %+v, %v", o, err)
	}
	if o, err := parseFlags(nil); err != nil || len(o.phases) != 4 {
		t.Errorf("default: got %v, %v; want every phase", o.phases, err)
	}
	for _, bad := range [][]string{{"-phase", "nope"}, {"-sessions", "2"}, {"-abrupt", "3"}, {"-flood", "10"}, {"extra"}} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("%q: got no error", bad)
		}
	}
}
