package imapwire

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/imapguard/imapguard/proxy/imapwire/wiretest"
)

// refusalLine is the proxy's answer to a refusal, as the proxy words it
// (proxy/respond.go), for comparing with the cases.
func refusalLine(r Refusal, max int) string {
	tag := r.Tag
	if tag == "" {
		tag = "*"
	}
	switch r.Kind {
	case RefuseTooBig:
		return tag + " BAD [TOOBIG] Command too long (max_command_size=" + itoa(max) + ")"
	case RefuseInvalidLiteral:
		return tag + " BAD Invalid literal"
	case RefuseCompress:
		return tag + " NO [CANNOT] COMPRESS is not available through this proxy"
	case RefuseStartTLS:
		return tag + " BAD STARTTLS is not valid in the authenticated state"
	case RefuseExpectedDone:
		return tag + " BAD Expected DONE"
	case RefuseBareCR:
		return tag + " BAD CR without LF in a command"
	case RefuseTag:
		return tag + " BAD Invalid tag for a literal or IDLE"
	case RefuseAppendArgs:
		return tag + " BAD Invalid APPEND arguments"
	case RefuseAppendUTF8:
		return tag + " NO [CANNOT] APPEND UTF8 is not available through this proxy"
	case RefuseOpenQuote:
		return tag + " BAD Unterminated quoted string"
	}
	return tag + " ?"
}

func itoa(n int) string {
	var b []byte
	for {
		b = append([]byte{byte('0' + n%10)}, b...)
		if n /= 10; n == 0 {
			return string(b)
		}
	}
}

// driver carries out a CommandFramer's steps the way the proxy's copy
// loop does: a buffer of max+512 bytes (at least 16 KiB) that it refills
// and compacts, forwarded bytes written at flushes, and, with stream,
// literal octets copied straight from the source when the buffer is
// empty and at least streamMin of them are left.
type driver struct {
	f       *CommandFramer
	src     io.Reader
	dst     bytes.Buffer
	replies []string
	stream  bool
	buf     []byte
	r, w    int
	out     int
	// upstream plays the upstream when the framer awaits an answer
	upstream func()
}

// frame runs the framer over in, read in chunks of sizes, with an
// upstream that accepts every literal and IDLE except those of the
// commands tagged in reject.
func frame(in []byte, max int, sizes []int, stream bool, reject ...string) wiretest.Framed {
	f := NewCommandFramer(max, nil)
	d := newDriver(f, &wiretest.ChunkReader{Data: in, Sizes: sizes}, stream)
	d.upstream = func() { answer(f.Gate(), reject) }
	err := d.run()
	return wiretest.Framed{Dst: d.dst.String(), Replies: d.replies, Err: errName(err)}
}

func newDriver(f *CommandFramer, src io.Reader, stream bool) *driver {
	return &driver{f: f, src: src, stream: stream, buf: make([]byte, max(f.Max()+512, 16<<10))}
}

