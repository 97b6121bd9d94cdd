package main

// The admin commands, who, kick, settings and penalties, are clients of
// the admin API (package proxy/admin) of a running imapguard, as doveadm
// who, kick and penalty are of Dovecot. What the API answers comes in part from IMAP
// clients (user names) and in all from whatever -admin points at, so
// before it reaches the terminal every string is made printable (see
// printable and terminalJSON) and the answer's size is bounded.

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
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

// tokenEnv names the environment variable that holds the admin token; it
// keeps the token out of ps, where -token shows it.
const tokenEnv = "IMAPGUARD_ADMIN_TOKEN"

// defaultAdminTimeout bounds one request to the admin API.
const defaultAdminTimeout = 10 * time.Second

// maxAnswerBytes bounds an answer of the admin API: a list of sessions
// takes about 300 bytes a connection, so this is some 200,000 of them,
// and a server that sends more is not one to trust with the memory.
const maxAnswerBytes = 64 << 20

// errUsage reports bad arguments; the command has printed why.
var errUsage = errors.New("usage")

// adminUsage is the synopsis of each command.
var adminUsage = map[string]string{
	"who":      "imapguard who [-user USER] [-address ADDRESS] [flags]\n\nLists the live connections of a running imapguard.",
	"kick":     "imapguard kick [-address ADDRESS] [-reason TEXT] [flags] [USER]\n\nCloses the connections of USER (case-insensitive), from ADDRESS (an IP\naddress, a prefix such as 192.0.2.0/24, or host:port), or both; each\nclient is told \"* BYE [UNAVAILABLE] TEXT\".",
	"settings": "imapguard settings [flags]\n\nPrints the effective settings of a running imapguard, secrets redacted.",
	"reload":   "imapguard reload [flags]\n\nMakes a running imapguard re-read its configuration file, as SIGHUP does, and\nprints the keys whose change it applied and those that need a restart; for a\nbad file, prints its problems and exits 1, and nothing changes.",
	"penalties": "imapguard penalties [flags]\n       imapguard penalties -clear [-address ADDRESS] [-user USER | -all] [flags] [USER]\n\n" +
		"Lists the failed logins the brute-force defence tracks, by client address\nand by user, and their blocks; with -clear, forgets those of ADDRESS (an IP\naddress or a prefix), of USER, or -all, as doveadm penalty does.",
	"drain":    drainUsage,
	"backends": "imapguard backends [flags]\n\nLists the upstream backends of a running imapguard (upstream.route \"hash\" or\n\"map\"): their state (up or down) by the health checks, failed probes in a row,\nlast probe and sessions.",
}

