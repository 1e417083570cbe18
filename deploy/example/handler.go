package main

import (
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	sqlite3 "modernc.org/sqlite/lib"
)

const (
	maxBodyBytes = 1 << 20 // 1 MiB
	maxNameBytes = 256
)

// item is one row of table items, as the API shows it.
type item struct {
	ID        int64  `json:"id"`
	Name      string `json:"name"`
	Value     string `json:"value"`
	CreatedAt string `json:"created_at"`
}

// itemInput is the body of POST /items and PUT /items/{id}.
type itemInput struct {
	Name  *string `json:"name"`
	Value *string `json:"value"` // optional: missing means ""
}

// app serves the items API over db.
type app struct {
	db  *sql.DB
	log *slog.Logger
}

// newHandler returns the service's HTTP handler over db, whose items table
// ensureSchema made (or the primary did).
func newHandler(db *sql.DB, log *slog.Logger) http.Handler {
	a := &app{db: db, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /items", a.create)
	mux.HandleFunc("GET /items", a.list)
	mux.HandleFunc("GET /items/{id}", a.get)
	mux.HandleFunc("PUT /items/{id}", a.update)
	mux.HandleFunc("DELETE /items/{id}", a.delete)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	return a.logRequests(mux)
}

const itemColumns = `id, name, value, created_at`

func (a *app) create(w http.ResponseWriter, r *http.Request) {
	in, ok := readInput(w, r)
	if !ok {
		return
	}
	var it item
	insert := func() error {
		return a.db.QueryRowContext(r.Context(),
			`INSERT INTO items (name, value, created_at) VALUES (?, ?, ?) RETURNING `+itemColumns,
			in.name, in.value, time.Now().UTC().Format(time.RFC3339Nano),
		).Scan(&it.ID, &it.Name, &it.Value, &it.CreatedAt)
	}
	err := insert()
	if err != nil && strings.Contains(err.Error(), "no such table: items") {
		// The app started while this node was a replica of a primary that
		// had not made the table: now that writes come here, the first
		// one makes it.
		if _, cerr := a.db.ExecContext(r.Context(), createItems); cerr == nil {
			a.log.Info("created table items on the first write")
			err = insert()
		}
	}
	if err != nil {
		a.dbError(w, "create item", err)
		return
	}
	w.Header().Set("Location", fmt.Sprintf("/items/%d", it.ID))
	writeJSON(w, http.StatusCreated, it)
}

func (a *app) list(w http.ResponseWriter, r *http.Request) {
	rows, err := a.db.QueryContext(r.Context(), `SELECT `+itemColumns+` FROM items ORDER BY id`)
	if err != nil {
		a.dbError(w, "list items", err)
		return
	}
	defer rows.Close()
	items := []item{}
	for rows.Next() {
		var it item
		if err := rows.Scan(&it.ID, &it.Name, &it.Value, &it.CreatedAt); err != nil {
			a.dbError(w, "list items", err)
			return
		}
		items = append(items, it)
	}
	if err := rows.Err(); err != nil {
		a.dbError(w, "list items", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string][]item{"items": items})
}

func (a *app) get(w http.ResponseWriter, r *http.Request) {
	id, ok := readID(w, r)
	if !ok {
		return
	}
	var it item
	err := a.db.QueryRowContext(r.Context(), `SELECT `+itemColumns+` FROM items WHERE id = ?`, id).
		Scan(&it.ID, &it.Name, &it.Value, &it.CreatedAt)
	if errors.Is(err, sql.ErrNoRows) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("item %d not found", id))
		return
	}
	if err != nil {
		a.dbError(w, "get item", err)
		return
	}
	writeJSON(w, http.StatusOK, it)
}

func (a *app) update(w http.ResponseWriter, r *http.Request) {
	id, ok := readID(w, r)
	if !ok {
		return
	}
	in, ok := readInput(w, r)
	if !ok {
		return
	}
	var it item
	err := a.db.QueryRowContext(r.Context(),
		`UPDATE items SET name = ?, value = ? WHERE id = ? RETURNING `+itemColumns, in.name, in.value, id,
	).Scan(&it.ID, &it.Name, &it.Value, &it.CreatedAt)
	if errors.Is(err, sql.ErrNoRows) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("item %d not found", id))
		return
	}
	if err != nil {
		a.dbError(w, "update item", err)
		return
	}
	writeJSON(w, http.StatusOK, it)
}

