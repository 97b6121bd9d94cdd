package imapwire

import "bytes"

// LiteralAt reports whether line, a full line including its LF, ends by
// announcing a literal: "{N}", "{N+}" (RFC 7888) or "~{N}"/"~{N+}" (RFC
// 3516 literal8), then CRLF. A bare LF is accepted as the line end, as
// most servers do. ok is false for any other line. malformed is true when
// the line ends in something literal-shaped that is not a valid literal
// (no digits, too many digits, a sign, a space after the brace): the
// caller must refuse such a line, because a server might still read a
// literal there.
func LiteralAt(line []byte) (n int64, sync, ok, malformed bool) {
	end := len(line)
	if end > 0 && line[end-1] == '\n' {
		end--
	}
	if end > 0 && line[end-1] == '\r' {
		end--
	}
	if end > 0 && line[end-1] == ' ' {
		// "{N} " CRLF: not a literal, but some servers (go-imap) read
		// one there; the caller must not guess.
		sp := end
		for sp > 0 && line[sp-1] == ' ' {
			sp--
		}
		malformed = sp > 0 && line[sp-1] == '}' && bytes.LastIndexByte(line[:sp], '{') >= 0
		return 0, false, false, malformed
	}
	if end == 0 || line[end-1] != '}' {
		return 0, false, false, false
	}
	end--
	open := bytes.LastIndexByte(line[:end], '{')
	if open < 0 {
		return 0, false, false, false
	}
	digits := line[open+1 : end]
	sync = true
	if len(digits) > 0 && digits[len(digits)-1] == '+' {
		sync = false
		digits = digits[:len(digits)-1]
	}
	if len(digits) == 0 {
		return 0, false, false, true
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false, false, true
		}
		// RFC 9051 number = 1*DIGIT: leading zeros are allowed, the
		// value is what must fit 32 bits.
		if n = n*10 + int64(c-'0'); n > 4294967295 {
			return 0, false, false, true
		}
	}
	return n, sync, true, false
}

// TailSize is how much of the end of an overlong line Tail keeps: enough
// to see whether it announces a literal ("~{4294967295+}\r\n" is 16
// bytes).
const TailSize = 32

// Tail keeps the last TailSize bytes of a line that is read in pieces and
// too long to hold, so that its end can be examined with LiteralAt. The
// zero value is ready to use.
type Tail struct {
	buf [TailSize]byte
	n   int
}

// Reset forgets what was kept.
func (t *Tail) Reset() { t.n = 0 }

// Keep appends p, the next piece of the line.
func (t *Tail) Keep(p []byte) {
	if len(p) >= TailSize {
		t.n = copy(t.buf[:], p[len(p)-TailSize:])
		return
	}
	if t.n+len(p) > TailSize {
		drop := t.n + len(p) - TailSize
		copy(t.buf[:], t.buf[drop:t.n])
		t.n -= drop
	}
	t.n += copy(t.buf[t.n:], p)
}

// Bytes returns the end of the line kept so far; it is valid until the
// next Keep or Reset.
func (t *Tail) Bytes() []byte { return t.buf[:t.n] }
