package main

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// check is one verdict of a phase.
type check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
	// Skipped: the run was too short to judge (a quick run); not a
	// failure, not a pass.
	Skipped bool `json:"skipped,omitempty"`
	// Gap, on a failed check, says why the failure is expected from this
	// build: the behaviour it checks has not landed yet (issue 10).
	Gap string `json:"known_gap,omitempty"`
}

// phaseResult is what a phase measured and decided.
type phaseResult struct {
	Phase   string        `json:"phase"`
	Started time.Time     `json:"started"`
	Seconds float64       `json:"seconds"`
	Checks  []*check      `json:"checks"`
	Figures []string      `json:"figures"`
	Samples []soakSample  `json:"samples,omitempty"`
	Cases   []*caseResult `json:"cases,omitempty"`
	Err     string        `json:"error,omitempty"` // the phase could not run to its end
}

func newResult(phase string) *phaseResult {
	return &phaseResult{Phase: phase, Started: time.Now()}
}

// check records a verdict; detail is a format.
func (r *phaseResult) check(name string, ok bool, format string, args ...any) *check {
	c := &check{Name: name, OK: ok, Detail: fmt.Sprintf(format, args...)}
	r.Checks = append(r.Checks, c)
	return c
}

// skip records a check the run could not judge.
func (r *phaseResult) skip(name, format string, args ...any) {
	r.Checks = append(r.Checks, &check{Name: name, OK: true, Skipped: true, Detail: fmt.Sprintf(format, args...)})
}

// figure records a measurement line for the report.
func (r *phaseResult) figure(format string, args ...any) {
	r.Figures = append(r.Figures, fmt.Sprintf(format, args...))
}

// fail records that the phase could not go on.
func (r *phaseResult) fail(err error) {
	r.Err = err.Error()
	r.check("phase ran to its end", false, "%v", err)
}

func (r *phaseResult) passed() bool {
	for _, c := range r.Checks {
		if !c.OK {
			return false
		}
	}
	return r.Err == ""
}

func (r *phaseResult) finish() { r.Seconds = time.Since(r.Started).Seconds() }

// print writes the phase's verdicts and figures for a person.
func (r *phaseResult) print(w io.Writer) {
	verdict := "PASS"
	if !r.passed() {
		verdict = "FAIL"
	}
	fmt.Fprintf(w, "\n== phase %s: %s (%s)\n", r.Phase, verdict, (time.Duration(r.Seconds * float64(time.Second))).Round(time.Second))
	for _, f := range r.Figures {
		fmt.Fprintf(w, "   %s\n", f)
	}
	for _, c := range r.Checks {
		mark := "ok  "
		switch {
		case c.Skipped:
			mark = "skip"
		case !c.OK && c.Gap != "":
			mark = "GAP "
		case !c.OK:
			mark = "FAIL"
		}
		fmt.Fprintf(w, "   [%s] %s: %s\n", mark, c.Name, c.Detail)
		if c.Gap != "" && !c.OK {
			fmt.Fprintf(w, "          known gap: %s\n", c.Gap)
		}
	}
}

// kib formats bytes as KiB with one decimal.
func kib(b float64) string { return fmt.Sprintf("%.1f KiB", b/1024) }

// mib formats bytes as MiB with one decimal.
func mib(b float64) string { return fmt.Sprintf("%.1f MiB", b/(1<<20)) }

// firstN joins at most n strings, saying how many were left out.
func firstN(ss []string, n int) string {
	if len(ss) <= n {
		return strings.Join(ss, "; ")
	}
	return fmt.Sprintf("%s; ... and %d more", strings.Join(ss[:n], "; "), len(ss)-n)
}
