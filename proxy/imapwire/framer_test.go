package imapwire

import (
	"bytes"
	"errors"
	"io"
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
}

// frame runs the framer over in, read in chunks of sizes.
func frame(in []byte, max int, sizes []int, stream bool) wiretest.Framed {
	return frameWith(NewCommandFramer(max, nil), &wiretest.ChunkReader{Data: in, Sizes: sizes}, stream)
}

func frameWith(f *CommandFramer, src io.Reader, stream bool) wiretest.Framed {
	size := max(f.Max()+512, 16<<10)
	d := &driver{f: f, src: src, stream: stream, buf: make([]byte, size)}
	err := d.run()
	return wiretest.Framed{Dst: d.dst.String(), Replies: d.replies, Err: errName(err)}
}

func errName(err error) string {
	switch {
	case err == nil:
		return "nil"
	case errors.Is(err, ErrCommandTooBig):
		return "TOOBIG"
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
	switch {
	case st.Forward > 0:
		d.r += st.Forward
	case st.Drop > 0:
		d.flush()
		d.r += st.Drop
		d.out = d.r
	}
	if st.Flush {
		d.flush()
	}
	if st.Refuse != RefuseNone {
		d.replies = append(d.replies, refusalLine(d.f.Refusal(&st), d.f.Max()))
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
				if got := frame([]byte(tt.In), 1024, sizes, stream); !got.Equal(tt.Want) {
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

// The literal gate: after a synchronizing literal was relayed, the
// upstream's answer decides what the client's next bytes are.
func TestCommandFramerGate(t *testing.T) {
	const cmd = "a SEARCH TEXT {5}\r\n"
	const next = "x COMPRESS DEFLATE\r\n" // as literal: "x COM" + "PRESS DEFLATE\r\n"
	for _, tt := range []struct {
		name     string
		upstream []string // response lines seen before the client's next bytes
		dst      string
		replies  []string
	}{
		{"rejected", []string{"* 3 EXISTS", "b OK other", "a NO [TOOBIG] Literal too big"}, cmd, []string{"x NO [CANNOT] COMPRESS is not available through this proxy"}},
		{"rejected BAD", []string{"a BAD no"}, cmd, []string{"x NO [CANNOT] COMPRESS is not available through this proxy"}},
		{"accepted", []string{"* 3 EXISTS", "+ Ready"}, cmd + next, nil},
		{"no answer yet", nil, cmd + next, nil},
		{"other tag only", []string{"ab NO x", "a"}, cmd + next, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, sizes := range [][]int{{len(cmd), 0}, {len(cmd), 1}, {len(cmd), 3}, {3, len(cmd) - 3, 2}} {
				gate := new(LiteralGate)
				f := NewCommandFramer(1024, gate)
				src := &wiretest.ChunkReader{Data: []byte(cmd + next), Sizes: sizes}
				decided := false
				var relayed func() string
				src.Before = func(i int) {
					if decided || !f.awaitsGo {
						return
					}
					decided = true
					if got := relayed(); got != cmd {
						t.Errorf("awaiting the upstream's answer with %q relayed; want %q", got, cmd)
					}
					if !gate.Waiting() {
						t.Errorf("gate not waiting after the literal was announced")
					}
					rf := NewResponseFramer(gate)
					for _, l := range tt.upstream {
						rf.Scan([]byte(l+"\r\n"), false)
					}
				}
				d := &driver{f: f, src: src, buf: make([]byte, 16<<10)}
				relayed = d.dst.String
				if err := d.run(); err != io.EOF {
					t.Fatalf("run: %v", err)
				}
				if d.dst.String() != tt.dst || strings.Join(d.replies, "|") != strings.Join(tt.replies, "|") {
					t.Errorf("reads %v: dst %q replies %q; want %q %q", sizes, d.dst.String(), d.replies, tt.dst, tt.replies)
				}
				if gate.Waiting() {
					t.Errorf("gate still waiting")
				}
			}
		})
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
