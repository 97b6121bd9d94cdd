// Package imapwire reads IMAP's wire syntax the way the proxy needs it
// (RFC 9051 §2.2, §4 and §9; RFC 7888 LITERAL+/-; RFC 3516 literal8):
//
//   - syntax.go: character classes, tags, command names, quoting, text;
//   - literal.go: where a line announces a literal, and Tail, the end of a
//     line too long to keep;
//   - reader.go, args.go: Reader, which parses whole commands before
//     authentication, when the proxy is the server;
//   - framer.go, wait.go, step.go: CommandFramer, which follows the
//     client's command stream after login, so that max_command_size holds
//     for the whole session and no byte runs on the upstream that it did
//     not frame (wait.go: waiting for the upstream's answers; step.go: the
//     Step a caller carries out); check.go, append.go: the checks of
//     each line before it goes on (stray literals, bare CRs, tags the
//     upstream would not echo, APPEND's arguments);
//   - gate.go: LiteralGate, which tells the command framer how the
//     upstream answered a literal or IDLE, and when the probe (a NOOP
//     under a random tag) that follows earlier commands was answered;
//   - response.go: ResponseFramer, which finds the response boundaries in
//     the upstream's stream, and ResponseReader, which reads the
//     upstream's responses during login.
//
// It imports nothing of the proxy and does no I/O of its own: the readers
// read only the bufio.Reader they are handed, and the framers are state
// machines fed with bytes that the caller read. What to answer is the
// caller's business: errors and refusals here are typed (TooBigError,
// SyntaxError, Refusal), never response lines.
package imapwire
