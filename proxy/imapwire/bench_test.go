package imapwire

import (
	"bufio"
	"fmt"
	"strings"
	"testing"

	"github.com/imapguard/imapguard/proxy/imapwire/wiretest"
)

// BenchmarkCommandFramer feeds pipelined commands to the framer alone;
// one op is one command line.
func BenchmarkCommandFramer(b *testing.B) {
	cmds := []byte(strings.Repeat("a1 NOOP\r\na2 UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)])\r\n", 64))
	f := NewCommandFramer(10240, nil)
	b.SetBytes(int64(len(cmds) / 128))
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; done += 128 {
		in := cmds
		for len(in) > 0 {
			var st Step
			err := f.Next(in, &st)
			if err != nil || st.More || st.Refuse != RefuseNone {
				b.Fatal(st, err)
			}
			in = in[st.Forward+st.Drop:]
		}
	}
}

// BenchmarkResponseFramer scans a typical FETCH response stream in
// relay-sized reads; one op is one FETCH response with a 2 KiB body
// literal.
func BenchmarkResponseFramer(b *testing.B) {
	body := strings.Repeat("The quick brown fox jumps over the lazy dog. 0123456789 padding text..\r\n", 28)
	resp := fmt.Sprintf("* 1 FETCH (UID 17 FLAGS (\\Seen) RFC822.SIZE %d BODY[] {%d}\r\n%s)\r\n", len(body), len(body), body)
	stream := []byte(strings.Repeat(resp, 64) + "a OK FETCH completed\r\n")
	perStream := 64
	f := NewResponseFramer(&LiteralGate{})
	buf := make([]byte, 32<<10)
	b.SetBytes(int64(len(resp)))
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; done += perStream {
		src := &wiretest.RepeatReader{Data: stream, N: 1}
		carry := 0
		for {
			n, err := src.Read(buf[carry:])
			total := carry + n
			if total > 0 {
				newLen, d, _ := f.Scan(buf[:total], total == len(buf) || err != nil)
				carry = copy(buf, buf[d:newLen])
			}
			if err != nil {
				break
			}
		}
	}
}

// BenchmarkReader parses LOGIN with quoted arguments.
func BenchmarkReader(b *testing.B) {
	line := []byte(`a1 LOGIN "alice@example.com" "correct horse \"battery\" staple"` + "\r\n")
	src := &wiretest.RepeatReader{Data: line, N: b.N}
	pr := NewReader(bufio.NewReaderSize(src, 4096), 10240, func() error { return nil })
	b.SetBytes(int64(len(line)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cmd, err := pr.ReadCommand()
		if err != nil || len(cmd.Args) != 2 {
			b.Fatal(cmd, err)
		}
	}
}
