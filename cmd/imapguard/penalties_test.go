package main

import (
	"context"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/proxy/admin"
)

// penalties stands for the proxy's brute-force defence behind the admin
// API: it lists list and records what it was asked to clear.
type penalties struct {
	list []limits.Penalty

	mu      sync.Mutex
	cleared []proxy.PenaltyMatch
}

func (p *penalties) Penalties() []limits.Penalty { return p.list }

func (p *penalties) ClearPenalties(m proxy.PenaltyMatch) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cleared = append(p.cleared, m)
	return 2, nil
}

func TestPenaltiesCommand(t *testing.T) {
	last := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	p := &penalties{list: []limits.Penalty{
		{Kind: "address", Key: "127.0.0.2/32", Failures: 10, LastFailure: last, BlockedUntil: last.Add(15 * time.Minute), Delay: 15 * time.Second},
		{Kind: "address", Key: "2001:db8::/64", Failures: 2, LastFailure: last, Delay: 4 * time.Second},
		{Kind: "user", Key: "al\x1b[2Jice", Failures: 3, LastFailure: last},
	}}
	api := admin.New(admin.Options{Sessions: &sessions{}, Penalties: p, Listeners: 1})
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(func() {
		srv.Close()
		api.Shutdown(context.Background())
	})
	t.Setenv(tokenEnv, "")

	code, out, errOut := runCLI("penalties", "-admin", srv.URL)
	want := "" +
		"KIND     KEY            FAILURES  LAST FAILURE          BLOCKED UNTIL         DELAY\n" +
		"address  127.0.0.2/32   10        2026-12-02T10:00:00Z  2026-12-02T10:15:00Z  15s\n" +
		"address  2001:db8::/64  2         2026-12-02T10:00:00Z  -                     4s\n" +
		"user     al?[2Jice      3         2026-12-02T10:00:00Z  -                     -\n" +
		"3 tracked keys\n"
	if code != 0 || out != want || errOut != "" {
		t.Fatalf("penalties: exit %d, stderr %q, stdout:\n%s\nwant:\n%s", code, errOut, out, want)
	}

	// who lists the sessions, then sums up the tracked failures.
	code, out, errOut = runCLI("who", "-admin", srv.URL)
	wantLine := "failed logins tracked: 2 addresses (1 blocked), 1 user (0 blocked); imapguard penalties lists them\n"
	if code != 0 || !strings.HasSuffix(out, "0 connections\n"+wantLine) || errOut != "" {
		t.Errorf("who: exit %d, stderr %q, stdout:\n%s\nwant it to end with:\n%s", code, errOut, out, wantLine)
	}

	for _, tc := range []struct {
		args []string
		want proxy.PenaltyMatch
	}{
		{[]string{"penalties", "-clear", "-address", "127.0.0.0/24"}, proxy.PenaltyMatch{Address: "127.0.0.0/24"}},
		{[]string{"penalties", "-clear", "alice"}, proxy.PenaltyMatch{User: "alice"}},
		{[]string{"penalties", "-clear", "-all"}, proxy.PenaltyMatch{All: true}},
	} {
		p.mu.Lock()
		p.cleared = nil
		p.mu.Unlock()
		code, out, errOut := runCLI(append(tc.args, "-admin", srv.URL)...)
		p.mu.Lock()
		got := p.cleared
		p.mu.Unlock()
		if code != 0 || out != "cleared 2 tracked keys\n" || len(got) != 1 || got[0] != tc.want {
			t.Errorf("%q: exit %d, stdout %q, stderr %q, asked %+v; want %+v", tc.args, code, out, errOut, got, tc.want)
		}
	}

	// -json prints the API's answer, escaped for the terminal.
	code, out, _ = runCLI("penalties", "-json", "-admin", srv.URL)
	if code != 0 || !regexp.MustCompile(`^\{"count":3,"penalties":\[\{"kind":"address".*\}\n$`).MatchString(out) ||
		strings.Contains(out, "\x1b") {
		t.Errorf("-json: exit %d, stdout %q", code, out)
	}

	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"penalties", "-all"}, "go with -clear"},
		{[]string{"penalties", "alice"}, "unexpected argument"},
		{[]string{"penalties", "-clear"}, "-clear needs"},
		{[]string{"penalties", "-clear", "-all", "alice"}, "-all goes alone"},
	} {
		code, out, errOut := runCLI(tc.args...)
		if code != 2 || out != "" || !strings.Contains(errOut, tc.msg) || !strings.Contains(errOut, "usage: imapguard penalties") {
			t.Errorf("%q: exit %d, stdout %q, stderr:\n%s\nwant exit 2, %q and the usage", tc.args, code, out, errOut, tc.msg)
		}
	}
}
