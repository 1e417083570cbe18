package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/engine"
	"github.com/pagewire/pagewire/internal/safego"
	"github.com/pagewire/pagewire/internal/wire"
	adminv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/admin/v1"
	replicationv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/replication/v1"
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
	Epoch       uint64 `json:"epoch"` // the lease epoch of the node's role: its own lease's, or the one it follows (0: none yet)
	OpenHandles int    `json:"open_handles"`
	Error       string `json:"error,omitempty"`
	// Replicas and HaltLock are only in GET /api/v1/dbs/{name}.
	Replicas *[]replicaJSON `json:"replicas,omitempty"`
	HaltLock *haltJSON      `json:"halt_lock,omitempty"`
	// Backup is set when this node uploads the database's backup.
	Backup *backupJSON `json:"backup,omitempty"`
}

// backupJSON is how far a database's backup has come.
type backupJSON struct {
	TXID       string  `json:"txid"`                  // the newest transaction in the backup
	Time       string  `json:"time,omitempty"`        // its commit time, RFC 3339
	AgeSeconds float64 `json:"age_seconds,omitempty"` // since that commit
	LagSeconds float64 `json:"lag_seconds"`           // how long the oldest transaction not in the backup has waited
	Error      string  `json:"error,omitempty"`       // the last upload's error, until one succeeds
	Segment    string  `json:"segment"`
}

// replicaJSON is a replica the primary streams a database to.
type replicaJSON struct {
	Hostname   string  `json:"hostname"`
	TXID       string  `json:"txid"` // the last TXID sent to it
	LagSeconds float64 `json:"lag_seconds"`
}

// haltJSON is a halt lock; ID only for its holder.
type haltJSON struct {
	ID      string `json:"id,omitempty"`
	TXID    string `json:"txid"`
	Expires string `json:"expires"` // RFC 3339
	Holder  string `json:"holder"`
}

func haltToJSON(l *replicationv1.HaltLock) *haltJSON {
	return &haltJSON{ID: l.GetId(), TXID: pagewire.TXID(l.GetTxid()).String(), Expires: l.GetExpires().AsTime().Format(time.RFC3339Nano), Holder: l.GetHolder()}
}

// maxAPIBody bounds a request body of the HTTP API.
const maxAPIBody = 64 << 10

func (s *Server) dbToJSON(di engine.DatabaseInfo) dbJSON {
	role, ro, epoch := s.cfg.Store.RoleEpoch() // one role change: is_primary and epoch agree
	primary := ro.Primary
	if role == pagewire.RolePrimary {
		primary = s.cfg.Node.Hostname
	}
	j := dbJSON{Name: di.Name, TXID: di.Pos.TXID.String(), Checksum: fmt.Sprintf("%016x", di.Pos.Checksum),
		PageSize: di.PageSize, PageCount: di.PageCount, Primary: primary, IsPrimary: role == pagewire.RolePrimary,
		Epoch: uint64(epoch), OpenHandles: di.OpenHandles}
	if di.Err != nil {
		j.Error = di.Err.Error()
	}
	if b, ok := backupOf(s.cfg.Backup, di.Name); ok {
		j.Backup = &backupJSON{TXID: b.TXID.String(), LagSeconds: b.Lag.Seconds(), Error: b.Err, Segment: b.Segment}
		if !b.Time.IsZero() {
			j.Backup.Time = b.Time.UTC().Format(time.RFC3339Nano)
			j.Backup.AgeSeconds = time.Since(b.Time).Seconds()
		}
	}
	return j
}

// apiMux routes the HTTP API. Its handlers answer within
// Limits.WriteTimeout, or move their deadline with extendWrite.
func (s *Server) apiMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/dbs", s.listDatabases)
	mux.HandleFunc("GET /api/v1/dbs/{name}", s.getDatabase)
	mux.HandleFunc("GET /api/v1/dbs/{name}/verify", s.verifyDatabase)
	mux.HandleFunc("POST /api/v1/dbs/{name}/halt", s.acquireHalt)
	mux.HandleFunc("DELETE /api/v1/dbs/{name}/halt", s.releaseHalt)
	mux.HandleFunc("GET /primary", s.getPrimary)
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.cfg.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/", s.notFound)
	return mux
}

// listDatabases lists the databases.
func (s *Server) listDatabases(w http.ResponseWriter, r *http.Request) {
	out := []dbJSON{}
	for _, di := range s.cfg.Store.Databases() {
		out = append(out, s.dbToJSON(di))
	}
	writeJSON(w, http.StatusOK, map[string]any{"databases": out})
}

// getDatabase shows one database, with its replicas and halt lock.
func (s *Server) getDatabase(w http.ResponseWriter, r *http.Request) {
	di, err := s.cfg.Store.Database(r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	resp, err := s.admin.GetDatabase(r.Context(), &adminv1.GetDatabaseRequest{Name: di.Name})
	if err != nil {
		writeError(w, err)
		return
	}
	j := s.dbToJSON(di)
	replicas := []replicaJSON{}
	for _, ri := range resp.GetReplicas() {
		replicas = append(replicas, replicaJSON{Hostname: ri.GetHostname(), TXID: pagewire.TXID(ri.GetTxid()).String(), LagSeconds: ri.GetLag().AsDuration().Seconds()})
	}
	j.Replicas = &replicas
	if l := resp.GetHaltLock(); l != nil {
		j.HaltLock = haltToJSON(l)
	}
	writeJSON(w, http.StatusOK, j)
}

// verifyDatabase checks a database against its recorded position (read-only).
func (s *Server) verifyDatabase(w http.ResponseWriter, r *http.Request) {
	// Reading a large database takes as long as it takes; the answer is small.
	extendWrite(w, 0)
	resp, err := s.admin.VerifyDatabase(r.Context(), &adminv1.VerifyDatabaseRequest{Name: r.PathValue("name")})
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": resp.GetOk(), "txid": pagewire.TXID(resp.GetTxid()).String(),
		"checksum": fmt.Sprintf("%016x", resp.GetChecksum()), "content_checksum": fmt.Sprintf("%016x", resp.GetContentChecksum()),
		"page_count": resp.GetPageCount(), "bad_pages": resp.GetBadPages(), "bad_page_count": resp.GetBadPageCount(),
		"wal_problem": resp.GetWalProblem(), "uncounted": resp.GetUncounted(), "summary": resp.GetSummary()})
}

