package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imapguard/imapguard/test/proxytest"
	"github.com/imapguard/imapguard/test/testcert"
)

func TestLiteralSize(t *testing.T) {
	for _, tc := range []struct {
		line string
		n    int64
		ok   bool
	}{
		{"* 1 FETCH (UID 5 BODY[] {10485760}\r\n", 10485760, true},
		{"* 1 FETCH (BODY[] {0}\r\n", 0, true},
		{"* 1 FETCH (BINARY[] ~{12}\r\n", 12, true},
		{"a1 APPEND {5+}\r\n", 5, true},
		{"* OK done\r\n", 0, false},
		{"* OK {abc}\r\n", 0, false},
		{"* OK {}\r\n", 0, false},
		{"* OK }\r\n", 0, false},
		{"* 1 FETCH (ENVELOPE (\"{3}\" NIL))\r\n", 0, false},
	} {
		n, ok, err := literalSize([]byte(tc.line))
		if err != nil || n != tc.n || ok != tc.ok {
			t.Errorf("literalSize(%q) = %d, %v, %v; want %d, %v", tc.line, n, ok, err, tc.n, tc.ok)
		}
	}
	if _, _, err := literalSize([]byte("* 1 FETCH (BODY[] {99999999999}\r\n")); err == nil {
		t.Error("a literal over the limit is not an error")
	}
}

func TestParseSources(t *testing.T) {
	got, err := parseSources("127.0.0.2-127.0.0.4, 127.0.1.1")
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, a := range got {
		s = append(s, a.String())
	}
	if strings.Join(s, " ") != "127.0.0.2 127.0.0.3 127.0.0.4 127.0.1.1" {
		t.Errorf("got %v", s)
	}
	if got, err := parseSources(""); err != nil || len(got) != 0 {
		t.Errorf("empty: %v, %v", got, err)
	}
	for _, bad := range []string{"10.0.0.1", "127.0.0.5-127.0.0.2", "127.0.0.1-10.0.0.1", "nope"} {
		if _, err := parseSources(bad); err == nil {
			t.Errorf("parseSources(%q) accepted", bad)
		}
	}
}

func TestPercentiles(t *testing.T) {
	var lat []time.Duration
	for i := 100; i >= 1; i-- {
		lat = append(lat, time.Duration(i)*time.Millisecond)
	}
	p := percentiles(lat)
	if p.p50 != 50*time.Millisecond || p.p99 != 99*time.Millisecond || p.max != 100*time.Millisecond {
		t.Errorf("got %+v", p)
	}
	if p := percentiles([]time.Duration{7}); p.p50 != 7 || p.p99 != 7 {
		t.Errorf("one value: %+v", p)
	}
	if p := percentiles(nil); p != (pcts{}) {
		t.Errorf("none: %+v", p)
	}
}

// fakeServer is a minimal scripted IMAP server: greeting, LOGIN, EXAMINE,
// UID SEARCH, UID FETCH with a literal, FETCH 1:*, NOOP, LOGOUT. With
// tlsConfig, each connection first completes a TLS handshake (imaps),
// and handshakes counts them.
func fakeServer(t *testing.T, body []byte, tlsConfig *tls.Config) (addr string, handshakes *atomic.Int64) {
	t.Helper()
	handshakes = new(atomic.Int64)
	fetched := fmt.Sprintf("* 1 FETCH (UID 7 BODY[] {%d}\r\n%s)\r\n", len(body), body)
	var all string
	for i := 1; i <= 3; i++ {
		// A literal inside an ENVELOPE, as Dovecot sends for subjects
		// with special characters.
		all += fmt.Sprintf("* %d FETCH (FLAGS () RFC822.SIZE 10 ENVELOPE (NIL {5}\r\nhello NIL))\r\n", i)
	}
	respond := proxytest.Respond("* OK fake ready\r\n", func(_ *proxytest.FakeConn, cmd proxytest.Command) string {
		rest := strings.TrimPrefix(cmd.Text, cmd.Tag+" ")
		switch {
		case strings.HasPrefix(rest, "LOGIN "):
			return cmd.Tag + " OK logged in\r\n"
		case strings.HasPrefix(rest, "EXAMINE "):
			return "* 3 EXISTS\r\n" + cmd.Tag + " OK [READ-ONLY] done\r\n"
		case strings.HasPrefix(rest, "UID SEARCH"):
			return "* SEARCH 9 7\r\n" + cmd.Tag + " OK done\r\n"
		case strings.HasPrefix(rest, "UID FETCH 7 "):
			return fetched + cmd.Tag + " OK done\r\n"
		case strings.HasPrefix(rest, "FETCH 1:*"):
			return all + cmd.Tag + " OK done\r\n"
		case rest == "NOOP":
			return cmd.Tag + " OK noop\r\n"
		case rest == "LOGOUT":
			return "* BYE bye\r\n" + cmd.Tag + " OK bye\r\n"
		}
		return cmd.Tag + " BAD what\r\n"
	})
	f := proxytest.StartFake(t, func(c *proxytest.FakeConn) {
		if tlsConfig != nil {
			if c.StartTLS(tlsConfig) != nil {
				return
			}
			handshakes.Add(1)
		}
		respond(c)
	})
	return f.Addr, handshakes
}

