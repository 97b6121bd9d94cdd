package imapwire

import "bytes"

// This file holds the command framer's checks of a line it is about to
// pass on: that the upstream will read it as the framer does (see the
// rules at the top of framer.go). A line that fails one is refused, so
// the upstream never sees it.

// checkLine returns why the proxy must refuse line, the next line of the
// command being framed (whole, with its line end), or RefuseNone. open
// is where the literal the line announces at its end starts ("{" or
// "~{"), or -1.
func (f *CommandFramer) checkLine(line []byte, open int) RefusalKind {
	body := TrimEOL(line)
	if bytes.IndexByte(body, '\r') >= 0 {
		// A CR that does not end the line: Dovecot ends a tag or a
		// command name there ("a IDLE\rx" is IDLE to it), and what it does
		// elsewhere is not ours to guess.
		return RefuseBareCR
	}
	end := len(body)
	if open >= 0 {
		end = open
	}
	if open < 0 && openQuote(body, end) {
		// A quoted string that the line does not close: Dovecot refuses
		// it, and where it goes on reading afterwards depends on how the
		// bytes arrived (fed a byte at a time, it read the rest of such an
		// APPEND line as a command of its own: the differential test's
		// seed 1796232744380807773), so its commands could not be
		// counted. (A literal inside one is an invalid literal, below.)
		return RefuseOpenQuote
	}
	if strayBrace(body, end) {
		// "{" starts a literal wherever an argument can start: a server
		// that reads one in the middle of a line asks for its octets
		// ("+") before it finds that no CRLF follows, and the framer
		// would take that "+" for the one it waits for.
		return RefuseInvalidLiteral
	}
	if open < 0 && !f.idleCmd {
		return RefuseNone
	}
	// The line waits for the upstream's "+" or tagged answer: the
	// upstream must answer it with the tag the framer waits for.
	if !f.tagOK || bytes.IndexByte(f.tag, ']') >= 0 {
		// RFC 9051 allows "]" in a tag; Dovecot answers it with an
		// untagged BAD.
		return RefuseTag
	}
	if open < 0 {
		return RefuseNone
	}
	if f.noArgs || !literalPlace(body, open, f.argsFrom) {
		// The upstream would not read a literal here.
		return RefuseInvalidLiteral
	}
	if f.appendCmd {
		return f.checkAppend(body, open)
	}
	return RefuseNone
}

// openQuote reports whether p[:end] ends inside a quoted string.
func openQuote(p []byte, end int) bool {
	p = p[:end]
	if bytes.IndexByte(p, '"') < 0 {
		return false
	}
	_, open := scanQuotes(p)
	return open
}

// scanQuotes walks p's quoted strings: it reports whether a "{" stands
// outside them, and whether p ends inside one.
func scanQuotes(p []byte) (brace, open bool) {
	quoted := false
	for j := 0; j < len(p); j++ {
		switch c := p[j]; {
		case quoted && c == '\\':
			j++
		case c == '"':
			quoted = !quoted
		case c == '{' && !quoted:
			brace = true
		}
	}
	return brace, quoted
}

// strayBrace reports whether p[:end] holds a "{" outside a quoted string.
// A "{" is never part of an atom (RFC 9051 §9, atom-specials).
func strayBrace(p []byte, end int) bool {
	p = p[:end]
	i := bytes.IndexByte(p, '{')
	if i < 0 {
		return false
	}
	if q := bytes.IndexByte(p[:i], '"'); q < 0 {
		return true
	}
	brace, _ := scanQuotes(p)
	return brace
}

// literalPlace reports whether a literal that starts at open (its "{"
// or "~") stands where an argument can start: after SP or "(", outside a
// quoted string, at or after argsFrom.
func literalPlace(p []byte, open, argsFrom int) bool {
	if open < argsFrom || open == 0 || (p[open-1] != ' ' && p[open-1] != '(') {
		return false
	}
	quoted := false
	for i := 0; i < open; i++ {
		switch c := p[i]; {
		case quoted && c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		}
	}
	return !quoted
}

// literalOpen returns where the literal announced at the end of line
// starts: its "{", or the "~" before it.
func literalOpen(line []byte) int {
	open := bytes.LastIndexByte(TrimEOL(line), '{')
	if open > 0 && line[open-1] == '~' {
		open--
	}
	return open
}
