package main

import (
	"fmt"
	"io"
	"runtime/debug"
)

// version, when set at link time with
//
//	go build -ldflags "-X main.version=v1.2.3" ./cmd/imapguard
//
// (the Makefile passes `git describe --tags --always --dirty`), is the
// version buildInfo reports; empty means the module's version from the
// build information, "devel" for a build from a checkout.
var version string

// revision, when set at link time (-X main.revision=COMMIT, as the
// Makefile does), is the commit buildInfo reports, instead of the one Go
// stamps (vcs.revision), which is missing when GOFLAGS has
// -buildvcs=false or Go cannot read the checkout.
var revision string

// buildInfo returns the version of this binary, the VCS revision it was
// built from ("unknown" when not stamped; with "-dirty" appended when the
// tree had uncommitted changes) and the Go version that built it. It is
// the one source of what -version prints, and of anything else that
// reports the build (the build-info metric, telemetry's service.version).
func buildInfo() (ver, rev, goVersion string) {
	ver, rev, goVersion = version, "unknown", "unknown"
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		if ver == "" {
			ver = "devel"
		}
		if revision != "" {
			rev = revision
		}
		return ver, rev, goVersion
	}
	goVersion = bi.GoVersion
	if ver == "" {
		ver = bi.Main.Version
	}
	if ver == "" || ver == "(devel)" {
		ver = "devel"
	}
	modified := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if modified && rev != "unknown" {
		rev += "-dirty"
	}
	if revision != "" {
		rev = revision
	}
	return ver, rev, goVersion
}

// writeVersion prints buildInfo as -version and the version subcommand
// do: "imapguard VERSION (commit REVISION, GOVERSION)".
func writeVersion(w io.Writer) error {
	ver, rev, gover := buildInfo()
	_, err := fmt.Fprintf(w, "imapguard %s (commit %s, %s)\n", ver, rev, gover)
	return err
}