// acquireHalt takes a database's halt lock; ttl and wait come from the JSON body or the query.
func (s *Server) acquireHalt(w http.ResponseWriter, r *http.Request) {
	req := &adminv1.AcquireHaltRequest{Name: r.PathValue("name")}
	var body struct {
		TTL  string `json:"ttl"`
		Wait string `json:"wait"`
	}

	// Read ttl and wait from the JSON body, if it has one.
	r.Body = http.MaxBytesReader(w, r.Body, maxAPIBody)
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil && !errors.Is(err, io.EOF) {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": fmt.Sprintf("the request body is over %d bytes: send at most {\"ttl\": \"30s\", \"wait\": \"10s\"}", maxAPIBody)})
			return
		}
		writeError(w, fmt.Errorf("%w: the body must be JSON like {\"ttl\": \"30s\", \"wait\": \"10s\"} (or empty): %v", pagewire.ErrInvalidArgument, err))
		return
	}

	// A query parameter overrides the body's value.
	for _, f := range []struct {
		name, body string
		set        func(*durationpb.Duration)
	}{
		{"ttl", body.TTL, func(d *durationpb.Duration) { req.Ttl = d }},
		{"wait", body.Wait, func(d *durationpb.Duration) { req.Wait = d }},
	} {
		v := f.body
		if q := r.URL.Query().Get(f.name); q != "" {
			v = q
		}
		if v == "" {
			continue
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			writeError(w, fmt.Errorf("%w: %s %q is not a duration like 30s", pagewire.ErrInvalidArgument, f.name, v))
			return
		}
		f.set(durationpb.New(d))
	}

	// Take the lock, waiting for it up to wait (engine.HaltDurations
	// bounds it).
	wait := req.GetWait().AsDuration()
	if wait <= 0 {
		wait = engine.DefaultHaltWait
	}
	extendWrite(w, wait+haltRPCSlack+s.cfg.Limits.WriteTimeout)
	resp, err := s.admin.AcquireHalt(r.Context(), req)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, haltToJSON(resp.GetLock()))
}

// releaseHalt releases a halt lock by its id.
func (s *Server) releaseHalt(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("id")
	if _, err := s.admin.ReleaseHalt(r.Context(), &adminv1.ReleaseHaltRequest{Name: r.PathValue("name"), Id: id}); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "released"})
}

// getPrimary names the primary, as LiteFS's /primary does.
func (s *Server) getPrimary(w http.ResponseWriter, r *http.Request) {
	node, err := s.admin.GetNode(r.Context(), &adminv1.GetNodeRequest{})
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, node.GetPrimary())
}

// healthz says whether the node serves: ok, degraded (the lease's backend is in trouble, reads still work) or not ready.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
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
}

// notFound answers every other path.
func (s *Server) notFound(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path)})
}

// recoverHTTP answers 500 to a request whose handler panicked, and logs
// the panic with its stack. (net/http would recover it too, but log it
// outside slog and drop the connection without an answer.)
func recoverHTTP(log *slog.Logger, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			p := recover()
			if p == nil {
				return
			}
			if p == http.ErrAbortHandler { // net/http's way to cut a response short
				panic(p)
			}
			err := safego.Recovered(log, "HTTP "+r.Method+" "+r.URL.Path, p)
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		}()
		h.ServeHTTP(w, r)
	})
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
	err = wire.FromStatus(err) // a gRPC status from the admin service, back to a domain error
	code := http.StatusInternalServerError
	switch status.Code(err) {
	case codes.DeadlineExceeded:
		code = http.StatusGatewayTimeout
	case codes.Unavailable:
		code = http.StatusServiceUnavailable
	case codes.NotFound:
		code = http.StatusNotFound
	case codes.InvalidArgument:
		code = http.StatusBadRequest
	case codes.PermissionDenied:
		code = http.StatusForbidden
	case codes.FailedPrecondition:
		code = http.StatusConflict
	case codes.ResourceExhausted:
		code = http.StatusTooManyRequests
	}

	// Domain errors decide over the gRPC code.
	switch {
	case errors.Is(err, pagewire.ErrNotHolder):
		code = http.StatusForbidden
	case errors.Is(err, pagewire.ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, pagewire.ErrInvalidName), errors.Is(err, pagewire.ErrInvalidArgument):
		code = http.StatusBadRequest
	case errors.Is(err, pagewire.ErrReadOnly), errors.Is(err, pagewire.ErrBusy), errors.Is(err, pagewire.ErrNotWAL):
		code = http.StatusConflict
	}

	// The body carries the message, and the reason if there is one.
	msg := err.Error()
	if st, ok := status.FromError(err); ok {
		msg = st.Message()
	}
	body := map[string]string{"error": msg}
	if reason := pagewire.ReasonOf(err); reason != "" {
		body["reason"] = reason
	}
	writeJSON(w, code, body)
}
