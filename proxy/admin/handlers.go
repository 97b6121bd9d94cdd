package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/imapguard/imapguard/proxy"
)

// This file has the endpoints and the JSON answers.

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, Health{Status: "ok"})
}

// readyz is ready when the proxy listens on at least Options.Listeners
// addresses (and on one at least) and the upstream answers a check, which
// is shared and cached (see upstreamCheck).
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ln := s.opts.Sessions.Listening()
	if ln == nil {
		ln = []string{}
	}
	body := Readiness{Status: "ready", Listeners: ln, Upstream: "ok"}
	status := http.StatusOK
	if s.opts.Draining != nil && s.opts.Draining() {
		// A balancer must stop sending at once: no upstream check to
		// wait for.
		body.Status, body.Draining, body.Upstream = "not ready", true, "not checked"
		writeJSON(w, http.StatusServiceUnavailable, body)
		return
	}
	if err := s.ready.result(r.Context()); err != nil {
		// The error names the upstream's address and TLS details, which are
		// no business of an endpoint without a token; the check logs it.
		body.Upstream = upstreamUnreachable
		status = http.StatusServiceUnavailable
	}
	if len(ln) == 0 || len(ln) < s.opts.Listeners {
		status = http.StatusServiceUnavailable
	}
	if status != http.StatusOK {
		body.Status = "not ready"
	}
	writeJSON(w, status, body)
}

func (s *Server) settings(w http.ResponseWriter, r *http.Request) {
	out := SettingList{Settings: []Setting{}} // [], not null, when there are none
	if s.opts.Settings != nil {
		out.Settings = append(out.Settings, s.opts.Settings()...)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) sessions(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if err := onlyKeys(q, "user", "address"); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	m := proxy.Match{User: q.Get("user"), Address: q.Get("address")}
	var infos []proxy.ConnInfo
	var note string
	var err error
	if s.opts.Fleet != nil {
		infos, note, err = s.opts.Fleet.Sessions(r.Context(), m)
	} else {
		infos, err = s.opts.Sessions.Select(m)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	list := sessions(infos, s.now())
	writeJSON(w, http.StatusOK, SessionList{Count: len(list), Sessions: list, Fleet: s.opts.Fleet != nil, Note: note})
}

// backends lists the upstream backends and their health (issue 13).
func (s *Server) backends(w http.ResponseWriter, r *http.Request) {
	if r.URL.RawQuery != "" {
		writeError(w, http.StatusBadRequest, "GET /backends takes no parameters")
		return
	}
	if s.opts.Backends == nil {
		writeError(w, http.StatusNotFound, "no backends here")
		return
	}
	route, infos := s.opts.Backends()
	writeJSON(w, http.StatusOK, BackendList{Route: route, Backends: backends(infos)})
}

// kick closes the matching connections. The match comes as a JSON body
// with Content-Type application/json, and no other way: that type is not
// one a cross-origin page may send without a CORS preflight (Fetch
// standard, "CORS-safelisted request-header"), and the API answers no
// preflight, so a page the operator visits cannot kick anyone, as it
// could with a form. Unknown fields are refused, lest a misspelt "user"
// widen a kick by address to everyone there.
func (s *Server) kick(w http.ResponseWriter, r *http.Request) {
	var req KickRequest
	if !jsonPost(w, r, "/sessions/kick", `{"user":"alice"}`, &req) {
		return
	}
	m := proxy.Match{User: strings.TrimSpace(req.User), Address: strings.TrimSpace(req.Address)}
	if m.User == "" && m.Address == "" {
		writeError(w, http.StatusBadRequest, "kick needs a user, an address or both")
		return
	}
	reason := sanitizeReason(req.Reason)
	var infos []proxy.ConnInfo
	var note string
	var err error
	if s.opts.Fleet != nil {
		infos, note, err = s.opts.Fleet.Kick(r.Context(), m, reason)
	} else {
		infos, err = s.opts.Sessions.Kick(m, reason)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	list := sessions(infos, s.now())
	ids := make([]uint64, len(list))
	for i, c := range list {
		ids[i] = c.ID
	}
	s.log.Info("admin API: kick", "count", len(list), "user", m.User, "address", m.Address,
		"reason", reason, "ids", ids, "remote", r.RemoteAddr, "fleet", s.opts.Fleet != nil, "note", note)
	writeJSON(w, http.StatusOK, KickResult{Count: len(list), Kicked: list, Fleet: s.opts.Fleet != nil, Note: note})
}

// jsonPost reads the body of a POST that changes something into v: a
// JSON body with Content-Type application/json and no query parameters,
// for the reasons kick gives, at most maxBodyBytes. Otherwise it answers
// (415, 400 or 413, naming path and an example body) and returns false.
func jsonPost(w http.ResponseWriter, r *http.Request, path, example string, v any) bool {
	if ct, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || ct != "application/json" {
		writeError(w, http.StatusUnsupportedMediaType,
			"POST "+path+" takes a JSON body with Content-Type: application/json, such as "+example)
		return false
	}
	if r.URL.RawQuery != "" {
		writeError(w, http.StatusBadRequest, "POST "+path+" takes no query parameters; send a JSON body such as "+example)
		return false
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
	if err := decodeJSON(r.Body, v); err != nil {
		status := http.StatusBadRequest
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			status = http.StatusRequestEntityTooLarge
		}
		writeError(w, status, err.Error())
		return false
	}
	return true
}

// decodeJSON decodes a request's JSON body into v: one object, no unknown
// fields.
func decodeJSON(body io.Reader, v any) error {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("bad JSON body: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("bad JSON body: more than one value")
	}
	return nil
}

// onlyKeys refuses parameters other than keys, and repeated ones.
func onlyKeys(v url.Values, keys ...string) error {
	for k, vs := range v {
		known := false
		for _, want := range keys {
			known = known || k == want
		}
		if !known {
			return fmt.Errorf("unknown parameter %q (known: %s)", k, strings.Join(keys, ", "))
		}
		if len(vs) > 1 {
			return fmt.Errorf("parameter %q given %d times", k, len(vs))
		}
	}
	return nil
}

// sanitizeReason makes text fit an IMAP resp-text (RFC 9051 §9: TEXT-CHAR
// excludes CR and LF): printable ASCII only, runs of anything else and of
// spaces become one space, at most maxReasonLen characters.
func sanitizeReason(text string) string {
	var b strings.Builder
	space := false
	for _, r := range text {
		if r <= ' ' || r > '~' {
			space = b.Len() > 0
			continue
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteRune(r)
	}
	s := b.String()
	if len(s) > maxReasonLen {
		s = strings.TrimRight(s[:maxReasonLen], " ")
	}
	return s
}

func (s *Server) metrics(w http.ResponseWriter, r *http.Request) {
	if s.opts.Metrics == nil {
		writeError(w, http.StatusNotFound, "metrics are not enabled")
		return
	}
	s.opts.Metrics.ServeHTTP(w, r)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil { // only the types of this package are written
		status, body = http.StatusInternalServerError, []byte(`{"error":"encoding the answer failed"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(append(body, '\n'))
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, ErrorBody{Error: msg})
}
