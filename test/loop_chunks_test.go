package test

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/proxy/imapwire/wiretest"
	"github.com/imapguard/imapguard/test/proxytest"
)

// Chunk-split and fuzzed framing through the relay (issue 14): the same
// client bytes, written whole or in pieces that the proxy reads apart,
// must reach the upstream as the same framed commands and bring the
// client the same answers. proxy/copy_test.go runs the framer's cases
// through the copy loop's buffer with simulated reads; these run them
// through real sockets and whichever relay serves the session. Each
// piece is written only once the proxy has read the one before
// (waitReadByProxy), so the kernel cannot run them together.

var chunkSeed = flag.Uint64("loop.chunkseed", 0, "first seed of TestRelayChunks's random chunkings (0: from the clock)")

// chunkMaxCommand is max_command_size for these tests: small, so that
// oversize commands are cheap to write a byte at a time.
const chunkMaxCommand = 256

// chunkTooBig ends the proxy's answer to an oversize command.
var chunkTooBig = " BAD [TOOBIG] Command too long (max_command_size=" + strconv.Itoa(chunkMaxCommand) + ")"

// chunkStep is one step of the recorded session: bytes the client sends,
// and what it then reads up to: the tagged answer for a tag, or a
// continuation request ("+").
type chunkStep struct{ send, until string }

// chunkSession is a mixed command stream, recorded as a client sent it.
// Each step's answers come before the next step begins, so they come in
// one order: the proxy's own answers (refusals) end their step.
func chunkSession() []chunkStep {
	return []chunkStep{
		{"a1 NOOP\r\n", "a1"},
		// A synchronizing literal, the client waiting for the "+".
		{"a2 SEARCH TEXT {5}\r\n", "+"}, {"hello\r\n", "a2"},
		// LITERAL+, two of them.
		{"a3 SEARCH CHARSET UTF-8 TEXT {5+}\r\nworld TEXT {3+}\r\nabc\r\n", "a3"},
		{"a4 IDLE\r\n", "+"}, {"DONE\r\n", "a4"},
		{`a5 APPEND INBOX (\Seen) {100}` + "\r\n", "+"}, {wiretest.LitBytes(100) + "\r\n", "a5"},
		// Over the cap, but an APPEND's message does not count.
		{"a6 APPEND INBOX {400+}\r\n" + wiretest.LitBytes(400) + "\r\n", "a6"},
		// Pipelined, all relayed: the upstream answers them in order, a
		// FETCH with a literal among them.
		{"b1 NOOP\r\nb2 FETCH 1 (BODY[])\r\nb3 SEARCH TEXT {3+}\r\nxyz\r\nb4 NOOP\r\n", "b4"},
		// Refused by the proxy: an oversize line, an oversize
		// non-synchronizing literal (its octets skipped), a "{" in the
		// middle of a line, an oversize synchronizing literal (never
		// sent), COMPRESS.
		{"c1 SEARCH TEXT " + strings.Repeat("x", 300) + "\r\n", "c1"},
		{"c2 SEARCH TEXT {300+}\r\n" + wiretest.LitBytes(300) + "\r\n", "c2"},
		{"c3 SEARCH TEXT {3} x\r\n", "c3"},
		{"c4 SEARCH TEXT {2000}\r\n", "c4"},
		{"c5 COMPRESS DEFLATE\r\n", "c5"},
		// And the session goes on.
		{"d1 NOOP\r\nd2 SEARCH TEXT {4+}\r\n" + wiretest.LitBytes(4) + " UNDELETED\r\n", "d2"},
		{"z LOGOUT\r\n", "z"},
	}
}

// chunkSessionUpstream is what the upstream must read of chunkSession
// after the login: every literal synchronizing, a probe before each
// literal or IDLE that follows other commands (imapwire.LiteralGate),
// none of the refused commands.
func chunkSessionUpstream() string {
	var b strings.Builder
	for _, s := range chunkSession() {
		if strings.HasPrefix(s.send, "c") {
			continue
		}
		b.WriteString(s.send)
	}
	return wiretest.Synced(b.String())
}

// chunkRefusals are the proxy's answers to the refused commands of
// chunkSession, in order.
var chunkRefusals = []string{
	"c1" + chunkTooBig,
	"c2" + chunkTooBig,
	"c3 BAD Invalid literal",
	"c4" + chunkTooBig,
	"c5 NO [CANNOT] COMPRESS is not available through this proxy",
}

