package proxy

// The end-to-end harness shared by the differential tests
// (differential_test.go) and the framing regressions
// (dovecot_framing_test.go): a private Dovecot, a tap between the proxy
// and Dovecot that records what each side sent, a client that pipelines
// a byte stream through a Server without waiting for anything, and the
// oracle that compares what the proxy framed (the Server's onCommand
// hook) with what Dovecot answered (issue 10).
//
// These are internal tests because of the hook; they cannot use
// test/proxytest, which imports this package.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/test/dovecot"
)

// scenarioTimeout bounds one scenario from connect to the client's EOF.
// A session normally ends in well under a second; one that does not end
// in time is stuck (the proxy waits for an answer Dovecot will not send,
// or the other way round) and fails the scenario. Long fuzzing runs may
// shorten it.
var scenarioTimeout = flag.Duration("difftest.stall", 5*time.Second, "how long a scenario may take before it counts as stalled")

const (
	// diffMax is the max_command_size of every proxy here, the review's.
	diffMax = 1024
	// dovecotSuite names what does not run without Dovecot 2.3 in the
	// skip message, which make test's summary groups by its prefix (see
	// test/proxytest/env.go).
	dovecotSuite = "Dovecot end-to-end suite"
	// diffPassword is every test user's password.
	diffPassword = "difftest-secret"
	// diffMessages is how many messages INBOX starts with.
	diffMessages = 3
	// finTag is the tag of the LOGOUT that ends every scenario; no
	// generated command uses it.
	finTag = "zfin9"
)

// diffDovecotExtra is all the harness changes in test/dovecot's
// configuration (which is Dovecot's stock one but for a few test
// conveniences, such as no auth failure delay).
//
// COMPRESS=DEFLATE (RFC 4978) is the one change: Debian's Dovecot ships
// the imap_zlib plugin but does not load it. With it, Dovecot offers
// COMPRESS as the upstream does, and a COMPRESS that gets past
// the proxy is run ("OK Begin compression") instead of being answered
// "Unknown command", which would hide it among the unknown commands.
const diffDovecotExtra = `protocol imap {
  mail_plugins = $mail_plugins imap_zlib
}`

// ciSet reports whether the CI environment variable is set to something
// other than "", "0" or "false" (as test/proxytest.CI): there every
// suite must run.
func ciSet() bool {
	v := strings.TrimSpace(os.Getenv("CI"))
	return v != "" && v != "0" && !strings.EqualFold(v, "false")
}

// skipSuite skips tb because Dovecot cannot run here (why), or fails it
// when CI is set; the message is test/proxytest.Skip's.
func skipSuite(tb testing.TB, why string) {
	tb.Helper()
	if ciSet() {
		tb.Fatalf("%s cannot run (%s), and CI is set: every suite must run", dovecotSuite, why)
	}
	tb.Skip("skipped: " + dovecotSuite + " (" + why + ")")
}

// diffDovecot is a private Dovecot with one user per runner that may use
// it at once: a runner resets its user's INBOX when a scenario has
// changed it much (see resetInbox), and no other runner sees it.
type diffDovecot struct {
	addr  string
	users []string
	inst  *dovecot.Instance
}

// startDiffDovecot starts Dovecot with users diff0..diff<n-1>, each with
// diffMessages messages in INBOX, and stops it when tb ends (attaching
// its log if tb failed).
func startDiffDovecot(tb testing.TB, n int) *diffDovecot {
	tb.Helper()
	bin, err := dovecot.Binary()
	if err != nil {
		skipSuite(tb, "dovecot not installed: apt-get install dovecot-imapd")
	}
	version, err := dovecot.Version(bin)
	if err != nil {
		tb.Fatalf("dovecot: %v", err)
	}
	if !strings.HasPrefix(version, "2.3.") {
		// test/dovecot writes a 2.3 configuration; 2.4 renamed most
		// settings.
		skipSuite(tb, "the harness writes a Dovecot 2.3 configuration; "+bin+" is version "+version)
	}
	d := &diffDovecot{}
	var users []dovecot.User
	for i := range n {
		u := "diff" + strconv.Itoa(i)
		d.users = append(d.users, u)
		users = append(users, dovecot.User{Username: u, Password: diffPassword})
	}
	d.inst, err = dovecot.Start(dovecot.Options{
		Binary: bin,
		Users:  users,
		Extra:  diffDovecotExtra,
		PrepareMail: func(mailDir string) error {
			for _, u := range d.users {
				if err := writeMaildir(filepath.Join(mailDir, u)); err != nil {
					return err
				}
			}
			return nil
		},
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		err := d.inst.Stop()
		if err != nil {
			tb.Error(err)
		}
		if err != nil || tb.Failed() {
			tb.Logf("dovecot log (%s):\n%s", d.inst.Dir, d.inst.Log())
		}
	})
	d.addr = d.inst.Addr
	return d
}

