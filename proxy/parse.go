package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
)

// This file reads and parses commands before authentication, when the
// proxy is the IMAP server (RFC 9051 §2.2.1, §4, §9). Every read is
// bounded by the command size cap; the connection's pre-authentication
// deadline bounds the time.

// argKind is the kind of a parsed command argument.
type argKind int

const (
	argAtom   argKind = iota // atom, including NIL
	argString                // quoted string or literal
	argLParen                // "("
	argRParen                // ")"
)

type arg struct {
	kind argKind
	val  string
}

// command is one parsed client command.
type command struct {
	tag  string
	name string // upper-cased
	args []arg
}

// Errors the pre-authentication reader returns. Each maps to a response
// in (*conn).replyError.
var (
	errTooBig      = errors.New("proxy: command too big")
	errFatalTooBig = errors.New("proxy: oversize literal cannot be skipped")
)

// syntaxError is a malformed command; the client gets tagged BAD (or
// untagged BAD when even the tag could not be read).
type syntaxError struct {
	tag string
	msg string
}

func (e *syntaxError) Error() string { return "proxy: syntax error: " + e.msg }

// tooBigError carries the tag of an oversize command.
type tooBigError struct {
	tag   string
	fatal bool // the rest could not be skipped: close the connection
}

func (e *tooBigError) Error() string { return e.Unwrap().Error() }
func (e *tooBigError) Unwrap() error {
	if e.fatal {
		return errFatalTooBig
	}
	return errTooBig
}

// maxDiscardFactor bounds how much of an oversize non-synchronizing
// literal is read and thrown away before authentication: beyond
// max_command_size × maxDiscardFactor the connection is closed instead,
// because nobody logs in with a literal that large.
const maxDiscardFactor = 64

// tailSize is how much of the end of an overlong line is kept to see
// whether it announces a literal ("{4294967295+}\r\n" is 15 bytes).
const tailSize = 32

// preauthReader reads whole commands, literals included, from the client.
type preauthReader struct {
	br  *bufio.Reader
	max int // max_command_size
	// cont answers a synchronizing literal with "+".
	cont func() error

	line []byte // reused line buffer
	tail []byte // end of the last overlong line
}

func newPreauthReader(br *bufio.Reader, max int, cont func() error) *preauthReader {
	return &preauthReader{br: br, max: max, cont: cont, tail: make([]byte, 0, tailSize)}
}

// readLine reads one line including its LF. A line longer than limit is
// read to its end and thrown away, except its first limit bytes (returned,
// for the tag) and its last bytes (kept in r.tail, for literal
// detection); the error is then errTooBig.
func (r *preauthReader) readLine(limit int) ([]byte, error) {
	r.line = r.line[:0]
	over := false
	for {
		chunk, err := r.br.ReadSlice('\n')
		if !over && len(r.line)+len(chunk) > limit {
			over = true
			r.tail = r.tail[:0]
			r.keepTail(r.line) // the announcement may start in an earlier chunk
			if take := limit - len(r.line); take > 0 {
				r.line = append(r.line, chunk[:take]...)
			}
		}
		if over {
			r.keepTail(chunk)
		} else {
			r.line = append(r.line, chunk...)
		}
		switch {
		case err == nil && over:
			return r.line, errTooBig
		case err == nil:
			return r.line, nil
		case err == bufio.ErrBufferFull:
			continue
		case err == io.EOF && (len(r.line) > 0 || over):
			return nil, io.ErrUnexpectedEOF
		default:
			return nil, err
		}
	}
}

func (r *preauthReader) keepTail(chunk []byte) {
	if len(chunk) >= tailSize {
		r.tail = append(r.tail[:0], chunk[len(chunk)-tailSize:]...)
		return
	}
	r.tail = append(r.tail, chunk...)
	if n := len(r.tail); n > tailSize {
		copy(r.tail, r.tail[n-tailSize:])
		r.tail = r.tail[:tailSize]
	}
}

