package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/imapguard/imapguard/proxy/imapwire"
)

// maxUpstreamLine bounds a response line read from the upstream during
// login, and maxUpstreamLiteral any literal in such a response.
const (
	maxUpstreamLine    = 64 << 10
	maxUpstreamLiteral = 1 << 20
)

// loginError is an upstream login that did not succeed; (*conn).login
// maps it to the client's tagged NO.
type loginError struct {
	kind loginFailure
	code string // upstream's response code, when passed on
	text string // upstream's text, sanitised, when passed on
	err  error  // cause, for logs only
}

type loginFailure int

const (
	loginUnavailable loginFailure = iota // dial, greeting, protocol trouble
	loginAuthFailed                      // the upstream said NO to the credentials
	loginRefused                         // the upstream said NO with a code worth passing on
)

func (e *loginError) Error() string {
	switch e.kind {
	case loginAuthFailed:
		return "upstream rejected the credentials"
	case loginRefused:
		return fmt.Sprintf("upstream refused the login: [%s] %s", e.code, e.text)
	}
	return fmt.Sprintf("upstream unavailable: %v", e.err)
}

func (e *loginError) Unwrap() error { return e.err }

func unavailable(format string, args ...any) *loginError {
	return &loginError{kind: loginUnavailable, err: fmt.Errorf(format, args...)}
}

// passedCodes are the upstream's RFC 5530 response codes to a failed login
// that the client should see as they are; any other NO becomes
// AUTHENTICATIONFAILED.
var passedCodes = map[string]bool{
	"UNAVAILABLE": true, "AUTHORIZATIONFAILED": true, "EXPIRED": true,
	"PRIVACYREQUIRED": true, "CONTACTADMIN": true, "LIMIT": true,
	"INUSE": true, "SERVERBUG": true,
}

// upstream is a connection to the upstream server during login, where
// the proxy is the IMAP client.
type upstream struct {
	nc   net.Conn
	br   *bufio.Reader
	rr   *imapwire.ResponseReader
	caps []string
	// preLogin are the capabilities before login, once learnt (after
	// any STARTTLS): the proxy's cache of them is refreshed from here.
	preLogin []string
	// backend is the backend dialled when routing among several (nil:
	// Options.UpstreamAddr), whose sessions count this one.
	backend     *backendState
	backendName string
}

func newUpstream(nc net.Conn) *upstream {
	u := &upstream{nc: nc, br: bufio.NewReaderSize(nc, 4096)}
	u.rr = imapwire.NewResponseReader(u.br, maxUpstreamLine, maxUpstreamLiteral)
	return u
}

