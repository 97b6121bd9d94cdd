package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net"
	"net/http"
	"strings"
)

// This file decides who may use the API: the bearer token, and without
// one, the loopback-only checks against DNS rebinding and cross-origin
// requests.

// isLoopback reports whether a is a TCP address on a loopback IP. Any
// other kind of address counts as public.
func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// authorized checks the bearer token (RFC 6750 §2.1), answering 401 when
// it is missing or wrong. The comparison is of SHA-256 sums, in constant
// time, so that it leaks neither the token nor its length.
func (s *Server) authorized(w http.ResponseWriter, r *http.Request) bool {
	tok := s.token.Load()
	if !tok.set {
		return true
	}
	auth := r.Header.Get("Authorization")
	scheme, presented, found := strings.Cut(auth, " ")
	if found && strings.EqualFold(scheme, "Bearer") {
		sum := sha256.Sum256([]byte(strings.TrimSpace(presented)))
		if subtle.ConstantTimeCompare(sum[:], tok.sum[:]) == 1 {
			return true
		}
	}
	challenge, msg := `Bearer realm="imapguard"`, "this endpoint needs a bearer token"
	if auth != "" {
		challenge, msg = `Bearer realm="imapguard", error="invalid_token"`, "wrong token"
	}
	// The presented token is never logged: it may be a mistyped real one.
	s.log.Warn("admin API: refused", "remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path,
		"token_presented", auth != "")
	w.Header().Set("WWW-Authenticate", challenge)
	writeError(w, http.StatusUnauthorized, msg)
	return false
}

// localOnly refuses, with 403, what a web page in the operator's browser
// could send when there is no token to stop it, and answers true for
// everything else (and for everything when Options.Token is set: a page
// cannot add the token):
//
//   - A Host header that is not a loopback literal or localhost, except
//     on the probes /healthz and /readyz, which tell nothing secret: DNS
//     rebinding points a name the attacker controls at 127.0.0.1, and the
//     page of that name may then read the API's answers as its own
//     (RFC 9110 §7.2: the Host names the authority the client meant).
//   - An Origin header (RFC 6454 §7) whose host is not loopback or
//     localhost, on any endpoint: the browser sends it on cross-origin
//     requests, which no client of this API makes.
func (s *Server) localOnly(w http.ResponseWriter, r *http.Request, probe bool) bool {
	if s.token.Load().set {
		return true
	}
	var msg string
	if !probe && !loopbackAuthority(r.Host) {
		msg = fmt.Sprintf("Host %q is not a loopback address or localhost; without admin.token the API answers no other", r.Host)
	} else if o, ok := foreignOrigin(r.Header); ok {
		msg = fmt.Sprintf("Origin %q is not on a loopback address or localhost; without admin.token the API refuses cross-origin requests", o)
	} else {
		return true
	}
	s.log.Warn("admin API: refused", "remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path,
		"host", r.Host, "origin", r.Header.Get("Origin"))
	writeError(w, http.StatusForbidden, msg)
	return false
}

// loopbackAuthority reports whether hostport, a Host header or the
// authority of an origin (RFC 3986 §3.2.2: host [":" port]), names a
// loopback address as an IP literal (127.0.0.0/8; ::1, in brackets) or
// "localhost", which browsers never send to DNS. Anything else, a name
// that resolves to loopback included, is not.
func loopbackAuthority(hostport string) bool {
	host := hostport
	if h, port, err := net.SplitHostPort(hostport); err == nil {
		if strings.Trim(port, "0123456789") != "" {
			return false
		}
		host = h
	} else if strings.HasPrefix(hostport, "[") && strings.HasSuffix(hostport, "]") {
		host = hostport[1 : len(hostport)-1]
	}
	// An IPv6 literal, and only it, comes in brackets.
	bracketed := strings.HasPrefix(hostport, "[")
	if ip := net.ParseIP(host); ip != nil {
		return ip.IsLoopback() && bracketed == strings.Contains(host, ":")
	}
	return !bracketed && strings.EqualFold(host, "localhost")
}

// foreignOrigin returns the first Origin in h that is not loopbackOrigin,
// an empty one included.
func foreignOrigin(h http.Header) (string, bool) {
	for _, o := range h.Values("Origin") {
		if !loopbackOrigin(o) {
			return o, true
		}
	}
	return "", false
}

// loopbackOrigin reports whether origin, the value of an Origin header
// (RFC 6454 §7: scheme "://" host [":" port], or "null"), is an http or
// https origin on a loopback host.
func loopbackOrigin(origin string) bool {
	scheme, authority, ok := strings.Cut(origin, "://")
	if !ok || (!strings.EqualFold(scheme, "http") && !strings.EqualFold(scheme, "https")) ||
		strings.ContainsAny(authority, "/?#@") {
		return false
	}
	return loopbackAuthority(authority)
}
