package admin

import (
	"net/http"

	"github.com/imapguard/imapguard/proxy"
)

// drain starts a drain of the proxy (Options.Drain): it stops accepting,
// /readyz answers 503, and the sessions get their BYE spread over
// shutdown.disconnect_spread. The process stays up (cmd/imapguard exits
// on SIGTERM). Like the kick it takes only a JSON body, {}, so that a
// page the operator visits cannot send it through the browser without a
// CORS preflight, which this API never grants.
func (s *Server) drain(w http.ResponseWriter, r *http.Request) {
	if s.opts.Drain == nil {
		writeError(w, http.StatusNotFound, "draining is not available")
		return
	}
	var req DrainRequest
	if !jsonPost(w, r, "/drain", "{}", &req) {
		return
	}
	open, _ := s.opts.Sessions.Select(proxy.Match{})
	started := s.opts.Drain()
	status := http.StatusOK
	if started {
		status = http.StatusAccepted
		s.log.Info("admin API: drain started", "connections", len(open), "remote", r.RemoteAddr)
	}
	writeJSON(w, status, DrainResult{Status: "draining", Started: started, Connections: len(open)})
}