// diffMessage is the text of INBOX's message i (from 1).
func diffMessage(i int) string {
	return fmt.Sprintf("From: a@example.org\r\nTo: b@example.org\r\nSubject: m%d\r\n\r\nbody %d {5}\r\nAAA line\r\n", i, i)
}

// writeMaildir stores diffMessages messages in the maildir dir.
func writeMaildir(dir string) error {
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return err
		}
	}
	for i := 1; i <= diffMessages; i++ {
		name := fmt.Sprintf("%d.M%dP1.difftest:2,", 1700000000+i, i)
		if err := os.WriteFile(filepath.Join(dir, "cur", name), []byte(diffMessage(i)), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// tap forwards one connection from the proxy to Dovecot, recording what
// each side sent. The proxy keeps its real socket paths: it talks TCP to
// the tap.
type tap struct {
	ln     net.Listener
	target string
	conn   chan *tapConn
}

// tapConn is one forwarded connection.
type tapConn struct {
	mu           sync.Mutex
	fromUpstream []byte // what Dovecot sent
	toUpstream   []byte // what the proxy sent
	done         chan struct{}
}

func startTap(tb testing.TB, target string) *tap {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	t := &tap{ln: ln, target: target, conn: make(chan *tapConn, 1)}
	tb.Cleanup(func() { ln.Close() })
	go t.serve()
	return t
}

func (t *tap) addr() string { return t.ln.Addr().String() }

// serve forwards the first connection; the proxy dials once per login.
func (t *tap) serve() {
	pc, err := t.ln.Accept()
	t.ln.Close()
	if err != nil {
		close(t.conn)
		return
	}
	tc := &tapConn{done: make(chan struct{})}
	t.conn <- tc
	up, err := net.DialTimeout("tcp", t.target, *scenarioTimeout)
	if err != nil {
		pc.Close()
		close(tc.done)
		return
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		tc.pump(up, pc, &tc.toUpstream)
	}()
	go func() {
		defer wg.Done()
		tc.pump(pc, up, &tc.fromUpstream)
	}()
	go func() {
		wg.Wait()
		pc.Close()
		up.Close()
		close(tc.done)
	}()
}

// pump copies src to dst, recording each read before it is written (so
// that a mark taken after the other side saw some bytes covers them),
// and half-closes dst at src's end.
func (tc *tapConn) pump(dst, src net.Conn, rec *[]byte) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			tc.mu.Lock()
			*rec = append(*rec, buf[:n]...)
			tc.mu.Unlock()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	if c, ok := dst.(*net.TCPConn); ok {
		c.CloseWrite()
	}
}

// lens returns how many bytes each side has sent so far.
func (tc *tapConn) lens() (toUp, fromUp int) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	return len(tc.toUpstream), len(tc.fromUpstream)
}

// hookCommand is one command as the proxy's framer reported it.
type hookCommand struct {
	tag       string
	size      int
	forwarded bool
}

// diffScenario is what a client sends after login and SELECT INBOX, and
// how it splits the bytes into writes (nil: one write). Steps, if any,
// come first: a regression test that needs the proxy in a given state
// waits for it.
type diffScenario struct {
	name   string
	steps  []diffStep
	stream []byte
	chunks []int
}

// diffStep is a write, after which the client waits until it has read
// until (if not empty).
type diffStep struct {
	send  []byte
	until string
}

// diffRun is what one scenario produced.
type diffRun struct {
	sc       diffScenario
	commands []hookCommand // every command the framer ended, in order
	// What the client received after its SELECT's answer, what the
	// proxy sent Dovecot and what Dovecot sent after the login exchange.
	toClient, toUpstream, fromUpstream []byte
	ended                              bool  // the client read to the end of the stream (EOF or reset)
	stalled                            bool  // not within -difftest.stall
	readErr                            error // the client's read error, if not EOF
	writeErr                           error // a write the proxy did not take (it closed first)
	exists                             int   // INBOX's size when the scenario started
}

