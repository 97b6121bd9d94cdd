package admin

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"net/http"
)

// reload re-reads the configuration: POST /reload, with a JSON body ({}
// or none) for the reasons kick gives, and no parameters. It answers 200
// with a ReloadResult, 422 with the problems of a file that was not
// applied (nothing changed), 500 for another failure.
func (s *Server) reload(w http.ResponseWriter, r *http.Request) {
	if ct, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || ct != "application/json" {
		writeError(w, http.StatusUnsupportedMediaType, "POST /reload takes Content-Type: application/json, with the body {} or none")
		return
	}
	if r.URL.RawQuery != "" {
		writeError(w, http.StatusBadRequest, "POST /reload takes no parameters")
		return
	}
	if s.opts.Reload == nil {
		writeError(w, http.StatusNotFound, "reloading is not available")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, err.Error())
		return
	}
	if len(bytes.TrimSpace(body)) > 0 {
		var req struct{}
		if err := decodeJSON(bytes.NewReader(body), &req); err != nil {
			writeError(w, http.StatusBadRequest, err.Error()+"; POST /reload takes {} or no body")
			return
		}
	}
	res, err := s.opts.Reload(r.Context())
	if re, ok := errors.AsType[*ReloadError](err); ok {
		writeJSON(w, http.StatusUnprocessableEntity, ErrorBody{
			Error:    "the configuration was not reloaded; nothing changed",
			Problems: re.Problems,
		})
		return
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	if res.Changed == nil {
		res.Changed = []string{}
	}
	if res.RestartNeeded == nil {
		res.RestartNeeded = []string{}
	}
	s.log.Info("admin API: reload", "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, res)
}
