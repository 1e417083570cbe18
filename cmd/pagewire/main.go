package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// Version is the pagewire version, set at build time with
// -ldflags "-X main.Version=...".
var Version = "dev"

const usage = `usage:
  pagewire mount   [-config PATH] [-restore-on-start] [-external-fuse] [-- CMD ARGS...]
                                                     run a node; run CMD once it is ready;
                                                     -restore-on-start (=false) overrides backup.restore-on-start
  pagewire fuse    -storage unix:///PATH -dir DIR [-allow-other] [-debug] [-timeout 10s]
                                                     run only the FUSE mount, against the storage
                                                     socket of a node started with -external-fuse
  pagewire status  [-url URL] [-watch [-interval 1s]]
                                                     role, primary, databases, positions, replicas;
                                                     -watch refreshes it, with rates, until Ctrl-C
  pagewire export  -name DB [-url URL] PATH          copy a consistent snapshot out
  pagewire import  -name DB [-url URL] PATH          replace a database on the primary
  pagewire handoff [-url URL] [-to HOST]             the primary hands the lease to a caught-up candidate
  pagewire halt    -name DB [-url URL] -- CMD        run CMD while holding the halt lock
  pagewire verify  -name DB [-url URL] [-repair]     check a database's content against its position
  pagewire restore -name DB [-txid X | -timestamp T] [-o FILE] [-config PATH] [-url URL]
                                                     restore from the backup: to FILE, offline, or
                                                     onto the primary at URL as an import
  pagewire backup ls [-name DB] [-config PATH]       the backup's databases, or DB's restore points
  pagewire version
`

// usageError is a usage error with a message: main prints both.
type usageError struct{ msg string }

func (e *usageError) Error() string        { return e.msg }
func (e *usageError) Is(target error) bool { return target == errUsage }

// exitError carries a child's exit code out of run.
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:])
	var ee *exitError
	switch {
	case errors.As(err, &ee):
		os.Exit(ee.code)
	case errors.Is(err, errUsage):
		var ue *usageError
		if errors.As(err, &ue) {
			fmt.Fprintln(os.Stderr, "pagewire:", ue)
		}
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "pagewire:", err)
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errUsage
	}
	switch args[0] {
	case "mount":
		return runMount(ctx, args[1:])
	case "fuse":
		return runFuse(ctx, args[1:])
	case "status":
		return runStatus(ctx, args[1:], os.Stdout)
	case "export":
		return runExport(ctx, args[1:], os.Stdout)
	case "import":
		return runImport(ctx, args[1:], os.Stdout)
	case "handoff":
		return runHandoff(ctx, args[1:], os.Stdout)
	case "halt":
		return runHalt(ctx, args[1:], os.Stderr)
	case "verify":
		return runVerify(ctx, args[1:], os.Stdout)
	case "restore":
		return runRestore(ctx, args[1:], os.Stdout)
	case "backup":
		return runBackup(ctx, args[1:], os.Stdout)
	case "apply-worker": // internal: started by a replica node
		return runApplyWorker(ctx, args[1:])
	case "version":
		fmt.Println("pagewire", Version)
		return nil
	case "-h", "-help", "--help", "help":
		fmt.Print(usage)
		return nil
	}
	fmt.Fprintf(os.Stderr, "pagewire: unknown command %q\n", args[0])
	return errUsage
}
