package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imapguard/imapguard/proxy/imapwire"
	"github.com/imapguard/imapguard/proxy/imapwire/wiretest"
)

// runCopier runs a commandCopier over src, answering refusals as the
// session does, with an upstream that accepts every literal and IDLE
// except those of the commands tagged in reject.
func runCopier(src io.Reader, max int, initial []byte, reject ...string) wiretest.Framed {
	var dst bytes.Buffer
	var res wiretest.Framed
	f := imapwire.NewCommandFramer(max, nil)
	c := newCommandCopier(src, &dst, f, initial)
	c.refuse = func(r imapwire.Refusal) { res.Replies = append(res.Replies, framerRefusal(r, max).String()) }
	c.await = func() bool {
		playUpstream(f.Gate(), reject)
		return true
	}
	err := c.run()
	res.Dst = probeLine.ReplaceAllLiteralString(dst.String(), wiretest.Probe)
	switch {
	case errors.Is(err, imapwire.ErrCommandTooBig):
		res.Err = "TOOBIG"
	case errors.Is(err, imapwire.ErrCommandInvalid):
		res.Err = "INVALID"
	case err == io.EOF:
		res.Err = "EOF"
	case err == io.ErrUnexpectedEOF:
		res.Err = "UNEXPECTEDEOF"
	default:
		res.Err = err.Error()
	}
	return res
}

// playUpstream answers what the framer waits for: the literal or IDLE
// awaited ("+"), or a tagged NO if its tag is in reject, or the probe.
func playUpstream(g *imapwire.LiteralGate, reject []string) {
	if tag, ok := g.Probe(); ok {
		g.Response([]byte(tag + " OK NOOP completed"))
		return
	}
	if tag, ok := g.Awaited(); ok {
		if slices.Contains(reject, tag) {
			g.Response([]byte(tag + " NO rejected"))
		} else {
			g.Response([]byte("+ go ahead"))
		}
	}
}

// probeLine matches the proxy's probe in what it passes on.
var probeLine = regexp.MustCompile(`ig[0-9a-f]{16} NOOP\r\n`)

// The command framer's cases (package imapwire) through the proxy's own
// copy loop, its buffer and its answers.
func TestCommandCopier(t *testing.T) {
	for _, tt := range wiretest.CommandCases() {
		t.Run(tt.Name, func(t *testing.T) {
			for _, sizes := range wiretest.Chunkings(len(tt.In), tt.Big) {
				got := runCopier(&wiretest.ChunkReader{Data: []byte(tt.In), Sizes: sizes}, 1024, nil, tt.Reject...)
				if !got.Equal(tt.Want) {
					t.Fatalf("reads %v:\n got %v\nwant %v", sizes, got, tt.Want)
				}
			}
		})
	}
}

