package server

import (
	"bytes"
	"crypto/subtle"
	"errors"
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
)

// The OAuth mechanisms imapd offers when a user has a Token: OAUTHBEARER
// (RFC 7628) and XOAUTH2 (Google's and Microsoft's older form).
const (
	mechOAuthBearer = "OAUTHBEARER"
	mechXOAuth2     = "XOAUTH2"
)

// errMalformedOAuth is a client response that is not an OAUTHBEARER or
// XOAUTH2 initial response.
var errMalformedOAuth = errors.New("imapd: malformed OAuth response")

// oauthServer is the server side of one OAUTHBEARER or XOAUTH2 exchange,
// checking the bearer token against the user's test token (User.Token).
// A wrong token gets the error challenge (RFC 7628 §3.2.2: a JSON status
// in a "+" continuation); the client's next response, whatever it is
// (%x01 for OAUTHBEARER, empty for XOAUTH2), ends the exchange with
// NO [AUTHENTICATIONFAILED].
type oauthServer struct {
	sess   *session
	mech   string
	failed bool // the error challenge was sent
	done   bool
}

// Next implements sasl.Server.
func (o *oauthServer) Next(resp []byte) ([]byte, bool, error) {
	switch {
	case o.failed:
		return nil, true, &imap.Error{
			Type: imap.StatusResponseTypeNo,
			Code: imap.ResponseCodeAuthenticationFailed,
			Text: "Invalid token",
		}
	case o.done:
		return nil, true, &imap.Error{Type: imap.StatusResponseTypeBad, Text: "Unexpected SASL response"}
	case resp == nil:
		// No initial response: an empty challenge, "+ ".
		return nil, false, nil
	}
	o.done = true
	parse := parseOAuthBearer
	if o.mech == mechXOAuth2 {
		parse = parseXOAuth2
	}
	user, token, err := parse(resp)
	if err != nil {
		return nil, true, &imap.Error{Type: imap.StatusResponseTypeBad, Text: "Malformed " + o.mech + " response"}
	}
	if o.sess.tokenLogin(user, token) {
		return nil, true, nil
	}
	o.failed = true
	if o.mech == mechXOAuth2 {
		// What Gmail sends (developers.google.com, "OAuth 2.0 Mechanism").
		return []byte(`{"status":"401","schemes":"Bearer","scope":"https://mail.google.com/"}`), false, nil
	}
	return []byte(`{"status":"invalid_token","scope":"imap","schemes":"bearer"}`), false, nil
}

// parseOAuthBearer reads the user (the GS2 authzid, "a=", with its =2C
// and =3D escapes) and the bearer token of an OAUTHBEARER initial
// response (RFC 7628 §3.1): "n,a=user," %x01 *(key=value %x01) %x01.
func parseOAuthBearer(resp []byte) (user, token string, err error) {
	flag, rest, ok := bytes.Cut(resp, []byte{','})
	if !ok || (string(flag) != "n" && string(flag) != "y") {
		return "", "", errMalformedOAuth
	}
	authzid, rest, ok := bytes.Cut(rest, []byte{','})
	if !ok || !bytes.HasPrefix(authzid, []byte("a=")) {
		return "", "", errMalformedOAuth
	}
	if user, ok = unescapeSASLName(string(authzid[2:])); !ok || user == "" {
		return "", "", errMalformedOAuth
	}
	token, ok = bearerToken(rest)
	if !ok {
		return "", "", errMalformedOAuth
	}
	return user, token, nil
}

// parseXOAuth2 reads "user=" user %x01 "auth=Bearer " token %x01 %x01.
func parseXOAuth2(resp []byte) (user, token string, err error) {
	fields := strings.Split(string(resp), "\x01")
	if len(fields) != 4 || fields[2] != "" || fields[3] != "" ||
		!strings.HasPrefix(fields[0], "user=") || len(fields[0]) == len("user=") {
		return "", "", errMalformedOAuth
	}
	token, ok := bearerToken([]byte("\x01" + fields[1] + "\x01\x01"))
	if !ok {
		return "", "", errMalformedOAuth
	}
	return fields[0][len("user="):], token, nil
}

// bearerToken reads the auth= value of %x01-separated key=value pairs
// ending in %x01 %x01.
func bearerToken(kv []byte) (string, bool) {
	if !bytes.HasPrefix(kv, []byte{1}) || !bytes.HasSuffix(kv, []byte{1, 1}) || len(kv) < 3 {
		return "", false
	}
	var token string
	for _, p := range strings.Split(string(kv[1:len(kv)-2]), "\x01") {
		k, v, ok := strings.Cut(p, "=")
		if !ok {
			return "", false
		}
		if k == "auth" {
			scheme, t, ok := strings.Cut(v, " ")
			if !ok || !strings.EqualFold(scheme, "Bearer") || t == "" {
				return "", false
			}
			token = t
		}
	}
	return token, token != ""
}

// unescapeSASLName undoes RFC 5801 §4's saslname escapes (",": "=2C",
// "=": "=3D"); any other "=" is an error. The proxy has its own
// (proxy/oauth.go): the upstream the tests run against must not share the
// proxy's parser, or a mistake in it would pass unseen.
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

// tokenLogin logs the session in as user when token is the user's test
// token. The token is never logged.
func (sess *session) tokenLogin(user, token string) bool {
	u, ok := sess.srv.users[user]
	want := sess.srv.tokens[user]
	if !ok || want == "" || subtle.ConstantTimeCompare([]byte(token), []byte(want)) != 1 {
		sess.srv.logger.Info("login failed", "user", user, "remote", sess.remote, "reason", "bad token")
		return false
	}
	sess.UserSession = imapmemserver.NewUserSession(u)
	sess.srv.logger.Info("login", "user", user, "remote", sess.remote, "mechanism", "token")
	return true
}
