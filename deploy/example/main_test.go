package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// newTestDB opens a fresh database in a temp dir with its schema.
func newTestDB(t testing.TB) (*sql.DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "app.db")
	db, err := openDB(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := ensureSchema(t.Context(), db, path, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("ensureSchema: %v", err)
	}
	return db, path
}

func newTestServer(t testing.TB, db *sql.DB) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(newHandler(db, slog.New(slog.DiscardHandler)))
	t.Cleanup(s.Close)
	return s
}

type result struct {
	status int
	header http.Header
	body   []byte
}

func call(t testing.TB, method, url string, body io.Reader) result {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return result{status: resp.StatusCode, header: resp.Header, body: b}
}

func (r result) item(t testing.TB) item {
	t.Helper()
	var it item
	if err := json.Unmarshal(r.body, &it); err != nil {
		t.Fatalf("body %q: %v", r.body, err)
	}
	return it
}

// errorText returns the "error" of a JSON error body.
func (r result) errorText(t testing.TB) string {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("error with Content-Type %q: %s", ct, r.body)
	}
	var e struct{ Error string }
	if err := json.Unmarshal(r.body, &e); err != nil || e.Error == "" {
		t.Fatalf("body %q is not a JSON error: %v", r.body, err)
	}
	return e.Error
}

