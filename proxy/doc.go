// Package proxy is imapguard's IMAP-aware reverse proxy. A Server accepts
// client connections, is the IMAP server until the client authenticates,
// logs in to the upstream with the client's credentials, and then relays
// the session while still framing client commands to enforce
// max_command_size. proxy/README.md walks one connection through it.
//
// Where things are:
//
//   - server.go, options.go: the Server, its accept loop, registry and
//     Shutdown; its Options and the proxy's own timeouts.
//   - control.go: what the admin API asks of a Server (Conns, Select,
//     Kick, Listening, CheckUpstream).
//   - conn.go: one connection before login: the greeting, the command
//     loop and dispatch, NOOP and LOGOUT, read errors, the end of the
//     connection (finish). Each other command has its file: capability.go,
//     id.go, starttls.go, login.go, authenticate.go (SASL).
//   - upstream_login.go: the upstream login with the per-user check, and
//     the hand-over to a session; upstream.go: the proxy as the upstream's
//     IMAP client.
//   - relay.go: the session after login (its invariants are at the top of
//     the file); copy.go: its two copy loops; writer.go: the one writer to
//     the client; idleread_*.go, bufpool.go: reading without holding a
//     buffer.
//   - relay_loop_linux.go: the same session on an event loop (relay =
//     "loop"): its hand-over and events; relay_loop_pump_linux.go, its
//     pumps; relay_loop_end_linux.go, its end; sockqueue_linux.go (writes
//     that never wait) and splice_linux.go; cmdbuf.go: the command
//     buffer both relays frame in; loops.go: which relay a session gets, and the
//     server's loops.
//   - respond.go: every line the proxy itself sends; outcome.go: how a
//     connection ended, as telemetry names it.
//   - telemetry.go: the metrics instruments; trace.go: one connection's
//     spans.
//
// Subpackages: imapwire (IMAP syntax and the framers), clock (the timer
// seam), evloop (the event loops), park (idle parking), telemetry (the OpenTelemetry SDK setup),
// admin (the HTTP admin API).
//
// Directions are named the same everywhere: "client" is the connection we
// accepted, "upstream" the one we dialled.
package proxy
