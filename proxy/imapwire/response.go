package imapwire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
)

// ResponseFramer follows the upstream-to-client stream just enough to
// know where responses end (RFC 9051 §2.2.2: a response ends at a CRLF
// that does not announce a literal), so the proxy can put its own lines
// (BYE on idle timeout or shutdown, BAD for a refused command) between
// responses and never inside one. It also removes COMPRESS=* from
// capability lists (RFC 4978 would blind the client-side framing), tells
// the gate of the start of every response (see LiteralGate), and drops
// the continuation requests the proxy made itself.
//
// Why a light framer and not a blind copy: a blind io.Copy lets the kernel
// splice every byte, but then the proxy cannot tell a response boundary
// from the middle of a literal. The framer costs one pass of IndexByte over
// response lines only; literal octets, where the bulk of the bytes are,
// are skipped without looking and, when large, spliced by the caller
// (see LiteralLeft and Skip).
type ResponseFramer struct {
	litLeft  int64 // literal octets still to come
	midLine  bool  // inside a long line that did not fit one read
	inResp   bool  // a literal was announced and the response goes on
	dropping bool  // the long line being read is dropped
	tail     Tail
	gate     *LiteralGate
}

// HoldMax is the longest incomplete line Scan keeps back for the next
// read so that it is seen whole (capability lists, tags); longer lines
// are passed on in pieces. A caller's buffer must be larger.
const HoldMax = 2048

// NewResponseFramer returns a framer that tells gate (nil: none) of the
// upstream's responses.
func NewResponseFramer(gate *LiteralGate) *ResponseFramer {
	return &ResponseFramer{gate: gate}
}

// Mid reports whether the stream the client sees is inside a response
// (a line being dropped is not part of it).
func (f *ResponseFramer) Mid() bool { return f.litLeft > 0 || (f.midLine && !f.dropping) || f.inResp }

// LiteralLeft is how many literal octets come next: the caller may copy
// them without Scan (splice) and report them with Skip.
func (f *ResponseFramer) LiteralLeft() int64 { return f.litLeft }

// Skip notes n literal octets (at most LiteralLeft) copied without Scan.
func (f *ResponseFramer) Skip(n int64) { f.litLeft -= n }

// Scan walks p, which follows the bytes scanned before; full says the
// caller cannot keep anything back (its buffer is full or the stream
// ended). It may shorten p in place (capability filtering, dropped
// lines) and returns the new length n, how many bytes are handled
// (p[:done], to be written; p[done:n] is an incomplete short line to
// keep for the next read) and the offset after the last complete
// response in p[:done] (-1 if none).
func (f *ResponseFramer) Scan(p []byte, full bool) (n, done, boundary int) {
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
			if !f.midLine && n-i < HoldMax && !full {
				return n, i, boundary // keep the short partial line
			}
			if !f.midLine {
				f.tail.Reset()
				f.dropping = !f.inResp && f.started(p[i:n])
			}
			f.midLine = true
			f.tail.Keep(p[i:n])
			if f.dropping {
				n = i
			}
			return n, n, boundary
		}
		end := i + j + 1
		var lineEnd []byte
		switch {
		case f.midLine && f.dropping:
			n = cut(p, i, end, n)
			f.midLine, f.dropping, f.inResp = false, false, false
			boundary = i
			continue
		case f.midLine:
			f.tail.Keep(p[i:end])
			lineEnd = f.tail.Bytes()
		case !f.inResp && f.started(p[i:end]):
			// A continuation request the proxy made itself: the client
			// did not ask for it.
			n = cut(p, i, end, n)
			boundary = i
			continue
		default:
			if m := FilterCaps(p[i:end]); m > 0 {
				copy(p[end-m:], p[end:n])
				n -= m
				end -= m
			}
			lineEnd = p[i:end]
		}
		f.midLine = false
		if lit, _, ok, _ := LiteralAt(lineEnd); ok {
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

// cut removes p[i:end] from p[:n] and returns the new length.
func cut(p []byte, i, end, n int) int {
	copy(p[i:], p[end:n])
	return n - (end - i)
}

// started tells the gate of the start of a response and reports whether
// the line must be dropped.
func (f *ResponseFramer) started(line []byte) (drop bool) {
	return f.gate != nil && f.gate.Response(line)
}

// FilterCaps removes COMPRESS=... atoms from a capability list in line
// ("* CAPABILITY ...", or "[CAPABILITY ...]" in an untagged or tagged OK),
// in place, and returns how many bytes the line shrank by.
func FilterCaps(line []byte) int {
	var list []byte
	code := true // the list ends at "]"
	switch {
	case HasPrefixFold(line, "* CAPABILITY "):
		list = line[len("* CAPABILITY"):]
		code = false
	case HasPrefixFold(line, "* OK [CAPABILITY "):
		list = line[len("* OK [CAPABILITY"):]
	default:
		sp := bytes.IndexByte(line, ' ')
		if sp <= 0 || line[0] == '+' || !HasPrefixFold(line[sp+1:], "OK [CAPABILITY ") {
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
		k := IndexFold(list[:limit], " COMPRESS=")
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

// ResponseReader reads the upstream's responses during login, when the
// proxy is the client: each Read returns one whole response's first
// line, with any literal octets in it read and thrown away.
type ResponseReader struct {
	br         *bufio.Reader
	maxLine    int
	maxLiteral int64
	line       []byte
}

// NewResponseReader reads from br lines of at most maxLine bytes and
// literals of at most maxLiteral.
func NewResponseReader(br *bufio.Reader, maxLine int, maxLiteral int64) *ResponseReader {
	return &ResponseReader{br: br, maxLine: maxLine, maxLiteral: maxLiteral}
}

// Read reads one response and returns its first line, without CRLF; it
// is valid until the next Read.
func (r *ResponseReader) Read() ([]byte, error) {
	r.line = r.line[:0]
	first := -1
	for {
		chunk, err := r.br.ReadSlice('\n')
		if len(r.line)+len(chunk) > r.maxLine {
			return nil, errors.New("response line too long")
		}
		r.line = append(r.line, chunk...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if first < 0 {
			first = len(r.line)
		}
		n, _, ok, _ := LiteralAt(r.line)
		if !ok {
			break
		}
		if n > r.maxLiteral {
			return nil, errors.New("response literal too large")
		}
		if _, err := io.CopyN(io.Discard, r.br, n); err != nil {
			return nil, err
		}
	}
	return TrimEOL(r.line[:first]), nil
}

// ResponseCode splits " [CODE args] text", the rest of a status response
// after OK, NO or BAD, into CODE (upper case) and text.
func ResponseCode(rest []byte) (code, text string) {
	rest = bytes.TrimLeft(rest, " ")
	if len(rest) == 0 || rest[0] != '[' {
		return "", string(rest)
	}
	end := bytes.IndexByte(rest, ']')
	if end < 0 {
		return "", string(rest)
	}
	inner := rest[1:end]
	if sp := bytes.IndexByte(inner, ' '); sp >= 0 {
		inner = inner[:sp]
	}
	return strings.ToUpper(string(inner)), strings.TrimLeft(string(rest[end+1:]), " ")
}

// CapsFromCode returns the list in a "[CAPABILITY ...]" code of a status
// response line, or nil.
func CapsFromCode(line []byte) []string {
	i := IndexFold(line, "[CAPABILITY ")
	if i < 0 {
		return nil
	}
	rest := line[i+len("[CAPABILITY "):]
	end := bytes.IndexByte(rest, ']')
	if end < 0 {
		return nil
	}
	return strings.Fields(string(rest[:end]))
}