// discard reads and drops n bytes.
func (r *preauthReader) discard(n int64) error {
	_, err := io.CopyN(io.Discard, r.br, n)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// skipCommand throws away the rest of a command after an oversize part,
// given the line (or overlong line's tail) just read. It stops where the
// client stops: at the end of the command, or at a synchronizing literal
// (the client waits for our answer, which will be the tagged BAD).
func (r *preauthReader) skipCommand(last []byte, tag string) error {
	for {
		n, sync, ok, _ := literalAt(last)
		if !ok || sync {
			return &tooBigError{tag: tag}
		}
		if n > int64(r.max)*maxDiscardFactor {
			return &tooBigError{tag: tag, fatal: true}
		}
		if err := r.discard(n); err != nil {
			return err
		}
		line, err := r.readLine(r.max)
		switch {
		case err == errTooBig:
			last = r.tail
		case err != nil:
			return err
		default:
			last = line
		}
	}
}

// skipRest throws away the rest of a refused command after its line last,
// up to its end or a synchronizing literal.
func (r *preauthReader) skipRest(last []byte) error {
	err := r.skipCommand(last, "")
	var tb *tooBigError
	if errors.As(err, &tb) && !tb.fatal {
		return nil
	}
	return err
}

// readCommand reads and parses one command.
func (r *preauthReader) readCommand() (*command, error) {
	size := 0
	line, err := r.readLine(r.max)
	if err == errTooBig {
		tag, name := splitTagName(line)
		if name == nil || !validTag(tag) {
			tag = nil // answered untagged
		}
		return nil, r.skipCommand(r.tail, string(tag))
	}
	if err != nil {
		return nil, err
	}
	size += len(line)
	// A refused command may still announce non-synchronizing literals
	// that the client sends anyway: skip them, not parse them.
	syntax := func(e *syntaxError) (*command, error) {
		if err := r.skipRest(line); err != nil {
			return nil, err
		}
		return nil, e
	}
	p := &lineParser{line: trimEOL(line)}
	if len(p.line) == 0 {
		return syntax(&syntaxError{msg: "Empty command line"})
	}
	tagb := p.atom(true)
	if !validTag(tagb) {
		return syntax(&syntaxError{msg: "Invalid tag"})
	}
	cmd := &command{tag: string(tagb)}
	if !p.sp() {
		return syntax(&syntaxError{tag: cmd.tag, msg: "Missing command"})
	}
	name := p.atom(false)
	if len(name) == 0 {
		return syntax(&syntaxError{tag: cmd.tag, msg: "Missing command"})
	}
	cmd.name = strings.ToUpper(string(name))
	for {
		lit, serr := p.args(&cmd.args)
		if serr != nil {
			serr.tag = cmd.tag
			return syntax(serr)
		}
		if lit == nil {
			return cmd, nil
		}
		if size+int(lit.n) > r.max {
			return nil, r.skipCommand(line, cmd.tag)
		}
		if lit.sync {
			if err := r.cont(); err != nil {
				return nil, err
			}
		}
		data := make([]byte, lit.n)
		if _, err := io.ReadFull(r.br, data); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		size += int(lit.n)
		cmd.args = append(cmd.args, arg{kind: argString, val: string(data)})
		line, err = r.readLine(r.max - size)
		if err == errTooBig {
			return nil, r.skipCommand(r.tail, cmd.tag)
		}
		if err != nil {
			return nil, err
		}
		size += len(line)
		p = &lineParser{line: trimEOL(line)}
	}
}

// readContinuation reads one line of an AUTHENTICATE exchange (RFC 9051
// §6.2.2), without its line end.
func (r *preauthReader) readContinuation() ([]byte, error) {
	line, err := r.readLine(r.max)
	if err == errTooBig {
		return nil, &tooBigError{}
	}
	if err != nil {
		return nil, err
	}
	return trimEOL(line), nil
}

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
		if isAtomChar(c) || (astring && c == ']') || c >= 0x80 {
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
func (p *lineParser) args(out *[]arg) (*literalSpec, *syntaxError) {
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
				return nil, &syntaxError{msg: "Missing space between arguments"}
			}
			p.pos++
			if p.pos == len(p.line) {
				return nil, &syntaxError{msg: "Trailing space"}
			}
			c = p.line[p.pos]
		} else if first && c == ' ' {
			p.pos++
			if p.pos == len(p.line) {
				return nil, &syntaxError{msg: "Trailing space"}
			}
			c = p.line[p.pos]
		}
		first = false
		switch {
		case c == '(':
			*out = append(*out, arg{kind: argLParen})
			p.pos++
		case c == ')':
			*out = append(*out, arg{kind: argRParen})
			p.pos++
		case c == '"':
			s, err := p.quoted()
			if err != nil {
				return nil, err
			}
			*out = append(*out, arg{kind: argString, val: s})
		case c == '{' || c == '~':
			open := p.pos
			if c == '~' {
				open++
			}
			n, sync, ok, _ := literalAt(p.line[p.pos:])
			// A literal is "{N}" or "~{N}" (RFC 3516) and ends the line:
			// literalAt checked the end, this checks it starts here.
			if !ok || open >= len(p.line) || p.line[open] != '{' ||
				bytes.IndexByte(p.line[open+1:], '{') >= 0 {
				return nil, &syntaxError{msg: "Invalid literal"}
			}
			p.pos = len(p.line)
			return &literalSpec{n: n, sync: sync}, nil
		default:
			a := p.atom(true)
			if len(a) == 0 {
				return nil, &syntaxError{msg: "Invalid character in command"}
			}
			*out = append(*out, arg{kind: argAtom, val: string(a)})
		}
	}
	return nil, nil
}

// quoted reads a quoted string (RFC 9051 §9: only \" and \\ are escapes;
// no CR, LF or NUL inside; 8-bit UTF-8 is allowed, as IMAP4rev2 allows it).
func (p *lineParser) quoted() (string, *syntaxError) {
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
				return "", &syntaxError{msg: "Unterminated quoted string"}
			}
			c = p.line[p.pos]
			p.pos++
			if c != '"' && c != '\\' {
				return "", &syntaxError{msg: "Invalid escape in quoted string"}
			}
			b.WriteByte(c)
		case 0, '\r', '\n':
			return "", &syntaxError{msg: "Invalid character in quoted string"}
		default:
			b.WriteByte(c)
		}
	}
	return "", &syntaxError{msg: "Unterminated quoted string"}
}
