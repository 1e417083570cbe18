package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/pagewire/pagewire"
	client "github.com/pagewire/pagewire/clients/go"
	adminv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/admin/v1"
)

// errMismatch makes `pagewire verify` exit 1 when a database does not
// match its recorded position, after printing what differs.
var errMismatch = &exitError{code: 1}

// runVerify asks a node to check a database's content against its recorded
// position and prints what it found.
func runVerify(ctx context.Context, args []string, out io.Writer) error {
	fset := flag.NewFlagSet("verify", flag.ContinueOnError)
	name := fset.String("name", "", "database name")
	r := addRemoteFlags(fset, "node URL")
	rawURL := r.url
	repair := fset.Bool("repair", false, "count committed transactions the WAL holds past the last counted one")
	if err := fset.Parse(args); err != nil || fset.NArg() != 0 {
		return errUsage
	}
	if *name == "" {
		return fmt.Errorf("verify: -name is required: the database's name on the mount")
	}
	if err := pagewire.ValidateDBName(*name); err != nil {
		return fmt.Errorf("-name: %w", err)
	}
	conn, err := r.dial(*rawURL)
	if err != nil {
		return err
	}
	defer conn.Close()
	resp, err := adminv1.NewAdminServiceClient(conn).VerifyDatabase(ctx, &adminv1.VerifyDatabaseRequest{Name: *name, Repair: *repair})
	if err != nil {
		return fmt.Errorf("verify %q: %w", *name, client.Error(err))
	}
	fmt.Fprintln(out, resp.GetSummary())
	if !resp.GetOk() {
		return errMismatch
	}
	return nil
}
