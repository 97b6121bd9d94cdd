package admin

import (
	"net/http"
	"strings"
	"time"

	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy"
)

// Penalties is what the API needs of the brute-force defence (issue 11);
// *proxy.Server implements it.
type Penalties interface {
	Penalties() []limits.Penalty
	ClearPenalties(proxy.PenaltyMatch) (int, error)
}

var _ Penalties = (*proxy.Server)(nil)

// penalties lists what the brute-force defence tracks: GET /penalties.
func (s *Server) penalties(w http.ResponseWriter, r *http.Request) {
	if r.URL.RawQuery != "" {
		writeError(w, http.StatusBadRequest, "GET /penalties takes no parameters")
		return
	}
	if s.opts.Penalties == nil {
		writeError(w, http.StatusNotFound, "the brute-force defence is off")
		return
	}
	list := penaltyList(s.opts.Penalties.Penalties(), s.now())
	writeJSON(w, http.StatusOK, PenaltyList{Count: len(list), Penalties: list})
}

// clearPenalties forgets tracked failures: POST /penalties/clear, with a
// JSON body only, for the reasons kick gives.
func (s *Server) clearPenalties(w http.ResponseWriter, r *http.Request) {
	const example = `{"address":"192.0.2.7"}, {"user":"alice"} or {"all":true}`
	if s.opts.Penalties == nil {
		writeError(w, http.StatusNotFound, "the brute-force defence is off")
		return
	}
	var req ClearRequest
	if !jsonPost(w, r, "/penalties/clear", example, &req) {
		return
	}
	m := proxy.PenaltyMatch{All: req.All, Address: strings.TrimSpace(req.Address), User: strings.TrimSpace(req.User)}
	if m.All && (m.Address != "" || m.User != "") {
		writeError(w, http.StatusBadRequest, `"all" goes alone, without "address" or "user"`)
		return
	}
	if !m.All && m.Address == "" && m.User == "" {
		writeError(w, http.StatusBadRequest, "clear needs an address, a user, both, or all; such as "+example)
		return
	}
	n, err := s.opts.Penalties.ClearPenalties(m)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	s.log.Info("admin API: penalties cleared", "count", n, "all", m.All, "user", m.User, "address", m.Address, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, ClearResult{Cleared: n})
}

// penaltyList converts the tracker's view at now; never nil.
func penaltyList(ps []limits.Penalty, now time.Time) []Penalty {
	out := make([]Penalty, 0, len(ps))
	for _, p := range ps {
		q := Penalty{Kind: p.Kind, Key: p.Key, Failures: p.Failures, LastFailure: p.LastFailure.UTC(),
			DelaySeconds: p.Delay.Seconds()}
		if !p.BlockedUntil.IsZero() {
			until := p.BlockedUntil.UTC()
			q.Blocked, q.BlockedUntil = true, &until
		}
		out = append(out, q)
	}
	return out
}
