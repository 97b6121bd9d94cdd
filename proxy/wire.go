package proxy

import (
	"bytes"
	"strconv"
	"strings"
)

// literalAt reports whether line, a full line including its LF, ends by
// announcing a literal: "{N}", "{N+}" (RFC 7888) or "~{N}"/"~{N+}" (RFC 3516
// literal8), then CRLF. A bare LF is accepted as the line end, as most
// servers do. ok is false for any other line, including malformed
// announcements, which then travel as ordinary text. bad is true when the
// line ends in something literal-shaped that is not a valid literal (no
// digits, too many digits, a sign): the caller answers BAD.
func literalAt(line []byte) (n int64, sync, ok, bad bool) {
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
		bad = sp > 0 && line[sp-1] == '}' && bytes.LastIndexByte(line[:sp], '{') >= 0
		return 0, false, false, bad
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

// splitTagName returns the tag and the command name of a command's first
// line, without copying. Either may be empty on a malformed line.
func splitTagName(line []byte) (tag, name []byte) {
	line = trimEOL(line)
	sp := bytes.IndexByte(line, ' ')
	if sp < 0 {
		return line, nil
	}
	tag = line[:sp]
	rest := line[sp+1:]
	if sp = bytes.IndexByte(rest, ' '); sp >= 0 {
		rest = rest[:sp]
	}
	return tag, rest
}

func trimEOL(line []byte) []byte {
	if n := len(line); n > 0 && line[n-1] == '\n' {
		line = line[:n-1]
	}
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line
}

// validTag reports whether tag is a valid command tag: one or more
// ASTRING-CHARs other than "+" (RFC 9051 §9, "tag").
func validTag(tag []byte) bool {
	if len(tag) == 0 {
		return false
	}
	for _, c := range tag {
		if c == '+' || !isAstringChar(c) {
			return false
		}
	}
	return true
}

// isAtomChar: any CHAR except atom-specials (RFC 9051 §9).
func isAtomChar(c byte) bool {
	if c <= 0x1f || c >= 0x7f {
		return false
	}
	switch c {
	case '(', ')', '{', ' ', '%', '*', '"', '\\', ']':
		return false
	}
	return true
}

// isAstringChar: ATOM-CHAR or resp-specials ("]").
func isAstringChar(c byte) bool { return c == ']' || isAtomChar(c) }

// quoteOrLiteral encodes s as an IMAP string argument for a command we
// send upstream: a quoted string when it holds only printable 7-bit text
// (RFC 9051 §4.3: quoted strings cannot carry CR, LF, NUL or 8-bit
// octets), and a literal otherwise. It never pastes s unencoded, so a
// username or password cannot inject a command. literalPlus selects
// {N+} (RFC 7888); otherwise the literal is synchronizing and the caller
// must wait for "+" after the returned prefix.
func quoteOrLiteral(s string) (quoted string, literal bool) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f {
			return "", true
		}
	}
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
	return b.String(), false
}

// literalPrefix is "{N}" or "{N+}".
func literalPrefix(n int, plus bool) string {
	if plus {
		return "{" + strconv.Itoa(n) + "+}"
	}
	return "{" + strconv.Itoa(n) + "}"
}

// equalFoldASCII compares b with an upper-case ASCII word.
func equalFoldASCII(b []byte, upper string) bool {
	if len(b) != len(upper) {
		return false
	}
	for i := range b {
		c := b[i]
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		if c != upper[i] {
			return false
		}
	}
	return true
}

// sanitizeText makes upstream or client text safe to put in one response
// line: CR, LF and NUL become spaces, and it is cut to a sane length.
func sanitizeText(s string) string {
	const max = 200
	if len(s) > max {
		s = s[:max]
	}
	return strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' || r == 0 {
			return ' '
		}
		return r
	}, s)
}
