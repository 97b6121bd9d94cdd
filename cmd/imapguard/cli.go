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
	"strings"
	"time"

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