func (a *app) delete(w http.ResponseWriter, r *http.Request) {
	id, ok := readID(w, r)
	if !ok {
		return
	}
	res, err := a.db.ExecContext(r.Context(), `DELETE FROM items WHERE id = ?`, id)
	if err != nil {
		a.dbError(w, "delete item", err)
		return
	}
	n, err := res.RowsAffected()
	if err != nil {
		a.dbError(w, "delete item", err)
		return
	}
	if n == 0 {
		writeError(w, http.StatusNotFound, fmt.Sprintf("item %d not found", id))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// dbError answers a failed database call: 503 for a write on a read-only
// replica or a database that has not replicated here yet, 500 otherwise.
func (a *app) dbError(w http.ResponseWriter, op string, err error) {
	switch {
	case isReadOnly(err):
		writeError(w, http.StatusServiceUnavailable,
			"this node's database is read-only (it is a replica): send writes to the primary, through the pagewire proxy (proxy.addr) rather than to the app directly")
	case hasCode(err, sqlite3.SQLITE_CANTOPEN), strings.Contains(err.Error(), "no such table: items"):
		writeError(w, http.StatusServiceUnavailable,
			"the database is not ready on this node yet: the primary creates it and it replicates here; retry shortly")
	default:
		a.log.Error("database error", logKeyOp, op, logKeyError, err)
		writeError(w, http.StatusInternalServerError, op+": "+err.Error())
	}
}

// input is a validated itemInput.
type input struct{ name, value string }

// readInput decodes and checks a request's item body. When it is not
// valid, it answers r and returns false.
func readInput(w http.ResponseWriter, r *http.Request) (input, bool) {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	dec.DisallowUnknownFields()
	var in itemInput
	err := dec.Decode(&in)
	if err == nil {
		// Nothing may follow the object. Reading on also catches a body
		// over the limit whose first value fits.
		var extra json.RawMessage
		switch derr := dec.Decode(&extra); {
		case errors.Is(derr, io.EOF):
		case derr == nil:
			err = errors.New("the body holds more than one JSON value")
		default:
			err = derr
		}
	}

	// Report what was wrong with the body.
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("the request body is larger than %d bytes (1 MiB)", maxBodyBytes))
		return input{}, false
	case errors.Is(err, io.EOF):
		writeError(w, http.StatusBadRequest, `the request body is empty: send a JSON object such as {"name": "a", "value": "b"}`)
		return input{}, false
	case err != nil:
		writeError(w, http.StatusBadRequest, `invalid JSON body: `+err.Error()+`; send an object such as {"name": "a", "value": "b"}`)
		return input{}, false
	}

	// name is required: some text, not too long.
	switch {
	case in.Name == nil:
		writeError(w, http.StatusBadRequest, `"name" is missing: it is required`)
		return input{}, false
	case strings.TrimSpace(*in.Name) == "":
		writeError(w, http.StatusBadRequest, `"name" is empty: it must hold some text`)
		return input{}, false
	case len(*in.Name) > maxNameBytes:
		writeError(w, http.StatusBadRequest, fmt.Sprintf(`"name" is %d bytes long: at most %d are allowed`, len(*in.Name), maxNameBytes))
		return input{}, false
	}

	// value is optional.
	out := input{name: *in.Name}
	if in.Value != nil {
		out.value = *in.Value
	}
	return out, true
}

// readID parses the {id} path segment. When it is not a positive integer,
// it answers r and returns false.
func readID(w http.ResponseWriter, r *http.Request) (int64, bool) {
	s := r.PathValue("id")
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("item id %q is not a positive integer", s))
		return 0, false
	}
	return id, true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// logRequests logs each request with its status and duration.
func (a *app) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		a.log.Info("request", logKeyMethod, r.Method, logKeyPath, r.URL.Path,
			logKeyStatus, rec.status, logKeyDuration, time.Since(start))
	})
}

// statusRecorder remembers the status code a handler wrote. The service
// does not hijack connections, so it needs no more than that.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the real writer.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }
