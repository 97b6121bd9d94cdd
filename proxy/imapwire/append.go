package imapwire

// This file checks APPEND's arguments up to each literal it announces
// (RFC 9051 §6.3.12; RFC 3502 MULTIAPPEND; RFC 4469 CATENATE; RFC 3516
// literal8 for the message). A server reads APPEND's arguments one
// message at a time and checks them only when it reaches the message's
// literal, and what it then does with a literal it will not take is its
// own: Dovecot 2.3, given arguments it cannot parse ("a APPEND INBOX x
// {3}"), answers BAD without a "+" and then reads the literal's octets
// anyway, where the framer, which never saw a "+", would wait for one
// forever or take them for a command. So the framer passes a literal on
// only after arguments it knows the upstream parses as it does, and
// refuses the rest. A flag or date that is well formed but wrong
// ("\Foo", "31-Feb-2020 ...") is the upstream's to refuse: it answers
// with a tagged BAD or NO, or a "+" and then the BAD, both of which the
// framer follows.

// appendState is where APPEND's arguments stand at the start of a line.
type appendState uint8

const (
	appendMailbox appendState = iota // the first line: the mailbox next
	appendMessage                    // after the mailbox: SP, then a message
	appendNext                       // after a message: the end, or SP and the next message
	appendCatPart                    // inside CATENATE's list: SP and a part, or ")"
)

// checkAppend checks the line body (without its line end) of an APPEND
// that announces a literal at open, and notes what the literal is.
func (f *CommandFramer) checkAppend(body []byte, open int) RefusalKind {
	a := appendArgs{p: body, open: open}
	switch f.appendAt {
	case appendMailbox:
		a.i = f.argsFrom
		if a.atLiteral() {
			// "APPEND {N}": the mailbox name is a literal (it counts).
			if body[open] == '~' {
				return RefuseAppendArgs
			}
			f.appendAt, f.litMessage = appendMessage, false
			return RefuseNone
		}
		if !a.astring() || !a.sp() {
			return RefuseAppendArgs
		}
	case appendMessage, appendNext:
		if !a.sp() {
			return RefuseAppendArgs
		}
	case appendCatPart:
		return f.catParts(&a, false)
	}
	return f.message(&a)
}

// message checks a message's arguments: [flag-list SP] [date-time SP]
// and then its literal, or CATENATE and its list.
func (f *CommandFramer) message(a *appendArgs) RefusalKind {
	if a.peek('(') && (!a.flags() || !a.sp()) {
		return RefuseAppendArgs
	}
	if a.peek('"') && (!a.quoted() || !a.sp()) {
		return RefuseAppendArgs
	}
	switch {
	case a.atLiteral():
		f.appendAt, f.litMessage = appendNext, true
		return RefuseNone
	case a.word("CATENATE") && a.sp() && a.char('('):
		return f.catParts(a, true)
	case a.word("UTF8"):
		// RFC 6855's "UTF8 (~{N})": Dovecot 2.3 answers BAD and reads
		// the literal all the same.
		return RefuseAppendUTF8
	}
	return RefuseAppendArgs
}

// catParts checks CATENATE's parts (RFC 4469: "TEXT" SP literal, or
// "URL" SP astring) up to the literal at the end of the line; first says
// a part must come next (the list has just opened).
func (f *CommandFramer) catParts(a *appendArgs, first bool) RefusalKind {
	for {
		if !first {
			if a.char(')') {
				// The message ends; the literal is the next message's.
				if !a.sp() {
					return RefuseAppendArgs
				}
				return f.message(a)
			}
			if !a.sp() {
				return RefuseAppendArgs
			}
		}
		first = false
		switch {
		case a.word("TEXT") && a.sp():
			if !a.atLiteral() || a.p[a.open] == '~' {
				return RefuseAppendArgs
			}
			f.appendAt, f.litMessage = appendCatPart, true
			return RefuseNone
		case a.word("URL") && a.sp():
			if a.atLiteral() {
				if a.p[a.open] == '~' {
					return RefuseAppendArgs
				}
				f.appendAt, f.litMessage = appendCatPart, false
				return RefuseNone
			}
			if !a.astring() {
				return RefuseAppendArgs
			}
		default:
			return RefuseAppendArgs
		}
	}
}

// appendArgs reads APPEND's arguments in p up to the literal at open.
type appendArgs struct {
	p       []byte
	i, open int
}

func (a *appendArgs) atLiteral() bool { return a.i == a.open }

func (a *appendArgs) peek(c byte) bool { return a.i < a.open && a.p[a.i] == c }

func (a *appendArgs) char(c byte) bool {
	if a.peek(c) {
		a.i++
		return true
	}
	return false
}

func (a *appendArgs) sp() bool { return a.char(' ') }

// word reads the atom w (any case) if it comes next, whole.
func (a *appendArgs) word(w string) bool {
	end := a.i + len(w)
	if end > a.open || !EqualFoldASCII(a.p[a.i:end], w) || (end < a.open && IsAtomChar(a.p[end])) {
		return false
	}
	a.i = end
	return true
}

// astring reads an atom of ASTRING-CHARs or a quoted string.
func (a *appendArgs) astring() bool {
	if a.peek('"') {
		return a.quoted()
	}
	start := a.i
	for a.i < a.open && IsAstringChar(a.p[a.i]) {
		a.i++
	}
	return a.i > start
}

// quoted reads a quoted string of printable ASCII; "\" escapes only "\"
// and DQUOTE (RFC 9051 §9, quoted-specials).
func (a *appendArgs) quoted() bool {
	if !a.char('"') {
		return false
	}
	for a.i < a.open {
		c := a.p[a.i]
		a.i++
		switch {
		case c == '"':
			return true
		case c == '\\':
			if a.i >= a.open || (a.p[a.i] != '"' && a.p[a.i] != '\\') {
				return false
			}
			a.i++
		case c < 0x20 || c > 0x7e:
			return false
		}
	}
	return false
}

// flags reads a flag list: "(" [flag *(SP flag)] ")", a flag being an
// atom, or "\" and an atom.
func (a *appendArgs) flags() bool {
	if !a.char('(') {
		return false
	}
	if a.char(')') {
		return true
	}
	for {
		a.char('\\')
		start := a.i
		for a.i < a.open && IsAtomChar(a.p[a.i]) {
			a.i++
		}
		if a.i == start {
			return false
		}
		if a.char(')') {
			return true
		}
		if !a.sp() {
			return false
		}
	}
}
