package main

// The commands print what the admin API answers, which comes in part from
// IMAP clients: these tests feed them hostile and oversized answers.

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/imapguard/imapguard/proxy/admin"
)

func TestHumanBytes(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{
		{0, "0 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {1229, "1.2 KiB"},
		{1024*1024 - 1, "1.0 MiB"}, {3 << 30, "3.0 GiB"},
	} {
		if got := humanBytes(tc.n); got != tc.want {
			t.Errorf("humanBytes(%d) = %q; want %q", tc.n, got, tc.want)
		}
	}
	if got := formatAge(3723.4); got != "1h2m3s" {
		t.Errorf("formatAge(3723.4) = %q; want 1h2m3s", got)
	}
}

// hostile is a user name that tries to retitle the window, clear the
// screen and colour what follows: C0 controls (ESC, BEL, tab, CR, LF),
// DEL and a C1 control (U+009B, CSI to some terminals). Through the
// commands it must read as wantHostile.
const (
	hostile     = "\x1b]0;pwned\x07\x1b[2Jmallory\u009b31m\x7f\tx\r\n"
	wantHostile = "?]0;pwned??[2Jmallory?31m??x??"
)

// fakeAPI serves answers on 127.0.0.1:0 as an admin API would that
// passes on what IMAP clients chose, or a server that is not the admin
// API at all: path (with the query) → status and body.
func fakeAPI(t *testing.T, answers map[string]func() (int, []byte)) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		answer, ok := answers[r.URL.RequestURI()]
		if !ok {
			http.NotFound(w, r)
			return
		}
		status, body := answer()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// jsonAnswer is a 200 answer of v as encoding/json writes it: C0
// controls escaped, DEL and C1 controls raw.
func jsonAnswer(t *testing.T, status int, v any) func() (int, []byte) {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return func() (int, []byte) { return status, b }
}

// wantPrintable fails if out has a control character other than LF.
func wantPrintable(t *testing.T, what, out string) {
	t.Helper()
	for i, r := range out {
		if _, n := utf8.DecodeRuneInString(out[i:]); (unicode.IsControl(r) && r != '\n') || (r == utf8.RuneError && n == 1) {
			t.Fatalf("%s: %q at byte %d of %q; want no control characters", what, r, i, out)
		}
	}
}

// TestHostileAnswers: strings from the API reach the terminal with their
// control characters replaced, in tables, settings, errors and -json.
func TestHostileAnswers(t *testing.T) {
	t.Setenv(tokenEnv, "")
	sess := admin.Session{ID: 7, Client: "127.0.0.1:1\x1b[1A", User: hostile, State: "authenticated\t\x1b[8m", TLS: true}
	base := fakeAPI(t, map[string]func() (int, []byte){
		"/sessions":        jsonAnswer(t, 200, admin.SessionList{Count: 1, Sessions: []admin.Session{sess}}),
		"/sessions?user=x": jsonAnswer(t, 400, admin.ErrorBody{Error: "no user \x1b[31mx\u009b"}),
		"/sessions/kick":   jsonAnswer(t, 200, admin.KickResult{Count: 1, Kicked: []admin.Session{sess}}),
		"/settings": jsonAnswer(t, 200, admin.SettingList{Settings: []admin.Setting{
			{Name: "upstream.address", Value: "\x1b[31mred\u0085"}, {Name: "a\x1bb", Value: "v"}, {Name: "tls.email"},
		}}),
	})
	wantRow := "7   " + wantHostile + "  127.0.0.1:1?[1A  authenticated??[8m  yes"

	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"who", []string{"who"}, []string{wantRow}},
		{"kick", []string{"kick", "mallory"}, []string{"kicked 1 connection\n", wantRow}},
		{"settings", []string{"settings"}, []string{
			"upstream.address : ?[31mred?\na?b              : v\ntls.email        :\n"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCLI(append(tc.args, "-admin", base)...)
			if code != 0 {
				t.Fatalf("exit %d, stderr %q", code, errOut)
			}
			wantPrintable(t, tc.name, out)
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("got\n%s\nwant it to contain %q", out, w)
				}
			}
		})
	}

	code, out, errOut := runCLI("who", "-admin", base, "-user", "x")
	if want := "imapguard: no user ?[31mx?\n"; code != 1 || out != "" || errOut != want {
		t.Fatalf("who -user x: exit %d, stdout %q, stderr %q; want exit 1 and %q", code, out, errOut, want)
	}

	// -json prints the same JSON, with DEL and C1 escaped.
	code, out, errOut = runCLI("who", "-admin", base, "-json")
	if code != 0 {
		t.Fatalf("who -json: exit %d, stderr %q", code, errOut)
	}
	wantPrintable(t, "who -json", out)
	var list admin.SessionList
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.Sessions) != 1 || list.Sessions[0].User != hostile {
		t.Fatalf("who -json: %q (%v); want the same JSON", out, err)
	}
	if !strings.Contains(out, `mallory\u009b31m\u007f\tx\r\n"`) {
		t.Errorf("who -json: %s; want DEL and U+009B escaped", out)
	}
}

