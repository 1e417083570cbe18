package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/pagewire/pagewire/config"
	"github.com/pagewire/pagewire/fusemount"
	"github.com/pagewire/pagewire/internal/logkey"
	"github.com/pagewire/pagewire/internal/wire"
	storagev1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/storage/v1"
)

// defaultCallTimeout is `pagewire fuse`'s -timeout: how long one call to
// the storage server may take before the app sees EIO. A commit that
// waits for sync replicas waits within it.
const defaultCallTimeout = 10 * time.Second

// runFuse runs only the FUSE mount, against the storage server of a node
// in another process or container, until a signal stops it.
func runFuse(ctx context.Context, args []string) error {
	fset := flag.NewFlagSet("fuse", flag.ContinueOnError)
	storage := fset.String("storage", "", "the node's storage socket, unix:///path/to/"+config.StorageSocketName+" (data.storage-socket; default data.dir/"+config.StorageSocketName+")")
	dir := fset.String("dir", "", "the mount point")
	allowOther := fset.Bool("allow-other", false, "let other users open the mount (fuse.allow-other)")
	debug := fset.Bool("debug", false, "log every FUSE request (fuse.debug)")
	timeout := fset.Duration("timeout", defaultCallTimeout, "how long one storage call may take before the app sees EIO")
	if err := fset.Parse(args); err != nil || fset.NArg() != 0 {
		return errUsage
	}
	path, ok := strings.CutPrefix(*storage, "unix://")
	if !ok || path == "" || *dir == "" {
		return &usageError{msg: "fuse needs -storage unix:///path/to/" + config.StorageSocketName + " and -dir"}
	}

	// Dial the socket: the connection comes up with the first call.
	conn, err := wire.DialSocket(path, *timeout)
	if err != nil {
		return err
	}
	defer conn.Close()

	// Mount and serve until a signal.
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	mcfg := fusemount.DefaultConfig()
	mcfg.Dir, mcfg.AllowOther, mcfg.Debug, mcfg.Logger = *dir, *allowOther, *debug, log
	mcfg.Storage = storagev1.NewStorageServiceClient(conn)
	mnt, err := fusemount.New(mcfg)
	if err != nil {
		return err
	}
	log.Info("mounting against a storage server in another process", logkey.Path, path, logkey.Dir, *dir, "version", Version)
	if err := mnt.Run(ctx); err != nil {
		return fmt.Errorf("fuse: %w", err)
	}
	return nil
}
