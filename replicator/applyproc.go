package replicator

import (
	"context"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/internal/safego"
)

// A node must never wait on its own FUSE mount: a node killed while one of
// its threads waits for a FUSE reply that only the node can give never
// finishes exiting, and its mount never goes away. So on a replica the
// WALWriters run in a child process (`pagewire apply-worker`), which the
// kernel fails cleanly when the node dies. ApplyClient is the node's end
// of the pipe to it, ServeApply the child's.

// applyRequest is one call to the apply worker.
type applyRequest struct {
	ID        uint64
	Op        string // "open", "apply", "part", "abort", "checkpoint", "hold", "release", "close"
	Path      string
	PageCount uint32
	Pages     []pagewire.Page
	Sync      bool
	First     bool          // "part": the first part of a transaction
	Last      bool          // "part": its last part
	Wait      time.Duration // "hold": how long to wait for the lock
}

// applyResponse answers one applyRequest.
type applyResponse struct {
	ID       uint64
	Err      string
	Reason   string // pagewire.ReasonOf the error, to map it back
	Frames   uint32
	PageSize uint32
	Complete bool
}

// ServeApply runs WALWriters for the requests read from r, answering on w,
// until r ends. It is the apply worker's main loop.
func ServeApply(r io.Reader, w io.Writer, log *slog.Logger) error {
	if log == nil {
		log = slog.Default()
	}
	dec, enc := gob.NewDecoder(r), gob.NewEncoder(w)
	ws := applyWriters{log: log, m: map[string]*WALWriter{}}
	defer ws.closeAll()
	for {
		var req applyRequest
		if err := dec.Decode(&req); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read apply request: %w", err)
		}
		resp := ws.serve(context.Background(), req)
		if err := enc.Encode(&resp); err != nil {
			return fmt.Errorf("write apply response: %w", err)
		}
	}
}

// applyWriters are the apply worker's open WALWriters, by path.
type applyWriters struct {
	log *slog.Logger
	m   map[string]*WALWriter
}

func (ws *applyWriters) closeAll() {
	for _, ww := range ws.m {
		_ = ww.Close()
	}
}

// serve runs one request on its path's writer.
func (ws *applyWriters) serve(ctx context.Context, req applyRequest) applyResponse {
	resp := applyResponse{ID: req.ID}
	ww, err := ws.m[req.Path], error(nil)
	switch req.Op {
	case "open":
		if ww == nil {
			ww, err = OpenWALWriter(req.Path, ws.log)
			if err == nil {
				ws.m[req.Path] = ww
			}
		}
	case "apply", "part", "abort", "checkpoint", "hold", "release", "close":
		if ww == nil {
			err = fmt.Errorf("%w: %s is not open in the apply worker", pagewire.ErrInvalidArgument, req.Path)
			break
		}

		switch req.Op {
		case "apply":
			err = ww.Apply(ctx, req.PageCount, req.Pages, req.Sync)
		case "part":
			err = ww.ApplyPart(ctx, TxnPart{PageCount: req.PageCount, Pages: req.Pages, First: req.First, Last: req.Last}, req.Sync)
		case "abort":
			err = ww.AbortPart()
		case "checkpoint":
			resp.Complete, err = ww.Checkpoint(ctx)
		case "hold":
			hctx, cancel := context.WithTimeout(ctx, req.Wait)
			err = ww.Hold(hctx)
			cancel()
		case "release":
			err = ww.Release()
		case "close":
			err = ww.Close()
			delete(ws.m, req.Path)
			ww = nil
		}
	default:
		err = fmt.Errorf("%w: unknown apply op %q", pagewire.ErrInvalidArgument, req.Op)
	}

	// Every answer carries the WAL's frames and page size while it is open.
	if ww != nil {
		resp.Frames, resp.PageSize = ww.Frames(), ww.PageSize()
	}

	// An error goes back as its text and reason.
	if err != nil {
		resp.Err, resp.Reason = err.Error(), pagewire.ReasonOf(err)
	}
	return resp
}

