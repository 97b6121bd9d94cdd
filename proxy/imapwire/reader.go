package imapwire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
)

// This file reads and parses commands before authentication, when the
// proxy is the IMAP server (RFC 9051 §2.2.1, §4, §9). Every read is
// bounded by the command size cap; the caller's deadline bounds the time.

// ArgKind is the kind of a parsed command argument.
type ArgKind int

const (
	ArgAtom   ArgKind = iota // atom, including NIL
	ArgString                // quoted string or literal
	ArgLParen                // "("
	ArgRParen                // ")"
)

// Arg is one argument of a command.
type Arg struct {
	Kind ArgKind
	Val  string
}

// IsAstring reports whether a is an astring: an atom or a string.
func (a Arg) IsAstring() bool { return a.Kind == ArgAtom || a.Kind == ArgString }

// Command is one parsed client command.
type Command struct {
	Tag  string
	Name string // upper-cased
	Args []Arg
}

// ErrTooBig and ErrFatalTooBig are what a TooBigError unwraps to.
var (
	ErrTooBig      = errors.New("imapwire: command too big")
	ErrFatalTooBig = errors.New("imapwire: oversize literal cannot be skipped")
)

// SyntaxError is a malformed command; Tag is empty when even the tag
// could not be read.
type SyntaxError struct {
	Tag string
	Msg string
}

func (e *SyntaxError) Error() string { return "imapwire: syntax error: " + e.Msg }

// TooBigError is a command over the size cap, with its tag (empty when
// it could not be read). With Fatal, the rest of it could not be skipped
// and the connection cannot go on.
type TooBigError struct {
	Tag   string
	Fatal bool
}

func (e *TooBigError) Error() string { return e.Unwrap().Error() }

func (e *TooBigError) Unwrap() error {
	if e.Fatal {
		return ErrFatalTooBig
	}
	return ErrTooBig
}

// MaxDiscardFactor bounds how much of an oversize non-synchronizing
// literal a Reader reads and throws away: beyond max × MaxDiscardFactor
// it gives up (a fatal TooBigError), because nobody logs in with a
// literal that large.
const MaxDiscardFactor = 64

// Reader reads whole commands, literals included, from a client.
type Reader struct {
	br  *bufio.Reader
	max int // max_command_size
	// cont answers a synchronizing literal with "+".
	cont func() error

	line []byte // reused line buffer
	tail Tail   // end of the last overlong line
}

// NewReader returns a Reader of commands from br of at most max octets,
// lines and literals together. cont is called to ask the client for a
// synchronizing literal's octets ("+").
func NewReader(br *bufio.Reader, max int, cont func() error) *Reader {
	return &Reader{br: br, max: max, cont: cont}
}

// Buffered returns the bytes read from the connection but not yet
// parsed (pipelined behind the last command).
func (r *Reader) Buffered() []byte {
	b, _ := r.br.Peek(r.br.Buffered())
	return b
}

// Discard throws away what is buffered (plaintext pipelined behind
// STARTTLS) and returns how many bytes that was.
func (r *Reader) Discard() int {
	n, _ := r.br.Discard(r.br.Buffered())
	return n
}