// runAdminCommand runs who, kick, settings or penalties and returns the exit code:
// 0, 1 for a failure (the API's or an answer's), 2 for bad arguments or a
// configuration that does not load.
func runAdminCommand(name string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("imapguard "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	printUsage := func(w io.Writer) {
		fmt.Fprintf(w, "usage: %s\n\nFlags:\n", adminUsage[name])
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(stderr)
	}
	// Left to the calls below: help asked for goes to stdout, the usage
	// after a bad flag to stderr.
	fs.Usage = func() {}
	var af adminFlags
	af.register(fs)
	var user, address, reason string
	var clear, all, wait bool
	switch name {
	case "drain":
		fs.BoolVar(&wait, "wait", false, "wait until every connection has ended")
	case "penalties":
		fs.BoolVar(&clear, "clear", false, "forget the failures of -address, -user (or the argument), or -all")
		fs.BoolVar(&all, "all", false, "with -clear: forget every tracked failure")
		fs.StringVar(&user, "user", "", "with -clear: forget the failures of `USER`, like the argument")
		fs.StringVar(&address, "address", "", "with -clear: forget the failures of `ADDRESS`: an IP address or a prefix")
	case "who":
		fs.StringVar(&user, "user", "", "only the connections of `USER` (case-insensitive)")
		fs.StringVar(&address, "address", "", "only the connections from `ADDRESS`: an IP address, a prefix or host:port")
	case "kick":
		fs.StringVar(&user, "user", "", "kick the connections of `USER`, like the argument")
		fs.StringVar(&address, "address", "", "kick the connections from `ADDRESS`: an IP address, a prefix or host:port")
		fs.StringVar(&reason, "reason", "", "`TEXT` sent to the clients after \"* BYE [UNAVAILABLE] \" (default: Session closed by the administrator)")
	}
	pos, err := parseArgs(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		printUsage(stdout)
		return exitOK
	}
	if err != nil {
		printUsage(stderr)
		return exitUsage
	}
	usage := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "imapguard %s: %s\n", name, fmt.Sprintf(format, a...))
		printUsage(stderr)
		return exitUsage
	}
	if af.timeout <= 0 {
		return usage("-timeout must be positive")
	}
	switch {
	case (name == "kick" || name == "penalties") && len(pos) == 1 && user != "" && pos[0] != user:
		return usage("two users: -user %q and %q", user, pos[0])
	case (name == "kick" || name == "penalties" && clear) && len(pos) == 1:
		user = pos[0]
	case len(pos) > 0:
		return usage("unexpected argument %q", pos[0])
	}
	if name == "kick" && strings.TrimSpace(user) == "" && strings.TrimSpace(address) == "" {
		return usage("kick needs a USER, an -address or both")
	}
	if name == "penalties" {
		selected := strings.TrimSpace(user) != "" || strings.TrimSpace(address) != ""
		switch {
		case !clear && (all || selected):
			return usage("-all, -user and -address go with -clear")
		case clear && all && selected:
			return usage("-all goes alone, without a USER or an -address")
		case clear && !all && !selected:
			return usage("-clear needs a USER, an -address, both, or -all")
		}
	}

	c, err := af.client()
	if err != nil {
		// The configuration or -admin is at fault.
		fmt.Fprintf(stderr, "imapguard: %v\n", err)
		return exitUsage
	}
	switch name {
	case "who":
		err = c.who(stdout, user, address, af.json)
	case "kick":
		err = c.kick(stdout, admin.KickRequest{User: user, Address: address, Reason: reason}, af.json)
	case "settings":
		err = c.settings(stdout, af.json)
	case "drain":
		err = c.drain(stdout, wait, af.json)
	case "reload":
		err = c.reload(stdout, af.json)
	case "backends":
		err = c.backends(stdout, af.json)
	case "penalties":
		if clear {
			err = c.clearPenalties(stdout, admin.ClearRequest{All: all, User: user, Address: address}, af.json)
		} else {
			err = c.penalties(stdout, af.json)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "imapguard: %v\n", err)
		return 1
	}
	return 0
}

// parseArgs parses flags and positional arguments in any order, so that
// "kick alice -reason TEXT" works as "kick -reason TEXT alice" does.
// Everything after "--" is positional. -h and -help return flag.ErrHelp.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, errUsage
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// adminFlags are the flags every admin command takes: where the API is
// and how to talk to it.
type adminFlags struct {
	config  string
	url     string
	token   string
	json    bool
	timeout time.Duration
}

func (f *adminFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.config, "config", "", "read admin.listen and admin.token from the configuration `FILE`; default: the embedded demo configuration (http://127.0.0.1:8143)")
	fs.StringVar(&f.url, "admin", "", "the admin API's `URL`, such as http://127.0.0.1:8143; overrides admin.listen")
	fs.StringVar(&f.token, "token", "", "the admin `TOKEN`; overrides $"+tokenEnv+" and admin.token (prefer those: -token shows in ps)")
	fs.BoolVar(&f.json, "json", false, "print the API's JSON answer as it is (DEL, C1 controls and bytes that are not UTF-8 \\u-escaped)")
	fs.DurationVar(&f.timeout, "timeout", defaultAdminTimeout, "give up on the admin API after this `duration`")
}

// endpoint returns the API's base URL and the token: -admin, else
// admin.listen of the configuration (-config, else the embedded demo
// one); -token, else $IMAPGUARD_ADMIN_TOKEN, else admin.token.
func (f *adminFlags) endpoint() (base, token string, err error) {
	cfgToken := ""
	if f.url == "" || f.config != "" {
		cfg, err := load(f.config)
		if err != nil {
			return "", "", err
		}
		// A token file the operator cannot read matters only when
		// neither -token nor the environment gives the token.
		var tokenErr error
		cfgToken, tokenErr = cfg.Admin.ReadToken()
		if tokenErr != nil && f.token == "" && os.Getenv(tokenEnv) == "" {
			return "", "", tokenErr
		}
		if f.url == "" {
			if cfg.Admin.Listen == "" {
				return "", "", fmt.Errorf("%s has no admin API (admin.listen is empty); give -admin URL", configName(f.config))
			}
			if base, err = listenURL(cfg.Admin.Listen); err != nil {
				return "", "", err
			}
		}
	}
	if f.url != "" {
		if base, err = normalizeURL(f.url); err != nil {
			return "", "", err
		}
	}
	token = cfgToken
	if env := os.Getenv(tokenEnv); env != "" {
		token = env
	}
	if f.token != "" {
		token = f.token
	}
	return base, token, nil
}