// runScenario runs sc through a new Server in front of d (through a tap)
// as user: log in, SELECT INBOX, write sc's stream in its chunks without
// waiting for anything, then DONE and a LOGOUT tagged finTag, half-close
// and read to EOF.
func runScenario(tb testing.TB, d *diffDovecot, user string, sc diffScenario) *diffRun {
	tb.Helper()
	run := &diffRun{sc: sc, exists: -1}
	tp := startTap(tb, d.addr)
	var mu sync.Mutex
	srv := New(Options{UpstreamAddr: tp.addr(), MaxCommandSize: diffMax}, limits.New(limits.Options{}), nil)
	srv.onCommand = func(tag []byte, size int, forwarded bool) {
		mu.Lock()
		run.commands = append(run.commands, hookCommand{tag: string(tag), size: size, forwarded: forwarded})
		mu.Unlock()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go srv.Serve(ln)
	defer func() {
		// Shutdown waits for the session to end: no hook call comes later.
		// A stalled session (already a failure) gets little time.
		wait := *scenarioTimeout
		if run.stalled {
			wait = time.Second
		}
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil && !run.stalled {
			tb.Errorf("%s: proxy shutdown: %v", sc.name, err)
		}
		mu.Lock()
		run.commands = append([]hookCommand(nil), run.commands...)
		mu.Unlock()
	}()

	deadline := time.Now().Add(*scenarioTimeout)
	nc, err := net.DialTimeout("tcp", ln.Addr().String(), *scenarioTimeout)
	if err != nil {
		tb.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(deadline)
	br := bufio.NewReader(nc)
	untilTagged := func(tag string) (string, error) {
		var data strings.Builder
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				return data.String(), fmt.Errorf("waiting for %s: %w (after %q)", tag, err, data.String()+l)
			}
			if strings.HasPrefix(l, tag+" ") {
				if !strings.HasPrefix(l, tag+" OK") {
					return data.String(), fmt.Errorf("%s: %q", tag, l)
				}
				return data.String(), nil
			}
			data.WriteString(l)
		}
	}
	if _, err := untilTagged("*"); err != nil { // the greeting
		tb.Fatalf("%s: greeting: %v", sc.name, err)
	}
	io.WriteString(nc, "L LOGIN "+user+" "+diffPassword+"\r\n")
	if _, err := untilTagged("L"); err != nil {
		tb.Fatalf("%s: login: %v", sc.name, err)
	}
	// The proxy answered the login only after its own exchange with
	// Dovecot (through the tap, which records before it forwards): what
	// came before this mark is that exchange.
	var tc *tapConn
	select {
	case tc = <-tp.conn:
	case <-time.After(time.Until(deadline)):
	}
	if tc == nil {
		tb.Fatalf("%s: the proxy did not connect to the upstream", sc.name)
	}
	upMark, downMark := tc.lens()
	io.WriteString(nc, "S SELECT INBOX\r\n")
	data, err := untilTagged("S")
	if err != nil {
		tb.Fatalf("%s: select: %v", sc.name, err)
	}
	for _, l := range strings.Split(data, "\r\n") {
		if n, ok := strings.CutSuffix(l, " EXISTS"); ok {
			run.exists, _ = strconv.Atoi(strings.TrimPrefix(n, "* "))
		}
	}

	seen := newClientLog()
	writeDone := make(chan error, 1)
	go func() {
		writeDone <- writeScenario(nc.(*net.TCPConn), sc, seen, deadline)
	}()
	_, err = io.Copy(seen, br)
	seen.close()
	run.toClient = seen.bytes()
	run.readErr = err
	run.stalled = errors.Is(err, os.ErrDeadlineExceeded)
	run.ended = !run.stalled
	if run.stalled {
		nc.Close() // unblocks the writer
	}
	run.writeErr = <-writeDone

	// The proxy closes its upstream connection once the client's is
	// over, and Dovecot closes after it.
	nc.Close()
	if run.ended {
		select {
		case <-tc.done:
		case <-time.After(*scenarioTimeout):
			tb.Errorf("%s: the upstream connection did not end %v after the client's", sc.name, *scenarioTimeout)
		}
	}
	tc.mu.Lock()
	run.toUpstream = append([]byte(nil), tc.toUpstream[upMark:]...)
	run.fromUpstream = append([]byte(nil), tc.fromUpstream[downMark:]...)
	tc.mu.Unlock()
	return run
}

// clientLog is what the client has read, for a writer that waits
// until something has arrived.
type clientLog struct {
	mu     sync.Mutex
	buf    []byte
	closed bool
	grew   chan struct{} // closed and replaced on every change
}

