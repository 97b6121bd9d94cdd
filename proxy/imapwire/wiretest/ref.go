package wiretest

import (
	"bytes"
	"strconv"
	"strings"
)

// Reference framings, written independently of the wire package, for
// the tests to check it against.

// RefLiteral reports the literal a line (with its line end) announces,
// written independently of imapwire.LiteralAt: "{" 1*DIGIT ["+"] "}" with
// an optional "~" before, then CRLF or LF. The digit count is free; the
// value must fit 32 bits (RFC 9051 number).
func RefLiteral(line []byte) (n int64, sync, ok bool) {
	s := string(line)
	switch {
	case strings.HasSuffix(s, "\r\n"):
		s = s[:len(s)-2]
	case strings.HasSuffix(s, "\n"):
		s = s[:len(s)-1]
	}
	if !strings.HasSuffix(s, "}") {
		return 0, false, false
	}
	open := strings.LastIndex(s, "{")
	if open < 0 {
		return 0, false, false
	}
	d := s[open+1 : len(s)-1]
	sync = !strings.HasSuffix(d, "+")
	d = strings.TrimSuffix(d, "+")
	if d == "" || strings.Trim(d, "0123456789") != "" {
		return 0, false, false
	}
	v, err := strconv.ParseUint(strings.TrimLeft(d, "0")+"0", 10, 64)
	if err != nil || v/10 > 4294967295 {
		return 0, false, false
	}
	return int64(v / 10), sync, true
}

// RefCommand is one command as the upstream frames it.
type RefCommand struct {
	Size     int // octets that count toward max_command_size
	Complete bool
}

// RefCommands frames a client-to-upstream stream the way an upstream does
// (lines, literals, APPEND message literals exempt), independently of the
// framer.
func RefCommands(s []byte) []RefCommand {
	var out []RefCommand
	for len(s) > 0 {
		var c RefCommand
		first := true
		isAppend, mbox := false, false
		for {
			j := bytes.IndexByte(s, '\n')
			if j < 0 {
				c.Size += len(s)
				s = nil
				break
			}
			line := s[:j+1]
			s = s[j+1:]
			c.Size += len(line)
			if first {
				f := strings.SplitN(string(line), " ", 3)
				if len(f) >= 2 && strings.EqualFold(strings.TrimRight(f[1], "\r\n"), "APPEND") {
					isAppend = true
					rest := ""
					if len(f) == 3 {
						rest = strings.TrimLeft(f[2], " ")
					}
					mbox = strings.HasPrefix(rest, "{") || strings.HasPrefix(rest, "~{")
				}
			}
			n, _, ok := RefLiteral(line)
			if !ok {
				c.Complete = true
				break
			}
			if !isAppend || (first && mbox) {
				c.Size += int(n)
			}
			first = false
			if n > int64(len(s)) {
				s = nil
				break
			}
			s = s[n:]
		}
		out = append(out, c)
	}
	return out
}

// RefBoundaries returns the offsets in a response stream just after each
// complete response.
func RefBoundaries(s []byte) map[int]bool {
	b := map[int]bool{}
	for i := 0; i < len(s); {
		j := bytes.IndexByte(s[i:], '\n')
		if j < 0 {
			break
		}
		end := i + j + 1
		if n, _, ok := RefLiteral(s[i:end]); ok {
			i = end + int(n)
			if n > int64(len(s)) {
				break
			}
			continue
		}
		b[end] = true
		i = end
	}
	return b
}

// IsSubsequence reports whether sub is s with some octets left out.
func IsSubsequence(sub, s []byte) bool {
	for _, c := range sub {
		i := bytes.IndexByte(s, c)
		if i < 0 {
			return false
		}
		s = s[i+1:]
	}
	return true
}