// dialUpstream connects and reads the greeting. The whole exchange up to
// the end of login is bounded by loginTimeout from here. With
// ForwardProxyV1 or V2 it first writes fwd's PROXY header.
func dialUpstream(ctx context.Context, o *Options, fwd *forwarding) (*upstream, error) {
	switch o.UpstreamTLS {
	case "", "none", "implicit", "starttls":
	default:
		// Fail closed: an unknown mode must not mean plaintext.
		return nil, unavailable("unknown UpstreamTLS %q", o.UpstreamTLS)
	}
	switch o.ForwardClient {
	case "", ForwardNone, ForwardID, ForwardProxyV1, ForwardProxyV2:
	default:
		// Fail closed too: the upstream would see every client as the proxy.
		return nil, unavailable("unknown ForwardClient %q", o.ForwardClient)
	}
	dctx, cancel := context.WithTimeout(ctx, o.ConnectTimeout)
	defer cancel()
	nc, err := o.Dial(dctx, "tcp", o.UpstreamAddr)
	if err != nil {
		return nil, unavailable("dial %s: %w", o.UpstreamAddr, err)
	}
	nc.SetDeadline(time.Now().Add(o.LoginTimeout))
	// A cancelled ctx (proxy shutdown) unblocks the exchange.
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Now()) })
	defer stop()
	if o.ForwardClient == ForwardProxyV1 || o.ForwardClient == ForwardProxyV2 {
		// The header is the first thing on the connection, before TLS
		// and before the greeting (proxy-protocol.txt §2: the receiver
		// reads it before any protocol byte).
		if fwd == nil {
			fwd = &forwarding{}
		}
		fwd.mode = o.ForwardClient
		h, err := fwd.proxyHeader()
		if err == nil {
			_, err = nc.Write(h)
		}
		if err != nil {
			nc.Close()
			return nil, unavailable("sending the PROXY header: %w", err)
		}
	}
	if o.UpstreamTLS == "implicit" {
		tc := tls.Client(nc, o.UpstreamTLSConfig)
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, unavailable("TLS handshake with %s: %w", o.UpstreamAddr, err)
		}
		nc = tc
	}
	u := newUpstream(nc)

	line, err := u.rr.Read()
	if err != nil {
		nc.Close()
		return nil, unavailable("reading greeting: %w", err)
	}
	switch {
	case imapwire.HasPrefixFold(line, "* OK"):
		u.caps = imapwire.CapsFromCode(line)
	case imapwire.HasPrefixFold(line, "* PREAUTH"):
		// RFC 9051 §7.1.4: the upstream logged us in as someone already;
		// we cannot know as whom.
		nc.Close()
		return nil, unavailable("upstream greeted with PREAUTH")
	default:
		nc.Close()
		return nil, unavailable("upstream greeting: %q", imapwire.SanitizeText(string(line)))
	}
	if o.UpstreamTLS == "starttls" {
		if err := u.starttls(ctx, o.UpstreamTLSConfig); err != nil {
			u.nc.Close()
			return nil, err
		}
	}
	return u, nil
}

// starttls upgrades the upstream connection (RFC 9051 §6.2.1). An
// upstream that does not offer STARTTLS is refused: no silent downgrade.
// Bytes the upstream sent after its tagged OK and before the handshake
// can only have been injected on the way (CVE-2011-0411, client side):
// the connection is dropped.
func (u *upstream) starttls(ctx context.Context, cfg *tls.Config) error {
	if len(u.caps) == 0 {
		if err := u.capability("igc"); err != nil {
			return err
		}
	}
	if !u.hasCap("STARTTLS") {
		return unavailable("upstream does not offer STARTTLS")
	}
	if err := u.write("igt STARTTLS\r\n"); err != nil {
		return unavailable("sending STARTTLS: %w", err)
	}
	st, err := u.waitTagged("igt")
	if err != nil {
		return unavailable("reading STARTTLS answer: %w", err)
	}
	if !imapwire.HasPrefixFold(st[len("igt "):], "OK") {
		return unavailable("upstream refused STARTTLS: %q", imapwire.SanitizeText(string(st)))
	}
	if n := u.br.Buffered(); n > 0 {
		return unavailable("upstream sent %d bytes after its STARTTLS answer, before TLS: possible injection", n)
	}
	tc := tls.Client(u.nc, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return unavailable("TLS handshake with upstream: %w", err)
	}
	*u = *newUpstream(tc) // capabilities are stale after TLS (RFC 9051 §6.2.1)
	return nil
}

// capability asks for the capability list.
func (u *upstream) capability(tag string) error {
	if err := u.write(tag + " CAPABILITY\r\n"); err != nil {
		return unavailable("sending CAPABILITY: %w", err)
	}
	st, err := u.waitTagged(tag)
	if err != nil {
		return unavailable("reading CAPABILITY: %w", err)
	}
	if !imapwire.HasPrefixFold(st[len(tag)+1:], "OK") {
		return unavailable("CAPABILITY failed: %q", imapwire.SanitizeText(string(st)))
	}
	return nil
}

func (u *upstream) write(s string) error {
	_, err := io.WriteString(u.nc, s)
	return err
}

func (u *upstream) hasCap(name string) bool {
	for _, c := range u.caps {
		if strings.EqualFold(c, name) {
			return true
		}
	}
	return false
}