// ApplyClient talks to an apply worker over its stdin and stdout. It is
// safe for concurrent use.
type ApplyClient struct {
	w   io.Closer
	log *slog.Logger

	// encMu guards enc: one request is written at a time.
	encMu sync.Mutex
	enc   *gob.Encoder

	// mu guards next, pending and err; never held while writing, so that
	// responses are always read.
	mu      sync.Mutex
	next    uint64
	pending map[uint64]chan applyResponse
	err     error // set once the worker's output ended

	// stopped is closed once the worker's output ended; kill, if set,
	// kills the worker (SetKill).
	stopped chan struct{}
	kill    func()
}

// SetKill sets how Abandon kills the worker (the node's
// exec.Cmd.Process.Kill). Without it, Abandon only closes the worker's
// input and waits for it to answer.
func (c *ApplyClient) SetKill(kill func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.kill = kill
}

// Abandon stops the worker for good: a request it is still serving must
// not land after its caller gave up waiting (the storage would take it
// for a later announcement's). It kills the worker and returns once its
// output ended, or after abortTimeout; every call fails from then on.
func (c *ApplyClient) Abandon() {
	c.mu.Lock()
	kill := c.kill
	c.mu.Unlock()
	_ = c.w.Close()
	if kill != nil {
		kill()
	}
	select {
	case <-c.stopped:
	case <-time.After(abortTimeout):
		c.log.Error("the apply worker did not stop after it was killed")
	}
}

// NewApplyClient starts reading responses from r; requests go to w. log
// (nil: slog.Default()) logs a panic reading them.
func NewApplyClient(w io.WriteCloser, r io.Reader, log *slog.Logger) *ApplyClient {
	if log == nil {
		log = slog.Default()
	}
	c := &ApplyClient{enc: gob.NewEncoder(w), w: w, pending: map[uint64]chan applyResponse{}, log: log, stopped: make(chan struct{})}
	go c.read(gob.NewDecoder(r))
	return c
}

// read reads responses until the worker's output ends; every call then
// fails. A panic reading them fails every call the same way.
func (c *ApplyClient) read(dec *gob.Decoder) {
	err := safego.Call(c.log, "read the apply worker's responses", func() error { return c.readResponses(dec) })
	c.mu.Lock()
	c.err = fmt.Errorf("the apply worker stopped: %w", err)
	for id, ch := range c.pending {
		close(ch)
		delete(c.pending, id)
	}
	c.mu.Unlock()
	close(c.stopped)
}

// readResponses hands each response to its caller until decoding fails.
func (c *ApplyClient) readResponses(dec *gob.Decoder) error {
	for {
		var resp applyResponse
		if err := dec.Decode(&resp); err != nil {
			return err
		}
		c.mu.Lock()
		ch := c.pending[resp.ID]
		delete(c.pending, resp.ID)
		c.mu.Unlock()
		if ch != nil {
			ch <- resp
		}
	}
}

// call sends a request and waits for its response. A cancelled ctx stops
// the wait; the worker still finishes the request.
func (c *ApplyClient) call(ctx context.Context, req applyRequest) (applyResponse, error) {
	ch := make(chan applyResponse, 1)

	// Register for the answer under a new ID, unless the worker has failed.
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return applyResponse{}, c.err
	}
	c.next++
	req.ID = c.next
	c.pending[req.ID] = ch
	c.mu.Unlock()

	// Send the request.
	c.encMu.Lock()
	err := c.enc.Encode(&req)
	c.encMu.Unlock()
	if err != nil {
		c.mu.Lock()
		delete(c.pending, req.ID)
		c.mu.Unlock()
		return applyResponse{}, fmt.Errorf("send to the apply worker: %w", err)
	}

	// Wait for the answer, or for ctx.
	select {
	case resp, ok := <-ch:
		if !ok {
			c.mu.Lock()
			defer c.mu.Unlock()
			return applyResponse{}, c.err
		}
		if resp.Err != "" {
			return resp, &applyError{msg: resp.Err, sentinel: pagewire.ErrorOf(resp.Reason)}
		}
		return resp, nil
	case <-ctx.Done():
		return applyResponse{}, ctx.Err()
	}
}

