package main

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/imapguard/imapguard/test/proxytest"
)

// TestSkipPrefix: the reporter reads the messages the test kit writes.
func TestSkipPrefix(t *testing.T) {
	if skipPrefix != proxytest.SkipPrefix {
		t.Fatalf("skipPrefix %q; want proxytest.SkipPrefix %q", skipPrefix, proxytest.SkipPrefix)
	}
}

// events renders go test -json lines: each of specs is "action package
// test output", with fields separated by "|".
func events(t *testing.T, specs ...string) string {
	t.Helper()
	var b strings.Builder
	for _, s := range specs {
		f := strings.SplitN(s, "|", 4)
		for len(f) < 4 {
			f = append(f, "")
		}
		e := event{Action: f[0], Package: f[1], Test: f[2], Output: f[3]}
		if strings.HasPrefix(e.Action, "build-") {
			e.Package, e.ImportPath = "", f[1]
		}
		j, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(append(j, '\n'))
	}
	return b.String()
}

func TestReport(t *testing.T) {
	for _, tc := range []struct {
		name   string
		in     string
		want   []string // lines of the report, in order
		absent []string // text the report must not have
		failed bool
	}{
		{
			name: "all passed",
			in: "garbage that is no event\n" + events(t,
				"start|m/a", "run|m/a|TestA", "output|m/a|TestA|=== RUN   TestA\n",
				"output|m/a|TestA|    a_test.go:9: chatter\n", "output|m/a|TestA|--- PASS: TestA (0.00s)\n",
				"pass|m/a|TestA", "output|m/a||PASS\n", "output|m/a||ok  \tm/a\t0.01s\n", "pass|m/a",
				"output|m/b||?   \tm/b\t[no test files]\n", "skip|m/b"),
			want:   []string{"garbage that is no event", "ok  \tm/a\t0.01s", "?   \tm/b\t[no test files]", "skipped: none"},
			absent: []string{"chatter", "=== RUN", "PASS\n"},
		},
		{
			name: "skips grouped by reason",
			in: events(t,
				"output|m/test|TestD/dovecot|    dovecot_test.go:63: skipped: Dovecot end-to-end suite (dovecot not installed)\n",
				"output|m/test|TestD/dovecot|--- SKIP: TestD/dovecot (0.00s)\n", "skip|m/test|TestD/dovecot",
				"output|m/test|TestE/dovecot|    dovecot_test.go:45: dovecot: using a generated certificate\n",
				"output|m/test|TestE/dovecot|    dovecot_test.go:63: skipped: Dovecot end-to-end suite (dovecot not installed)\n",
				"skip|m/test|TestE/dovecot",
				"output|m/admin|TestServe/[::]:0|    admin_test.go:855: cannot listen on [::]:0: no IPv6\n",
				"skip|m/admin|TestServe/[::]:0",
				"skip|m/admin|TestQuiet",
				"pass|m/test", "pass|m/admin"),
			want: []string{"skipped: Dovecot end-to-end suite (dovecot not installed) [2 tests]; " +
				"admin TestServe/[::]:0 (cannot listen on [::]:0: no IPv6) [1 test]; admin TestQuiet [1 test]"},
		},
		{
			name: "a test fails",
			in: events(t,
				"output|m/a|TestOK|    a_test.go:3: quiet\n", "pass|m/a|TestOK",
				"output|m/a|TestBad/sub|    a_test.go:7: got 1; want 2\n",
				"output|m/a|TestBad/sub|    --- FAIL: TestBad/sub (0.00s)\n", "fail|m/a|TestBad/sub",
				"output|m/a|TestBad|--- FAIL: TestBad (0.00s)\n", "fail|m/a|TestBad",
				"output|m/a||FAIL\n", "output|m/a||FAIL\tm/a\t0.02s\n", "fail|m/a"),
			want:   []string{"    a_test.go:7: got 1; want 2", "    --- FAIL: TestBad/sub (0.00s)", "--- FAIL: TestBad (0.00s)", "FAIL\tm/a\t0.02s", "skipped: none"},
			absent: []string{"quiet"},
			failed: true,
		},
		{
			name: "a panic ends the package mid-test",
			in: events(t,
				"output|m/a|TestBoom|panic: boom\n", "output|m/a|TestBoom|goroutine 7 [running]:\n",
				"output|m/a||FAIL\tm/a\t0.01s\n", "fail|m/a"),
			want:   []string{"panic: boom", "goroutine 7 [running]:", "FAIL\tm/a\t0.01s"},
			failed: true,
		},
		{
			name: "a build fails",
			in: events(t,
				"build-output|m/a||# m/a\n", "build-output|m/a||a.go:3:1: syntax error\n", "build-fail|m/a",
				"start|m/a", "output|m/a||FAIL\tm/a [build failed]\n", "fail|m/a"),
			want:   []string{"# m/a", "a.go:3:1: syntax error", "FAIL\tm/a [build failed]", "skipped: none"},
			failed: true,
		},
		{
			name:   "go test was killed",
			in:     events(t, "output|m/a|TestSlow|    a_test.go:5: waiting\n"),
			want:   []string{"    a_test.go:5: waiting", "skipped: none"},
			failed: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out strings.Builder
			r := newReporter(&out)
			r.read(strings.NewReader(tc.in))
			r.finish()
			got := out.String()
			lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
			i := 0
			for _, l := range lines {
				if i < len(tc.want) && l == tc.want[i] {
					i++
				}
			}
			if i < len(tc.want) {
				t.Errorf("report:\n%s\nwant, in this order, the lines %q (missing from %q on)", got, tc.want, tc.want[i])
			}
			if last := lines[len(lines)-1]; !strings.HasPrefix(last, "skipped: ") {
				t.Errorf("last line %q; want the skipped: line", last)
			}
			for _, a := range tc.absent {
				if strings.Contains(got, a) {
					t.Errorf("report has %q:\n%s", a, got)
				}
			}
			if r.failed != tc.failed {
				t.Errorf("failed = %v; want %v", r.failed, tc.failed)
			}
		})
	}
}