// waitContinuation reads up to a "+" continuation; a tagged answer to tag
// instead is returned as a status.
func (u *upstream) waitContinuation(tag string) (status []byte, err error) {
	for {
		line, err := u.rr.Read()
		if err != nil {
			return nil, err
		}
		if len(line) > 0 && line[0] == '+' {
			return nil, nil
		}
		if isTagged(line, tag) {
			return line, nil
		}
	}
}

// waitTagged reads responses up to the tagged one, collecting untagged
// CAPABILITY data on the way.
func (u *upstream) waitTagged(tag string) ([]byte, error) {
	for {
		line, err := u.rr.Read()
		if err != nil {
			return nil, err
		}
		switch {
		case imapwire.HasPrefixFold(line, "* CAPABILITY "):
			u.caps = strings.Fields(string(line[len("* CAPABILITY "):]))
		case len(line) > 0 && line[0] == '+':
			// A challenge we did not expect: cancel (RFC 9051 §6.2.2).
			if err := u.write("*\r\n"); err != nil {
				return nil, err
			}
		case isTagged(line, tag):
			return line, nil
		}
	}
}

func isTagged(line []byte, tag string) bool {
	return len(line) > len(tag) && line[len(tag)] == ' ' && string(line[:len(tag)]) == tag
}

// login authenticates with the client's credentials, re-encoded so that
// no byte of them can end the command early (IMAP-NOTES: AUTHENTICATE
// PLAIN with SASL-IR when offered, else LOGIN with quoted strings or
// literals; OAuth with the client's mechanism, authenticateOAuth). Before that it sends fwd's ID (sendID). On success u.caps
// holds the post-login capabilities. idErr is the upstream's refusal of
// the ID, which does not stop the login; the caller logs it.
func (u *upstream) login(ctx context.Context, cr *credentials, fwd *forwarding) (idErr, err error) {
	stop := context.AfterFunc(ctx, func() { u.nc.SetDeadline(time.Now()) })
	defer stop()
	if len(u.caps) == 0 {
		if err := u.capability("ig0"); err != nil {
			return nil, err
		}
	}
	u.preLogin = u.caps
	idErr, err = u.sendID(fwd)
	if err != nil {
		return nil, err
	}
	if cr.mech != "" {
		return idErr, u.authenticateOAuth(cr)
	}
	return idErr, u.authenticate(cr.user, cr.pass)
}

// sendID sends the ID that tells the upstream who the client is and
// what software it runs (forwarding.idCommand), when the upstream
// advertises ID (RFC 2971 §2) and there is something to tell; it reads
// and discards the upstream's own "* ID" answer. A NO or BAD to it is
// returned as idErr and the login goes on: the upstream then sees the
// proxy's address, as with ForwardNone. Dovecot takes the client's
// address from the first ID of a connection only, so there is one.
func (u *upstream) sendID(fwd *forwarding) (idErr, err error) {
	if fwd == nil || !u.hasCap("ID") {
		return nil, nil
	}
	const tag = "igi"
	cmd := fwd.idCommand(tag)
	if cmd == "" {
		return nil, nil
	}
	if err := u.write(cmd); err != nil {
		return nil, unavailable("sending ID: %w", err)
	}
	st, err := u.waitTagged(tag)
	if err != nil {
		return nil, unavailable("reading ID answer: %w", err)
	}
	if !imapwire.HasPrefixFold(st[len(tag)+1:], "OK") {
		return fmt.Errorf("upstream refused ID: %q", imapwire.SanitizeText(string(st))), nil
	}
	return nil, nil
}

// authenticate sends the credentials and reads the answer.
func (u *upstream) authenticate(user, pass string) error {
	const tag = "ig1"
	var status []byte
	var err error
	switch {
	case u.hasCap("AUTH=PLAIN"):
		resp := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
		if u.hasCap("SASL-IR") {
			err = u.write(tag + " AUTHENTICATE PLAIN " + resp + "\r\n")
		} else {
			if err = u.write(tag + " AUTHENTICATE PLAIN\r\n"); err == nil {
				status, err = u.waitContinuation(tag)
				if err == nil && status == nil {
					err = u.write(resp + "\r\n")
				}
			}
		}
	case u.hasCap("LOGINDISABLED"):
		return unavailable("upstream has LOGINDISABLED and no AUTH=PLAIN")
	default:
		status, err = u.sendLogin(tag, user, pass)
	}
	if err != nil {
		return unavailable("sending login: %w", err)
	}
	if status == nil {
		if status, err = u.waitTagged(tag); err != nil {
			return unavailable("reading login answer: %w", err)
		}
	}
	return u.loginResult(tag, status)
}