// Bytes read during login are framed first.
func TestCommandCopierInitial(t *testing.T) {
	initial := []byte("a NOOP\r\nb COMPRESS DEFLATE\r\nc SEARCH TEXT {3+}\r\nab")
	got := runCopier(&wiretest.ChunkReader{Data: []byte("c\r\nd NOOP\r\n"), Sizes: []int{1}}, 1024, initial)
	want := wiretest.Framed{Dst: "a NOOP\r\n" + wiretest.Probe + "c SEARCH TEXT {3}\r\nabc\r\nd NOOP\r\n",
		Replies: []string{"b NO [CANNOT] COMPRESS is not available through this proxy"}, Err: "EOF"}
	if !got.Equal(want) {
		t.Errorf("got %v\nwant %v", got, want)
	}
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (a, b *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan *net.TCPConn, 1)
	go func() {
		c, _ := ln.AcceptTCP()
		ch <- c
	}()
	a, err = net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	b = <-ch
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// A large APPEND literal between two sockets is streamed past the buffer
// (spliced by the kernel), with the commands around it framed.
func TestCommandCopierStreamsLiterals(t *testing.T) {
	clientEnd, proxyClient := tcpPair(t)
	proxyUp, upEnd := tcpPair(t)
	msg := wiretest.LitBytes(3 << 20)
	in := "a APPEND INBOX {3145728+}\r\n" + msg + "\r\nb COMPRESS DEFLATE\r\nc NOOP\r\n"
	go func() {
		clientEnd.Write([]byte(in))
		clientEnd.CloseWrite()
	}()
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(upEnd)
		got <- b
	}()
	f := imapwire.NewCommandFramer(1024, nil)
	c := newCommandCopier(proxyClient, proxyUp, f, nil)
	c.await = func() bool { playUpstream(f.Gate(), nil); return true }
	var replies []string
	c.refuse = func(r imapwire.Refusal) { replies = append(replies, framerRefusal(r, 1024).String()) }
	if c.idle == nil {
		t.Fatal("no idle reader for a TCP client")
	}
	if err := c.run(); err != io.EOF {
		t.Fatalf("run: %v", err)
	}
	proxyUp.CloseWrite()
	select {
	case b := <-got:
		if want := "a APPEND INBOX {3145728}\r\n" + msg + "\r\nc NOOP\r\n"; string(b) != want {
			t.Errorf("upstream got %d bytes; want %d", len(b), len(want))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("upstream got nothing")
	}
	if n := c.sent.Load(); n != int64(len(in)-len("+")-len("b COMPRESS DEFLATE\r\n")) {
		t.Errorf("counted %d bytes sent", n)
	}
	if len(replies) != 1 || !strings.HasPrefix(replies[0], "b NO [CANNOT]") {
		t.Errorf("replies %q", replies)
	}
}

// recorder is a responseSink that records what it is given.
type recorder struct{ wiretest.RelayRecorder }

func (r *recorder) relay(p []byte, boundary int, mid bool) error {
	r.Relay(p, boundary, mid)
	return nil
}

func (r *recorder) copyLiteral(src io.Reader, n int64) (int64, error) {
	return io.CopyN(&r.W, src, n)
}

// copierSim runs the proxy's response copier over in with a buffer of
// bufSize.
func copierSim(in []byte, bufSize int, sizes []int) ([]byte, []wiretest.RelayEvent) {
	rec := &recorder{}
	c := newRespCopier(&wiretest.ChunkReader{Data: in, Sizes: sizes}, rec, imapwire.NewResponseFramer(nil), bufSize, nil, func(int64) {})
	c.run()
	return rec.W.Bytes(), rec.Events
}

// The response streams (package imapwire) through the proxy's own copy
// loop: the boundaries it reports are the responses' ends, and its output
// depends neither on how the upstream's bytes are split nor on the buffer
// size.
func TestRespCopier(t *testing.T) {
	for name, s := range wiretest.ResponseStreams() {
		t.Run(name, func(t *testing.T) {
			in := []byte(s)
			var want []byte
			for _, bufSize := range []int{relayBufSize, 4096, imapwire.HoldMax + 64} {
				for _, sz := range [][]int{nil, {1}, {3}, {100}, {4095}} {
					out, ev := copierSim(in, bufSize, sz)
					if msg := wiretest.CheckRelay(out, ev, false); msg != "" {
						t.Fatal(msg)
					}
					if want == nil {
						want = out
					} else if !bytes.Equal(out, want) {
						t.Fatalf("buf %d reads %v: output %.200q; with other reads %.200q", bufSize, sz, out, want)
					}
				}
			}
			if !strings.Contains(strings.ToUpper(s), "COMPRESS=") && !bytes.Equal(want, in) {
				t.Errorf("output %q differs from input", want)
			}
		})
	}
}

// Regression: a capability response that straddles the end of a full
// relay buffer is still filtered. The copier holds the short partial line
// back and moves it to the front of the buffer (HoldMax < relayBufSize)
// instead of passing it on in pieces that escape the filter.
func TestRespCopierCapabilityAtBufferEnd(t *testing.T) {
	filler := "* SEARCH " + wiretest.Rep("1 ", (relayBufSize-9-2-20)/2) + "\r\n" // ends 20 bytes before the buffer end
	in := filler + "* CAPABILITY IMAP4rev1 COMPRESS=DEFLATE IDLE\r\na OK\r\n"
	out, _ := copierSim([]byte(in), relayBufSize, nil)
	if want := filler + "* CAPABILITY IMAP4rev1 IDLE\r\na OK\r\n"; string(out[len(filler):]) != want[len(filler):] {
		t.Errorf("got %q", out[len(filler):])
	}
}

// The client-to-upstream buffer follows the bytes received: a session
// that got one byte of a command holds cmdBufSize, a partial line grows it
// by doubling as its bytes arrive, and never past max_command_size+512
// (issue 10: one byte used to take max+512 rounded up to a power of two,
// 2 MiB for a 1 MiB cap).
func TestCommandCopierBufferFollowsBytes(t *testing.T) {
	const max = 1 << 20
	clientEnd, proxyClient := tcpPair(t)
	f := imapwire.NewCommandFramer(max, nil)
	c := newCommandCopier(proxyClient, io.Discard, f, nil)
	// The whole input is one partial line: it stays at the start of the
	// buffer, and w counts what the copier has read.
	type seen struct{ size, read int }
	reads := make(chan seen, 1024)
	c.noteActivity = func() { reads <- seen{len(c.buf), c.w} }
	done := make(chan error, 1)
	go func() { done <- c.run() }()
	// send writes p and returns the buffer's size once the copier has
	// read all it was sent.
	sent := 0
	send := func(p string) int {
		t.Helper()
		clientEnd.Write([]byte(p))
		sent += len(p)
		for {
			select {
			case s := <-reads:
				if s.read == sent {
					return s.size
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("the copier has not read %d bytes", sent)
			}
		}
	}
	if n := send("a"); n != cmdBufSize {
		t.Errorf("after 1 byte the buffer is %d B; want %d", n, cmdBufSize)
	}
	if n := send(strings.Repeat("x", 5000)); n != 2*cmdBufSize {
		t.Errorf("after a 5001-byte partial line the buffer is %d B; want %d", n, 2*cmdBufSize)
	}
	if n := send(strings.Repeat("x", max-5001)); n > max+512 {
		t.Errorf("after a partial line of max_command_size the buffer is %d B; want at most %d", n, max+512)
	}
	clientEnd.Close()
	if err := <-done; err != io.EOF && err != io.ErrUnexpectedEOF {
		t.Fatalf("run: %v", err)
	}
}
