package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/imapguard/imapguard/config"
	"github.com/imapguard/imapguard/proxy/admin"
)

// The admin commands' requests and what they print: who, kick,
// penalties, settings, reload (cli.go finds the API and parses the flags;
// backends.go and drain.go hold the commands of their own).

func (c *adminClient) who(w io.Writer, user, address string, raw bool) error {
	q := url.Values{}
	if user != "" {
		q.Set("user", user)
	}
	if address != "" {
		q.Set("address", address)
	}
	path := "/sessions"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var list admin.SessionList
	if err := c.get(w, http.MethodGet, path, nil, &list, raw); err != nil || raw {
		return err
	}
	if err := writeSessions(w, list.Sessions); err != nil {
		return err
	}
	summary := plural(len(list.Sessions), "connection")
	if list.Fleet {
		summary += " across the fleet"
	}
	if _, err := fmt.Fprintln(w, summary); err != nil {
		return err
	}
	if list.Note != "" {
		if _, err := fmt.Fprintln(w, "note: "+printable(list.Note)); err != nil {
			return err
		}
	}
	return c.penaltySummary(w)
}

// penaltySummary adds to who's listing a line on the brute-force
// defence's tracked failures, when there are any; the whole list (it may
// hold auth_tracking_entries keys each) is imapguard penalties'. A proxy
// without the defence (the API answers 404) adds nothing.
func (c *adminClient) penaltySummary(w io.Writer) error {
	var list admin.PenaltyList
	if err := c.get(w, http.MethodGet, "/penalties", nil, &list, false); err != nil || len(list.Penalties) == 0 {
		return nil
	}
	var n, blocked [2]int // addresses, users
	for _, p := range list.Penalties {
		i := 0
		if p.Kind == "user" {
			i = 1
		}
		n[i]++
		if p.Blocked {
			blocked[i]++
		}
	}
	_, err := fmt.Fprintf(w, "failed logins tracked: %s (%d blocked), %s (%d blocked); imapguard penalties lists them\n",
		plural(n[0], "address"), blocked[0], plural(n[1], "user"), blocked[1])
	return err
}

func (c *adminClient) kick(w io.Writer, req admin.KickRequest, raw bool) error {
	var res admin.KickResult
	if err := c.get(w, http.MethodPost, "/sessions/kick", req, &res, raw); err != nil || raw {
		return err
	}
	where := ""
	if res.Fleet {
		where = " across the fleet"
	}
	if res.Note != "" {
		defer fmt.Fprintln(w, "note: "+printable(res.Note))
	}
	if len(res.Kicked) == 0 {
		_, err := fmt.Fprintln(w, "no matching connections"+where)
		return err
	}
	if _, err := fmt.Fprintf(w, "kicked %s%s\n", plural(len(res.Kicked), "connection"), where); err != nil {
		return err
	}
	return writeSessions(w, res.Kicked)
}

