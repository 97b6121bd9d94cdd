package imapwire

import (
	"bytes"
	"strconv"
	"strings"
)

// SplitTagName returns the tag and the command name of a command's first
// line, without copying. Either may be empty on a malformed line.
func SplitTagName(line []byte) (tag, name []byte) {
	line = TrimEOL(line)
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

// TrimEOL removes the line end: CRLF, or a bare LF as most servers accept.
func TrimEOL(line []byte) []byte {
	if n := len(line); n > 0 && line[n-1] == '\n' {
		line = line[:n-1]
	}
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line
}

// ValidTag reports whether tag is a valid command tag: one or more
// ASTRING-CHARs other than "+" (RFC 9051 §9, "tag").
func ValidTag(tag []byte) bool {
	if len(tag) == 0 {
		return false
	}
	for _, c := range tag {
		if c == '+' || !IsAstringChar(c) {
			return false
		}
	}
	return true
}

// IsAtomChar reports an ATOM-CHAR: any CHAR except atom-specials (RFC
// 9051 §9).
func IsAtomChar(c byte) bool {
	if c <= 0x1f || c >= 0x7f {
		return false
	}
	switch c {
	case '(', ')', '{', ' ', '%', '*', '"', '\\', ']':
		return false
	}
	return true
}

// IsAstringChar reports an ASTRING-CHAR: ATOM-CHAR or resp-specials ("]").
func IsAstringChar(c byte) bool { return c == ']' || IsAtomChar(c) }

// QuoteOrLiteral encodes s as an IMAP string argument for a command the
// proxy sends: a quoted string when it holds only printable 7-bit text
// (RFC 9051 §4.3: quoted strings cannot carry CR, LF, NUL or 8-bit
// octets), and otherwise literal is true and the caller sends s as a
// literal (see LiteralPrefix). It never returns s unencoded, so a
// username or password cannot inject a command.
func QuoteOrLiteral(s string) (quoted string, literal bool) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f {
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

// LiteralPrefix is "{N}", or "{N+}" (RFC 7888) with plus; a synchronizing
// literal's octets wait for the server's "+".
func LiteralPrefix(n int, plus bool) string {
	if plus {
		return "{" + strconv.Itoa(n) + "+}"
	}
	return "{" + strconv.Itoa(n) + "}"
}

// EqualFoldASCII compares b with an upper-case ASCII word, ignoring the
// case of b.
func EqualFoldASCII(b []byte, upper string) bool {
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

// HasPrefixFold is a case-insensitive test for an upper-case ASCII
// prefix.
func HasPrefixFold(b []byte, prefix string) bool {
	return len(b) >= len(prefix) && EqualFoldASCII(b[:len(prefix)], prefix)
}

// IndexFold finds an upper-case ASCII needle in b ignoring case, or -1.
func IndexFold(b []byte, needle string) int {
	for i := 0; i+len(needle) <= len(b); i++ {
		if EqualFoldASCII(b[i:i+len(needle)], needle) {
			return i
		}
	}
	return -1
}

// SanitizeText makes upstream or client text safe to put in one response
// line: CR, LF and NUL become spaces, and it is cut to 200 bytes.
func SanitizeText(s string) string {
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
