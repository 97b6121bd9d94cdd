package proxytest

import (
	"errors"
	"go/build"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// CI reports whether the CI environment variable is set to something
// other than "", "0" or "false": there every suite must run, so a missing
// program fails the test instead of skipping it (.ci/run sets it).
func CI() bool {
	v := strings.TrimSpace(os.Getenv("CI"))
	return v != "" && v != "0" && !strings.EqualFold(v, "false")
}

// SkipPrefix begins every message Skip gives: make test's summary line
// (test/report) collects the messages that begin with it.
const SkipPrefix = "skipped: "

// Skip skips t because suite, such as "Dovecot end-to-end suite", cannot
// run on this machine, or fails t if CI is set. why says what is missing
// and how to get it. The message reads "skipped: suite (why)".
func Skip(t testing.TB, suite, why string) {
	t.Helper()
	if CI() {
		t.Fatalf("%s cannot run (%s), and CI is set: every suite must run", suite, why)
	}
	t.Skip(SkipPrefix + suite + " (" + why + ")")
}

// LookPath finds the program name in PATH and then in the folders go
// install writes to ($GOBIN, else the first GOPATH's bin, as go env
// reports them, or as the environment says if go is not in PATH), where
// make test installs the tools it needs: they are found even if those
// folders are not in PATH.
func LookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	gobin, gopath := os.Getenv("GOBIN"), build.Default.GOPATH
	if out, err := exec.Command("go", "env", "GOBIN", "GOPATH").Output(); err == nil {
		if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); len(lines) == 2 {
			gobin, gopath = strings.TrimSpace(lines[0]), strings.TrimSpace(lines[1])
		}
	}
	var dirs []string
	if gobin != "" {
		dirs = append(dirs, gobin)
	}
	if list := filepath.SplitList(gopath); len(list) > 0 && list[0] != "" {
		dirs = append(dirs, filepath.Join(list[0], "bin"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", errors.New(name + " is in none of " + strings.Join(append([]string{"PATH"}, dirs...), ", "))
}
