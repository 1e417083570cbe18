package server

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/pagewire/pagewire/internal/logkey"
	"github.com/pagewire/pagewire/internal/safego"
)

// The port is split per connection, so that gRPC runs on grpc-go's own
// HTTP/2 transport (which batches writes and costs a fraction of serving
// gRPC through net/http) while the HTTP API keeps HTTP/1.1 and h2c:
//
//   - a connection that does not open with the HTTP/2 preface is HTTP/1;
//   - an HTTP/2 connection whose first request has a content-type of
//     application/grpc* is gRPC, any other first request is HTTP;
//   - an HTTP/2 connection that sends no request within splitIdleWait is
//     gRPC (gRPC clients open connections ahead of their first call).
//
// Bytes read to decide are replayed to the server that gets the connection.
// Deciding is bounded: a connection that has not sent its first byte, or
// the whole HTTP/2 preface, within the handshake timeout is closed, and so
// is one that sends more than maxSniffBytes of HTTP/2 frames, or a frame
// over HTTP/2's default maximum size, before its first request's headers end.
const splitIdleWait = time.Second

// maxSniffBytes bounds what the splitter reads of an HTTP/2 connection,
// preface included, to find its first request's headers: a first request
// with bigger headers is refused. It is what the splitter holds in memory
// per connection.
const maxSniffBytes = 64 << 10

// maxSniffFrame is the largest frame a client may send before it knows
// the server's SETTINGS_MAX_FRAME_SIZE, HTTP/2's initial 16 KiB; the
// splitter's SETTINGS frame does not raise it.
const maxSniffFrame = 16 << 10

// errSniffTooBig is returned by classify for a connection that sent more
// than maxSniffBytes without a whole request header.
var errSniffTooBig = errors.New("the first HTTP/2 request's headers are not within the first 64 KiB")

// portSplitter accepts connections on one listener and hands each to the
// gRPC or the HTTP listener.
type portSplitter struct {
	ln        net.Listener
	handshake time.Duration // how long a connection may take to show what it is
	grpc      *connQueue
	http      *connQueue
	log       *slog.Logger
	wg        sync.WaitGroup
}

func newPortSplitter(ln net.Listener, handshake time.Duration, log *slog.Logger) *portSplitter {
	return &portSplitter{ln: ln, handshake: handshake, grpc: newConnQueue(ln.Addr()), http: newConnQueue(ln.Addr()), log: log}
}

// run accepts until the listener is closed, then closes both queues (a
// connection still being classified is closed, at the latest when its
// classification times out).
func (p *portSplitter) run() error {
	defer func() {
		p.grpc.Close()
		p.http.Close()
		p.wg.Wait()
	}()
	var delay time.Duration
	for {
		c, err := p.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Out of descriptors and the like: back off, as net/http does.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				p.log.Warn("accept failed; retrying", "error", err, "in", delay)
				time.Sleep(delay)
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		delay = 0
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			// A panic reading a stranger's bytes drops that connection only.
			if err := safego.Call(p.log, "classify a connection", func() error { p.route(c); return nil }); err != nil {
				_ = c.Close()
			}
		}()
	}
}

// route reads as much of c as it takes to decide, then queues it.
func (p *portSplitter) route(c net.Conn) {
	rec := &recordingConn{Conn: c}
	isGRPC, err := classify(rec, p.handshake)
	if err != nil {
		p.log.Debug("closing a connection that did not show what it is", logkey.Addr, c.RemoteAddr().String(), logkey.Error, err)
		_ = c.Close()
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	rec.replay()
	q, conn := p.grpc, net.Conn(rec)
	if !isGRPC {
		q = p.http
		if rec.sentSettings {
			conn = &settingsAckFilter{Conn: rec}
		}
	}
	if !q.put(conn) {
		_ = c.Close()
	}
}

// classify reports whether the connection is gRPC, waiting at most
// handshake for the first bytes and the HTTP/2 preface.
func classify(rec *recordingConn, handshake time.Duration) (bool, error) {
	preface := []byte(http2.ClientPreface)
	_ = rec.SetReadDeadline(time.Now().Add(handshake))
	buf := make([]byte, len(preface))
	for n := 0; n < len(preface); {
		m, err := rec.Read(buf[n:])
		n += m
		if !bytes.Equal(buf[:n], preface[:n]) {
			return false, nil // HTTP/1
		}
		if err != nil && n < len(preface) {
			return false, err
		}
	}

	// gRPC clients wait for the server's SETTINGS before their first
	// request: send an empty one now. The client acknowledges it; gRPC's
	// server ignores the extra ACK, net/http's would not (see
	// settingsAckFilter).
	_ = rec.SetWriteDeadline(time.Now().Add(handshake))
	if err := http2.NewFramer(rec, nil).WriteSettings(); err != nil {
		return false, err
	}
	_ = rec.SetWriteDeadline(time.Time{})
	rec.sentSettings = true

	// Then the first request's headers tell gRPC from other HTTP/2. What
	// comes before them is bounded in time, frame size and bytes.
	_ = rec.SetReadDeadline(time.Now().Add(splitIdleWait))
	fr := http2.NewFramer(io.Discard, &limitedReader{r: rec, left: maxSniffBytes - len(preface)})
	fr.SetMaxReadFrameSize(maxSniffFrame)
	var block []byte
	for {
		f, err := fr.ReadFrame()
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout():
			return true, nil // an idle HTTP/2 connection: a gRPC client's
		case err != nil:
			return false, err
		}

		// A HEADERS frame and its CONTINUATIONs carry the headers.
		switch f := f.(type) {
		case *http2.HeadersFrame:
			block = append(block, f.HeaderBlockFragment()...)
			if f.HeadersEnded() {
				return isGRPCHeaders(block), nil
			}
		case *http2.ContinuationFrame:
			block = append(block, f.HeaderBlockFragment()...)
			if f.HeadersEnded() {
				return isGRPCHeaders(block), nil
			}
		}
	}
}

