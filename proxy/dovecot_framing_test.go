package proxy

// End-to-end regressions, against a real Dovecot, of the framing bugs an
// adversarial review reproduced (issue 10, "What the review reproduced",
// item 1), and of those the differential test found since
// (TestDovecotFramingFindings). Each runs with max_command_size 1024,
// logged in and INBOX selected (runScenario), and is checked three ways:
// the differential oracle (problems), the client's view (want, in
// order), and the hidden command, which Dovecot must never answer and
// the proxy never pass on. A NOOP after each shows that the session goes
// on.

import (
	"strconv"
	"strings"
	"testing"
)

// framingCase is one regression: what the client sends after SELECT
// INBOX (steps first, if any, each waited for), the responses it must
// see, in order, by prefix (tagged, "+", or untagged BAD, NO and BYE),
// those it must see in any order, and the tags of commands hidden in it
// that must never run.
type framingCase struct {
	name     string
	steps    []diffStep
	send     string
	want     []string
	anyOrder []string
	hidden   []string
}

// searchLine is the review's `b2 SEARCH TEXT "AAA…"` line, n octets with
// its CRLF.
func searchLine(tag string, n int) string {
	head := tag + ` SEARCH TEXT "`
	return head + strings.Repeat("A", n-len(head)-3) + "\"\r\n"
}

// nextNoop is the command after each case that shows the session goes
// on.
const nextNoop = "n1 NOOP\r\n"

// endRefused ends a command whose non-synchronizing literal was refused:
// after a literal's octets the same command goes on to the next CRLF
// (RFC 9051 §4.3), so the proxy throws that away too.
const endRefused = "\r\n"

// reviewReproductions are the review's reproductions (issue 10, item 1).
func reviewReproductions() []framingCase {
	b2 := searchLine("b2", 50019)
	return []framingCase{{
		// The literal is inside an atom: Dovecot answers BAD "Invalid
		// characters in atom" and runs the next line as a command.
		name:   "literal inside an atom",
		send:   "a2 APPEND INBOX x{50019+}\r\n" + b2 + endRefused + nextNoop,
		want:   []string{"a2 BAD Invalid literal", "n1 OK"},
		hidden: []string{"b2"},
	}, {
		name:   "literal inside an unterminated quoted string",
		send:   "a3 APPEND INBOX \"x {50019+}\r\n" + b2 + endRefused + nextNoop,
		want:   []string{"a3 BAD Invalid literal", "n1 OK"},
		hidden: []string{"b2"},
	}, {
		// The client does not wait for "+"; Dovecot refuses the literal
		// (no such mailbox), so the octets are the next command, as
		// Dovecot reads them: over the cap, the proxy refuses it. (Its
		// BAD may overtake Dovecot's NO, as in the IDLE case below.)
		name:     "synchronizing literal refused by Dovecot",
		send:     "a4 APPEND nonexist {50019}\r\n" + b2 + nextNoop,
		want:     []string{"n1 OK"},
		anyOrder: []string{"a4 NO [TRYCREATE]", "b2 BAD [TOOBIG]"},
		hidden:   []string{"b2"},
	}, {
		// Dovecot does not parse NOOP's arguments: the literal's octets
		// would run as COMPRESS.
		name:   "literal on NOOP hiding COMPRESS",
		send:   "a1 NOOP {21+}\r\nb1 COMPRESS DEFLATE\r\n" + endRefused + nextNoop,
		want:   []string{"a1 BAD Invalid literal", "n1 OK"},
		hidden: []string{"b1"},
	}, {
		// The refused COMPRESS takes its literal with it: "z X" is not a
		// command.
		name:   "COMPRESS with a literal",
		send:   "a COMPRESS {5+}\r\nz X\r\n" + endRefused + nextNoop,
		want:   []string{"a NO [CANNOT]", "n1 OK"},
		hidden: []string{"z"},
	}, {
		// Dovecot answers STATUS without reading the extra argument; the
		// client sent the octets without waiting, so they go with the
		// command.
		name:   "STATUS with an extra non-synchronizing literal",
		send:   "s1 STATUS INBOX (MESSAGES) {9+}\r\nh1 NOOP\r\n" + endRefused + nextNoop,
		want:   []string{"s1 OK", "n1 OK"},
		hidden: []string{"h1"},
	}, {
		// The same with a synchronizing literal: Dovecot answered STATUS
		// instead of "+", so what the client sent anyway is the next
		// command, for Dovecot and for the proxy alike.
		name: "STATUS with an extra synchronizing literal",
		send: "s2 STATUS INBOX (MESSAGES) {9}\r\nh2 NOOP\r\n" + nextNoop,
		want: []string{"s2 OK", "h2 OK", "n1 OK"},
	}, {
		// Dovecot would end the IDLE with BAD and run the line; the proxy
		// refuses the line and the IDLE goes on until DONE. (The proxy's
		// BAD may overtake Dovecot's "+", which the proxy has seen but not
		// yet relayed: a client that waits for "+" before it sends never
		// sees that.)
		name:     "IDLE followed by a line that is not DONE",
		send:     "i1 IDLE\r\nx1 NOOP\r\nDONE\r\n" + nextNoop,
		want:     []string{"i1 OK", "n1 OK"},
		anyOrder: []string{"+ idling", "* BAD Expected DONE"},
		hidden:   []string{"x1"},
	}}
}