// penalties prints the brute-force defence's tracked failures as a
// table: addresses, then users.
func (c *adminClient) penalties(w io.Writer, raw bool) error {
	var list admin.PenaltyList
	if err := c.get(w, http.MethodGet, "/penalties", nil, &list, raw); err != nil || raw {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tKEY\tFAILURES\tLAST FAILURE\tBLOCKED UNTIL\tDELAY")
	for _, p := range list.Penalties {
		until, delay := "-", "-"
		if p.BlockedUntil != nil {
			until = p.BlockedUntil.UTC().Format(time.RFC3339)
		}
		if p.DelaySeconds > 0 {
			delay = formatAge(p.DelaySeconds)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", printable(p.Kind), printable(p.Key), p.Failures,
			p.LastFailure.UTC().Format(time.RFC3339), until, delay)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintln(w, plural(len(list.Penalties), "tracked key"))
	return err
}

func (c *adminClient) clearPenalties(w io.Writer, req admin.ClearRequest, raw bool) error {
	var res admin.ClearResult
	if err := c.get(w, http.MethodPost, "/penalties/clear", req, &res, raw); err != nil || raw {
		return err
	}
	_, err := fmt.Fprintf(w, "cleared %s\n", plural(res.Cleared, "tracked key"))
	return err
}

// settings prints "name : value" lines, the names padded to a common
// width, as imapguard -check does (config.Config.WriteSettings).
func (c *adminClient) settings(w io.Writer, raw bool) error {
	var list admin.SettingList
	if err := c.get(w, http.MethodGet, "/settings", nil, &list, raw); err != nil || raw {
		return err
	}
	settings := make([]config.Setting, len(list.Settings))
	for i, s := range list.Settings {
		settings[i] = config.Setting{Name: printable(s.Name), Value: printable(s.Value)}
	}
	return config.WriteSettingList(w, settings)
}

// reload asks for a reload (POST /reload) and prints what changed.
func (c *adminClient) reload(w io.Writer, raw bool) error {
	var res admin.ReloadResult
	if err := c.get(w, http.MethodPost, "/reload", struct{}{}, &res, raw); err != nil || raw {
		return err
	}
	if res.File == "" {
		_, err := fmt.Fprintln(w, "running on the embedded demo configuration: nothing to re-read")
		return err
	}
	list := func(keys []string) string {
		if len(keys) == 0 {
			return "none"
		}
		out := make([]string, len(keys))
		for i, k := range keys {
			out[i] = printable(k)
		}
		return strings.Join(out, ", ")
	}
	if _, err := fmt.Fprintf(w, "reloaded %s\nchanged: %s\n", printable(res.File), list(res.Changed)); err != nil {
		return err
	}
	if len(res.RestartNeeded) > 0 {
		_, err := fmt.Fprintf(w, "changed, but take effect only after a restart: %s\n", list(res.RestartNeeded))
		return err
	}
	return nil
}

// writeSessions writes a table of sessions, with a header even when
// there are none, and an INSTANCE column in a fleet-wide answer (another
// instance's session has no id here: "-"). The strings of the API are made printable, which also
// keeps a tab in a user name from shifting the columns.
func writeSessions(w io.Writer, list []admin.Session) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fleet := slices.ContainsFunc(list, func(s admin.Session) bool { return s.Instance != "" })
	if fleet {
		fmt.Fprint(tw, "INSTANCE\t")
	}
	fmt.Fprintln(tw, "ID\tUSER\tCLIENT\tSTATE\tTLS\tSINCE\tUP\tDOWN")
	for _, s := range list {
		id := strconv.FormatUint(s.ID, 10)
		if fleet {
			fmt.Fprintf(tw, "%s\t", printable(s.Instance))
			if s.ID == 0 {
				id = "-"
			}
		}
		user := printable(s.User)
		if user == "" {
			user = "-"
		}
		tls := "no"
		if s.TLS {
			tls = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", id, user, printable(s.Client), printable(s.State), tls,
			formatAge(s.DurationSeconds), humanBytes(s.BytesToUpstream), humanBytes(s.BytesToClient))
	}
	return tw.Flush()
}

// printable returns s, a string from the API, with each character a
// terminal could obey replaced by '?': the C0 controls (ESC, which
// starts the sequences that move the cursor, retitle the window or
// rewrite the screen, and tab, CR and LF too), DEL and the C1 controls
// U+0080 to U+009F (U+009B is CSI to some terminals), which is what
// unicode.IsControl covers, and each byte that is not UTF-8.
func printable(s string) string {
	ok := true
	for _, r := range s {
		ok = ok && !unicode.IsControl(r) && r != utf8.RuneError
	}
	if ok {
		return s
	}
	var b strings.Builder
	for i, r := range s {
		if _, n := utf8.DecodeRuneInString(s[i:]); unicode.IsControl(r) || (r == utf8.RuneError && n == 1) {
			r = '?'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// terminalJSON returns b, the answer printed by -json, as the same JSON
// with DEL, the C1 controls and each byte that is not UTF-8 written as
// \u escapes (\ufffd for the bytes, which is how a JSON decoder reads
// them). An answer that is not JSON is an error: JSON can hold the other
// controls only escaped, in strings (RFC 8259 §7), and those three only
// in strings too, where an escape means the same.
func terminalJSON(b []byte) ([]byte, error) {
	if !json.Valid(b) {
		return nil, errors.New("the answer is not JSON")
	}
	if !bytes.ContainsFunc(b, func(r rune) bool { return r >= 0x7f }) {
		return b, nil
	}
	out := make([]byte, 0, len(b)+64)
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		switch {
		case r == utf8.RuneError && n == 1:
			out = append(out, `\ufffd`...)
		case r >= 0x7f && unicode.IsControl(r): // not \t, \n, \r: white space outside strings
			out = fmt.Appendf(out, `\u%04x`, r)
		default:
			out = append(out, b[:n]...)
		}
		b = b[n:]
	}
	return out, nil
}

// formatAge formats seconds rounded to whole seconds, as 1h2m3s.
func formatAge(seconds float64) string {
	return time.Duration(seconds * float64(time.Second)).Round(time.Second).String()
}

// humanBytes formats n in binary units: 512 B, 1.2 KiB, 3.0 MiB.
func humanBytes(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v, unit := float64(n)/1024, 0
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	for v >= 1023.95 && unit < len(units)-1 { // what %.1f would show as 1024.0
		v /= 1024
		unit++
	}
	return fmt.Sprintf("%.1f %s", v, units[unit])
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	if strings.HasSuffix(noun, "s") {
		return fmt.Sprintf("%d %ses", n, noun)
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