// TestTerminalJSON: -json escapes what JSON lets stand raw in strings
// and refuses what is not JSON.
func TestTerminalJSON(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"plain", `{"user":"alice"}` + "\n", `{"user":"alice"}` + "\n"},
		{"non-ASCII", `{"user":"jürgen"}`, `{"user":"jürgen"}`},
		{"white space", "{\t\"a\" :\r\n[1] }\n", "{\t\"a\" :\r\n[1] }\n"},
		{"DEL and C1", "{\"u\":\"a\x7fb\u0085c\u009b\"}", `{"u":"a\u007fb\u0085c\u009b"}`},
		{"after a backslash", "{\"u\":\"\\\\\u009b\"}", `{"u":"\\\u009b"}`},
		{"not UTF-8", "{\"u\":\"a\x9b[31m\xc2\"}", `{"u":"a\ufffd[31m\ufffd"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := terminalJSON([]byte(tc.in))
			if err != nil || string(got) != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
			var a, b any
			if json.Unmarshal([]byte(tc.in), &a) != nil || json.Unmarshal(got, &b) != nil || !reflect.DeepEqual(a, b) {
				t.Fatalf("%q decodes to %v; want %v, as the input", got, b, a)
			}
		})
	}
	for _, in := range []string{"\x1b[2J", "{\"u\":\"\x1b[2J\"}", "{}\x1b[2J", "<html>", ""} {
		if got, err := terminalJSON([]byte(in)); err == nil {
			t.Errorf("terminalJSON(%q) = %q; want an error", in, got)
		}
	}

	base := fakeAPI(t, map[string]func() (int, []byte){
		"/settings": func() (int, []byte) { return 200, []byte("\x1b]0;pwned\x07") },
	})
	code, out, errOut := runCLI("settings", "-admin", base, "-json")
	if code != 1 || out != "" || !strings.Contains(errOut, "not JSON") {
		t.Fatalf("settings -json with a non-JSON answer: exit %d, stdout %q, stderr %q; want exit 1 and not JSON", code, out, errOut)
	}
	wantPrintable(t, "stderr", errOut)
}

// TestAnswerLimit: an answer over the limit is an error, not a read
// without end.
func TestAnswerLimit(t *testing.T) {
	t.Setenv(tokenEnv, "")
	body := []byte(`{"count":0,"sessions":[` + strings.Repeat(" ", 2<<10) + `]}`)
	base := fakeAPI(t, map[string]func() (int, []byte){
		"/sessions": func() (int, []byte) { return 200, body },
	})
	c, err := (&adminFlags{url: base, timeout: 10 * time.Second}).client()
	if err != nil {
		t.Fatal(err)
	}
	if c.maxAnswer != maxAnswerBytes || maxAnswerBytes != 64<<20 {
		t.Fatalf("maxAnswer %d; want 64 MiB", c.maxAnswer)
	}
	for _, tc := range []struct {
		limit int64
		err   string
	}{
		{int64(len(body)), ""},
		{int64(len(body)) - 1, "admin API at " + base + ": the answer is larger than 2.0 KiB; gave up"},
		{1 << 10, "admin API at " + base + ": the answer is larger than 1.0 KiB; gave up"},
	} {
		c.maxAnswer = tc.limit
		var out bytes.Buffer
		err := c.who(&out, "", "", false)
		if tc.err == "" && err != nil {
			t.Errorf("limit %d for %d bytes: %v; want no error", tc.limit, len(body), err)
		}
		if tc.err != "" && (err == nil || err.Error() != tc.err) {
			t.Errorf("limit %d for %d bytes: %v; want %s", tc.limit, len(body), err, tc.err)
		}
	}
}