func TestDovecotFramingReview(t *testing.T) {
	runFramingCases(t, reviewReproductions())
}

// TestDovecotFramingFindings covers what the differential test found
// (differential_test.go): places where the proxy and Dovecot 2.3 read a
// command stream differently, until the proxy learnt to refuse the line
// (a "{" inside it, a CR that does not end it, a tag Dovecot will not
// answer, APPEND arguments Dovecot reads its own way) or to probe before
// a command that waits for a "+" (see imapwire.LiteralGate). Each
// comment says what went wrong before.
func TestDovecotFramingFindings(t *testing.T) {
	// 900 octets that Dovecot would read as a literal while the proxy
	// passes them on as a command of their own, and a line that would
	// then finish Dovecot's command: 21+900+906 octets in all.
	inLiteral := searchLine("e1", 900)
	tail := " TEXT " + strings.Repeat("B", 898) + "\r\n"
	hiddenSearch := "d CAPABILITY\r\nd SEARCH TEXT {900+}\r\n" + strings.Repeat("X", 900) + "\r\n" + inLiteral + tail + nextNoop
	runFramingCases(t, []framingCase{{
		// Dovecot answers "+ OK" as soon as it reads "{3}", then finds
		// no CRLF after it and answers BAD, skipping the rest of the
		// line. The proxy, which took only the "{21+}" at the line's end
		// for a literal, took that "+" for its own and passed the octets
		// on: Dovecot ran them as a command (here COMPRESS; IDLE,
		// STARTTLS and SEARCH in other runs).
		name:   "literal announcement inside a line, then a literal at its end",
		send:   "a SEARCH TEXT {3} {21+}\r\nb1 COMPRESS DEFLATE\r\n" + endRefused + nextNoop,
		want:   []string{"a BAD", "n1 OK"},
		hidden: []string{"b1"},
	}, {
		name:   "literal announcement glued to an atom, then a literal at the end",
		send:   "a SEARCH TEXT {3}x {13+}\r\nb1 STARTTLS\r\n" + endRefused + nextNoop,
		want:   []string{"a BAD", "n1 OK"},
		hidden: []string{"b1"},
	}, {
		// Dovecot answers an invalid tag with an untagged BAD; the proxy
		// waited for its "+" or a tagged answer forever.
		name: "IDLE with an invalid tag",
		send: "(x IDLE\r\nDONE\r\n" + nextNoop,
		want: []string{"* BAD", "n1 OK"},
	}, {
		// Dovecot reads APPEND's arguments up to the message literal
		// before it checks them, and reads a synchronizing literal there
		// without sending "+" (then answers BAD). The proxy turned the
		// client's {3+} into {3} and waited for "+" forever.
		name: "APPEND with an invalid argument before a non-synchronizing literal",
		send: "a APPEND INBOX x {3+}\r\nabc\r\n" + nextNoop,
		want: []string{"a BAD", "n1 OK"},
	}, {
		// The same to a mailbox that does not exist: Dovecot answers NO
		// at once, then throws away the next line (h1) as the rest of
		// the APPEND. The proxy, which passed h1 on as a command, waited
		// for its answer before b's literal, forever.
		name: "APPEND to a missing mailbox with an invalid argument before the literal",
		send: "t APPEND nonexist X {5+}\r\nabcde\r\nh1 NOOP\r\nb SEARCH TEXT {3+}\r\nabc\r\n" + nextNoop,
		want: []string{"t ", "b OK", "n1 OK"},
	}, {
		// The proxy counted "t]" as a command Dovecot will answer;
		// Dovecot (which, unlike RFC 9051, does not allow "]" in a tag)
		// answers it untagged, and the proxy waited forever before the
		// next literal for an answer that would not come.
		name: "tag with ] before a literal",
		send: "t] NOOP\r\nb SEARCH TEXT {3+}\r\nabc\r\n" + nextNoop,
		want: []string{"* BAD", "b OK", "n1 OK"},
	}, {
		name: "tag with ] before IDLE",
		send: "t] NOOP\r\ni IDLE\r\nDONE\r\n" + nextNoop,
		want: []string{"* BAD", "+ idling", "i OK", "n1 OK"},
	}, {
		// Dovecot answers "x" with a tagged BAD that the proxy counted
		// against no command: from then on the proxy believed one more
		// command answered than there was. It passed "d SEARCH" on
		// before "d CAPABILITY" was answered, took CAPABILITY's answer
		// for the refusal of SEARCH's literal and threw the client's
		// octets away, while Dovecot, which asked for them ("+"), read
		// the next 900 octets (e1, which the proxy passed on as a
		// command) as the literal and the line after as the rest of its
		// SEARCH: an uncounted command of 1,827 octets.
		name:  "tag without a command name, then a reused tag and a literal",
		steps: []diffStep{{send: []byte("x\r\n"), until: "x BAD"}},
		send:  hiddenSearch,
		want:  []string{"d OK Capability", "d OK Search", "e1 OK", "n1 OK"},
	}, {
		// Dovecot accepts DEL in a tag; RFC 9051 and the proxy do not.
		name:  "tag with DEL, then a reused tag and a literal",
		steps: []diffStep{{send: []byte("x\x7f NOOP\r\n"), until: "x\x7f OK"}},
		send:  hiddenSearch,
		want:  []string{"d OK Capability", "d OK Search", "e1 OK", "n1 OK"},
	}, {
		// Dovecot quotes the search key in its error, CRLF and all: the
		// text after the CRLF ("q OK z") reaches the proxy as a line of
		// its own, which the proxy counted as one more tagged answer. The
		// rest is as above.
		name:  "Dovecot quoting a client's CRLF in an error",
		steps: []diffStep{{send: []byte("q SEARCH {9}\r\nx\r\nq OK z\r\n"), until: "q OK z"}},
		send:  hiddenSearch,
		want:  []string{"d OK Capability", "d OK Search", "e1 OK", "n1 OK"},
	}, {
		// Dovecot's command name ends at a CR too: "c IDLE\rx" is IDLE to
		// Dovecot and was an ordinary command to the proxy, which passed
		// the next line (h1) on as a command; Dovecot took it for the end
		// of the IDLE and never answered it. Found by the fuzzer as
		// "0 IDLE\r0". The proxy refuses the line now.
		name: "IDLE with a CR in its name",
		send: "c IDLE\rx\r\nh1 NOOP\r\nDONE\r\nb SEARCH TEXT {3+}\r\nabc\r\n" + nextNoop,
		want: []string{"b OK", "n1 OK"},
	}, {
		// Dovecot's tag ends at a CR: it would answer "x\ry NOOP" as "x".
		// The proxy refuses the line.
		name:  "tag with CR, then a reused tag and a literal",
		steps: []diffStep{{send: []byte("x\ry NOOP\r\n"), until: "* BAD CR without LF"}},
		send:  hiddenSearch,
		want:  []string{"d OK Capability", "d OK Search", "e1 OK", "n1 OK"},
	}})
}

