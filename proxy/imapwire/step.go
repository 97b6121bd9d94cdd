package imapwire

import "errors"

// This file is what the command framer says to its caller: the Step to
// carry out, the refusals it answers itself, and the errors that end a
// session.

// ErrCommandTooBig ends a session whose oversize command was already
// partly passed on to the upstream: it can be neither refused nor
// completed.
var ErrCommandTooBig = errors.New("imapwire: command too big after part of it was relayed")

// ErrCommandInvalid ends a session whose command, already partly passed
// on to the upstream, goes on with a line the framer must refuse (see
// checkLine).
var ErrCommandInvalid = errors.New("imapwire: invalid line after part of the command was relayed")

// RefusalKind is why the proxy answers a command itself.
type RefusalKind uint8

const (
	RefuseNone           RefusalKind = iota
	RefuseTooBig                     // over max_command_size: BAD [TOOBIG]
	RefuseInvalidLiteral             // a literal where the upstream would not read one
	RefuseCompress                   // COMPRESS would blind the framing (RFC 4978)
	RefuseStartTLS                   // STARTTLS is not valid after login (RFC 9051 §6.2.1)
	RefuseExpectedDone               // a line other than DONE during IDLE (RFC 2177)
	RefuseBareCR                     // a CR that does not end the line
	RefuseTag                        // a tag the upstream may not answer with, on a command that waits for it
	RefuseAppendArgs                 // APPEND arguments the upstream may not read as the framer does
	RefuseAppendUTF8                 // APPEND's UTF8 data extension (RFC 6855)
	RefuseOpenQuote                  // a line that ends inside a quoted string
)

// Refusal is a command the proxy answers itself instead of passing it
// on. Tag is the command's tag, or empty when the tag is not valid (the
// answer is then untagged).
type Refusal struct {
	Kind RefusalKind
	Tag  string
}

// Step is what the caller does next with the framer's input, in this
// order: throw the first Drop bytes away; pass the next Forward bytes on
// to the upstream; write out what it has passed on if Flush is set;
// answer the command if Refuse is set (Refusal says with which tag);
// send Probe to the upstream, if set, and write it out.
// With Await, the framer waits for the upstream (see LiteralGate.Wait)
// and the caller calls Next again, with the same bytes, once Wait
// returns. With More, nothing further can be decided from the input: the
// caller reads more and calls Next again with the bytes not yet consumed
// and the new ones; if Stream is positive, the next Stream bytes of the
// client's stream are literal octets that the caller may copy to the
// upstream without reading them into its buffer, and report with
// Streamed. Logout is set when a LOGOUT command begins: the upstream's
// close after it is the client's doing. The fields are few and small:
// Next runs once or twice per command.
type Step struct {
	Probe   []byte
	Forward int
	Drop    int
	Stream  int64
	Refuse  RefusalKind
	Flush   bool
	More    bool
	Await   bool
	Logout  bool
}
