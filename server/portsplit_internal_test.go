package server

import (
	"bytes"
	"io"
	"net"
	"testing"

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
