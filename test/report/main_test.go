package main

import (
	"encoding/json"
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
