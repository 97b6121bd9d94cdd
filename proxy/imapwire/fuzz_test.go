package imapwire

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/imapguard/imapguard/proxy/imapwire/wiretest"
)

// Besides the basic invariants, the fuzzers check properties that
// regression tests pin down for particular inputs:
//   - chunking invariance of the command framer (TestCommandFramerStaleSize);
//   - untagged BAD for an invalid tag (TestCommandFramerTooBigInvalidTag);
//   - RFC numbers in literals (TestLiteralAtLeadingZeros);
//   - ResponseFramer.Mid (TestResponseFramerMidAfterLiteral);
//   - Reader results independent of bufio chunks
//     (TestReadCommandOverlongLiteralSplit).

var replyRE = regexp.MustCompile(`^([^ \n]*) (BAD \[TOOBIG\] Command too long \(max_command_size=([0-9]+)\)|NO \[CANNOT\] COMPRESS is not available through this proxy|BAD STARTTLS is not valid in the authenticated state|BAD Invalid literal|BAD Expected DONE|BAD CR without LF in a command|BAD Invalid tag for a literal or IDLE|BAD Invalid APPEND arguments|NO \[CANNOT\] APPEND UTF8 is not available through this proxy)$`)

// runFramerTimeout runs the framer, failing on a hang.
func runFramerTimeout(t *testing.T, in []byte, max int, sizes []int, stream bool) wiretest.Framed {
	t.Helper()
	done := make(chan wiretest.Framed, 1)
	go func() { done <- frame(in, max, sizes, stream) }()
	select {
	case r := <-done:
		return r
	case <-time.After(10 * time.Second):
		t.Fatalf("CommandFramer hangs on %.200q (max %d, reads %v)", in, max, sizes)
		return wiretest.Framed{}
	}
}

func FuzzCommandFramer(f *testing.F) {
	for i, s := range wiretest.CommandSeeds() {
		f.Add([]byte(s), uint16(0), uint8(i))
		f.Add([]byte(s), uint16(i*100), uint8(0))
	}
	f.Fuzz(func(t *testing.T, in []byte, maxSel uint16, chunk uint8) {
		if len(in) > 1<<20 {
			return
		}
		max := 1024 + int(maxSel)%3073
		sizes := []int{int(chunk) + 1}
		got := runFramerTimeout(t, in, max, sizes, chunk%2 == 0)

		switch got.Err {
		case "EOF", "UNEXPECTEDEOF", "TOOBIG", "INVALID":
		default:
			t.Fatalf("run ended with %s", got.Err)
		}
		dst := []byte(strings.ReplaceAll(got.Dst, wiretest.Probe, ""))
		if len(dst) > len(in) || !wiretest.IsSubsequence(dst, in) {
			t.Fatalf("forwarded bytes are not taken from the input in order: %.200q", dst)
		}
		for _, r := range got.Replies {
			m := replyRE.FindStringSubmatch(r)
			if m == nil {
				t.Fatalf("reply %q has an unexpected form", r)
			}
			if m[3] != "" && m[3] != fmt.Sprint(max) {
				t.Fatalf("reply %q names the wrong max (%d)", r, max)
			}
			if m[1] != "*" && !ValidTag([]byte(m[1])) {
				t.Fatalf("reply %q echoes an invalid tag", r)
			}
		}
		// What the upstream sees: no command over the cap.
		for i, c := range wiretest.RefCommands(dst) {
			if c.Size > max {
				t.Fatalf("command %d forwarded with %d octets counted > max %d; forwarded %.300q", i, c.Size, max, dst)
			}
		}
		// Framing does not depend on how the client's bytes are split,
		// nor on whether literal octets are streamed past the framer.
		one := runFramerTimeout(t, in, max, nil, chunk%2 != 0)
		if one.Dst != got.Dst || !reflect.DeepEqual(one.Replies, got.Replies) {
			t.Fatalf("reads of %d:\n got %v\none read: %v", chunk+1, got, one)
		}
	})
}

