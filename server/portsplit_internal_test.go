package server

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// readerConn is a net.Conn that reads from r one byte per call.
type readerConn struct {
	net.Conn
	r io.Reader
}

func (c *readerConn) Read(b []byte) (int, error) { return c.r.Read(b[:min(len(b), 1)]) }

func TestSettingsAckFilter_DropsOnlyTheFirstAck(t *testing.T) {
	var in, want bytes.Buffer
	in.WriteString(http2.ClientPreface)
	want.WriteString(http2.ClientPreface)
	both := func(write func(*http2.Framer) error) {
		t.Helper()
		if err := write(http2.NewFramer(&in, nil)); err != nil {
			t.Fatal(err)
		}
		if err := write(http2.NewFramer(&want, nil)); err != nil {
			t.Fatal(err)
		}
	}
	both(func(f *http2.Framer) error {
		return f.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 20})
	})
	both(func(f *http2.Framer) error { return f.WriteWindowUpdate(0, 1000) })
	// A payload that looks like an ACK must pass: it is data, not a frame.
	both(func(f *http2.Framer) error { return f.WriteData(1, false, []byte{0, 0, 0, 4, 1, 0, 0, 0, 0}) })
	if err := http2.NewFramer(&in, nil).WriteSettingsAck(); err != nil { // the one dropped
		t.Fatal(err)
	}
	both(func(f *http2.Framer) error { return f.WriteSettingsAck() }) // the server's own: kept
	both(func(f *http2.Framer) error { return f.WritePing(false, [8]byte{1}) })

	got, err := io.ReadAll(&settingsAckFilter{Conn: &readerConn{r: &in}})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("filtered stream:\n%x\nwant\n%x", got, want.Bytes())
	}
}

// A client that sends HTTP/2 frames without end, before its first request's
// headers end, is refused once it has sent maxSniffBytes: the splitter
// holds no more than that.
func TestClassify_BoundsWhatItHolds(t *testing.T) {
	frames := func(write func(*http2.Framer)) []byte {
		var b bytes.Buffer
		fr := http2.NewFramer(&b, nil)
		for range 64 {
			write(fr)
		}
		return b.Bytes()
	}
	for _, tt := range []struct {
		name        string
		first, more []byte
	}{
		{"PINGs", nil, frames(func(fr *http2.Framer) { _ = fr.WritePing(false, [8]byte{1}) })},
		{"a header block without end", frames(func(fr *http2.Framer) {
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: bytes.Repeat([]byte{0x40}, 100)})
		})[:109], frames(func(fr *http2.Framer) { _ = fr.WriteContinuation(1, false, bytes.Repeat([]byte{0x40}, 1000)) })},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv, cli := net.Pipe()
			defer srv.Close()
			defer cli.Close()
			go func() { _, _ = io.Copy(io.Discard, cli) }() // the splitter's SETTINGS
			go func() {
				msg := append([]byte(http2.ClientPreface), tt.first...)
				for {
					if _, err := cli.Write(msg); err != nil {
						return
					}
					msg = tt.more
				}
			}()
			rec := &recordingConn{Conn: srv}
			_, err := classify(rec, 10*time.Second)
			if !errors.Is(err, errSniffTooBig) {
				t.Fatalf("classify = %v, want errSniffTooBig", err)
			}
			if got := rec.rec.Len(); got > maxSniffBytes {
				t.Fatalf("the splitter holds %d bytes, over %d", got, maxSniffBytes)
			}
		})
	}
}