// upstreamMark ends every line the chunk upstream sends but those that
// announce a literal, so that a client can tell its answers from the
// proxy's own.
const upstreamMark = "(upstream)"

// chunkFetchBody is the literal the upstream answers a FETCH with: text
// that looks like commands and responses.
const chunkFetchBody = "From: a@b\r\nSubject: {5}\r\n\r\n* 1 FETCH (BODY[] {3}\r\nabc)\r\nz OK\r\n"

// chunkUpstream is a scripted upstream that records every byte it reads
// after the login, by user, and answers each command: "+" to each
// synchronizing literal and to IDLE, a literal to FETCH, BYE to LOGOUT,
// OK to anything else.
type chunkUpstream struct {
	*proxytest.Fake
	mu   sync.Mutex
	recv map[string]*bytes.Buffer
	// reset holds the users whose session's reading ended in an error
	// other than the end of stream (a reset), which may have lost bytes
	// the proxy sent.
	reset map[string]bool
	// done is closed when the user's session has ended at the upstream:
	// its reading is over.
	done map[string]chan struct{}
}

func startChunkUpstream(t testing.TB) *chunkUpstream {
	u := &chunkUpstream{recv: make(map[string]*bytes.Buffer), reset: make(map[string]bool), done: make(map[string]chan struct{})}
	u.Fake = proxytest.StartFake(t, func(c *proxytest.FakeConn) {
		br := bufio.NewReader(c.NetConn())
		if c.Write("* OK [CAPABILITY IMAP4rev1 LITERAL+ IDLE SASL-IR AUTH=PLAIN] hi "+upstreamMark+"\r\n") != nil {
			return
		}
		login, err := readCommand(br, c)
		if err != nil {
			return
		}
		rec, user, done := &bytes.Buffer{}, loginUser(login), make(chan struct{})
		defer close(done)
		u.mu.Lock()
		u.recv[user], u.done[user] = rec, done
		u.mu.Unlock()
		if c.Write(tagOf(login)+" OK [CAPABILITY IMAP4rev1 LITERAL+ IDLE] in "+upstreamMark+"\r\n") != nil {
			return
		}
		record := func(s string, err error) {
			u.mu.Lock()
			rec.WriteString(s)
			if err != nil && !errors.Is(err, io.EOF) {
				u.reset[user] = true
			}
			u.mu.Unlock()
		}
		for {
			cmd, err := readCommand(br, c)
			record(cmd, err)
			if err != nil {
				return
			}
			tag, name := tagOf(cmd), strings.ToUpper(nameOf(cmd))
			var answer string
			switch name {
			case "IDLE":
				if c.Write("+ idling "+upstreamMark+"\r\n") != nil {
					return
				}
				done, err := br.ReadString('\n')
				record(done, err)
				if err != nil {
					return
				}
				answer = tag + " OK IDLE ended by " + strconv.Quote(strings.TrimRight(done, "\r\n")) + " " + upstreamMark + "\r\n"
			case "FETCH":
				answer = "* 1 FETCH (BODY[] {" + strconv.Itoa(len(chunkFetchBody)) + "}\r\n" + chunkFetchBody + " FLAGS () " + upstreamMark + ")\r\n" +
					tag + " OK FETCH completed " + upstreamMark + "\r\n"
			case "LOGOUT":
				c.Write("* BYE bye " + upstreamMark + "\r\n" + tag + " OK LOGOUT completed " + upstreamMark + "\r\n")
				return
			default:
				answer = tag + " OK " + strconv.Quote(name) + " completed " + upstreamMark + "\r\n"
			}
			if c.Write(answer) != nil {
				return
			}
		}
	})
	return u
}

