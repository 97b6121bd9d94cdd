package proxy

import (
	"io"
	"strings"
	"testing"

	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy/imapwire"
	"github.com/imapguard/imapguard/proxy/imapwire/wiretest"
)

// BenchmarkCommandCopier measures the steady state of the client-to-
// upstream copy loop and its framer: one op is one command line
// (alternately NOOP and a UID FETCH) read from the client and written to
// the upstream.
func BenchmarkCommandCopier(b *testing.B) {
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
			src := &wiretest.RepeatReader{Data: []byte(bc.cmds), N: reps, Chunk: bc.chunk}
			c := newCommandCopier(src, io.Discard, imapwire.NewCommandFramer(limits.DefaultMaxCommandSize, nil), nil)
			replies := 0
			c.refuse = func(imapwire.Refusal) { replies++ }
			b.ReportAllocs()
			b.ResetTimer()
			if err := c.run(); err != io.EOF {
				b.Fatal(err)
			}
			if replies != 0 {
				b.Fatalf("%d replies", replies)
			}
		})
	}
}
