package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/backup"
)

// runBackup runs `pagewire backup SUBCOMMAND`; ls is the only one.
func runBackup(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 || args[0] != "ls" {
		return &usageError{"backup: the subcommand is ls: `pagewire backup ls [-name DB] [-config PATH]`"}
	}
	fset := flag.NewFlagSet("backup ls", flag.ContinueOnError)
	fset.SetOutput(io.Discard) // main prints the usage
	name := fset.String("name", "", "the database whose restore points to list (default: list the databases the backup has)")
	configPath := fset.String("config", "", "the node's config file, for its backup section (default: as `pagewire mount` finds it)")
	if err := fset.Parse(args[1:]); err != nil || fset.NArg() != 0 {
		return errUsage
	}
	if *name != "" {
		if err := pagewire.ValidateDBName(*name); err != nil {
			return fmt.Errorf("-name: %w", err)
		}
	}
	b, err := openBackup(ctx, *configPath)
	if err != nil {
		return err
	}
	defer b.Close()

	// Without -name: the databases.
	if *name == "" {
		names, err := backup.Databases(ctx, b)
		if err != nil {
			return err
		}
		if len(names) == 0 {
			fmt.Fprintln(out, "the backup has no databases yet")
			return nil
		}
		for _, n := range names {
			fmt.Fprintln(out, n)
		}
		return nil
	}

	// With it: the database's restore points.
	points, err := backup.List(ctx, b, *name)
	if err != nil {
		return err
	}
	return printPoints(out, points)
}

// timeLayout is RFC 3339 with milliseconds, as backups record commit
// times: a time printed by `backup ls` or `restore` is a -timestamp that
// restores to just that transaction.
const timeLayout = "2006-01-02T15:04:05.000Z07:00"

// printPoints prints restore points as a table, oldest first.
func printPoints(out io.Writer, points []backup.Point) error {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEGMENT\tKIND\tTXIDS\tFROM\tTO\tOBJECTS\tSIZE")
	for _, p := range points {
		txids := p.Min.String()
		if p.Max != p.Min {
			txids += "-" + p.Max.String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", p.Segment, p.Kind, txids,
			p.From.UTC().Format(timeLayout), p.To.UTC().Format(timeLayout), p.Objects, humanBytes(p.Size))
	}
	return tw.Flush()
}
