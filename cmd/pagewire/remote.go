package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"

	"github.com/pagewire/pagewire"
	client "github.com/pagewire/pagewire/clients/go"
	adminv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/admin/v1"
)

const defaultURL = "http://localhost:20202"

// dialNode connects to the node at rawURL and asks what it is. The caller
// closes the connection.
func (r *remote) dialNode(ctx context.Context, rawURL string) (*grpc.ClientConn, *adminv1.GetNodeResponse, error) {
	conn, err := r.dial(rawURL)
	if err != nil {
		return nil, nil, err
	}
	node, err := adminv1.NewAdminServiceClient(conn).GetNode(ctx, &adminv1.GetNodeRequest{})
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("node at %s: %w (is it running? check -url)", rawURL, client.Error(err))
	}
	return conn, node, nil
}

// parseNameFlags parses -name, the remote flags and one PATH argument.
func parseNameFlags(cmd string, args []string) (name string, r *remote, path string, err error) {
	fset := flag.NewFlagSet(cmd, flag.ContinueOnError)
	n := fset.String("name", "", "database name")
	r = addRemoteFlags(fset, "node URL")
	if err := fset.Parse(args); err != nil {
		return "", nil, "", errUsage
	}
	switch {
	case *n == "":
		return "", nil, "", fmt.Errorf("%s: -name is required: the database's name on the mount", cmd)
	case fset.NArg() == 0:
		return "", nil, "", fmt.Errorf("%s: the PATH of the file is required after the flags", cmd)
	case fset.NArg() > 1:
		return "", nil, "", errUsage
	}
	if err := pagewire.ValidateDBName(*n); err != nil {
		return "", nil, "", fmt.Errorf("-name: %w", err)
	}
	return *n, r, fset.Arg(0), nil
}

func runExport(ctx context.Context, args []string, out io.Writer) error {
	name, r, path, err := parseNameFlags("export", args)
	if err != nil {
		return err
	}

	// Ask the node for the database.
	conn, err := r.dial(*r.url)
	if err != nil {
		return err
	}
	defer conn.Close()
	stream, err := adminv1.NewAdminServiceClient(conn).ExportDatabase(ctx, &adminv1.ExportDatabaseRequest{Name: name})
	if err != nil {
		return client.Error(err)
	}

	// Write it to a temporary file next to path, then rename it into place.
	tmp, err := os.CreateTemp(filepath.Dir(path), ".pagewire-export-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	var last *adminv1.ExportDatabaseResponse
	bar := newProgress(os.Stderr, "download "+name) // a terminal sees the bytes come (the size is not known ahead)
	defer bar.done()
	var got int64
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			tmp.Close()
			return fmt.Errorf("export %q: %w", name, client.Error(err))
		}
		if _, err := tmp.Write(msg.GetData()); err != nil {
			tmp.Close()
			return err
		}
		got += int64(len(msg.GetData()))
		bar.update(got, -1)
		last = msg
	}

	// Make it durable before it takes path's name.
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	fmt.Fprintf(out, "exported %s at %s to %s\n", name, pagewire.Pos{TXID: pagewire.TXID(last.GetTxid()), Checksum: last.GetChecksum()}, path)
	return nil
}

func runImport(ctx context.Context, args []string, out io.Writer) error {
	name, r, path, err := parseNameFlags("import", args)
	if err != nil {
		return err
	}
	conn, err := r.dial(*r.url)
	if err != nil {
		return err
	}
	defer conn.Close()
	d, err := importFile(ctx, adminv1.NewAdminServiceClient(conn), name, path)
	if err != nil {
		return err
	}
	printImported(out, d)
	return nil
}

// importFile sends the file at path to the primary as database name, which
// replaces it (or creates it) as one new transaction, and returns the
// database as the primary has it then. `pagewire import` and `pagewire
// restore` both import through it.
func importFile(ctx context.Context, admin adminv1.AdminServiceClient, name, path string) (*adminv1.Database, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var size int64
	if fi, err := f.Stat(); err == nil {
		size = fi.Size()
	}
	stream, err := admin.ImportDatabase(ctx)
	if err != nil {
		return nil, client.Error(err)
	}

	// Send the file in chunks of 1 MiB; the first also names the database.
	// A terminal sees the upload's progress.
	bar := newProgress(os.Stderr, "upload "+name)
	defer bar.done()
	buf := make([]byte, 1<<20)
	first := true
	var sent int64
	for {
		n, rerr := f.Read(buf)
		sent += int64(n)
		bar.update(sent, max(size, sent))
		if n > 0 || first {
			msg := &adminv1.ImportDatabaseRequest{Data: buf[:n]}
			if first {
				msg.Name, first = name, false
			}
			if err := stream.Send(msg); err != nil {
				break // the server's reason comes from CloseAndRecv
			}
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return nil, rerr
		}
	}

	// The server answers with the imported database.
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return nil, client.Error(err)
	}
	return resp.GetDatabase(), nil
}

// printImported prints the database an import made.
func printImported(out io.Writer, d *adminv1.Database) {
	fmt.Fprintf(out, "imported %s: %d pages, now at %s\n", d.GetName(), d.GetPageCount(), pagewire.Pos{TXID: pagewire.TXID(d.GetTxid()), Checksum: d.GetChecksum()})
}

// runHandoff asks the primary to hand the lease off. Pointed at another
// node, it finds the primary through it.
func runHandoff(ctx context.Context, args []string, out io.Writer) error {
	fset := flag.NewFlagSet("handoff", flag.ContinueOnError)
	r := addRemoteFlags(fset, "URL of the primary, or of any node (it names the primary)")
	rawURL := r.url
	target := fset.String("to", "", "hostname of the candidate to hand the lease to (default: any caught-up candidate)")
	timeout := fset.Duration("timeout", 30*time.Second, "how long to wait for another node to take the lease")
	if err := fset.Parse(args); err != nil || fset.NArg() != 0 {
		return errUsage
	}

	// The whole handoff has the timeout.
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	// Find the primary: a node that is not the primary names it, once.
	primaryURL := *rawURL
	for hop := 0; ; hop++ {
		conn, node, err := r.dialNode(ctx, primaryURL)
		if err != nil {
			return err
		}
		admin := adminv1.NewAdminServiceClient(conn)
		if node.GetRole() != adminv1.Role_ROLE_PRIMARY {
			conn.Close()
			if node.GetPrimaryUrl() == "" || hop > 0 {
				return fmt.Errorf("%s is not the primary and knows of none to ask: wait for a primary, or pass its URL with -url", primaryURL)
			}
			primaryURL = node.GetPrimaryUrl()
			continue
		}

		// Ask the primary to hand off, and time it.
		start := time.Now()
		resp, err := admin.Handoff(ctx, &adminv1.HandoffRequest{Target: *target})
		conn.Close()
		if err != nil {
			return fmt.Errorf("handoff from %s: %w", node.GetHostname(), client.Error(err))
		}
		fmt.Fprintf(out, "%s handed the lease to %s (%s) in %s\n", node.GetHostname(), resp.GetPrimary(), resp.GetPrimaryUrl(), time.Since(start).Round(time.Millisecond))
		return nil
	}
}
