package main

import (
	"flag"
	"fmt"
	"io"
)

// Exit codes of imapguard and of its subcommands (cmd/imapguard/README.md).
const (
	exitOK      = 0 // done; a stop asked for by SIGTERM or SIGINT included
	exitFailure = 1 // a failure at run time: a listener, the admin API, the upstream's TLS, ...
	exitUsage   = 2 // bad arguments, or a configuration that does not load or does not pass -check
)

// subcommands lists the subcommands in the order -h shows them, with one
// line each.
var subcommands = []struct{ name, line string }{
	{"who", "list the live connections of a running imapguard (admin API)"},
	{"kick", "close the connections of a user or an address (admin API)"},
	{"settings", "print the settings in force of a running imapguard, secrets redacted (admin API)"},
	{"penalties", "list or -clear the failed logins the brute-force defence tracks (admin API)"},
	{"backends", "list the upstream backends, their health and sessions (admin API)"},
	{"drain", "start a drain: stop accepting, BYE spread over disconnect_spread, the process stays up until SIGTERM (admin API)"},
	{"reload", "make a running imapguard re-read its configuration file, as SIGHUP does (admin API)"},
	{"version", "print the version, the commit and the Go version, as -version does"},
	{"help", "print this help"},
}

// usage writes the help of imapguard: the synopsis, the subcommands and
// the flags of fs.
func usage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprint(w, `usage: imapguard [-config FILE] [-check]
       imapguard -version
       imapguard COMMAND [flags]    (imapguard COMMAND -h for its flags)

imapguard is an IMAP-aware reverse proxy with connection limits. Without
-config it serves the embedded demo configuration on loopback.

Commands:
`)
	for _, c := range subcommands {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.line)
	}
	fmt.Fprint(w, "\nFlags:\n")
	out := fs.Output()
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(out)
	fmt.Fprint(w, `
Exit codes: 0 done, 1 failure at run time, 2 bad arguments or configuration.
SIGHUP reloads the configuration; SIGTERM and SIGINT stop gracefully.
The configuration reference is config/README.md; this command's is
cmd/imapguard/README.md.
`)
}
