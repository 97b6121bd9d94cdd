// Command report runs go test with -json and reports the run as go test
// does, then names every suite that did not run. make test runs it:
//
//	go run ./test/report [-go GO] [go test flags] [packages] [--then [NAME=VALUE ...] [go test flags] [packages]] ...
//
// It prints each package's ok or FAIL line, the whole output of every
// failing test, of a package that failed outside a test (a panic, a
// timeout) and of a build that failed, and ends with one line: "skipped:
// none", or "skipped: " followed by each reason a test was skipped for,
// with how many tests it skipped. A test kit Skip message ("skipped: suite
// (why)", see test/proxytest.Skip) is its own reason; any other skip is
// named by its package, test and message.
//
// Each "--then" starts another go test run, after the one before it and
// whatever that one's result, with the environment variables its leading
// NAME=VALUE words set: make test runs the packages that relay sessions
// a second time with IMAPGUARD_RELAY=goroutines (issue 14). A line
// "== NAME=VALUE go test ..." announces each run after the first. The
// summary line counts the skips of every run.
//
// It exits with the first non-zero status of go test's runs, and with 1
// if a test or a build failed although go test exited 0; with 2 if go
// test could not be run.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path"
	"strings"
)

func main() {
	// Every argument but -go is go test's, or separates runs.
	goCmd, args := "go", os.Args[1:]
	switch {
	case len(args) >= 2 && args[0] == "-go":
		goCmd, args = args[1], args[2:]
	case len(args) >= 1 && strings.HasPrefix(args[0], "-go="):
		goCmd, args = strings.TrimPrefix(args[0], "-go="), args[1:]
	}
	os.Exit(run(goCmd, splitRuns(args), os.Stdout, os.Stderr))
}

// thenArg separates the go test runs on report's command line.
const thenArg = "--then"

// goRun is one go test run: the environment variables it sets
// (NAME=VALUE) and go test's arguments.
type goRun struct {
	env  []string
	args []string
}

// splitRuns splits the arguments at each "--then"; the leading NAME=VALUE
// words of every run but the first are its environment.
func splitRuns(args []string) []goRun {
	runs := []goRun{{}}
	for _, a := range args {
		cur := &runs[len(runs)-1]
		switch {
		case a == thenArg:
			runs = append(runs, goRun{})
		case len(runs) > 1 && len(cur.args) == 0 && isAssignment(a):
			cur.env = append(cur.env, a)
		default:
			cur.args = append(cur.args, a)
		}
	}
	return runs
}

// isAssignment reports whether a is NAME=VALUE with a name of letters,
// digits and underscores.
func isAssignment(a string) bool {
	name, _, ok := strings.Cut(a, "=")
	if !ok || name == "" || strings.Trim(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") != "" {
		return false
	}
	return name[0] < '0' || name[0] > '9'
}

// run runs "goCmd test -json args..." for each run, one after the other,
// and reports to stdout; go test's own standard error goes to stderr. It
// returns the exit status.
func run(goCmd string, runs []goRun, stdout, stderr io.Writer) int {
	// An interrupt at the terminal reaches go test too: let it end the
	// run, and report what ran.
	signal.Ignore(os.Interrupt)
	r := newReporter(stdout)
	status := 0
	for i, gr := range runs {
		if i > 0 {
			fmt.Fprintf(stdout, "== %s\n", strings.Join(append(append(gr.env[:len(gr.env):len(gr.env)], goCmd, "test"), gr.args...), " "))
		}
		st := runOne(goCmd, gr, r, stderr)
		r.endRun()
		if status == 0 {
			status = st
		}
	}
	fmt.Fprintln(stdout, r.summary())
	if status == 0 && r.failed {
		status = 1
	}
	return status
}

// runOne runs one go test and feeds its events to r. It returns go
// test's exit status, or 2 if it could not be run.
func runOne(goCmd string, gr goRun, r *reporter, stderr io.Writer) int {
	cmd := exec.Command(goCmd, append([]string{"test", "-json"}, gr.args...)...)
	if len(gr.env) > 0 {
		cmd.Env = append(os.Environ(), gr.env...)
	}
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		fmt.Fprintln(stderr, "report:", err)
		return 2
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(stderr, "report:", err)
		return 2
	}
	r.read(out)
	err = cmd.Wait()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return ee.ExitCode()
	case err != nil:
		fmt.Fprintln(stderr, "report:", err)
		return 2
	}
	return 0
}

// event is one line of go test -json (go doc test2json).
type event struct {
	Action     string
	Package    string
	Test       string
	Output     string
	ImportPath string // build-output and build-fail
}