// readLine reads one line including its LF. A line longer than limit is
// read to its end and thrown away, except its first limit bytes (returned,
// for the tag) and its last bytes (kept in r.tail, for literal
// detection); the error is then ErrTooBig.
func (r *Reader) readLine(limit int) ([]byte, error) {
	r.line = r.line[:0]
	over := false
	for {
		chunk, err := r.br.ReadSlice('\n')
		if !over && len(r.line)+len(chunk) > limit {
			over = true
			r.tail.Reset()
			r.tail.Keep(r.line) // the announcement may start in an earlier chunk
			if take := limit - len(r.line); take > 0 {
				r.line = append(r.line, chunk[:take]...)
			}
		}
		if over {
			r.tail.Keep(chunk)
		} else {
			r.line = append(r.line, chunk...)
		}
		switch {
		case err == nil && over:
			return r.line, ErrTooBig
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

// discard reads and drops n bytes.
func (r *Reader) discard(n int64) error {
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
func (r *Reader) skipCommand(last []byte, tag string) error {
	for {
		n, sync, ok, _ := LiteralAt(last)
		if !ok || sync {
			return &TooBigError{Tag: tag}
		}
		if n > int64(r.max)*MaxDiscardFactor {
			return &TooBigError{Tag: tag, Fatal: true}
		}
		if err := r.discard(n); err != nil {
			return err
		}
		line, err := r.readLine(r.max)
		switch {
		case err == ErrTooBig:
			last = r.tail.Bytes()
		case err != nil:
			return err
		default:
			last = line
		}
	}
}

// skipRest throws away the rest of a refused command after its line last,
// up to its end or a synchronizing literal.
func (r *Reader) skipRest(last []byte) error {
	err := r.skipCommand(last, "")
	var tb *TooBigError
	if errors.As(err, &tb) && !tb.Fatal {
		return nil
	}
	return err
}

// ReadCommand reads and parses one command. Its errors are a
// *SyntaxError or a *TooBigError for a command the client may follow
// with another (the bad one has been read to its end), or the
// connection's read error.
func (r *Reader) ReadCommand() (*Command, error) {
	size := 0
	line, err := r.readLine(r.max)
	if err == ErrTooBig {
		tag, name := SplitTagName(line)
		if name == nil || !ValidTag(tag) {
			tag = nil // answered untagged
		}
		return nil, r.skipCommand(r.tail.Bytes(), string(tag))
	}
	if err != nil {
		return nil, err
	}
	size += len(line)
	// A refused command may still announce non-synchronizing literals
	// that the client sends anyway: skip them, not parse them.
	syntax := func(e *SyntaxError) (*Command, error) {
		if err := r.skipRest(line); err != nil {
			return nil, err
		}
		return nil, e
	}
	p := &lineParser{line: TrimEOL(line)}
	if len(p.line) == 0 {
		return syntax(&SyntaxError{Msg: "Empty command line"})
	}
	tagb := p.atom(true)
	if !ValidTag(tagb) {
		return syntax(&SyntaxError{Msg: "Invalid tag"})
	}
	cmd := &Command{Tag: string(tagb)}
	if !p.sp() {
		return syntax(&SyntaxError{Tag: cmd.Tag, Msg: "Missing command"})
	}
	name := p.atom(false)
	if len(name) == 0 {
		return syntax(&SyntaxError{Tag: cmd.Tag, Msg: "Missing command"})
	}
	cmd.Name = strings.ToUpper(string(name))
	for {
		lit, serr := p.args(&cmd.Args)
		if serr != nil {
			serr.Tag = cmd.Tag
			return syntax(serr)
		}
		if lit == nil {
			return cmd, nil
		}
		if size+int(lit.n) > r.max {
			return nil, r.skipCommand(line, cmd.Tag)
		}
		if lit.sync {
			if err := r.cont(); err != nil {
				return nil, err
			}
		}
		// The octets are kept as they arrive, not as announced: a client
		// that announces a large literal and sends little holds little.
		// (bytes.Buffer reads into what it has and grows by doubling;
		// io.CopyN would lend a strings.Builder a 32 KiB buffer.)
		var data bytes.Buffer
		if _, err := io.CopyN(&data, r.br, lit.n); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		size += int(lit.n)
		cmd.Args = append(cmd.Args, Arg{Kind: ArgString, Val: data.String()})
		line, err = r.readLine(r.max - size)
		if err == ErrTooBig {
			return nil, r.skipCommand(r.tail.Bytes(), cmd.Tag)
		}
		if err != nil {
			return nil, err
		}
		size += len(line)
		p = &lineParser{line: TrimEOL(line)}
	}
}

// ReadContinuation reads one line of an AUTHENTICATE exchange (RFC 9051
// §6.2.2), without its line end. A line over the cap is a *TooBigError
// without a tag (the caller knows the command's).
func (r *Reader) ReadContinuation() ([]byte, error) {
	line, err := r.readLine(r.max)
	if err == ErrTooBig {
		return nil, &TooBigError{}
	}
	if err != nil {
		return nil, err
	}
	return TrimEOL(line), nil
}