func configName(path string) string {
	if path == "" {
		return "the embedded demo configuration"
	}
	return path
}

// listenURL is the URL of an admin API that listens on addr. A server
// listening on all addresses (empty host, 0.0.0.0 or ::) is reached on
// loopback.
func listenURL(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("admin.listen %q: %w", addr, err)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return "http://" + net.JoinHostPort(host, port), nil
}

// normalizeURL checks the -admin URL; a bare host:port means http.
func normalizeURL(s string) (string, error) {
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("-admin: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("-admin %q: want http://HOST:PORT", s)
	}
	return strings.TrimRight(u.String(), "/"), nil
}

func (f *adminFlags) client() (*adminClient, error) {
	base, token, err := f.endpoint()
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil // the token goes straight to the API, never to an HTTP_PROXY
	return &adminClient{base: base, token: token, http: &http.Client{Timeout: f.timeout, Transport: tr},
		maxAnswer: maxAnswerBytes}, nil
}

// adminClient talks to one admin API.
type adminClient struct {
	base      string // such as http://127.0.0.1:8143, without a trailing slash
	token     string // "": none sent
	http      *http.Client
	maxAnswer int64 // the largest answer body read, in bytes
}

// call sends a request and returns the body of a 2xx answer; any other
// answer is an error with the API's message.
func (c *adminClient) call(method, path string, body any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		return nil, fmt.Errorf("admin API at %s: %w", c.base, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err // drop the method and URL, said below
		}
		return nil, fmt.Errorf("admin API at %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, c.maxAnswer+1))
	if err != nil {
		return nil, fmt.Errorf("admin API at %s: %w", c.base, err)
	}
	if int64(len(b)) > c.maxAnswer {
		return nil, fmt.Errorf("admin API at %s: the answer is larger than %s; gave up", c.base, humanBytes(c.maxAnswer))
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized && c.token == "":
		return nil, fmt.Errorf("the admin API wants a token (admin.token; -token or %s)", tokenEnv)
	case resp.StatusCode == http.StatusUnauthorized:
		return nil, fmt.Errorf("the admin API refused the token (admin.token; -token or %s)", tokenEnv)
	case resp.StatusCode/100 != 2:
		var e admin.ErrorBody
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			msg := printable(e.Error)
			for _, p := range e.Problems {
				msg += "\n  " + printable(p)
			}
			return nil, errors.New(msg)
		}
		return nil, fmt.Errorf("admin API at %s: %s", c.base, printable(resp.Status))
	}
	return b, nil
}

// get calls and decodes the answer into v or, with raw, copies it to w.
func (c *adminClient) get(w io.Writer, method, path string, body, v any, raw bool) error {
	b, err := c.call(method, path, body)
	if err != nil {
		return err
	}
	if raw {
		out, err := terminalJSON(b)
		if err != nil {
			return fmt.Errorf("admin API at %s: %s: %w", c.base, path, err)
		}
		_, err = w.Write(out)
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("admin API at %s: %s: %w", c.base, path, err)
	}
	return nil
}

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

// backends prints the upstream backends as a table.
func (c *adminClient) backends(w io.Writer, raw bool) error {
	var list admin.BackendList
	if err := c.get(w, http.MethodGet, "/backends", nil, &list, raw); err != nil || raw {
		return err
	}
	if len(list.Backends) == 0 {
		_, err := fmt.Fprintf(w, "route %s: one upstream (upstream.address), no backends\n", printable(list.Route))
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tADDRESS\tWEIGHT\tSTATE\tFAILURES\tLAST PROBE\tSESSIONS\tLAST ERROR")
	for _, b := range list.Backends {
		probe, lastErr := "-", "-"
		if b.LastProbe != nil {
			probe = b.LastProbe.UTC().Format(time.RFC3339)
		}
		if b.LastError != "" {
			lastErr = b.LastError
		}
		fmt.Fprintf(tw, "%s\t%s\t%g\t%s\t%d\t%s\t%d\t%s\n", printable(b.Name), printable(b.Address), b.Weight,
			printable(b.State), b.Failures, probe, b.Sessions, printable(lastErr))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "route %s: %s\n", printable(list.Route), plural(len(list.Backends), "backend"))
	return err
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
