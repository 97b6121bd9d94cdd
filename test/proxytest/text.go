package proxytest

import (
	"encoding/base64"
	"slices"
	"strings"
)

// Quote returns s as an IMAP quoted string (RFC 9051 §4.3).
func Quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// Base64 encodes s, as SASL exchanges are sent (RFC 9051 §6.2.2).
func Base64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// SASLPlain is the PLAIN message (RFC 4616) for user and pass without an
// authorization identity, encoded.
func SASLPlain(user, pass string) string { return Base64("\x00" + user + "\x00" + pass) }

// SASLOAuthBearer is the OAUTHBEARER initial response (RFC 7628 §3.1)
// for user (in the GS2 header, "a=", with "," and "=" escaped as RFC
// 5801 §4 says) and token, encoded.
func SASLOAuthBearer(user, token string) string {
	a := strings.NewReplacer("=", "=3D", ",", "=2C").Replace(user)
	return Base64("n,a=" + a + ",\x01host=127.0.0.1\x01port=143\x01auth=Bearer " + token + "\x01\x01")
}

// SASLXOAuth2 is the XOAUTH2 initial response for user and token, encoded.
func SASLXOAuth2(user, token string) string {
	return Base64("user=" + user + "\x01auth=Bearer " + token + "\x01\x01")
}

// Caps returns the capabilities of a line with a response code, "* OK
// [CAPABILITY a b c] text" or "tag OK [CAPABILITY a b c] text", or of "*
// CAPABILITY a b c"; nil if it holds no list.
func Caps(line string) []string {
	if _, rest, ok := strings.Cut(line, "[CAPABILITY "); ok {
		list, _, closed := strings.Cut(rest, "]")
		if !closed {
			return nil
		}
		return strings.Fields(list)
	}
	if len(line) < len("* CAPABILITY ") || !strings.EqualFold(line[:len("* CAPABILITY ")], "* CAPABILITY ") {
		return nil
	}
	return strings.Fields(line[len("* CAPABILITY "):])
}

// CapLine returns the "* CAPABILITY" line among untagged, or "".
func CapLine(untagged []string) string {
	i := slices.IndexFunc(untagged, func(l string) bool {
		return strings.HasPrefix(strings.ToUpper(l), "* CAPABILITY ")
	})
	if i < 0 {
		return ""
	}
	return untagged[i]
}

// HasCap reports whether caps has name, ignoring case; a name ending in
// "=", such as "AUTH=", matches any capability it begins.
func HasCap(caps []string, name string) bool {
	name = strings.ToUpper(name)
	return slices.ContainsFunc(caps, func(c string) bool {
		c = strings.ToUpper(c)
		return c == name || strings.HasSuffix(name, "=") && strings.HasPrefix(c, name)
	})
}
