package fusemount

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/pagewire/pagewire/internal/backoff"
	"github.com/pagewire/pagewire/internal/logkey"
	storagev1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/storage/v1"
)

// watch follows the server's own changes to files and drops what the kernel
// cached of them: names (NotifyEntry) and page-cache ranges (NotifyContent).
// started is closed once the first stream is up. It returns when ctx is
// done, reconnecting with backoff after errors.
func (m *Mount) watch(ctx context.Context, root *rootNode, started chan<- struct{}) {
	retry := backoff.New(100*time.Millisecond, 5*time.Second)
	for {
		err := m.watchOnce(ctx, root, started)
		if ctx.Err() != nil {
			return
		}
		started = nil // closed already
		wait := retry.Next()
		m.log.Warn("watching the storage server for changes failed; retrying", logkey.Error, err, logkey.RetryIn, wait)
		if !backoff.Sleep(ctx, wait) {
			return
		}
	}
}

func (m *Mount) watchOnce(ctx context.Context, root *rootNode, started chan<- struct{}) error {
	stream, err := m.cfg.Storage.WatchFiles(ctx, &storagev1.WatchFilesRequest{})
	if err != nil {
		return err
	}
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return errors.New("the storage server ended the watch")
		}
		if err != nil {
			return err
		}
		if started != nil {
			close(started)
			started = nil
		}
		for _, c := range resp.GetChanges() {
			m.apply(root, c)
		}
	}
}

// apply passes one change on to the kernel.
func (m *Mount) apply(root *rootNode, c *storagev1.FileChange) {
	if child := root.GetChild(c.GetName()); child != nil && child.StableAttr().Ino == c.GetFileId() && c.GetLength() != 0 {
		// ENOENT: the kernel had nothing cached; not an error.
		_ = child.NotifyContent(c.GetOffset(), c.GetLength())
	}
	if c.GetEntry() {
		_ = root.NotifyEntry(c.GetName())
	}
}