func TestSplitRuns(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want []goRun
	}{
		{"one run", []string{"-race", "./..."}, []goRun{{args: []string{"-race", "./..."}}}},
		{"no arguments", nil, []goRun{{}}},
		{"a second run with its environment", []string{"-race", "X=1", "./...", "--then", "IMAPGUARD_RELAY=goroutines", "A_1=", "-race", "./proxy/...", "B=2"},
			[]goRun{{args: []string{"-race", "X=1", "./..."}},
				{env: []string{"IMAPGUARD_RELAY=goroutines", "A_1="}, args: []string{"-race", "./proxy/...", "B=2"}}}},
		{"not assignments", []string{"a", "--then", "=x", "1A=b", "./..."},
			[]goRun{{args: []string{"a"}}, {args: []string{"=x", "1A=b", "./..."}}}},
		{"three runs", []string{"p", "--then", "--then", "E=1"},
			[]goRun{{args: []string{"p"}}, {}, {env: []string{"E=1"}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := splitRuns(tc.args); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("splitRuns(%q) = %+v; want %+v", tc.args, got, tc.want)
			}
		})
	}
}

// TestRuns: the runs after "--then" run one after the other with their
// environment; the summary line, printed once at the end, counts the
// skips of both, and the status is the first failure's.
func TestRuns(t *testing.T) {
	// A fake go: it prints what go test -json would for a package that
	// passes and skips a test, and fails under RELAY=goroutines.
	dir := t.TempDir()
	script := "#!/bin/sh\n" +
		"printf '%s\\n' '" + strings.TrimSpace(events(t, "output|m/a|TestSkip|    a_test.go:3: skipped: a suite (missing)\n", "skip|m/a|TestSkip")) + "'\n" +
		"echo \"args: $*; relay: ${RELAY:-unset}\"\n" +
		"if [ \"$RELAY\" = goroutines ]; then\n" +
		"  printf '%s\\n' '" + strings.TrimSpace(events(t, "output|m/a|TestB|    b_test.go:7: relayed wrong\n", "fail|m/a|TestB", "output|m/a||FAIL\tm/a\t0.02s\n", "fail|m/a")) + "'\n" +
		"  exit 1\n" +
		"fi\n" +
		"printf '%s\\n' '" + strings.TrimSpace(events(t, "output|m/a||ok  \tm/a\t0.01s\n", "pass|m/a")) + "'\n"
	goCmd := filepath.Join(dir, "go")
	if err := os.WriteFile(goCmd, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	var out, errs strings.Builder
	status := run(goCmd, splitRuns([]string{"-race", "./...", "--then", "RELAY=goroutines", "-race", "./proxy/..."}), &out, &errs)
	got := out.String()
	want := []string{
		"args: test -json -race ./...; relay: unset",
		"ok  \tm/a\t0.01s",
		"== RELAY=goroutines " + goCmd + " test -race ./proxy/...",
		"args: test -json -race ./proxy/...; relay: goroutines",
		"    b_test.go:7: relayed wrong",
		"FAIL\tm/a\t0.02s",
		"skipped: a suite (missing) [2 tests]",
	}
	if lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n"); !reflect.DeepEqual(lines, want) {
		t.Errorf("report:\n%s\nwant the lines\n%s", got, strings.Join(want, "\n"))
	}
	if status != 1 {
		t.Errorf("status %d; want 1 (stderr %q)", status, errs.String())
	}
	// Both runs passing: status 0; a run that cannot start: 2.
	if st := run(goCmd, splitRuns([]string{"./..."}), io.Discard, io.Discard); st != 0 {
		t.Errorf("one passing run: status %d; want 0", st)
	}
	if st := run(filepath.Join(dir, "missing"), splitRuns([]string{"./..."}), io.Discard, io.Discard); st != 2 {
		t.Errorf("no go command: status %d; want 2", st)
	}
}
