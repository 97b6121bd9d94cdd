// Command imapd is a small in-memory IMAP server used as the upstream for
// imapguard demos (make run) and end-to-end tests.
//
// It accepts LOGIN and AUTHENTICATE PLAIN over plain TCP with no TLS, so
// passwords cross the wire in clear text: run it on loopback only. A user
// with a test token (token in the config file; the default demo user has
// "demo-token") may also log in with AUTHENTICATE OAUTHBEARER (RFC 7628)
// or XOAUTH2, which imapd then advertises; a wrong token gets the error
// challenge and, after the client's dummy response, NO.
//
// Usage:
//
//	imapd [-listen 127.0.0.1:2143] [-config FILE] [-user name:password]... [-messages N] [-debug]
//
// Users come from the config file and from -user flags; with neither, a
// single user "demo" with password "demo" and token "demo-token" is
// created. On start imapd prints
// exactly one line to stdout, "imapd listening on ADDR", with the real
// address (so -listen 127.0.0.1:0 can be used), and logs to stderr.
// SIGINT or SIGTERM stops it.
//
// The optional TOML config file looks like this; unknown keys are errors:
//
//	listen = "127.0.0.1:2143"
//
//	[[user]]
//	username = "demo"
//	password = "demo"
//	token = "demo-token"   # optional: AUTHENTICATE OAUTHBEARER / XOAUTH2
//	messages = 10
//	message_size = 0
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	toml "github.com/pelletier/go-toml/v2"

	"github.com/imapguard/imapguard/cmd/imapd/server"
)

// errUsage marks command-line errors that the flag package has already
// reported on stderr.
var errUsage = errors.New("usage error")

const (
	defaultListen   = "127.0.0.1:2143"
	defaultMessages = 10
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case errors.Is(err, errUsage): // the flag package already printed it
		os.Exit(2)
	case err != nil:
		fmt.Fprintf(os.Stderr, "imapd: %v\n", err)
		os.Exit(1)
	}
}

// fileConfig is the TOML config file.
type fileConfig struct {
	Listen string     `toml:"listen"`
	Users  []fileUser `toml:"user"`
}

// fileUser is one [[user]] table of the config file.
type fileUser struct {
	Username    string `toml:"username"`
	Password    string `toml:"password"`
	Token       string `toml:"token"`
	Messages    int    `toml:"messages"`
	MessageSize int    `toml:"message_size"`
}

// userFlags collects repeated -user name:password flags.
type userFlags []server.User

// String implements flag.Value.
func (u *userFlags) String() string {
	names := make([]string, len(*u))
	for i, user := range *u {
		names[i] = user.Username
	}
	return strings.Join(names, ",")
}

// Set implements flag.Value. The password is everything after the first
// colon and may itself contain colons.
func (u *userFlags) Set(v string) error {
	name, pass, ok := strings.Cut(v, ":")
	if !ok || name == "" {
		return errors.New("want name:password")
	}
	*u = append(*u, server.User{Username: name, Password: pass})
	return nil
}

// config is the merged result of flags and config file.
type config struct {
	listen string
	debug  bool
	users  []server.User
}

// parseArgs parses the command line and the config file it names. Flags
// override the file's listen address; users from both are combined.
func parseArgs(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("imapd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", defaultListen, "`address` to listen on")
	configPath := fs.String("config", "", "optional TOML config `file`")
	messages := fs.Int("messages", defaultMessages, "seed messages for -user users and the default demo user")
	debug := fs.Bool("debug", false, "trace the raw IMAP protocol to stderr (includes passwords)")
	var flagUsers userFlags
	fs.Var(&flagUsers, "user", "add a user as `name:password` (repeatable)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return config{}, err
		}
		return config{}, fmt.Errorf("%w: %w", errUsage, err)
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if *messages < 0 {
		return config{}, fmt.Errorf("-messages must not be negative, got %d", *messages)
	}

	cfg := config{listen: *listen, debug: *debug}
	if *configPath != "" {
		fc, err := loadConfig(*configPath)
		if err != nil {
			return config{}, err
		}
		if fc.Listen != "" && !flagSet(fs, "listen") {
			cfg.listen = fc.Listen
		}
		for _, u := range fc.Users {
			cfg.users = append(cfg.users, server.User(u))
		}
	}
	for _, u := range flagUsers {
		u.Messages = *messages
		cfg.users = append(cfg.users, u)
	}
	if len(cfg.users) == 0 {
		cfg.users = []server.User{{Username: "demo", Password: "demo", Token: "demo-token", Messages: *messages}}
	}
	return cfg, nil
}

// flagSet reports whether the named flag was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// loadConfig decodes the TOML file at path strictly: keys that do not map
// to a field are an error naming them all. It uses go-toml, as package
// config does, so that the module has one TOML library.
func loadConfig(path string) (fileConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return fileConfig{}, fmt.Errorf("config %s: %w", path, err)
	}
	var fc fileConfig
	err = toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields().Decode(&fc)
	if strict, ok := errors.AsType[*toml.StrictMissingError](err); ok {
		keys := make([]string, len(strict.Errors))
		for i, e := range strict.Errors {
			keys[i] = strings.Join(e.Key(), ".")
		}
		slices.Sort(keys)
		return fileConfig{}, fmt.Errorf("config %s: unknown keys: %s", path, strings.Join(keys, ", "))
	}
	if de, ok := errors.AsType[*toml.DecodeError](err); ok {
		line, col := de.Position()
		return fileConfig{}, fmt.Errorf("config %s:%d:%d: %w", path, line, col, err)
	}
	if err != nil {
		return fileConfig{}, fmt.Errorf("config %s: %w", path, err)
	}
	return fc, nil
}

// run starts the server and blocks until ctx is cancelled or serving fails.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseArgs(args, stderr)
	if err != nil {
		return err
	}
	level := slog.LevelInfo
	if cfg.debug {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	opts := server.Options{Users: cfg.users, Logger: logger, InsecureAuth: true}
	if cfg.debug {
		opts.Debug = stderr
	}
	srv, err := server.New(opts)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if _, err := fmt.Fprintf(stdout, "imapd listening on %s\n", ln.Addr()); err != nil {
		ln.Close()
		return fmt.Errorf("write address: %w", err)
	}
	for _, u := range cfg.users {
		logger.Info("user", "username", u.Username, "messages", u.Messages, "message_size", u.MessageSize)
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	select {
	case err := <-serveErr:
		return errors.Join(err, srv.Close())
	case <-ctx.Done():
	}
	logger.Info("shutting down")
	if err := srv.Close(); err != nil {
		return err
	}
	return <-serveErr
}
