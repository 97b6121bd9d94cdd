package proxy

import (
	"bytes"
)

// respFramer follows the upstream-to-client stream just enough to know
// where responses end (RFC 9051 §2.2.2: a response ends at a CRLF that
// does not announce a literal), so the proxy can put its own lines (BYE on
// idle timeout or shutdown, BAD for a refused command) between responses
// and never inside one. It also removes COMPRESS=* from capability lists
// (RFC 4978 would blind the client-side framing) and tells the literal
// gate how the upstream answered a synchronizing literal.
//
// Why a light framer and not a blind copy: a blind io.Copy lets the kernel
// splice every byte, but then the proxy cannot tell a response boundary
// from the middle of a literal. The framer costs one pass of IndexByte over
// response lines only; literal octets, where the bulk of the bytes are,
// are skipped without looking and, when large, spliced (see
// clientWriter.copyLiteral). The performance issue measures both.
type respFramer struct {
	litLeft int64 // literal octets still to come
	midLine bool  // inside a long line that did not fit one read
	inResp  bool  // a literal was announced and the response goes on
	tail    []byte
	gate    *literalGate
}

// holdMax is the longest incomplete line kept back for the next read so
// that it is seen whole (capability lists, tags); longer lines are passed
// on in pieces.
const holdMax = 2048

func newRespFramer(gate *literalGate) *respFramer {
	return &respFramer{gate: gate, tail: make([]byte, 0, tailSize)}
}

// mid reports whether the stream is inside a response.
func (f *respFramer) mid() bool { return f.litLeft > 0 || f.midLine || f.inResp }

// scan walks p, which follows the bytes scanned before. It may shorten
// lines in place (capability filtering) and returns the new length n, how
// many bytes are handled (p[:done], to be written; p[done:n] is an
// incomplete short line to keep for the next read) and the offset after
// the last complete response in p[:done] (-1 if none).
func (f *respFramer) scan(p []byte, full bool) (n, done, boundary int) {
	n, boundary = len(p), -1
	i := 0
	for i < n {
		if f.litLeft > 0 {
			skip := int(min(int64(n-i), f.litLeft))
			i += skip
			f.litLeft -= int64(skip)
			continue
		}
		j := bytes.IndexByte(p[i:n], '\n')
		if j < 0 {
			if !f.midLine && n-i < holdMax && !full {
				return n, i, boundary // keep the short partial line
			}
			if !f.midLine {
				f.observeStart(p[i:n])
				f.tail = f.tail[:0]
			}
			f.midLine = true
			f.keepTail(p[i:n])
			return n, n, boundary
		}
		end := i + j + 1
		var lineEnd []byte
		if f.midLine {
			f.keepTail(p[i:end])
			lineEnd = f.tail
		} else {
			f.observeStart(p[i:end])
			if m := f.filterCaps(p[i:end]); m > 0 {
				copy(p[end-m:], p[end:n])
				n -= m
				end -= m
			}
			lineEnd = p[i:end]
		}
		f.midLine = false
		if lit, _, ok, _ := literalAt(lineEnd); ok {
			f.litLeft = lit // octets, then more of the same response
			f.inResp = true
		} else {
			boundary = end
			f.inResp = false
		}
		i = end
	}
	return n, n, boundary
}

// observeStart looks at the start of a response line.
func (f *respFramer) observeStart(line []byte) {
	if f.gate != nil && f.gate.waiting.Load() {
		f.gate.observe(line)
	}
}

func (f *respFramer) keepTail(p []byte) {
	if len(p) >= tailSize {
		f.tail = append(f.tail[:0], p[len(p)-tailSize:]...)
		return
	}
	f.tail = append(f.tail, p...)
	if n := len(f.tail); n > tailSize {
		copy(f.tail, f.tail[n-tailSize:])
		f.tail = f.tail[:tailSize]
	}
}

// filterCaps removes COMPRESS=... atoms from a capability list in line
// ("* CAPABILITY ...", or "[CAPABILITY ...]" in an untagged or tagged OK),
// in place, and returns how many bytes the line shrank by.
func (f *respFramer) filterCaps(line []byte) int {
	var list []byte
	code := true // the list ends at "]"
	switch {
	case hasPrefixFold(line, "* CAPABILITY "):
		list = line[len("* CAPABILITY"):]
		code = false
	case hasPrefixFold(line, "* OK [CAPABILITY "):
		list = line[len("* OK [CAPABILITY"):]
	default:
		sp := bytes.IndexByte(line, ' ')
		if sp <= 0 || line[0] == '+' || !hasPrefixFold(line[sp+1:], "OK [CAPABILITY ") {
			return 0
		}
		list = line[sp+1+len("OK [CAPABILITY"):]
	}
	limit := len(list)
	if e := bytes.IndexByte(list, ']'); code && e >= 0 {
		limit = e
	}
	removed := 0
	for {
		k := indexFold(list[:limit], " COMPRESS=")
		if k < 0 {
			return removed
		}
		e := k + 1
		for e < limit && list[e] != ' ' && list[e] != '\r' && list[e] != '\n' {
			e++
		}
		copy(list[k:], list[e:])
		list = list[:len(list)-(e-k)]
		limit -= e - k
		removed += e - k
	}
}

// hasPrefixFold is a case-insensitive ASCII prefix test.
func hasPrefixFold(b []byte, prefix string) bool {
	return len(b) >= len(prefix) && equalFoldASCII(b[:len(prefix)], prefix)
}

// indexFold finds an upper-case ASCII needle in b ignoring case.
func indexFold(b []byte, needle string) int {
	for i := 0; i+len(needle) <= len(b); i++ {
		if equalFoldASCII(b[i:i+len(needle)], needle) {
			return i
		}
	}
	return -1
}
