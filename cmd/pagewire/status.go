package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	client "github.com/pagewire/pagewire/clients/go"
	adminv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/admin/v1"
)

// The terminal codes -watch redraws with: cursor home, clear the screen.
const clearScreen = "\x1b[H\x1b[2J"

func runStatus(ctx context.Context, args []string, out io.Writer) error {
	fset := flag.NewFlagSet("status", flag.ContinueOnError)
	r := addRemoteFlags(fset, "node URL")
	watch := fset.Bool("watch", false, "refresh until interrupted: redrawn in place on a terminal, one table after another otherwise")
	interval := fset.Duration("interval", time.Second, "time between refreshes with -watch")
	if err := fset.Parse(args); err != nil || fset.NArg() != 0 {
		return errUsage
	}
	if *interval <= 0 {
		return fmt.Errorf("status: -interval is %s: use a positive duration such as 1s", *interval)
	}
	conn, _, err := r.dialNode(ctx, *r.url)
	if err != nil {
		return err
	}
	defer conn.Close()
	admin := adminv1.NewAdminServiceClient(conn)
	if !*watch {
		snap, err := takeStatus(ctx, admin)
		if err != nil {
			return err
		}
		snap.render(out, nil)
		return nil
	}
	return watchStatus(ctx, admin, out, *r.url, *interval)
}

// watchStatus prints the status every interval until ctx ends (Ctrl-C),
// with each database's commit rate since the refresh before. On a
// terminal each refresh replaces the last; otherwise each is printed
// after the last, under its time, for a log or a pipe. A node that does
// not answer is said so in place of the table, and watched on.
func watchStatus(ctx context.Context, admin adminv1.AdminServiceClient, out io.Writer, url string, interval time.Duration) error {
	f, ok := out.(*os.File)
	tty := ok && term.IsTerminal(int(f.Fd()))
	var prev *nodeStatus
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		var b bytes.Buffer
		if tty {
			b.WriteString(clearScreen)
		}
		fmt.Fprintf(&b, "%s  every %s, Ctrl-C to stop\n\n", time.Now().Format("15:04:05"), interval)
		snap, err := takeStatus(ctx, admin)
		if ctx.Err() != nil {
			return nil // interrupted
		}
		if err != nil {
			fmt.Fprintf(&b, "node at %s: %v (still watching)\n", url, err)
		} else {
			snap.render(&b, prev)
			prev = snap
		}
		if !tty {
			b.WriteString("\n")
		}
		if _, err := out.Write(b.Bytes()); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// nodeStatus is what `pagewire status` shows of a node at one time.
type nodeStatus struct {
	at       time.Time
	node     *adminv1.GetNodeResponse
	dbs      []*adminv1.Database
	replicas map[string][]*adminv1.Replica // on a primary: by database
}

// takeStatus asks the node for itself, its databases and, on a primary,
// each database's replicas.
func takeStatus(ctx context.Context, admin adminv1.AdminServiceClient) (*nodeStatus, error) {
	node, err := admin.GetNode(ctx, &adminv1.GetNodeRequest{})
	if err != nil {
		return nil, client.Error(err)
	}
	dbs, err := admin.ListDatabases(ctx, &adminv1.ListDatabasesRequest{})
	if err != nil {
		return nil, client.Error(err)
	}
	s := &nodeStatus{at: time.Now(), node: node, dbs: dbs.GetDatabases(), replicas: map[string][]*adminv1.Replica{}}
	if node.GetRole() != adminv1.Role_ROLE_PRIMARY {
		return s, nil
	}
	for _, d := range s.dbs {
		resp, err := admin.GetDatabase(ctx, &adminv1.GetDatabaseRequest{Name: d.GetName()})
		if err != nil {
			continue // deleted since the list: its row still shows what the list said
		}
		s.replicas[d.GetName()] = resp.GetReplicas()
	}
	return s, nil
}

// render writes the status table. With prev (the refresh before, under
// -watch) the RATE column is the commits per second since then.
func (s *nodeStatus) render(out io.Writer, prev *nodeStatus) {
	fmt.Fprintf(out, "hostname: %s\nrole:     %s\nprimary:  %s\nversion:  %s\n\n", s.node.GetHostname(), roleName(s.node.GetRole()), s.node.GetPrimary(), s.node.GetVersion())
	before := map[string]uint64{}
	if prev != nil {
		for _, d := range prev.dbs {
			before[d.GetName()] = d.GetTxid()
		}
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DATABASE\tTXID\tCHECKSUM\tPAGES\tPAGE SIZE\tRATE\tREPLICAS\tBACKUP")
	for _, d := range s.dbs {
		rate := "-"
		if was, ok := before[d.GetName()]; ok && d.GetTxid() >= was {
			rate = fmt.Sprintf("%.1f tx/s", float64(d.GetTxid()-was)/s.at.Sub(prev.at).Seconds())
		}
		fmt.Fprintf(tw, "%s\t%016x\t%016x\t%d\t%d\t%s\t%s\t%s\n", d.GetName(), d.GetTxid(), d.GetChecksum(), d.GetPageCount(), d.GetPageSize(),
			rate, replicaSummary(s.node.GetRole(), d.GetTxid(), s.replicas[d.GetName()]), backupSummary(d.GetBackup(), s.at))
	}
	_ = tw.Flush()
}

// replicaSummary is a database's replicas in one column of `pagewire
// status` on a primary: how many, and the one furthest behind in
// transactions and time; "-" on a replica, which does not know them.
func replicaSummary(role adminv1.Role, txid uint64, rs []*adminv1.Replica) string {
	if role != adminv1.Role_ROLE_PRIMARY {
		return "-"
	}
	if len(rs) == 0 {
		return "none"
	}
	var behind uint64
	var lag time.Duration
	for _, r := range rs {
		if r.GetTxid() < txid {
			behind = max(behind, txid-r.GetTxid())
		}
		lag = max(lag, r.GetLag().AsDuration())
	}
	return fmt.Sprintf("%d, max lag %d tx/%s", len(rs), behind, lag.Round(time.Millisecond))
}

// backupSummary is a database's backup in one column of `pagewire
// status`: the newest backed-up TXID, its age and the lag, or "-" when
// this node does not upload it.
func backupSummary(b *adminv1.DatabaseBackup, now time.Time) string {
	if b == nil {
		return "-"
	}
	s := fmt.Sprintf("%016x", b.GetTxid())
	if b.GetTime() != nil {
		s += fmt.Sprintf(" (%s old)", now.Sub(b.GetTime().AsTime()).Round(time.Millisecond))
	}
	if lag := b.GetLag().AsDuration(); lag > 0 {
		s += fmt.Sprintf(", lag %s", lag.Round(time.Millisecond))
	}
	if b.GetError() != "" {
		s += ", upload failing: " + b.GetError()
	}
	return s
}

func roleName(r adminv1.Role) string {
	switch r {
	case adminv1.Role_ROLE_PRIMARY:
		return "primary"
	case adminv1.Role_ROLE_REPLICA:
		return "replica"
	}
	return "unknown"
}