// Close ends the worker's input; it exits once it has answered.
func (c *ApplyClient) Close() error { return c.w.Close() }

// Open opens a WALWriter for the database at path in the worker.
func (c *ApplyClient) Open(ctx context.Context, path string) (*RemoteWALWriter, error) {
	resp, err := c.call(ctx, applyRequest{Op: "open", Path: path})
	if err != nil {
		return nil, err
	}
	return &RemoteWALWriter{c: c, path: path, frames: resp.Frames, pageSize: resp.PageSize}, nil
}

// applyError is an error the worker returned.
type applyError struct {
	msg      string
	sentinel error
}

func (e *applyError) Error() string { return e.msg }
func (e *applyError) Unwrap() error { return e.sentinel }

// RemoteWALWriter is a WALWriter in the apply worker.
type RemoteWALWriter struct {
	c        *ApplyClient
	path     string
	frames   uint32
	pageSize uint32
}

// Apply is WALWriter.Apply in the worker.
func (w *RemoteWALWriter) Apply(ctx context.Context, pageCount uint32, pages []pagewire.Page, sync bool) error {
	resp, err := w.c.call(ctx, applyRequest{Op: "apply", Path: w.path, PageCount: pageCount, Pages: pages, Sync: sync})
	if err == nil {
		w.frames = resp.Frames
	}
	return err
}

// ApplyPart is WALWriter.ApplyPart in the worker.
func (w *RemoteWALWriter) ApplyPart(ctx context.Context, p TxnPart, sync bool) error {
	resp, err := w.c.call(ctx, applyRequest{Op: "part", Path: w.path, PageCount: p.PageCount, Pages: p.Pages, First: p.First, Last: p.Last, Sync: sync})
	if err == nil {
		w.frames = resp.Frames
	}
	return err
}

// AbortPart is WALWriter.AbortPart in the worker; it waits at most
// abortTimeout for the answer.
func (w *RemoteWALWriter) AbortPart() error {
	ctx, cancel := context.WithTimeout(context.Background(), abortTimeout)
	defer cancel()
	_, err := w.c.call(ctx, applyRequest{Op: "abort", Path: w.path})
	return err
}

// abortTimeout bounds the wait for the worker to give up a transaction;
// the worker does so even if no one waits for its answer.
const abortTimeout = 10 * time.Second

// Checkpoint is WALWriter.Checkpoint in the worker.
func (w *RemoteWALWriter) Checkpoint(ctx context.Context) (bool, error) {
	resp, err := w.c.call(ctx, applyRequest{Op: "checkpoint", Path: w.path})
	if err == nil {
		w.frames = resp.Frames
	}
	return resp.Complete, err
}

// Hold is WALWriter.Hold in the worker; it waits at most wait (the
// worker serves nothing else meanwhile).
func (w *RemoteWALWriter) Hold(ctx context.Context, wait time.Duration) error {
	_, err := w.c.call(ctx, applyRequest{Op: "hold", Path: w.path, Wait: wait})
	return err
}

// Release is WALWriter.Release in the worker.
func (w *RemoteWALWriter) Release(ctx context.Context) error {
	_, err := w.c.call(ctx, applyRequest{Op: "release", Path: w.path})
	return err
}

// Abandon stops the apply worker for good (ApplyClient.Abandon): the
// replica gave up waiting for a write it must not let land later.
func (w *RemoteWALWriter) Abandon() { w.c.Abandon() }

// Frames is WALWriter.Frames as of the last call.
func (w *RemoteWALWriter) Frames() uint32 { return w.frames }

// PageSize is the database's page size.
func (w *RemoteWALWriter) PageSize() uint32 { return w.pageSize }

// Close closes the writer in the worker.
func (w *RemoteWALWriter) Close() error {
	_, err := w.c.call(context.Background(), applyRequest{Op: "close", Path: w.path})
	return err
}
