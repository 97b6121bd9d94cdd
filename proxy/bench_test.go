package proxy

import (
	"bufio"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/imapguard/imapguard/limits"
)

// repeatReader serves data n times, in reads of at most chunk bytes, then
// io.EOF.
type repeatReader struct {
	data  []byte
	n     int
	off   int
	chunk int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, io.EOF
	}
	if r.chunk > 0 && len(p) > r.chunk {
		p = p[:r.chunk]
	}
	total := 0
	for len(p) > 0 && r.n > 0 {
		k := copy(p, r.data[r.off:])
		p = p[k:]
		total += k
		r.off += k
		if r.off == len(r.data) {
			r.off = 0
			r.n--
		}
	}
	return total, nil
}

// BenchmarkCmdFramer measures the steady state of the client-to-upstream
// framer: one op is one command line (alternately NOOP and a UID FETCH)
// read from the client and written to the upstream.
func BenchmarkCmdFramer(b *testing.B) {
	for _, bc := range []struct {
		name  string
		cmds  string
		chunk int // client read size: 0 = as much as fits
	}{
		{"pipelined", "a1 NOOP\r\na2 UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)])\r\n", 0},
		{"one-per-read", "a1 NOOP\r\n", 9},
		{"search-literal", "a3 SEARCH TEXT {5+}\r\nhello\r\n", 0},
	} {
		b.Run(bc.name, func(b *testing.B) {
			perRep := strings.Count(bc.cmds, "\r\n")
			if strings.Contains(bc.cmds, "{") {
				perRep = 1
			}
			reps := b.N/perRep + 1
			b.SetBytes(int64(len(bc.cmds) / perRep))
			src := &repeatReader{data: []byte(bc.cmds), n: reps, chunk: bc.chunk}
			f := newCmdFramer(src, io.Discard, limits.DefaultMaxCommandSize, nil)
			replies := 0
			f.reply = func(string) { replies++ }
			b.ReportAllocs()
			b.ResetTimer()
			if err := f.run(); err != io.EOF {
				b.Fatal(err)
			}
			if replies != 0 {
				b.Fatalf("%d replies", replies)
			}
		})
	}
}

// BenchmarkRespFramer scans a typical FETCH response stream in relay-sized
// reads; one op is one FETCH response with a 2 KiB body literal.
func BenchmarkRespFramer(b *testing.B) {
	body := strings.Repeat("The quick brown fox jumps over the lazy dog. 0123456789 padding text..\r\n", 28)
	resp := fmt.Sprintf("* 1 FETCH (UID 17 FLAGS (\\Seen) RFC822.SIZE %d BODY[] {%d}\r\n%s)\r\n", len(body), len(body), body)
	stream := []byte(strings.Repeat(resp, 64) + "a OK FETCH completed\r\n")
	perStream := 64
	f := newRespFramer(&literalGate{})
	buf := make([]byte, relayBufSize)
	b.SetBytes(int64(len(resp)))
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; done += perStream {
		src := &repeatReader{data: stream, n: 1}
		carry := 0
		for {
			n, err := src.Read(buf[carry:])
			total := carry + n
			if total > 0 {
				newLen, d, _ := f.scan(buf[:total], total == len(buf) || err != nil)
				carry = copy(buf, buf[d:newLen])
			}
			if err != nil {
				break
			}
		}
	}
}

// BenchmarkPreauthParse parses LOGIN with quoted arguments.
func BenchmarkPreauthParse(b *testing.B) {
	line := []byte(`a1 LOGIN "alice@example.com" "correct horse \"battery\" staple"` + "\r\n")
	src := &repeatReader{data: line, n: b.N}
	pr := newPreauthReader(bufio.NewReaderSize(src, 4096), limits.DefaultMaxCommandSize, func() error { return nil })
	b.SetBytes(int64(len(line)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cmd, err := pr.readCommand()
		if err != nil || len(cmd.args) != 2 {
			b.Fatal(cmd, err)
		}
	}
}