// answer plays the upstream for a framer that awaits: it accepts the
// literal or IDLE awaited ("+"), or ends its command with a tagged NO if
// the tag is in reject, or answers the probe.
func answer(g *LiteralGate, reject []string) {
	if tag, ok := g.Probe(); ok {
		if !g.Response([]byte(tag + " OK NOOP completed")) {
			panic("the answer to the probe is relayed")
		}
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

func errName(err error) string {
	switch {
	case err == nil:
		return "nil"
	case errors.Is(err, ErrCommandTooBig):
		return "TOOBIG"
	case errors.Is(err, ErrCommandInvalid):
		return "INVALID"
	case err == io.EOF:
		return "EOF"
	case err == io.ErrUnexpectedEOF:
		return "UNEXPECTEDEOF"
	}
	return err.Error()
}

func (d *driver) run() error {
	for {
		if err := d.step(); err != nil {
			d.flush()
			return err
		}
	}
}

func (d *driver) step() error {
	var st Step
	err := d.f.Next(d.buf[d.r:d.w], &st)
	if err != nil {
		return err
	}
	if st.Drop > 0 {
		d.flush()
		d.r += st.Drop
		d.out = d.r
	}
	d.r += st.Forward
	if st.Flush {
		d.flush()
	}
	if st.Refuse != RefuseNone {
		d.replies = append(d.replies, refusalLine(d.f.Refusal(&st), d.f.Max()))
	}
	if st.Probe != nil {
		d.dst.WriteString(wiretest.Probe)
	}
	if st.Await {
		d.upstream()
		return nil
	}
	if !st.More {
		return nil
	}
	d.flush()
	if d.stream && st.Stream >= streamMin && d.r == d.w {
		n, err := io.CopyN(&d.dst, d.src, st.Stream)
		d.f.Streamed(n)
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	if d.r == d.w {
		d.r, d.w, d.out = 0, 0, 0
	} else if d.w == len(d.buf) && d.r > 0 {
		copy(d.buf, d.buf[d.r:d.w])
		d.w -= d.r
		d.r, d.out = 0, 0
	}
	n, err := d.src.Read(d.buf[d.w:])
	d.w += n
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// streamMin is smaller than the proxy's (64 KiB) so that more cases take
// the streaming path.
const streamMin = 2000

func (d *driver) flush() {
	d.dst.Write(d.buf[d.out:d.r])
	d.out = d.r
}

func TestCommandFramer(t *testing.T) {
	for _, tt := range wiretest.CommandCases() {
		t.Run(tt.Name, func(t *testing.T) {
			// Every other chunking streams literal octets past the framer.
			for i, sizes := range wiretest.Chunkings(len(tt.In), tt.Big) {
				stream := i%2 == 1
				if got := frame([]byte(tt.In), 1024, sizes, stream, tt.Reject...); !got.Equal(tt.Want) {
					t.Fatalf("reads %v, stream %v:\n got %v\nwant %v", sizes, stream, got, tt.Want)
				}
			}
		})
	}
}

// Regression: a command that follows one that was too big, or one near
// the cap, starts with nothing counted, also when the framer's buffer ran
// empty at the end of the first (the usual case: a client writes a
// command, the proxy reads all of it) or holds only part of the next line.
// Counting the previous command's size there would throw away the client's
// next command and answer it with an untagged-looking " BAD [TOOBIG]".
func TestCommandFramerStaleSize(t *testing.T) {
	rep := wiretest.Rep
	for _, tt := range []struct {
		name  string
		first string
		sizes []int
		reply []string
	}{
		{"after oversize line, one command per read", wiretest.CmdOf("a SEARCH TEXT ", 1025), []int{1025, 1 << 20}, []string{"a" + wiretest.TooBig1024}},
		{"after oversize line, one byte per read", wiretest.CmdOf("a SEARCH TEXT ", 1025), []int{1025, 1}, []string{"a" + wiretest.TooBig1024}},
		{"after oversize literal", "a SEARCH TEXT {1100+}\r\n" + rep("y", 1100) + "\r\n", []int{1124, 1 << 20}, []string{"a" + wiretest.TooBig1024}},
		{"after command at the cap, split first line", wiretest.CmdOf("a SEARCH TEXT ", 1024), []int{1024 + 3, 1 << 20}, nil},
	} {
		in := tt.first + "b NOOP\r\n"
		got := frame([]byte(in), 1024, tt.sizes, false)
		want := wiretest.Framed{Dst: strings.TrimPrefix(in, tt.first), Replies: tt.reply, Err: "EOF"}
		if tt.reply == nil {
			want.Dst = in
		}
		if !got.Equal(want) {
			t.Errorf("%s:\n got %v\nwant %v", tt.name, got, want)
		}
	}
}

// An oversize command whose first word is no valid tag: the BAD must be
// untagged, not echo up to max_command_size arbitrary client bytes.
func TestCommandFramerTooBigInvalidTag(t *testing.T) {
	rep := wiretest.Rep
	for _, in := range []string{rep("y", 3000) + "\r\n", rep("\x00", 3000) + "\r\n", "a\rb " + rep("y", 3000) + "\r\n"} {
		got := frame([]byte(in), 1024, nil, false)
		if want := []string{"*" + wiretest.TooBig1024}; len(got.Replies) != 1 || got.Replies[0] != want[0] {
			t.Errorf("%.10q: replies %.80q; want %q", in, got.Replies, want)
		}
	}
}

// A command whose literal leaves no room for the CRLF that must follow it
// is doomed: it is refused with BAD (a synchronizing literal before the
// upstream is asked for "+"), rather than relayed only for the CRLF to end
// the session.
func TestCommandFramerLiteralLeavesNoRoomForCRLF(t *testing.T) {
	for _, plus := range []bool{false, true} {
		for _, n := range []int{1023, 1024} {
			line, lit := wiretest.LitCmd("a SEARCH TEXT ", n, plus)
			in := line
			if plus {
				in += wiretest.LitBytes(lit) + "\r\n"
			}
			in += "b NOOP\r\n"
			got := frame([]byte(in), 1024, nil, false)
			want := wiretest.Framed{Dst: "b NOOP\r\n", Replies: []string{"a" + wiretest.TooBig1024}, Err: "EOF"}
			if !got.Equal(want) {
				t.Errorf("plus=%v line+literal=%d:\n got %v\nwant %v", plus, n, got, want)
			}
		}
	}
}

// The literal gate: after a literal was passed on, the framer takes
// nothing more from the client until the upstream has answered it, and
// the answer decides what the client's next bytes are.
func TestCommandFramerGate(t *testing.T) {
	const next = "x COMPRESS DEFLATE\r\n" // as literal: "x COM" + "PRESS DEFLATE\r\n"
	const compressNo = "x NO [CANNOT] COMPRESS is not available through this proxy"
	for _, tt := range []struct {
		name     string
		cmd      string   // the command line
		upstream []string // response lines that come while the framer waits
		dst      string   // forwarded in all
		replies  []string
	}{
		{"sync rejected", "a SEARCH TEXT {5}\r\n", []string{"* 3 EXISTS", "a NO [TOOBIG] Literal too big"}, "a SEARCH TEXT {5}\r\n", []string{compressNo}},
		{"sync rejected BAD", "a SEARCH TEXT {5}\r\n", []string{"a BAD no"}, "a SEARCH TEXT {5}\r\n", []string{compressNo}},
		{"sync accepted", "a SEARCH TEXT {5}\r\n", []string{"* 3 EXISTS", "+ Ready"}, "a SEARCH TEXT {5}\r\n" + next, nil},
		{"non-sync accepted", "a SEARCH TEXT {5+}\r\n", []string{"+ OK"}, "a SEARCH TEXT {5}\r\n" + next, nil},
		// The octets were sent already: they go, with the rest of the
		// command, where the upstream does not read them: nowhere.
		{"non-sync rejected", "a SEARCH TEXT {5+}\r\n", []string{"a BAD no"}, "a SEARCH TEXT {5}\r\n", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, sizes := range [][]int{nil, {len(tt.cmd), 0}, {len(tt.cmd), 1}, {3, len(tt.cmd) - 3, 2}} {
				gate := new(LiteralGate)
				f := NewCommandFramer(1024, gate)
				d := newDriver(f, &wiretest.ChunkReader{Data: []byte(tt.cmd + next), Sizes: sizes}, false)
				waits := 0
				d.upstream = func() {
					if waits++; waits == 1 {
						// The line went on at once, and nothing after it.
						if got := d.dst.String(); got != strings.Replace(tt.cmd, "+}", "}", 1) {
							t.Errorf("waiting with %q relayed; want the command line", got)
						}
						if !gate.watch.Load() {
							t.Errorf("the response side is not asked to report")
						}
						return // no answer yet: the framer must wait again
					}
					if waits == 2 {
						rf := NewResponseFramer(gate)
						for _, l := range tt.upstream {
							p := []byte(l + "\r\n")
							n, _, _ := rf.Scan(p, false)
							if keep := string(p[:n]); strings.HasPrefix(l, "+") && strings.Contains(tt.cmd, "+}") && keep != "" {
								t.Errorf("the proxy's own continuation request %q reached the client", keep)
							}
						}
						return
					}
					t.Fatalf("still waiting after the upstream answered")
				}
				if err := d.run(); err != io.EOF {
					t.Fatalf("run: %v", err)
				}
				if waits != 2 {
					t.Errorf("the framer waited %d times; want 2 (no answer, then the answer)", waits)
				}
				if d.dst.String() != tt.dst || strings.Join(d.replies, "|") != strings.Join(tt.replies, "|") {
					t.Errorf("reads %v: dst %q replies %q; want %q %q", sizes, d.dst.String(), d.replies, tt.dst, tt.replies)
				}
				if tag, ok := gate.Awaited(); ok {
					t.Errorf("gate still waits for %q", tag)
				}
			}
		})
	}
}

// A {N+} literal the upstream refused (a tagged answer instead of "+"):
// its octets and the rest of its line, however long, are thrown away
// without a TOOBIG, and do not count toward the command that was
// answered, since the upstream never reads them (found by the
// differential test: "m1 BODY {3+}" then a 1 KiB line after the octets).
func TestCommandFramerRefusedLiteralRest(t *testing.T) {
	const cmd = "m1 BODY {3+}\r\n"
	rest := "AAAt13 SEARCH TEXT \"" + strings.Repeat("A", 1100) + "\"\r\n"
	const after = "z NOOP\r\n"
	for _, sizes := range [][]int{nil, {len(cmd), 0}, {len(cmd), 100}, {len(cmd), 7, 5}} {
		gate := new(LiteralGate)
		f := NewCommandFramer(1024, gate)
		var sizesSeen []string
		f.OnCommand = func(tag []byte, size int, forwarded bool) {
			sizesSeen = append(sizesSeen, fmt.Sprintf("%s:%d:%v", tag, size, forwarded))
		}
		d := newDriver(f, &wiretest.ChunkReader{Data: []byte(cmd + rest + after), Sizes: sizes}, false)
		answered := false
		d.upstream = func() {
			if answered {
				t.Fatalf("still waiting after the upstream answered")
			}
			answered = true
			NewResponseFramer(gate).Scan([]byte("m1 BAD Error in IMAP command BODY: Unknown command\r\n"), false)
		}
		if err := d.run(); err != io.EOF {
			t.Fatalf("reads %v: run: %v", sizes, err)
		}
		if got, want := d.dst.String(), "m1 BODY {3}\r\n"+after; got != want || len(d.replies) != 0 {
			t.Errorf("reads %v: dst %q replies %q; want %q and no reply", sizes, got, d.replies, want)
		}
		if want := []string{"m1:17:true", "z:8:true"}; strings.Join(sizesSeen, " ") != strings.Join(want, " ") {
			t.Errorf("reads %v: commands %q; want %q", sizes, sizesSeen, want)
		}
	}
}

// A command that waits for a "+" after other commands went on waits
// for the answer to the proxy's probe first: only then is the "+" or
// tagged answer that comes next its own (a pipelined IDLE's "+", or a
// reused tag's completion, cannot pass for it).
func TestCommandFramerProbe(t *testing.T) {
	gate := new(LiteralGate)
	f := NewCommandFramer(1024, gate)
	in := "a NOOP\r\nb IDLE\r\na APPEND INBOX {5}\r\nhello\r\n"
	d := newDriver(f, &wiretest.ChunkReader{Data: []byte(in)}, false)
	var script []string
	d.upstream = func() {
		script = append(script, d.dst.String())
		switch len(script) {
		case 1: // b IDLE waits for the probe sent after a
			if want := "a NOOP\r\n" + wiretest.Probe; d.dst.String() != want {
				t.Errorf("probing: forwarded %q; want %q", d.dst.String(), want)
			}
			answer(gate, nil)
		case 2:
			gate.Response([]byte("+ idling"))
		case 3: // idling: DONE is not there, the APPEND line is refused
			t.Fatalf("waiting in IDLE with %q", d.dst.String())
		}
	}
	d.run()
	if want := "a NOOP\r\n" + wiretest.Probe + "b IDLE\r\n"; d.dst.String() != want {
		t.Errorf("forwarded %q; want %q", d.dst.String(), want)
	}

	gate = new(LiteralGate)
	f = NewCommandFramer(1024, gate)
	in = "a NOOP\r\na APPEND INBOX {5}\r\nhello\r\n"
	d = newDriver(f, &wiretest.ChunkReader{Data: []byte(in)}, false)
	script = nil
	d.upstream = func() {
		script = append(script, d.dst.String())
		switch len(script) {
		case 1:
			// NOOP's answer has the APPEND's tag: it does not answer the
			// probe, and the APPEND does not go on.
			gate.Response([]byte("a OK NOOP completed"))
		case 2:
			if want := "a NOOP\r\n" + wiretest.Probe; d.dst.String() != want {
				t.Errorf("before the probe's answer: forwarded %q; want %q", d.dst.String(), want)
			}
			answer(gate, nil)
		case 3:
			gate.Response([]byte("+ go ahead"))
		default:
			t.Fatalf("waits too often")
		}
	}
	if err := d.run(); err != io.EOF {
		t.Fatal(err)
	}
	if want := "a NOOP\r\n" + wiretest.Probe + in[len("a NOOP\r\n"):]; d.dst.String() != want {
		t.Errorf("forwarded %q; want %q", d.dst.String(), want)
	}
}

// The probe's tag is one the client cannot know: random, and a valid tag
// for any server.
func TestCommandFramerProbeTag(t *testing.T) {
	var tags []string
	for range 2 {
		f := NewCommandFramer(1024, nil)
		line := f.probe()
		tag, rest, _ := strings.Cut(string(line), " ")
		if rest != "NOOP\r\n" || len(tag) != 18 || !ValidTag([]byte(tag)) || strings.ContainsRune(tag, ']') {
			t.Fatalf("probe %q", line)
		}
		if got, ok := f.Gate().Probe(); !ok || got != tag {
			t.Fatalf("the gate waits for %q, %v; want %q", got, ok, tag)
		}
		tags = append(tags, tag)
	}
	if tags[0] == tags[1] {
		t.Errorf("two sessions probe with the same tag %q", tags[0])
	}
}

// An IDLE the upstream ends itself (its tagged completion comes before
// DONE) leaves no IDLE to end: the client's next line is a command, and
// framed as one.
func TestCommandFramerIdleEndedByUpstream(t *testing.T) {
	gate := new(LiteralGate)
	f := NewCommandFramer(1024, gate)
	var st Step
	in := []byte("i IDLE\r\n")
	if err := f.Next(in, &st); err != nil || st.Forward != len(in) || !st.Flush {
		t.Fatalf("IDLE: %+v %v", st, err)
	}
	gate.Response([]byte("+ idling"))
	f.Next(nil, &st) // takes the answer
	gate.Response([]byte("* 4 EXISTS"))
	gate.Response([]byte("i OK IDLE ended by the server"))
	in = []byte("b COMPRESS DEFLATE\r\n")
	if err := f.Next(in, &st); err != nil || st.Refuse != RefuseCompress || st.Drop != len(in) {
		t.Fatalf("after the upstream ended IDLE: %+v %v; want COMPRESS refused as a command", st, err)
	}
}

// LOGOUT is reported as its command begins, whether its line comes whole
// or, over the cap, in part.
func TestCommandFramerLogout(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int
	}{
		{"a LOGOUT\r\n", 1},
		{"a logout\r\nb NOOP\r\nc LOGOUT\r\n", 2},
		{"a LOGOUT " + wiretest.Rep("x", 2000) + "\r\n", 1},
		{"a NOOP\r\nb SEARCH TEXT {6+}\r\nLOGOUT\r\n", 0},
	} {
		f := NewCommandFramer(1024, nil)
		in := []byte(tt.in)
		got := 0
		for len(in) > 0 {
			var st Step
			err := f.Next(in, &st)
			if err != nil {
				t.Fatalf("%q: %v", tt.in, err)
			}
			if st.Logout {
				got++
			}
			if st.Await {
				answer(f.Gate(), nil)
				continue
			}
			if st.More {
				break
			}
			in = in[st.Forward+st.Drop:]
		}
		if got != tt.want {
			t.Errorf("%q: %d LOGOUTs; want %d", tt.in, got, tt.want)
		}
	}
}
