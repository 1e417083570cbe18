package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"time"

	client "github.com/pagewire/pagewire/clients/go"
)

// runHalt is `pagewire halt -name DB [-url URL] [-ttl D] [-wait D] -- CMD
// ARGS...`: it takes the database's halt lock through the node at -url,
// runs CMD while holding it (CMD's writes on a replica are committed on
// the primary), and releases it when CMD exits. CMD's exit code is the
// command's. Unlike LiteFS's `-with-halt-lock-on`, the lock is held for
// as long as CMD runs, up to -ttl.
func runHalt(ctx context.Context, args []string, stderr io.Writer) error {
	fset := flag.NewFlagSet("halt", flag.ContinueOnError)
	name := fset.String("name", "", "database to halt (required)")
	r := addRemoteFlags(fset, "URL of this node")
	rawURL := r.url
	ttl := fset.Duration("ttl", 30*time.Second, "the lock's lifetime: CMD must finish within it")
	wait := fset.Duration("wait", 10*time.Second, "how long to wait for the lock")
	if err := fset.Parse(args); err != nil || *name == "" || fset.NArg() == 0 {
		return errUsage
	}
	conn, err := r.dial(*rawURL)
	if err != nil {
		return err
	}
	defer conn.Close()
	argv := fset.Args()
	var exit *exec.ExitError
	err = client.WithHalt(ctx, conn, *name, client.HaltOptions{TTL: *ttl, Wait: *wait}, func(lctx context.Context, lock client.HaltLock) error {
		fmt.Fprintf(stderr, "pagewire: holding the halt lock of %s (primary TXID %s) until %s\n", *name, lock.TXID, lock.Expires.Local().Format(time.TimeOnly))
		cmd := exec.CommandContext(lctx, argv[0], argv[1:]...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		cmd.Env = append(os.Environ(), "PAGEWIRE_HALT_ID="+lock.ID)
		err := cmd.Run()
		if lctx.Err() != nil && errors.Is(lctx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("%s ran past the halt lock's -ttl of %s and was stopped: raise -ttl", argv[0], *ttl)
		}
		return err
	})
	if errors.As(err, &exit) {
		return &exitError{code: exit.ExitCode()}
	}
	return err
}