func runJSON(t *testing.T, stdin io.Reader, args ...string) (result, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	if code := run(context.Background(), append(args, "-json", "-sources", "127.0.0.2-127.0.0.9"), stdin, &out, &errOut); code != 0 {
		t.Fatalf("imapload %v: exit %d: %s", args, code, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var r result
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil {
		t.Fatalf("%v: %q", err, out.String())
	}
	return r, out.String()
}

func TestWorkloads(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789abcdef"), 70000) // 1.1 MB
	addr, _ := fakeServer(t, body, nil)

	r, _ := runJSON(t, nil, "-addr", addr, "-workload", "fetch", "-duration", "1s", "-concurrency", "2")
	if r.Ops == 0 || r.Errors != 0 || r.UID != 7 || r.Messages != r.Ops {
		t.Errorf("fetch: %+v", r)
	}
	if r.Bytes < r.Ops*int64(len(body)) {
		t.Errorf("fetch: %d bytes for %d fetches of %d", r.Bytes, r.Ops, len(body))
	}

	r, _ = runJSON(t, nil, "-addr", addr, "-workload", "fetchall", "-duration", "100ms", "-concurrency", "2")
	if r.Ops == 0 || r.Errors != 0 || r.Messages != 3*r.Ops {
		t.Errorf("fetchall: %+v", r)
	}

	r, _ = runJSON(t, nil, "-addr", addr, "-workload", "noop", "-duration", "100ms", "-concurrency", "3")
	if r.Ops == 0 || r.Errors != 0 || r.LatencyP50Ms <= 0 || r.LatencyP99Ms < r.LatencyP50Ms {
		t.Errorf("noop: %+v", r)
	}

	r, _ = runJSON(t, nil, "-addr", addr, "-workload", "login", "-duration", "100ms", "-concurrency", "3")
	if r.Ops == 0 || r.Errors != 0 {
		t.Errorf("login: %+v", r)
	}

	r, out := runJSON(t, strings.NewReader("\n"), "-addr", addr, "-workload", "held", "-sessions", "50", "-open-concurrency", "7")
	if !strings.HasPrefix(out, "READY 50\n") || r.SessionsOpened != 50 || r.NoopOK != 50 || r.Errors != 0 {
		t.Errorf("held: %q %+v", out, r)
	}
}

func TestServerErrorsAreCounted(t *testing.T) {
	addr, _ := fakeServer(t, nil, nil)
	// The fake server answers BAD to STATUS-less commands it does not
	// know; a wrong mailbox is not reached, but an unknown UID is.
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"-addr", addr, "-workload", "fetch", "-uid", "3", "-duration", "100ms", "-json"}, nil, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var r result
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatal(err)
	}
	if r.Ops != 0 || r.Errors == 0 || !strings.Contains(r.FirstError, "BAD") {
		t.Errorf("got %+v", r)
	}
}

// held-tls in test/bench: every held session is opened over imaps.
func TestHeldTLS(t *testing.T) {
	cert, err := testcert.SelfSigned("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	addr, handshakes := fakeServer(t, nil, &tls.Config{Certificates: []tls.Certificate{cert}})
	r, out := runJSON(t, strings.NewReader("\n"), "-addr", addr, "-workload", "held", "-tls", "-sessions", "40", "-open-concurrency", "6")
	if !strings.HasPrefix(out, "READY 40\n") || r.SessionsOpened != 40 || r.NoopOK != 40 || r.Errors != 0 {
		t.Errorf("held -tls: %q %+v", out, r)
	}
	if n := handshakes.Load(); n != 40 {
		t.Errorf("%d TLS handshakes for 40 sessions", n)
	}
	// Without -tls the same server cannot be logged in to: the sessions
	// above were TLS.
	var o, e bytes.Buffer
	code := run(context.Background(), []string{"-addr", addr, "-workload", "held", "-sessions", "2", "-timeout", "1s", "-json", "-sources", ""}, strings.NewReader("\n"), &o, &e)
	var plain result
	if code != 0 || json.Unmarshal([]byte(strings.TrimSpace(strings.TrimPrefix(o.String(), "READY 0\n"))), &plain) != nil || plain.SessionsOpened != 0 || plain.Errors != 2 {
		t.Errorf("held without -tls against imaps: exit %d, %q, %s", code, o.String(), e.String())
	}
}