func newClientLog() *clientLog { return &clientLog{grew: make(chan struct{})} }

func (l *clientLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.buf = append(l.buf, p...)
	close(l.grew)
	l.grew = make(chan struct{})
	l.mu.Unlock()
	return len(p), nil
}

func (l *clientLog) close() {
	l.mu.Lock()
	l.closed = true
	close(l.grew)
	l.grew = make(chan struct{})
	l.mu.Unlock()
}

func (l *clientLog) bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]byte(nil), l.buf...)
}

// waitFor waits until the client has read s (after the first from
// bytes), the stream has ended, or the deadline has passed, and reports
// whether s came.
func (l *clientLog) waitFor(s string, from int, deadline time.Time) bool {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		l.mu.Lock()
		found := bytes.Contains(l.buf[min(from, len(l.buf)):], []byte(s))
		closed, grew := l.closed, l.grew
		l.mu.Unlock()
		if found || closed {
			return found
		}
		select {
		case <-grew:
		case <-timer.C:
			return false
		}
	}
}

func (l *clientLog) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buf)
}

// writeScenario writes sc's stream in its chunks (or its steps, each
// once the client has read what the one before waits for), then DONE
// (ending an IDLE the stream left open; otherwise an unknown command)
// and the final LOGOUT, and half-closes.
func writeScenario(nc *net.TCPConn, sc diffScenario, seen *clientLog, deadline time.Time) error {
	defer nc.CloseWrite()
	for _, st := range sc.steps {
		from := seen.len()
		if _, err := nc.Write(st.send); err != nil {
			return err
		}
		if st.until != "" && !seen.waitFor(st.until, from, deadline) {
			return fmt.Errorf("the client never read %q", st.until)
		}
	}
	rest := sc.stream
	for _, n := range sc.chunks {
		n = min(n, len(rest))
		if _, err := nc.Write(rest[:n]); err != nil {
			return err
		}
		rest = rest[n:]
	}
	if len(rest) > 0 {
		if _, err := nc.Write(rest); err != nil {
			return err
		}
	}
	_, err := io.WriteString(nc, "DONE\r\n"+finTag+" LOGOUT\r\n")
	return err
}

// wireResponse is one response as read from a stream: its first line
// without CRLF, and whether the stream ended inside it.
type wireResponse struct {
	line    string
	partial bool
}

// tagged reports the tag and the rest of a tagged response.
func (r wireResponse) tagged() (tag, rest string, ok bool) {
	if r.line == "" || r.line[0] == '*' || r.line[0] == '+' {
		return "", "", false
	}
	tag, rest, ok = strings.Cut(r.line, " ")
	return tag, rest, ok
}

// parseResponses splits a server's output into responses (RFC 9051
// §2.2.2): a response ends at a CRLF that does not end a literal's
// announcement ("{N}", "~{N}" for BINARY); the literal's octets are
// skipped. Written here rather than taken from imapwire, so that the
// oracle does not share the proxy's parser.
func parseResponses(p []byte) []wireResponse {
	var out []wireResponse
	start := true
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if start {
				out = append(out, wireResponse{line: string(p), partial: true})
			} else {
				out[len(out)-1].partial = true
			}
			return out
		}
		line := p[:i+1]
		p = p[i+1:]
		if start {
			out = append(out, wireResponse{line: strings.TrimRight(string(line), "\r\n")})
		}
		n, ok := announcedLiteral(line)
		if !ok {
			start = true
			continue
		}
		start = false
		if int64(len(p)) < n {
			out[len(out)-1].partial = true
			return out
		}
		p = p[n:]
	}
	return out
}

// dovecotResponses is parseResponses for Dovecot's output, which has
// one quirk: an error text may quote a client's string that holds CRLF
// ("Unexpected string as search key: x<CRLF>y"), and the rest of the
// text then comes on lines of its own, the last ending with the timing
// Dovecot 2.3 appends to every tagged completion ("(0.001 + 0.000
// secs)."). Those lines are joined back to the tagged line they belong
// to: they are not responses, however they start.
func dovecotResponses(p []byte) []wireResponse {
	var out []wireResponse
	open := false // the last tagged line's text goes on
	for _, r := range parseResponses(p) {
		if open {
			out[len(out)-1].line += "\r\n" + r.line
			open = !strings.HasSuffix(r.line, "secs).")
			continue
		}
		out = append(out, r)
		_, _, tagged := r.tagged()
		open = tagged && !r.partial && !strings.HasSuffix(r.line, "secs).")
	}
	return out
}