// sendLogin sends LOGIN with each argument quoted, or as a literal when it
// holds octets a quoted string cannot carry.
func (u *upstream) sendLogin(tag, user, pass string) (status []byte, err error) {
	plus := u.hasCap("LITERAL+")
	var b strings.Builder
	b.WriteString(tag + " LOGIN")
	for _, a := range []string{user, pass} {
		q, lit := imapwire.QuoteOrLiteral(a)
		if !lit {
			b.WriteString(" " + q)
			continue
		}
		b.WriteString(" " + imapwire.LiteralPrefix(len(a), plus) + "\r\n")
		if !plus {
			if err := u.write(b.String()); err != nil {
				return nil, err
			}
			b.Reset()
			if status, err := u.waitContinuation(tag); err != nil || status != nil {
				return status, err
			}
		}
		b.WriteString(a)
	}
	b.WriteString("\r\n")
	return nil, u.write(b.String())
}

// loginResult interprets the tagged answer to the login and fetches the
// post-login capabilities when the answer did not carry them.
func (u *upstream) loginResult(tag string, status []byte) error {
	rest := status[len(tag)+1:]
	switch {
	case imapwire.HasPrefixFold(rest, "OK"):
		if caps := imapwire.CapsFromCode(status); caps != nil {
			u.caps = caps
			return nil
		}
		// Capabilities learnt before login are stale (RFC 9051 §6.2.2).
		u.caps = nil
		if err := u.write("ig2 CAPABILITY\r\n"); err != nil {
			return unavailable("sending CAPABILITY: %w", err)
		}
		st, err := u.waitTagged("ig2")
		if err != nil {
			return unavailable("reading CAPABILITY: %w", err)
		}
		if !imapwire.HasPrefixFold(st[len("ig2 "):], "OK") || u.caps == nil {
			return unavailable("CAPABILITY after login failed: %q", imapwire.SanitizeText(string(st)))
		}
		return nil
	case imapwire.HasPrefixFold(rest, "NO"):
		code, text := imapwire.ResponseCode(rest[2:])
		if passedCodes[code] {
			return &loginError{kind: loginRefused, code: code, text: imapwire.SanitizeText(text)}
		}
		return &loginError{kind: loginAuthFailed}
	case imapwire.HasPrefixFold(rest, "BAD"):
		// The upstream could not parse what we sent: to the user this is
		// a failed login; the log says more.
		return &loginError{kind: loginAuthFailed, err: fmt.Errorf("upstream answered BAD: %q", imapwire.SanitizeText(string(rest)))}
	}
	return unavailable("unexpected login answer: %q", imapwire.SanitizeText(string(status)))
}

// logout ends an upstream session we will not use and closes it.
func (u *upstream) logout() {
	u.nc.SetDeadline(time.Now().Add(time.Second))
	u.write("ig9 LOGOUT\r\n")
	u.nc.Close()
}

// clientCaps filters the upstream's post-login capabilities for the
// client: COMPRESS would blind the framing (RFC 4978), STARTTLS and AUTH=
// are not valid after login.
func clientCaps(caps []string) string {
	out := make([]string, 0, len(caps))
	for _, c := range caps {
		u := strings.ToUpper(c)
		if strings.HasPrefix(u, "COMPRESS=") || u == "STARTTLS" || u == "LOGINDISABLED" ||
			strings.HasPrefix(u, "AUTH=") || u == "SASL-IR" {
			continue
		}
		out = append(out, c)
	}
	return strings.Join(out, " ")
}