// received waits for the end of user's session at the upstream and
// returns what the upstream read of it after the login, with the proxy's
// probes (a NOOP under a random tag) written as wiretest.Probe, and
// whether its reading ended in a reset.
func (u *chunkUpstream) received(t testing.TB, user string) (string, bool) {
	t.Helper()
	u.mu.Lock()
	done, ok := u.done[user]
	u.mu.Unlock()
	if !ok {
		t.Fatalf("the upstream has no session of %s", user)
	}
	select {
	case <-done:
	case <-time.After(proxytest.Timeout):
		t.Fatalf("the upstream's session of %s did not end", user)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	return probeLine.ReplaceAllLiteralString(u.recv[user].String(), wiretest.Probe), u.reset[user]
}

// probeLine matches the proxy's probe (see imapwire.LiteralGate).
var probeLine = regexp.MustCompile(`ig[0-9a-f]{16} NOOP\r\n`)

// readCommand reads one command with its literals, asking for each
// synchronizing one with "+", and returns it as read.
func readCommand(br *bufio.Reader, c *proxytest.FakeConn) (string, error) {
	var cmd strings.Builder
	for {
		line, err := br.ReadString('\n')
		cmd.WriteString(line)
		if err != nil {
			return cmd.String(), err
		}
		n, sync, ok := wiretest.RefLiteral([]byte(line))
		if !ok {
			return cmd.String(), nil
		}
		if sync {
			if err := c.Write("+ go ahead " + upstreamMark + "\r\n"); err != nil {
				return cmd.String(), err
			}
		}
		// As many octets as announced or as come: never the announced
		// size in memory at once.
		if _, err := io.CopyN(&cmd, br, n); err != nil {
			return cmd.String(), err
		}
	}
}

func tagOf(cmd string) string {
	tag, _, _ := strings.Cut(strings.TrimRight(cmd, "\r\n"), " ")
	return tag
}

func nameOf(cmd string) string {
	line, _, _ := strings.Cut(cmd, "\n")
	_, rest, _ := strings.Cut(strings.TrimRight(line, "\r"), " ")
	name, _, _ := strings.Cut(rest, " ")
	return name
}

// loginUser is the user of the proxy's login to the upstream:
// AUTHENTICATE PLAIN with an initial response, or LOGIN.
func loginUser(cmd string) string {
	f := strings.Fields(cmd)
	if len(f) >= 4 && strings.EqualFold(f[1], "AUTHENTICATE") {
		if b, err := base64.StdEncoding.DecodeString(f[3]); err == nil {
			if parts := strings.Split(string(b), "\x00"); len(parts) == 3 {
				return parts[1]
			}
		}
	}
	if len(f) >= 3 && strings.EqualFold(f[1], "LOGIN") {
		return strings.Trim(f[2], `"`)
	}
	return "?"
}

// chunkRig is a proxy (max_command_size chunkMaxCommand, the relay under
// test) in front of a chunk upstream.
type chunkRig struct {
	p     *proxytest.Proxy
	up    *chunkUpstream
	users atomic.Int64
}

func startChunkRig(t testing.TB, relay string) *chunkRig {
	up := startChunkUpstream(t)
	p := proxytest.Start(t, proxytest.Config{Upstream: up.Addr, Options: proxy.Options{Relay: relay, MaxCommandSize: chunkMaxCommand}})
	return &chunkRig{p: p, up: up}
}

// login connects and logs in as a user of its own, and returns the
// connection, a client reading it, and the user.
func (r *chunkRig) login(t testing.TB) (net.Conn, *proxytest.Client, string) {
	t.Helper()
	user := fmt.Sprintf("chunk%d", r.users.Add(1))
	nc, err := net.DialTimeout("tcp", r.p.Addr, proxytest.Timeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	c := proxytest.NewClient(nc)
	if g, err := c.Line(); err != nil || !strings.HasPrefix(g, "* OK ") {
		t.Fatalf("greeting %q, %v", g, err)
	}
	if _, st, err := c.Cmd("l", "LOGIN "+user+" secret"); err != nil || !strings.HasPrefix(st, "l OK ") {
		t.Fatalf("LOGIN: %q, %v", st, err)
	}
	return nc, c, user
}

// sendChunks writes b in pieces of the sizes next returns (0: all that
// is left), each once the proxy has read the one before. It stops early,
// without failing, if the proxy closes the connection.
func sendChunks(t testing.TB, nc net.Conn, b []byte, next func() int) {
	t.Helper()
	for len(b) > 0 {
		n := next()
		if n <= 0 || n > len(b) {
			n = len(b)
		}
		nc.SetWriteDeadline(time.Now().Add(proxytest.Timeout))
		if _, err := nc.Write(b[:n]); err != nil {
			if proxytest.IsTimeout(err) {
				t.Fatalf("writing to the proxy: %v", err)
			}
			return // the proxy closed the connection
		}
		b = b[n:]
		waitReadByProxy(t, nc)
	}
}

// runChunkSession runs chunkSession through r, sending each step in
// pieces of next's sizes, and returns what the client read (the lines of
// each step's answers) and what the upstream read.
func (r *chunkRig) runChunkSession(t *testing.T, next func() int) (client []string, upstream string) {
	t.Helper()
	nc, c, user := r.login(t)
	for _, s := range chunkSession() {
		sendChunks(t, nc, []byte(s.send), next)
		for {
			l, err := c.Line()
			if err != nil {
				t.Fatalf("after %.40q: %v (read %q)", s.send, err, client)
			}
			client = append(client, l)
			if s.until == "+" && strings.HasPrefix(l, "+") || strings.HasPrefix(l, s.until+" ") {
				break
			}
		}
	}
	if err := c.ExpectClosed(); err != nil {
		t.Fatalf("after LOGOUT: %v", err)
	}
	proxytest.WaitFor(t, "the session's end", func() bool { return len(r.p.Server.Conns()) == 0 })
	upstream, reset := r.up.received(t, user)
	if reset {
		t.Fatalf("the upstream's connection was reset; it read %q", upstream)
	}
	return client, upstream
}

// TestRelayChunks runs the recorded session whole (each step in one
// write), then a byte at a time, then in random pieces, under each
// relay. The upstream must read exactly the framed commands
// (chunkSessionUpstream) every time, and the client the same answers as
// whole, among them the proxy's refusals (chunkRefusals).
func TestRelayChunks(t *testing.T) {
	seed := *chunkSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("random chunkings from seed %d (rerun with -loop.chunkseed=%d)", seed, seed)
	wantUp := chunkSessionUpstream()
	forEachRelay(t, func(t *testing.T, relay string) {
		r := startChunkRig(t, relay)
		whole, up := r.runChunkSession(t, func() int { return 0 })
		if up != wantUp {
			t.Fatalf("sent whole, the upstream read\n%q\nwant\n%q", up, wantUp)
		}
		var refusals []string // the answers to the c commands
		for _, l := range whole {
			if strings.HasPrefix(l, "c") {
				refusals = append(refusals, l)
			}
		}
		if strings.Join(refusals, "\n") != strings.Join(chunkRefusals, "\n") {
			t.Fatalf("sent whole, the proxy's own answers were\n%q\nwant\n%q", refusals, chunkRefusals)
		}
		check := func(name string, next func() int) {
			t.Helper()
			client, up := r.runChunkSession(t, next)
			if up != wantUp {
				t.Errorf("%s: the upstream read\n%q\nwant\n%q", name, up, wantUp)
			}
			if a, b := strings.Join(client, "\n"), strings.Join(whole, "\n"); a != b {
				t.Errorf("%s: the client read\n%q\nwant, as when sent whole,\n%q", name, client, whole)
			}
		}
		check("a byte at a time", func() int { return 1 })
		for i := range uint64(4) {
			rng := rand.New(rand.NewPCG(seed+i, 0))
			check(fmt.Sprintf("random pieces, seed %d", seed+i), func() int { return 1 + rng.IntN(97) })
		}
	})
}

// FuzzRelayChunks: any client stream, sent after login whole and again
// in random pieces (from the seed chunking), then half-closed. The
// upstream must read the same bytes both times; the client must read the
// same answers of the upstream, in the same order, and the same answers
// of the proxy, in the same order (how the two interleave depends on
// timing). A session the proxy ends early (a reset may then lose the
// last answers) must agree up to where the shorter run ends. The seeds
// are the recorded session and the framer's cases and fuzz seeds
// (wiretest). The proxy's relay is "auto": make test runs the seeds in
// both its runs, with the default relay and with
// IMAPGUARD_RELAY=goroutines; make fuzz fuzzes the default.
func FuzzRelayChunks(f *testing.F) {
	var session strings.Builder
	for _, s := range chunkSession() {
		session.WriteString(s.send)
	}
	f.Add([]byte(session.String()), uint64(1))
	for i, s := range wiretest.CommandSeeds() {
		f.Add([]byte(s), uint64(i))
	}
	for i, c := range wiretest.CommandCases() {
		if len(c.In) <= 16<<10 {
			f.Add([]byte(c.In), uint64(100+i))
		}
	}
	r := startChunkRig(f, proxy.RelayAuto)
	f.Fuzz(func(t *testing.T, stream []byte, chunking uint64) {
		if len(stream) > 64<<10 {
			return
		}
		whole := r.runRaw(t, stream, func() int { return 0 })
		rng := rand.New(rand.NewPCG(chunking, 0))
		split := r.runRaw(t, stream, func() int { return 1 + rng.IntN(1+rng.IntN(64)) })
		// A session the proxy ended early: a reset may have lost what
		// it sent last, to the upstream (a connection closed with
		// unread bytes is reset) or to the client.
		if whole.upReset || split.upReset {
			k := min(len(whole.up), len(split.up))
			if whole.up[:k] != split.up[:k] {
				t.Errorf("the upstream read\n%q\nsent whole, but\n%q\nsent in pieces (chunking %d; reset at the end)", whole.up, split.up, chunking)
			}
		} else if whole.up != split.up {
			t.Errorf("the upstream read\n%q\nsent whole, but\n%q\nsent in pieces (chunking %d)", whole.up, split.up, chunking)
		}
		prefixOnly := whole.err != nil || split.err != nil || whole.upReset || split.upReset
		for _, side := range []struct {
			name string
			a, b []string
		}{
			{"the upstream's answers", whole.fromUpstream, split.fromUpstream},
			{"the proxy's answers", whole.fromProxy, split.fromProxy},
		} {
			a, b := side.a, side.b
			if prefixOnly {
				k := min(len(a), len(b))
				a, b = a[:k], b[:k]
			}
			if strings.Join(a, "\n") != strings.Join(b, "\n") {
				t.Errorf("the client read %s\n%q\nsent whole (%v), but\n%q\nsent in pieces (chunking %d; %v)", side.name, side.a, whole.err, side.b, chunking, split.err)
			}
		}
	})
}

// rawRun is what one run of a fuzz stream came to.
type rawRun struct {
	up                      string   // what the upstream read after the login
	upReset                 bool     // the upstream's reading ended in a reset
	fromUpstream, fromProxy []string // the client's answers, each whole (literals inline)
	err                     error    // how the client's reading ended: nil at EOF
}

// runRaw logs in, sends stream in pieces of next's sizes while reading
// whatever comes, half-closes and reads until the proxy closes.
func (r *chunkRig) runRaw(t *testing.T, stream []byte, next func() int) rawRun {
	t.Helper()
	nc, _, user := r.login(t)
	read := make(chan rawRun, 1)
	go func() {
		nc.SetReadDeadline(time.Now().Add(3 * proxytest.Timeout))
		b, err := io.ReadAll(nc)
		run := rawRun{err: err}
		for _, resp := range splitResponses(b) {
			last := resp[strings.LastIndexByte(strings.TrimRight(resp, "\r\n"), '\n')+1:]
			if last = strings.TrimRight(last, "\r\n"); strings.HasSuffix(last, upstreamMark) || strings.HasSuffix(last, upstreamMark+")") {
				run.fromUpstream = append(run.fromUpstream, resp)
			} else {
				run.fromProxy = append(run.fromProxy, resp)
			}
		}
		read <- run
	}()
	sendChunks(t, nc, stream, next)
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
	run := <-read
	if proxytest.IsTimeout(run.err) {
		t.Fatalf("the proxy did not close the session after the client's end of stream")
	}
	if errors.Is(run.err, io.EOF) {
		run.err = nil
	}
	proxytest.WaitFor(t, "the session's end", func() bool { return len(r.p.Server.Conns()) == 0 })
	run.up, run.upReset = r.up.received(t, user)
	return run
}

// splitResponses splits what a client read into responses: lines, a
// literal's octets with the line that announced it and the rest of the
// response. A last, unfinished one is kept as it is.
func splitResponses(b []byte) []string {
	var out []string
	start := 0
	for i := 0; i < len(b); {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			break
		}
		end := i + j + 1
		if n, _, ok := wiretest.RefLiteral(b[i:end]); ok {
			i = min(end+int(n), len(b))
			continue
		}
		out = append(out, string(b[start:end]))
		start, i = end, end
	}
	if start < len(b) {
		out = append(out, string(b[start:]))
	}
	return out
}