// preauthEvents reads commands like the connection does and checks the
// reader's invariants on the way.
func preauthEvents(t *testing.T, in []byte, max int, bufSize int, wrap func(io.Reader) io.Reader) []string {
	t.Helper()
	sr := bytes.NewReader(in)
	br := bufio.NewReaderSize(wrap(sr), bufSize)
	conts := 0
	pr := NewReader(br, max, func() error { conts++; return nil })
	pos := func() int { return len(in) - sr.Len() - br.Buffered() }
	var ev []string
	for i := 0; ; i++ {
		if i > len(in)+1 {
			t.Fatalf("readCommand makes no progress")
		}
		before := pos()
		cmd, err := pr.ReadCommand()
		used := pos() - before
		var se *SyntaxError
		var tb *TooBigError
		switch {
		case err == nil:
			if used > max {
				t.Fatalf("command %q %q used %d octets > max %d", cmd.Tag, cmd.Name, used, max)
			}
			// Not the name: strings.ToUpper turns each invalid UTF-8
			// octet into a 3-octet U+FFFD (harmless: no such command).
			total := len(cmd.Tag)
			for _, a := range cmd.Args {
				total += len(a.Val)
			}
			if total > max {
				t.Fatalf("command %q %q carries %d octets > max %d", cmd.Tag, cmd.Name, total, max)
			}
			if !ValidTag([]byte(cmd.Tag)) || cmd.Name == "" || cmd.Name != strings.ToUpper(cmd.Name) {
				t.Fatalf("bad command: tag %q name %q", cmd.Tag, cmd.Name)
			}
			ev = append(ev, "CMD "+cmd.Tag+" "+cmd.Name+" "+fmtArgs(cmd.Args))
		case errors.As(err, &se):
			if se.Tag != "" && !ValidTag([]byte(se.Tag)) {
				t.Fatalf("syntax error with invalid tag %q", se.Tag)
			}
			ev = append(ev, "SYNTAX "+se.Tag+": "+se.Msg)
		case errors.As(err, &tb) && !tb.Fatal:
			if tb.Tag != "" && !ValidTag([]byte(tb.Tag)) {
				t.Fatalf("too big with invalid tag %q", tb.Tag)
			}
			ev = append(ev, "TOOBIG "+tb.Tag)
		default:
			return append(ev, "END "+errName(err))
		}
		if used <= 0 {
			t.Fatalf("readCommand returned %v without reading", ev[len(ev)-1])
		}
		if conts > strings.Count(string(in), "{") {
			t.Fatalf("%d continuation requests for %d literals", conts, strings.Count(string(in), "{"))
		}
	}
}

func FuzzReader(f *testing.F) {
	for i, s := range wiretest.CommandSeeds() {
		f.Add([]byte(s), uint16(i*37))
	}
	f.Add([]byte("a LOGIN {5}\r\nalice {6+}\r\nsecret\r\n"), uint16(0))
	f.Add([]byte("a LOGIN \"al\\\"ice\" \"se\\\\cret\"\r\n"), uint16(0))
	f.Add([]byte("a LOGIN \"a\\x\" b\r\n"), uint16(0))
	f.Add([]byte("a ID (\"name\" \"x\" \"version\" NIL)\r\n"), uint16(0))
	f.Fuzz(func(t *testing.T, in []byte, maxSel uint16) {
		if len(in) > 1<<16 {
			return
		}
		max := 16 + int(maxSel)%2048
		a := preauthEvents(t, in, max, 4096, func(r io.Reader) io.Reader { return r })
		b := preauthEvents(t, in, max, 16, iotest.OneByteReader)
		// Results do not depend on how bufio splits lines
		// (TestReadCommandOverlongLiteralSplit).
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("results depend on reads:\n%q\n%q", a, b)
		}
	})
}

func FuzzResponseFramer(f *testing.F) {
	for i, s := range wiretest.ResponseSeeds() {
		f.Add([]byte(s), uint8(i), uint8(i*7))
		f.Add([]byte(s), uint8(0), uint8(255))
	}
	f.Fuzz(func(t *testing.T, in []byte, chunk, bufSel uint8) {
		if len(in) > 1<<20 {
			return
		}
		bufSize := HoldMax + 64 + int(bufSel)*64 // real relays: relayBufSize > HoldMax
		out, ev := relaySim(in, bufSize, []int{int(chunk) + 1}, nil)
		checkRelay(t, out, ev, true)
		if !strings.Contains(strings.ToUpper(string(in)), "COMPRESS=") {
			if !bytes.Equal(out, in) {
				t.Fatalf("output %.200q differs from input", out)
			}
		} else if len(out) > len(in) || !wiretest.IsSubsequence(out, in) {
			t.Fatalf("output %.200q is not the input less some octets", out)
		}
		// With a buffer that can hold a line back, the capability
		// filter does not depend on how the upstream's bytes are split.
		one, _ := relaySim(in, bufSize, nil, nil)
		if !bytes.Equal(one, out) {
			t.Fatalf("output depends on reads:\n%.200q\n%.200q", out, one)
		}
	})
}
