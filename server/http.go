package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pagewire/pagewire"
)

// dbJSON is a database in the HTTP API.
type dbJSON struct {
	Name        string `json:"name"`
	TXID        string `json:"txid"`     // 16 hex digits, as in the -pos file
	Checksum    string `json:"checksum"` // 16 hex digits
	PageSize    uint32 `json:"page_size"`
	PageCount   uint32 `json:"page_count"`
	Primary     string `json:"primary,omitempty"`
	IsPrimary   bool   `json:"is_primary"`
	OpenHandles int    `json:"open_handles"`
	Error       string `json:"error,omitempty"`
}

func (s *Server) dbToJSON(di DatabaseInfo) dbJSON {
	role, ro := s.cfg.Store.Role()
	primary := ro.Primary
	if role == pagewire.RolePrimary {
		primary = s.cfg.Node.Hostname
	}
	j := dbJSON{Name: di.Name, TXID: di.Pos.TXID.String(), Checksum: fmt.Sprintf("%016x", di.Pos.Checksum),
		PageSize: di.PageSize, PageCount: di.PageCount, Primary: primary, IsPrimary: role == pagewire.RolePrimary,
		OpenHandles: di.OpenHandles}
	if di.Err != nil {
		j.Error = di.Err.Error()
	}
	return j
}

func (s *Server) apiMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/dbs", func(w http.ResponseWriter, r *http.Request) {
		out := []dbJSON{}
		for _, di := range s.cfg.Store.Databases() {
			out = append(out, s.dbToJSON(di))
		}
		writeJSON(w, http.StatusOK, map[string]any{"databases": out})
	})
	mux.HandleFunc("GET /api/v1/dbs/{name}", func(w http.ResponseWriter, r *http.Request) {
		di, err := s.cfg.Store.Database(r.PathValue("name"))
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, s.dbToJSON(di))
	})
	mux.HandleFunc("GET /primary", func(w http.ResponseWriter, r *http.Request) {
		role, ro := s.cfg.Store.Role()
		primary := ro.Primary
		if role == pagewire.RolePrimary {
			primary = s.cfg.Node.Hostname
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, primary)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if !s.Ready() {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": "the node is starting or stopping: its databases are not open or it has no role yet"})
			return
		}
		if s.cfg.LeaseProblem != nil {
			if p := s.cfg.LeaseProblem(); p != "" {
				// Still up for reads: a health check must not restart it.
				writeJSON(w, http.StatusOK, map[string]string{"status": "degraded", "lease": p})
				return
			}
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.cfg.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path)})
	})
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// writeError answers with the status code that fits err and a JSON body
// naming the reason.
func writeError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, pagewire.ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, pagewire.ErrInvalidName), errors.Is(err, pagewire.ErrInvalidArgument):
		code = http.StatusBadRequest
	case errors.Is(err, pagewire.ErrReadOnly), errors.Is(err, pagewire.ErrBusy), errors.Is(err, pagewire.ErrNotWAL):
		code = http.StatusConflict
	}
	body := map[string]string{"error": err.Error()}
	if reason := pagewire.ReasonOf(err); reason != "" {
		body["reason"] = reason
	}
	writeJSON(w, code, body)
}