// isGRPCHeaders decodes a request's header block and looks at its
// content-type.
func isGRPCHeaders(block []byte) bool {
	grpc := false
	dec := hpack.NewDecoder(4096, func(f hpack.HeaderField) {
		if f.Name == "content-type" && strings.HasPrefix(f.Value, "application/grpc") {
			grpc = true
		}
	})
	if _, err := dec.Write(block); err != nil {
		return false
	}
	return grpc
}

// limitedReader reads from r until left bytes have been read, then fails
// with errSniffTooBig.
type limitedReader struct {
	r    io.Reader
	left int
}

func (l *limitedReader) Read(b []byte) (int, error) {
	if l.left <= 0 {
		return 0, errSniffTooBig
	}
	n, err := l.r.Read(b[:min(len(b), l.left)])
	l.left -= n
	return n, err
}

// recordingConn records what is read until replay, then serves those bytes
// again before reading on.
type recordingConn struct {
	net.Conn
	sentSettings bool // the splitter sent the client a SETTINGS frame
	replaying    bool
	rec          bytes.Buffer
	pending      []byte
}

func (c *recordingConn) Read(b []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(b, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	n, err := c.Conn.Read(b)
	if !c.replaying {
		c.rec.Write(b[:n])
	}
	return n, err
}

// replay stops recording and queues the recorded bytes for the next reads.
func (c *recordingConn) replay() {
	c.replaying = true
	c.pending = c.rec.Bytes()
}

// connQueue is a net.Listener fed by the splitter.
type connQueue struct {
	addr   net.Addr
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newConnQueue(addr net.Addr) *connQueue {
	return &connQueue{addr: addr, conns: make(chan net.Conn), closed: make(chan struct{})}
}

// put hands c to Accept; false if the queue is closed.
func (q *connQueue) put(c net.Conn) bool {
	select {
	case q.conns <- c:
		return true
	case <-q.closed:
		return false
	}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.conns:
		return c, nil
	case <-q.closed:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.once.Do(func() { close(q.closed) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return q.addr }

// settingsAckFilter hides from net/http's HTTP/2 server the client's ACK of
// the splitter's SETTINGS frame, which it did not send. It follows the
// stream frame by frame (after the client preface) until it drops that ACK,
// then passes everything.
type settingsAckFilter struct {
	net.Conn
	started bool
	skip    int // bytes to pass before the next frame header: preface, payload
	hdr     [frameHeaderLen]byte
	nhdr    int
	out     []byte // a frame header to pass before reading on
	done    bool
}

// frameHeaderLen is the size of an HTTP/2 frame header.
const frameHeaderLen = 9

func (f *settingsAckFilter) Read(b []byte) (int, error) {
	if !f.started {
		f.started, f.skip = true, len(http2.ClientPreface)
	}
	for {
		switch {
		case len(f.out) > 0:
			n := copy(b, f.out)
			f.out = f.out[n:]
			return n, nil
		case f.done:
			return f.Conn.Read(b)
		case f.skip > 0:
			n, err := f.Conn.Read(b[:min(len(b), f.skip)])
			f.skip -= n
			return n, err
		}

		// Read the next frame's header whole.
		n, err := f.Conn.Read(f.hdr[f.nhdr:])
		f.nhdr += n
		if f.nhdr < frameHeaderLen {
			if err != nil {
				return 0, err
			}
			continue
		}

		// The first SETTINGS ACK is dropped; other frames pass through whole.
		f.nhdr = 0
		length := int(f.hdr[0])<<16 | int(f.hdr[1])<<8 | int(f.hdr[2])
		typ, flags := http2.FrameType(f.hdr[3]), http2.Flags(f.hdr[4])
		if typ == http2.FrameSettings && flags.Has(http2.FlagSettingsAck) && length == 0 {
			f.done = true
			continue
		}
		f.skip, f.out = length, f.hdr[:]
	}
}