// runFramingCases runs each case in a session of its own, all at once,
// each as a user of its own.
func runFramingCases(t *testing.T, cases []framingCase) {
	d := startDiffDovecot(t, len(cases))
	for i, c := range cases {
		user := d.users[i]
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			run := runScenario(t, d, user, diffScenario{name: c.name, steps: c.steps, stream: []byte(c.send)})
			defer func() {
				if t.Failed() {
					t.Log(run.report())
				}
			}()
			for _, p := range run.problems() {
				t.Error(p)
			}
			checkClientSaw(t, run, c.want)
			for _, w := range c.anyOrder {
				checkClientSaw(t, run, []string{w})
			}
			for _, h := range c.hidden {
				for _, cmd := range run.commands {
					if cmd.tag == h && cmd.forwarded {
						t.Errorf("the proxy passed on the hidden command %q", h)
					}
				}
				for _, r := range dovecotResponses(run.fromUpstream) {
					if tag, _, ok := r.tagged(); ok && tag == h {
						t.Errorf("Dovecot ran the hidden command: %q", r.line)
					}
				}
			}
		})
	}
}

// checkClientSaw checks that the client's responses include want, in
// order, each by prefix, and end with the answer to the final LOGOUT.
func checkClientSaw(t *testing.T, run *diffRun, want []string) {
	t.Helper()
	var got []string
	for _, r := range parseResponses(run.toClient) {
		l := r.line
		if _, _, ok := r.tagged(); ok || strings.HasPrefix(l, "+") ||
			strings.HasPrefix(l, "* BAD") || strings.HasPrefix(l, "* NO") || strings.HasPrefix(l, "* BYE") {
			got = append(got, l)
		}
	}
	i := 0
	for _, l := range got {
		if i < len(want) && strings.HasPrefix(l, want[i]) {
			i++
		}
	}
	if i < len(want) {
		t.Errorf("the client did not see %q (in order; wanted %q); got %s", want[i], want, quoteLines(got))
	}
	if len(got) == 0 || !strings.HasPrefix(got[len(got)-1], finTag+" OK") {
		t.Errorf("the session did not end with the answer to LOGOUT; got %s", quoteLines(got))
	}
}

func quoteLines(ls []string) string {
	q := make([]string, len(ls))
	for i, l := range ls {
		q[i] = strconv.Quote(clip(l, 120))
	}
	return "[" + strings.Join(q, ", ") + "]"
}