// skipPrefix begins the test kit's skip messages (proxytest.SkipPrefix).
const skipPrefix = "skipped: "

// reporter turns events into the report.
type reporter struct {
	w      io.Writer
	pkgs   map[string]*pkg
	skips  map[string]int // reason → tests skipped for it
	order  []string       // the reasons, in the order they came
	failed bool           // a test, a package or a build failed
}

// pkg is what a package's tests printed, kept until the package ends.
type pkg struct {
	lines []line
	ended map[string]string // test → "pass", "fail" or "skip"
}

type line struct{ test, text string }

func newReporter(w io.Writer) *reporter {
	return &reporter{w: w, pkgs: make(map[string]*pkg), skips: make(map[string]int)}
}

// read reads events until EOF; a line that is no event is printed as it
// is.
func (r *reporter) read(in io.Reader) {
	br := bufio.NewReader(in)
	for {
		b, err := br.ReadBytes('\n')
		if len(b) > 0 {
			var e event
			if json.Unmarshal(b, &e) != nil || e.Action == "" {
				r.w.Write(b)
			} else {
				r.event(e)
			}
		}
		if err != nil {
			return
		}
	}
}

func (r *reporter) event(e event) {
	switch e.Action {
	case "build-output":
		fmt.Fprint(r.w, e.Output)
		return
	case "build-fail":
		r.failed = true
		return
	}
	p := r.pkgs[e.Package]
	if p == nil {
		p = &pkg{ended: make(map[string]string)}
		r.pkgs[e.Package] = p
	}
	switch e.Action {
	case "output":
		if !strings.HasPrefix(e.Output, "=== ") { // RUN, PAUSE, CONT, NAME
			p.lines = append(p.lines, line{e.Test, e.Output})
		}
	case "pass", "fail", "skip":
		if e.Test == "" {
			r.endPackage(e.Package, p, e.Action)
			return
		}
		p.ended[e.Test] = e.Action
		if e.Action == "fail" {
			r.failed = true
		}
		if e.Action == "skip" {
			r.skipped(e.Package, e.Test, p)
		}
	}
}

// skipped counts a skipped test under its reason.
func (r *reporter) skipped(pkgPath, test string, p *pkg) {
	reason := ""
	for _, l := range p.lines {
		if l.test != test {
			continue
		}
		msg := strings.TrimSpace(l.text)
		if strings.HasPrefix(msg, "--- SKIP") {
			continue
		}
		// "file_test.go:12: message"
		if _, after, ok := strings.Cut(msg, ": "); ok && strings.Contains(msg[:len(msg)-len(after)], ".go:") {
			msg = after
		}
		if suite, ok := strings.CutPrefix(msg, skipPrefix); ok {
			reason = suite
			break
		}
		reason = path.Base(pkgPath) + " " + test + " (" + msg + ")"
	}
	if reason == "" {
		reason = path.Base(pkgPath) + " " + test
	}
	if r.skips[reason] == 0 {
		r.order = append(r.order, reason)
	}
	r.skips[reason]++
}

// endPackage prints the package's result: its ok line, or, if it failed,
// everything its failing and unfinished tests and the package itself
// printed.
func (r *reporter) endPackage(name string, p *pkg, action string) {
	delete(r.pkgs, name)
	if action == "fail" {
		r.failed = true
	}
	for _, l := range p.lines {
		switch {
		case action == "fail" && (l.test == "" || p.ended[l.test] == "fail" || p.ended[l.test] == ""):
			fmt.Fprint(r.w, l.text)
		case action != "fail" && l.test == "" && strings.TrimSpace(l.text) != "PASS":
			fmt.Fprint(r.w, l.text)
		}
	}
}

// endRun reports packages of the run just ended that never ended (go
// test was killed).
func (r *reporter) endRun() {
	for name, p := range r.pkgs {
		r.endPackage(name, p, "fail")
	}
}

// finish ends the only run and prints the summary line.
func (r *reporter) finish() {
	r.endRun()
	fmt.Fprintln(r.w, r.summary())
}

// summary is the last line: "skipped: none", or each reason and how many
// tests it skipped.
func (r *reporter) summary() string {
	if len(r.order) == 0 {
		return skipPrefix + "none"
	}
	parts := make([]string, len(r.order))
	for i, reason := range r.order {
		n := r.skips[reason]
		parts[i] = fmt.Sprintf("%s [%d test%s]", reason, n, map[bool]string{true: "s"}[n != 1])
	}
	return skipPrefix + strings.Join(parts, "; ")
}
