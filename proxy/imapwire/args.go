package imapwire

import (
	"bytes"
	"strings"
)

// This file splits one command line into arguments for Reader: atoms,
// quoted strings, parentheses, and the literal that may end the line
// (RFC 9051 §9).

// literalSpec is a literal announced at the end of a line.
type literalSpec struct {
	n    int64
	sync bool
}

// lineParser splits one line (no line end) into arguments.
type lineParser struct {
	line []byte
	pos  int
}

func (p *lineParser) sp() bool {
	if p.pos < len(p.line) && p.line[p.pos] == ' ' {
		p.pos++
		return true
	}
	return false
}

// atom reads ATOM-CHARs (with astring, also "]").
func (p *lineParser) atom(astring bool) []byte {
	start := p.pos
	for p.pos < len(p.line) {
		c := p.line[p.pos]
		if IsAtomChar(c) || (astring && c == ']') || c >= 0x80 {
			p.pos++
			continue
		}
		break
	}
	return p.line[start:p.pos]
}

// args parses the remaining arguments of the line into *out. It returns
// the literal announced at the end of the line, if any; the literal's
// octets follow the line, and the caller reads them and the line after.
func (p *lineParser) args(out *[]Arg) (*literalSpec, *SyntaxError) {
	first := true
	for p.pos < len(p.line) {
		c := p.line[p.pos]
		// Arguments are separated by one SP; none is needed around
		// parentheses.
		prev := byte(' ')
		if p.pos > 0 {
			prev = p.line[p.pos-1]
		}
		if !first && c != ')' && prev != '(' {
			if c != ' ' {
				return nil, &SyntaxError{Msg: "Missing space between arguments"}
			}
			p.pos++
			if p.pos == len(p.line) {
				return nil, &SyntaxError{Msg: "Trailing space"}
			}
			c = p.line[p.pos]
		} else if first && c == ' ' {
			p.pos++
			if p.pos == len(p.line) {
				return nil, &SyntaxError{Msg: "Trailing space"}
			}
			c = p.line[p.pos]
		}
		first = false
		switch {
		case c == '(':
			*out = append(*out, Arg{Kind: ArgLParen})
			p.pos++
		case c == ')':
			*out = append(*out, Arg{Kind: ArgRParen})
			p.pos++
		case c == '"':
			s, err := p.quoted()
			if err != nil {
				return nil, err
			}
			*out = append(*out, Arg{Kind: ArgString, Val: s})
		case c == '{' || c == '~':
			open := p.pos
			if c == '~' {
				open++
			}
			n, sync, ok, _ := LiteralAt(p.line[p.pos:])
			// A literal is "{N}" or "~{N}" (RFC 3516) and ends the line:
			// LiteralAt checked the end, this checks it starts here.
			if !ok || open >= len(p.line) || p.line[open] != '{' ||
				bytes.IndexByte(p.line[open+1:], '{') >= 0 {
				return nil, &SyntaxError{Msg: "Invalid literal"}
			}
			p.pos = len(p.line)
			return &literalSpec{n: n, sync: sync}, nil
		default:
			a := p.atom(true)
			if len(a) == 0 {
				return nil, &SyntaxError{Msg: "Invalid character in command"}
			}
			*out = append(*out, Arg{Kind: ArgAtom, Val: string(a)})
		}
	}
	return nil, nil
}

// quoted reads a quoted string (RFC 9051 §9: only \" and \\ are escapes;
// no CR, LF or NUL inside; 8-bit UTF-8 is allowed, as IMAP4rev2 allows it).
func (p *lineParser) quoted() (string, *SyntaxError) {
	p.pos++ // opening quote
	var b strings.Builder
	for p.pos < len(p.line) {
		c := p.line[p.pos]
		p.pos++
		switch c {
		case '"':
			return b.String(), nil
		case '\\':
			if p.pos == len(p.line) {
				return "", &SyntaxError{Msg: "Unterminated quoted string"}
			}
			c = p.line[p.pos]
			p.pos++
			if c != '"' && c != '\\' {
				return "", &SyntaxError{Msg: "Invalid escape in quoted string"}
			}
			b.WriteByte(c)
		case 0, '\r', '\n':
			return "", &SyntaxError{Msg: "Invalid character in quoted string"}
		default:
			b.WriteByte(c)
		}
	}
	return "", &SyntaxError{Msg: "Unterminated quoted string"}
}
