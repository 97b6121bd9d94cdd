package proxy

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/imapguard/imapguard/proxy/imapwire"
)

// OAuth pass-through (issue 12): AUTHENTICATE OAUTHBEARER (RFC 7628) and
// XOAUTH2 (Google's and Microsoft's "user=" form). The proxy cannot check
// a bearer token; it reads the user name for the caps from the initial
// response, logs in to the upstream with the same mechanism and the same
// initial response, and relays the upstream's one error challenge and
// the client's dummy answer to it.
const (
	mechOAuthBearer = "OAUTHBEARER"
	mechXOAuth2     = "XOAUTH2"
)

// oauthMechanisms are the pass-through mechanisms, in the order the
// capability list names them.
var oauthMechanisms = []string{mechOAuthBearer, mechXOAuth2}

// credentials are what a client logs in with: a user and password
// (LOGIN, PLAIN), or an OAuth mechanism's initial response, which holds
// the token and is passed to the upstream as it is.
type credentials struct {
	user string
	pass string
	// mech is mechOAuthBearer or mechXOAuth2 for pass-through, else "".
	mech string
	// initial is the client's OAuth initial response, decoded. A secret.
	initial []byte
	// relay sends the upstream's challenge (base64, as received) to the
	// client and returns the client's answer, "*" or decoded.
	relay func(challenge string) (resp []byte, cancel bool, err error)
	// clientErr is why reading the client's answer failed, if it did.
	clientErr error
}

// errOAuth* say what is wrong with an OAuth initial response; their text
// is what the client reads after "Malformed ... response: ". No part of
// the response (the token) is ever in them.
var (
	errOAuthGS2Header  = errors.New("the GS2 header must be n, or y, then a=user and a comma")
	errOAuthNoUser     = errors.New("the user is needed in the GS2 header (a=user)")
	errOAuthSASLName   = errors.New("an = in the user must be =2C or =3D")
	errOAuthBearer     = errors.New("it needs one auth=Bearer token, in key=value pairs each ended by ^A, and a final ^A")
	errOAuthXOAuth2    = errors.New("want user=name ^A auth=Bearer token ^A ^A")
	errOAuthChanBind   = errors.New("channel binding (p=) cannot pass through a proxy that ends TLS")
	errOAuthControlled = errors.New("control characters in the user")
)

// oauthUser reads the user name an OAuth initial response logs in as:
// the GS2 authzid of OAUTHBEARER (RFC 7628 §3.1, with RFC 5801 §4's
// escapes undone), or XOAUTH2's user= field. It also checks the shape
// the upstream expects, so that a malformed response is answered without
// contacting the upstream.
func oauthUser(mech string, resp []byte) (string, error) {
	var user string
	var err error
	if mech == mechXOAuth2 {
		user, err = xoauth2User(resp)
	} else {
		user, err = oauthBearerUser(resp)
	}
	if err != nil {
		return "", err
	}
	for _, r := range user {
		if r < 0x20 || r == 0x7f {
			return "", errOAuthControlled
		}
	}
	return user, nil
}

func oauthBearerUser(resp []byte) (string, error) {
	flag, rest, ok := bytes.Cut(resp, []byte{','})
	if !ok {
		return "", errOAuthGS2Header
	}
	switch {
	case bytes.HasPrefix(flag, []byte("p=")):
		return "", errOAuthChanBind
	case string(flag) != "n" && string(flag) != "y":
		return "", errOAuthGS2Header
	}
	authzid, kv, ok := bytes.Cut(rest, []byte{','})
	switch {
	case !ok:
		return "", errOAuthGS2Header
	case len(authzid) == 0:
		// RFC 7628 lets the authzid out; the caps need a user.
		return "", errOAuthNoUser
	case !bytes.HasPrefix(authzid, []byte("a=")):
		return "", errOAuthGS2Header
	}
	user, ok := unescapeSASLName(string(authzid[2:]))
	if !ok {
		return "", errOAuthSASLName
	}
	if user == "" {
		return "", errOAuthNoUser
	}
	if !hasBearer(kv) {
		return "", errOAuthBearer
	}
	return user, nil
}

func xoauth2User(resp []byte) (string, error) {
	user, kv, ok := bytes.Cut(resp, []byte{1})
	if !ok || !bytes.HasPrefix(user, []byte("user=")) {
		return "", errOAuthXOAuth2
	}
	if len(user) == len("user=") {
		return "", errOAuthNoUser
	}
	if !hasBearer(append([]byte{1}, kv...)) {
		return "", errOAuthXOAuth2
	}
	return string(user[len("user="):]), nil
}

// hasBearer reports whether kv is %x01-ended key=value pairs after a
// leading %x01, with one auth=Bearer token among them, and a final %x01
// (RFC 7628 §3.1: kvsep *(kvpair) kvsep).
func hasBearer(kv []byte) bool {
	if len(kv) < 3 || kv[0] != 1 || !bytes.HasSuffix(kv, []byte{1, 1}) {
		return false
	}
	auths := 0
	for _, p := range bytes.Split(kv[1:len(kv)-2], []byte{1}) {
		k, v, ok := bytes.Cut(p, []byte{'='})
		if !ok || len(k) == 0 {
			return false
		}
		if string(k) == "auth" {
			scheme, token, ok := bytes.Cut(v, []byte{' '})
			if !ok || !strings.EqualFold(string(scheme), "Bearer") || len(token) == 0 {
				return false
			}
			auths++
		}
	}
	return auths == 1
}

