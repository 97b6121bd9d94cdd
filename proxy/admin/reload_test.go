package admin

import (
	"context"
	"net/http"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
)

// TestReload: POST /reload with the token and a JSON type runs
// Options.Reload and answers its result, a ReloadError as 422 with the
// problems, and refuses what a browser could send.
func TestReload(t *testing.T) {
	var calls atomic.Int32
	var fail atomic.Bool
	_, base := startAdmin(t, Options{Token: testToken, Sessions: &fakeSessions{}, Reload: func(context.Context) (ReloadResult, error) {
		calls.Add(1)
		if fail.Load() {
			return ReloadResult{}, &ReloadError{Problems: []string{"x.toml:2: limits.max_connections: 0 is out of range", "x.toml:3: unknown key y"}}
		}
		return ReloadResult{File: "x.toml", Changed: []string{"log.level"}}, nil
	}})
	auth := func(ct string) http.Header {
		h := headers("Authorization", "Bearer "+testToken)
		if ct != "" {
			h.Set("Content-Type", ct)
		}
		return h
	}
	var res ReloadResult
	do(t, request{method: http.MethodPost, url: base + "/reload", header: auth("application/json")}).decode(t, http.StatusOK, &res)
	if want := (ReloadResult{File: "x.toml", Changed: []string{"log.level"}, RestartNeeded: []string{}}); !reflect.DeepEqual(res, want) {
		t.Errorf("got %+v; want %+v", res, want)
	}
	do(t, request{method: http.MethodPost, url: base + "/reload", header: auth("application/json"), body: "{}"}).decode(t, http.StatusOK, &res)

	fail.Store(true)
	var e ErrorBody
	do(t, request{method: http.MethodPost, url: base + "/reload", header: auth("application/json"), body: "{}"}).decode(t, http.StatusUnprocessableEntity, &e)
	if !strings.Contains(e.Error, "nothing changed") || len(e.Problems) != 2 || e.Problems[1] != "x.toml:3: unknown key y" {
		t.Errorf("got %+v; want the problems", e)
	}
	before := calls.Load()
	for _, tt := range []struct {
		name   string
		r      request
		status int
	}{
		{"no token", request{method: http.MethodPost, url: base + "/reload", header: headers("Content-Type", "application/json")}, http.StatusUnauthorized},
		{"form", request{method: http.MethodPost, url: base + "/reload", header: auth("application/x-www-form-urlencoded")}, http.StatusUnsupportedMediaType},
		{"GET", request{url: base + "/reload", header: auth("")}, http.StatusMethodNotAllowed},
		{"unknown field", request{method: http.MethodPost, url: base + "/reload", header: auth("application/json"), body: `{"file":"/etc/passwd"}`}, http.StatusBadRequest},
		{"query", request{method: http.MethodPost, url: base + "/reload?x=1", header: auth("application/json")}, http.StatusBadRequest},
	} {
		if got := do(t, tt.r); got.status != tt.status {
			t.Errorf("%s: got status %d (%s); want %d", tt.name, got.status, got.body, tt.status)
		}
	}
	if calls.Load() != before {
		t.Errorf("a refused request reloaded")
	}
}

// TestSetToken: after SetToken the old token is refused and the new one
// accepted, at once.
func TestSetToken(t *testing.T) {
	s, base := startAdmin(t, Options{Token: testToken, Sessions: &fakeSessions{}})
	with := func(token string) int {
		return do(t, request{url: base + "/settings", header: headers("Authorization", "Bearer "+token)}).status
	}
	if got := with(testToken); got != http.StatusOK {
		t.Fatalf("first token: got %d; want 200", got)
	}
	const next = "fedcba9876543210-next-token"
	s.SetToken(next)
	if got := with(testToken); got != http.StatusUnauthorized {
		t.Errorf("old token after SetToken: got %d; want 401", got)
	}
	if got := with(next); got != http.StatusOK {
		t.Errorf("new token after SetToken: got %d; want 200", got)
	}
}