func TestHandler_CRUD(t *testing.T) {
	db, _ := newTestDB(t)
	s := newTestServer(t, db)

	if r := call(t, http.MethodGet, s.URL+"/healthz", nil); r.status != http.StatusOK {
		t.Fatalf("healthz: %d", r.status)
	}
	r := call(t, http.MethodGet, s.URL+"/items", nil)
	if r.status != http.StatusOK || strings.TrimSpace(string(r.body)) != `{"items":[]}` {
		t.Fatalf("empty list: %d %s", r.status, r.body)
	}

	r = call(t, http.MethodPost, s.URL+"/items", strings.NewReader(`{"name": "first", "value": "one"}`))
	if r.status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	first := r.item(t)
	if first.ID <= 0 || first.Name != "first" || first.Value != "one" {
		t.Fatalf("created %+v", first)
	}
	if _, err := time.Parse(time.RFC3339Nano, first.CreatedAt); err != nil {
		t.Errorf("created_at %q: %v", first.CreatedAt, err)
	}
	if got, want := r.header.Get("Location"), "/items/1"; got != want {
		t.Errorf("Location=%q, want %q", got, want)
	}
	second := call(t, http.MethodPost, s.URL+"/items", strings.NewReader(`{"name": "second"}`)).item(t)
	if second.ID <= first.ID || second.Value != "" {
		t.Fatalf("second item %+v", second)
	}

	if got := call(t, http.MethodGet, s.URL+"/items/1", nil).item(t); got != first {
		t.Fatalf("get: %+v, want %+v", got, first)
	}

	r = call(t, http.MethodPut, s.URL+"/items/1", strings.NewReader(`{"name": "renamed", "value": "uno"}`))
	if r.status != http.StatusOK {
		t.Fatalf("update: %d %s", r.status, r.body)
	}
	updated := r.item(t)
	if updated.ID != first.ID || updated.Name != "renamed" || updated.Value != "uno" || updated.CreatedAt != first.CreatedAt {
		t.Fatalf("updated %+v from %+v", updated, first)
	}

	r = call(t, http.MethodGet, s.URL+"/items", nil)
	var list struct{ Items []item }
	if err := json.Unmarshal(r.body, &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 2 || list.Items[0] != updated || list.Items[1] != second {
		t.Fatalf("list: %+v", list.Items)
	}

	if r := call(t, http.MethodDelete, s.URL+"/items/1", nil); r.status != http.StatusNoContent || len(r.body) != 0 {
		t.Fatalf("delete: %d %q", r.status, r.body)
	}
	for _, tt := range []struct {
		method, body string
	}{{http.MethodGet, ""}, {http.MethodPut, `{"name":"x"}`}, {http.MethodDelete, ""}} {
		r := call(t, tt.method, s.URL+"/items/1", strings.NewReader(tt.body))
		if r.status != http.StatusNotFound || !strings.Contains(r.errorText(t), "item 1 not found") {
			t.Errorf("%s a deleted item: %d %s", tt.method, r.status, r.body)
		}
	}
}

func TestHandler_BadInput(t *testing.T) {
	db, _ := newTestDB(t)
	s := newTestServer(t, db)
	tests := []struct {
		name, method, path, body string
		status                   int
		says                     string
	}{
		{"bad JSON", http.MethodPost, "/items", `{"name": `, http.StatusBadRequest, "invalid JSON"},
		{"not an object", http.MethodPost, "/items", `["a"]`, http.StatusBadRequest, "invalid JSON"},
		{"trailing data", http.MethodPost, "/items", `{"name": "a"} x`, http.StatusBadRequest, "invalid JSON"},
		{"two values", http.MethodPost, "/items", `{"name": "a"} {}`, http.StatusBadRequest, "more than one JSON value"},
		{"unknown field", http.MethodPost, "/items", `{"name": "a", "nmae": "b"}`, http.StatusBadRequest, "unknown field"},
		{"wrong type", http.MethodPost, "/items", `{"name": 5}`, http.StatusBadRequest, "invalid JSON"},
		{"empty body", http.MethodPost, "/items", ``, http.StatusBadRequest, "body is empty"},
		{"missing name", http.MethodPost, "/items", `{"value": "v"}`, http.StatusBadRequest, `"name" is missing`},
		{"empty name", http.MethodPost, "/items", `{"name": ""}`, http.StatusBadRequest, `"name" is empty`},
		{"blank name", http.MethodPut, "/items/1", `{"name": "  "}`, http.StatusBadRequest, `"name" is empty`},
		{"long name", http.MethodPost, "/items", `{"name": "` + strings.Repeat("n", 257) + `"}`, http.StatusBadRequest, `"name" is 257 bytes long: at most 256`},
		{"bad id", http.MethodGet, "/items/abc", ``, http.StatusBadRequest, `item id "abc" is not a positive integer`},
		{"zero id", http.MethodDelete, "/items/0", ``, http.StatusBadRequest, "not a positive integer"},
		{"negative id", http.MethodPut, "/items/-3", `{"name": "a"}`, http.StatusBadRequest, "not a positive integer"},
		{"huge id", http.MethodGet, "/items/99999999999999999999", ``, http.StatusBadRequest, "not a positive integer"},
		{"missing id", http.MethodGet, "/items/7", ``, http.StatusNotFound, "item 7 not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := call(t, tt.method, s.URL+tt.path, strings.NewReader(tt.body))
			if r.status != tt.status {
				t.Fatalf("status %d, want %d: %s", r.status, tt.status, r.body)
			}
			if got := r.errorText(t); !strings.Contains(got, tt.says) {
				t.Errorf("error %q does not say %q", got, tt.says)
			}
		})
	}
	// A 256-byte name is fine.
	if r := call(t, http.MethodPost, s.URL+"/items", strings.NewReader(`{"name": "`+strings.Repeat("n", 256)+`"}`)); r.status != http.StatusCreated {
		t.Errorf("256-byte name: %d %s", r.status, r.body)
	}
}

func TestHandler_BodyTooLarge(t *testing.T) {
	db, _ := newTestDB(t)
	s := newTestServer(t, db)
	big := `{"name": "big", "value": "` + strings.Repeat("v", 2<<20) + `"}`
	for _, method := range []string{http.MethodPost, http.MethodPut} {
		path := "/items"
		if method == http.MethodPut {
			path = "/items/1"
		}
		r := call(t, method, s.URL+path, strings.NewReader(big))
		if r.status != http.StatusRequestEntityTooLarge || !strings.Contains(r.errorText(t), "larger than") {
			t.Errorf("%s 2 MiB: %d %s", method, r.status, r.body)
		}
	}
	// A valid object followed by 2 MiB of padding is too large as well.
	padded := `{"name": "a"}` + strings.Repeat(" ", 2<<20)
	if r := call(t, http.MethodPost, s.URL+"/items", strings.NewReader(padded)); r.status != http.StatusRequestEntityTooLarge {
		t.Errorf("padded 2 MiB: %d %s", r.status, r.body)
	}
	if r := call(t, http.MethodGet, s.URL+"/items", nil); !bytes.Contains(r.body, []byte(`"items":[]`)) {
		t.Errorf("a rejected body wrote something: %s", r.body)
	}
}

