package proxy

import (
	"encoding/base64"
	"errors"
	"strings"

	"github.com/imapguard/imapguard/proxy/imapwire"
)

// handleAuthenticate runs AUTHENTICATE (RFC 9051 §6.2.2) with PLAIN (RFC
// 4616) or LOGIN (draft-murchison-sasl-login), and SASL-IR (RFC 4959);
// OAUTHBEARER (RFC 7628) and XOAUTH2 pass through to the upstream
// (oauth.go).
func (c *conn) handleAuthenticate(cmd *imapwire.Command) bool {
	if !c.authAllowed() {
		return c.privacyRequired(cmd)
	}
	// An attempt that never reaches login is recorded here, once, with
	// why it stopped.
	failed := func(result string) {
		c.trace.startAuth(c.ctx, "AUTHENTICATE", attemptedMechanism(cmd), "").end(result, "")
	}
	args := cmd.Args
	if len(args) < 1 || len(args) > 2 || args[0].Kind != imapwire.ArgAtom ||
		(len(args) == 2 && args[1].Kind != imapwire.ArgAtom) {
		failed(authMalformed)
		return c.bad(bad(cmd.Tag, "AUTHENTICATE takes a mechanism and an optional initial response"))
	}
	s := &saslExchange{c: c, tag: cmd.Tag, failed: failed}
	if len(args) == 2 {
		s.initial = &args[1].Val
	}
	switch strings.ToUpper(args[0].Val) {
	case "PLAIN":
		resp, cont := s.next("")
		if resp == nil {
			return cont
		}
		parts := strings.Split(string(resp), "\x00")
		if len(parts) != 3 {
			failed(authMalformed)
			return c.bad(bad(cmd.Tag, "Malformed PLAIN response"))
		}
		if parts[0] != "" && parts[0] != parts[1] {
			c.trace.startAuth(c.ctx, "AUTHENTICATE", "PLAIN", parts[1]).end(authAuthorizationFailed, "")
			return c.authFailed(authorizationFailed(cmd.Tag))
		}
		return c.login(cmd.Tag, "AUTHENTICATE", "PLAIN", parts[1], parts[2])
	case "LOGIN":
		user, cont := s.next("VXNlcm5hbWU6") // "Username:"
		if user == nil {
			return cont
		}
		pass, cont := s.next("UGFzc3dvcmQ6") // "Password:"
		if pass == nil {
			return cont
		}
		return c.login(cmd.Tag, "AUTHENTICATE", "LOGIN", string(user), string(pass))
	case mechOAuthBearer, mechXOAuth2:
		return c.authenticateOAuth(s, strings.ToUpper(args[0].Val))
	}
	failed(authUnsupported)
	return c.bad(no(cmd.Tag, "Unsupported authentication mechanism"))
}

// saslExchange is the client's side of one SASL exchange.
type saslExchange struct {
	c       *conn
	tag     string
	initial *string // the SASL-IR initial response, until used
	failed  func(result string)
}

// next returns the client's next SASL response, decoded: the initial one
// first, else the answer to challenge. A nil response means the exchange
// is over (cancelled, malformed, or the connection failed), and cont says
// whether the connection goes on.
func (s *saslExchange) next(challenge string) (resp []byte, cont bool) {
	var line []byte
	if s.initial != nil {
		line, s.initial = []byte(*s.initial), nil
	} else {
		if s.c.w.respond(continueReq(challenge)) != nil {
			return nil, false
		}
		var err error
		if line, err = s.c.r.ReadContinuation(); err != nil {
			var tb *imapwire.TooBigError
			if errors.As(err, &tb) {
				tb.Tag = s.tag
			}
			s.failed(authAborted)
			return nil, s.c.readError(err)
		}
	}
	switch string(line) {
	case "*":
		s.failed(authCancelled)
		return nil, s.c.bad(bad(s.tag, "Authentication cancelled"))
	case "=":
		return []byte{}, true
	}
	dec, err := base64.StdEncoding.DecodeString(string(line))
	if err != nil {
		s.failed(authMalformed)
		return nil, s.c.bad(bad(s.tag, "Invalid base64 in SASL response"))
	}
	return dec, true
}
