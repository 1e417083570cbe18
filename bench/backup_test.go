package main

import (
	"io"
	"slices"
	"testing"
)

func TestRPOLags(t *testing.T) {
	// TXIDs 11.. committed at 100.0, 100.1, ... (base 10).
	commits := []float64{100.0, 100.1, 100.2, 100.3, 100.4}
	samples := []rpoSample{
		{At: 99.9, Primary: 10, Backup: 10},   // caught up before the writer
		{At: 100.25, Primary: 13, Backup: 10}, // lacks 11, committed at 100.0
		{At: 100.35, Primary: 14, Backup: 12}, // lacks 13, committed at 100.2
		{At: 100.45, Primary: 15, Backup: 15}, // caught up
		{At: 100.5, Primary: 15, Backup: 16},  // ahead of a stale primary reading: caught up
	}
	got := rpoLags(samples, 10, commits)
	want := []float64{0, 0.25, 0.15, 0, 0}
	if len(got) != len(want) {
		t.Fatalf("rpoLags=%v, want %v", got, want)
	}
	for i := range want {
		if d := got[i] - want[i]; d > 1e-9 || d < -1e-9 {
			t.Errorf("sample %d: lag %g, want %g", i, got[i], want[i])
		}
	}

	t.Run("outside the writer's commits", func(t *testing.T) {
		// The backup lacks TXID 5, before the writer's: it counts as
		// committed when a sample first saw the primary reach it.
		samples := []rpoSample{
			{At: 50, Primary: 5, Backup: 4},
			{At: 51.5, Primary: 5, Backup: 4},
		}
		if got, want := rpoLags(samples, 10, commits), []float64{0, 1.5}; !slices.Equal(got, want) {
			t.Errorf("rpoLags=%v, want %v", got, want)
		}
	})

	t.Run("clock skew", func(t *testing.T) {
		// A sample taken before the commit it lacks (clocks read in two
		// processes): never a negative lag.
		samples := []rpoSample{{At: 99.95, Primary: 11, Backup: 10}}
		if got := rpoLags(samples, 10, commits); !slices.Equal(got, []float64{0}) {
			t.Errorf("rpoLags=%v, want [0]", got)
		}
	})
}

func TestParseFlags_backup(t *testing.T) {
	o, err := parseFlags([]string{"-backup"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	got := []bool{o.workloads(), o.replication(), o.proxy(), o.export(), o.OnlyBackup}
	if want := []bool{false, false, false, false, true}; !slices.Equal(got, want) {
		t.Errorf("-backup: workloads, replication, proxy, export, backup = %v, want %v", got, want)
	}
	if o.BackupSeconds != 60 || o.BackupRestoreMiB != 200 {
		t.Errorf("-backup: seconds, restore MiB = %g, %d; want 60, 200", o.BackupSeconds, o.BackupRestoreMiB)
	}
	if o, _ := parseFlags(nil, io.Discard); o.OnlyBackup {
		t.Error("no flags: the backup section runs; want it off")
	}
	for _, args := range [][]string{{"-backup", "-export"}, {"-backup", "-vacuum"}, {"-backup", "-backup-seconds", "0"}, {"-backup", "-backup-restore-mib", "0"}} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
}