func TestHandler_ReadOnly(t *testing.T) {
	db, path := newTestDB(t)
	rw := newTestServer(t, db)
	created := call(t, http.MethodPost, rw.URL+"/items", strings.NewReader(`{"name": "a"}`)).item(t)

	// A replica's view: the same file, read-only.
	ro, err := openDB(path, "mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if err := ensureSchema(t.Context(), ro, path, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("ensureSchema on a read-only database with the table: %v", err)
	}
	s := newTestServer(t, ro)
	for _, tt := range []struct{ method, path, body string }{
		{http.MethodPost, "/items", `{"name": "b"}`},
		{http.MethodPut, "/items/1", `{"name": "b"}`},
		{http.MethodDelete, "/items/1", ``},
	} {
		r := call(t, tt.method, s.URL+tt.path, strings.NewReader(tt.body))
		if r.status != http.StatusServiceUnavailable {
			t.Fatalf("%s %s on a read-only database: %d %s", tt.method, tt.path, r.status, r.body)
		}
		if got := r.errorText(t); !strings.Contains(got, "read-only") || !strings.Contains(got, "primary") {
			t.Errorf("error %q does not say the node is read-only and to write to the primary", got)
		}
	}
	// Reads work.
	if got := call(t, http.MethodGet, s.URL+"/items/1", nil).item(t); got != created {
		t.Errorf("read on the read-only database: %+v, want %+v", got, created)
	}
}

func TestEnsureSchema(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	t.Run("read-only without the table", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "app.db")
		if err := os.WriteFile(path, nil, 0o644); err != nil { // an empty database
			t.Fatal(err)
		}
		db, err := openDB(path, "mode=ro")
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if err := ensureSchema(t.Context(), db, path, log); err != nil {
			t.Fatalf("ensureSchema = %v, want nil: a replica keeps serving", err)
		}
		r := call(t, http.MethodGet, newTestServer(t, db).URL+"/items", nil)
		if r.status != http.StatusServiceUnavailable || !strings.Contains(r.errorText(t), "not ready") {
			t.Errorf("list before the table replicated: %d %s", r.status, r.body)
		}
	})
	t.Run("twice", func(t *testing.T) {
		db, path := newTestDB(t)
		if err := ensureSchema(t.Context(), db, path, log); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("missing directory", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "nope", "app.db")
		db, err := openDB(path)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if err := ensureSchema(t.Context(), db, path, log); err == nil || !strings.Contains(err.Error(), "check -db") {
			t.Fatalf("ensureSchema = %v, want an error saying to check -db", err)
		}
	})
}

func TestRun(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	path := filepath.Join(t.TempDir(), "env.db")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	errc := make(chan error, 1)
	getenv := func(k string) string {
		if k == envDB {
			return path
		}
		return ""
	}
	go func() { errc <- run(ctx, []string{"-addr", addr}, getenv, slog.New(slog.DiscardHandler)) }()

	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the service did not come up: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if r := call(t, http.MethodPost, "http://"+addr+"/items", strings.NewReader(`{"name": "a"}`)); r.status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("run = %v, want nil after cancel", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("$%s was not used: %v", envDB, err)
	}

	if err := run(t.Context(), []string{"-nope"}, getenv, slog.New(slog.DiscardHandler)); err == nil {
		t.Error("run accepted an unknown flag")
	}
}

// An app that started before its node was the primary has no table: the
// first write, once writes come here, makes it (the compose failover test
// found writes refused for good without this).
func TestHandler_FirstWriteMakesTheTable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.db")
	db, err := openDB(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	s := newTestServer(t, db)
	if r := call(t, http.MethodPost, s.URL+"/items", strings.NewReader(`{"name": "a", "value": "b"}`)); r.status != http.StatusCreated {
		t.Fatalf("first write without the table: %d %s", r.status, r.body)
	}
	if r := call(t, http.MethodGet, s.URL+"/items/1", nil); r.status != http.StatusOK {
		t.Fatalf("the item: %d %s", r.status, r.body)
	}
}