// announcedLiteral returns N if line ends in "{N}" CRLF.
func announcedLiteral(line []byte) (int64, bool) {
	line = bytes.TrimSuffix(line, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	if len(line) < 3 || line[len(line)-1] != '}' {
		return 0, false
	}
	open := bytes.LastIndexByte(line, '{')
	if open < 0 {
		return 0, false
	}
	n, err := strconv.ParseInt(string(line[open+1:len(line)-1]), 10, 64)
	return n, err == nil && n >= 0
}

// answer is one tagged response of Dovecot's.
type answer struct {
	tag, text string
}

// dovecotTag returns the tag Dovecot reads at the start of a command
// whose tag the proxy reports as tag (up to the first SP): Dovecot's
// ends at a CR as well ("a\rb NOOP" is answered "a BAD").
func dovecotTag(tag string) string {
	t, _, _ := strings.Cut(tag, "\r")
	return t
}

// dovecotTagOK reports whether Dovecot answers a command with the tag
// dovecotTag returned with a tagged response. Measured against Dovecot
// 2.3.19 by sending "a<octet>b CAPABILITY" for every octet: it answers
// with an untagged BAD for a tag that holds a control character, an
// 8-bit octet or one of `"%()*+\]{`, and accepts DEL. (RFC 9051 allows
// "]" in a tag and not DEL.) A line with a tag and no command name is
// answered with a tagged BAD.
func dovecotTagOK(tag string) bool {
	if tag == "" {
		return false
	}
	for i := 0; i < len(tag); i++ {
		c := tag[i]
		if c < 0x21 || c > 0x7f || strings.IndexByte(`"%()*+\]{`, c) >= 0 {
			return false
		}
	}
	return true
}

// ranForbidden reports whether Dovecot's answer shows that it ran COMPRESS
// or STARTTLS: its OK to COMPRESS, its refusals of COMPRESS's arguments,
// and the error texts that name the command.
func ranForbidden(text string) bool {
	for _, s := range []string{"Begin compression", "compression mechanism", "[COMPRESSIONACTIVE]",
		"IMAP command COMPRESS:", "IMAP command STARTTLS:", "Begin TLS"} {
		if strings.Contains(text, s) {
			return true
		}
	}
	return false
}

// probeTag matches the tag of the proxy's probe (imapwire.LiteralGate),
// which the hook reports as a forwarded command.
var probeTag = regexp.MustCompile(`^ig[0-9a-f]{16}$`)

// problems is the oracle. It returns what is wrong with run:
//   - every tagged response Dovecot sent answers a command the proxy
//     forwarded with that tag (as Dovecot reads it: dovecotTag), and no
//     tag is answered more often than it was forwarded (per tag and in order: Dovecot completes pipelined
//     commands out of order, e.g. NOOP waits for a mailbox sync);
//   - no command the proxy forwarded counted more than max_command_size,
//     and none that Dovecot answered did;
//   - Dovecot never ran COMPRESS or STARTTLS;
//   - if the session ended cleanly (Dovecot answered the final LOGOUT
//     and said BYE for no other reason), Dovecot answered every command
//     the proxy forwarded with a tag Dovecot accepts, exactly once: a
//     forwarded command it did not answer was read by Dovecot as part
//     of another command, which the proxy did not count;
//   - the session ended in time: the proxy did not wait forever for an
//     answer Dovecot will not give;
//   - the client never saw the answer to the proxy's probe.
//
// The hook reports no command that was still being framed when the
// session ended; Dovecot's last answer may be to it.
func (run *diffRun) problems() []string {
	var probs []string
	if run.stalled {
		probs = append(probs, fmt.Sprintf("the session did not end within %v: the proxy or Dovecot waits for something the other will not send", *scenarioTimeout))
	}
	var answers []answer
	finOK, byeOther := false, ""
	for _, r := range dovecotResponses(run.fromUpstream) {
		if tag, rest, ok := r.tagged(); ok {
			answers = append(answers, answer{tag, rest})
			if tag == finTag && strings.HasPrefix(rest, "OK") {
				finOK = true
			}
			if ranForbidden(rest) {
				probs = append(probs, fmt.Sprintf("Dovecot ran COMPRESS or STARTTLS: %q", r.line))
			}
		} else if strings.HasPrefix(r.line, "* BYE ") && !strings.HasPrefix(r.line, "* BYE Logging out") {
			byeOther = r.line
		}
	}
	// Per tag, the forwarded commands in order, as indexes into
	// run.commands.
	queue := map[string][]int{}
	for i, c := range run.commands {
		if c.forwarded {
			queue[dovecotTag(c.tag)] = append(queue[dovecotTag(c.tag)], i)
			if c.size > diffMax {
				probs = append(probs, fmt.Sprintf("forwarded command #%d %q counted %d octets, over max_command_size %d", i, c.tag, c.size, diffMax))
			}
		}
	}
	// A command the proxy was still framing when the session ended (the
	// client's stream ended inside it, or the proxy closed the session
	// over it: BYE [TOOBIG] or [CLIENTBUG]) is not reported, but Dovecot
	// may have answered it, last.
	unfinished := func(k int) bool {
		return !finOK && k == len(answers)-1 &&
			(bytes.HasPrefix(run.toUpstream, []byte(answers[k].tag+" ")) ||
				bytes.Contains(run.toUpstream, []byte("\n"+answers[k].tag+" ")))
	}
	answered := make([]bool, len(run.commands))
	for k, a := range answers {
		q := queue[a.tag]
		if len(q) == 0 {
			if unfinished(k) {
				continue
			}
			probs = append(probs, fmt.Sprintf("Dovecot answered %q (%q), which the proxy did not forward (that often): Dovecot ran a command the proxy did not frame", a.tag, clip(a.text, 120)))
			continue
		}
		i := q[0]
		queue[a.tag] = q[1:]
		answered[i] = true
		if run.commands[i].size > diffMax {
			probs = append(probs, fmt.Sprintf("Dovecot answered %q, which counted %d octets, over max_command_size", a.tag, run.commands[i].size))
		}
	}
	for _, r := range parseResponses(run.toClient) {
		if tag, _, ok := r.tagged(); ok && probeTag.MatchString(tag) {
			probs = append(probs, fmt.Sprintf("the client saw the answer to the proxy's probe: %q", r.line))
		}
	}
	if finOK && byeOther == "" && run.ended {
		var missed []string
		for i, c := range run.commands {
			if c.forwarded && !answered[i] && dovecotTagOK(dovecotTag(c.tag)) {
				missed = append(missed, fmt.Sprintf("#%d %q", i, c.tag))
			}
		}
		if len(missed) > 0 {
			probs = append(probs, fmt.Sprintf("Dovecot never answered %d forwarded commands (%s): it read them as part of another command, which the proxy did not frame or count as one",
				len(missed), clip(strings.Join(missed, ", "), 300)))
		}
	}
	return probs
}

// report describes run for a failure message: the scenario, the
// commands the framer reported, Dovecot's answers and what the client
// saw.
func (run *diffRun) report() string {
	var b strings.Builder
	fmt.Fprintf(&b, "scenario %s: %d bytes, writes %s\n", run.sc.name, len(run.sc.stream), chunkSummary(run.sc.chunks))
	for i, st := range run.sc.steps {
		fmt.Fprintf(&b, "step %d: %s, then wait for %q\n", i, clip(strconv.Quote(string(st.send)), 1000), st.until)
	}
	fmt.Fprintf(&b, "stream: %s\n", clip(strconv.Quote(string(run.sc.stream)), 3000))
	b.WriteString("commands framed by the proxy (tag, octets counted, forwarded):\n")
	for i, c := range run.commands {
		fmt.Fprintf(&b, "  #%d %q %d %v\n", i, c.tag, c.size, c.forwarded)
	}
	b.WriteString("Dovecot's responses after login:\n")
	for _, r := range dovecotResponses(run.fromUpstream) {
		fmt.Fprintf(&b, "  %s\n", clip(strconv.Quote(r.line), 200))
	}
	fmt.Fprintf(&b, "sent to Dovecot after login: %s\n", clip(strconv.Quote(string(run.toUpstream)), 3000))
	fmt.Fprintf(&b, "the client received: %s\n", clip(strconv.Quote(string(run.toClient)), 3000))
	if run.writeErr != nil {
		fmt.Fprintf(&b, "the client's write failed: %v\n", run.writeErr)
	}
	return b.String()
}

func chunkSummary(chunks []int) string {
	switch {
	case len(chunks) == 0:
		return "one"
	case len(chunks) > 12:
		return fmt.Sprintf("%d (%v...)", len(chunks), chunks[:12])
	}
	return fmt.Sprint(chunks)
}

// clip shortens s to about n bytes for a message.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n/2] + fmt.Sprintf("...(%d bytes)...", len(s)-n) + s[len(s)-n/2:]
}