// unescapeSASLName undoes RFC 5801 §4's saslname escapes: "=2C" is ","
// and "=3D" is "="; any other "=" is malformed.
func unescapeSASLName(s string) (string, bool) {
	if !strings.Contains(s, "=") {
		return s, true
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '=' {
			b.WriteByte(s[i])
			continue
		}
		switch {
		case strings.HasPrefix(s[i:], "=2C"):
			b.WriteByte(',')
		case strings.HasPrefix(s[i:], "=3D"):
			b.WriteByte('=')
		default:
			return "", false
		}
		i += 2
	}
	return b.String(), true
}

// authenticateOAuth runs AUTHENTICATE OAUTHBEARER or XOAUTH2 with the
// client: offered only when the upstream offers it (upstream_caps.go).
func (c *conn) authenticateOAuth(s *saslExchange, mech string) bool {
	if !c.upstreamOffers(mech) {
		s.failed(authUnsupported)
		return c.bad(no(s.tag, "Unsupported authentication mechanism"))
	}
	resp, cont := s.next("")
	if resp == nil {
		return cont
	}
	user, err := oauthUser(mech, resp)
	if err != nil {
		s.failed(authMalformed)
		return c.bad(bad(s.tag, fmt.Sprintf("Malformed %s response: %v", mech, err)))
	}
	cr := &credentials{user: user, mech: mech, initial: resp}
	cr.relay = func(challenge string) ([]byte, bool, error) {
		return c.relayChallenge(s.tag, cr, challenge)
	}
	return c.loginWith(s.tag, "AUTHENTICATE", mech, cr)
}

// relayChallenge sends the upstream's challenge to the client as a
// continuation request and reads the client's answer: "*" cancels, any
// other line must be base64 (RFC 9051 §6.2.2). A failed read is kept in
// cr.clientErr for (*conn).loginWith to answer.
func (c *conn) relayChallenge(tag string, cr *credentials, challenge string) (resp []byte, cancel bool, err error) {
	if err := c.w.respond(continueReq(challenge)); err != nil {
		cr.clientErr = err
		return nil, false, err
	}
	line, err := c.r.ReadContinuation()
	if err != nil {
		var tb *imapwire.TooBigError
		if errors.As(err, &tb) {
			tb.Tag = tag
		}
		cr.clientErr = err
		return nil, false, err
	}
	if string(line) == "*" {
		return nil, true, nil
	}
	dec, err := base64.StdEncoding.DecodeString(string(line))
	if err != nil {
		// Not SASL: the upstream is told the exchange is cancelled.
		return nil, true, nil
	}
	return dec, false, nil
}

// authenticateOAuth logs in to the upstream with the client's OAuth
// mechanism and initial response (SASL-IR when the upstream offers it).
// An error challenge (RFC 7628 §3.2.2: "+" and base64 JSON) is relayed to
// the client, once, and the client's answer (%x01, or empty for XOAUTH2)
// back; the upstream then answers NO, which is an authentication failure
// for max_auth_failures and the brute-force defence, as is a BAD after a
// cancel at that point (the upstream already refused the token). A second
// challenge is cancelled.
func (u *upstream) authenticateOAuth(cr *credentials) error {
	const tag = "ig1"
	if !u.hasCap("AUTH=" + cr.mech) {
		return unavailable("upstream does not offer AUTH=%s", cr.mech)
	}
	ir := base64.StdEncoding.EncodeToString(cr.initial)
	var err error
	if u.hasCap("SASL-IR") {
		err = u.write(tag + " AUTHENTICATE " + cr.mech + " " + ir + "\r\n")
	} else {
		err = u.write(tag + " AUTHENTICATE " + cr.mech + "\r\n")
		if err == nil {
			var status []byte
			if status, err = u.waitContinuation(tag); err == nil && status != nil {
				return u.loginResult(tag, status)
			}
			if err == nil {
				err = u.write(ir + "\r\n")
			}
		}
	}
	if err != nil {
		return unavailable("sending login: %w", err)
	}
	challenged := false
	for {
		line, err := u.rr.Read()
		if err != nil {
			return unavailable("reading login answer: %w", err)
		}
		switch {
		case imapwire.HasPrefixFold(line, "* CAPABILITY "):
			u.caps = strings.Fields(string(line[len("* CAPABILITY "):]))
		case len(line) > 0 && line[0] == '+':
			answer := "*"
			if !challenged && cr.relay != nil {
				challenged = true
				ch := strings.TrimSpace(string(line[1:]))
				if _, err := base64.StdEncoding.DecodeString(ch); err != nil {
					ch = "" // not base64: the client still gets its turn
				}
				resp, cancel, err := cr.relay(ch)
				if err != nil {
					return unavailable("relaying the challenge to the client: %w", err)
				}
				if !cancel {
					answer = base64.StdEncoding.EncodeToString(resp)
				}
			}
			if err := u.write(answer + "\r\n"); err != nil {
				return unavailable("sending the answer to a challenge: %w", err)
			}
		case isTagged(line, tag):
			err := u.loginResult(tag, line)
			var le *loginError
			if challenged && errors.As(err, &le) && le.kind == loginAuthFailed {
				le.err = nil // counted: the upstream refused the token
			}
			return err
		}
	}
}
