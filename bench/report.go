package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// report is everything one bench run measured; -json writes it as is.
type report struct {
	Machine     machine            `json:"machine"`
	Settings    settings           `json:"settings"`
	Workloads   []workloadReport   `json:"workloads,omitempty"`   // empty with -replication
	Replication *replicationReport `json:"replication,omitempty"` // nil with -no-replication
	Proxy       *proxyReport       `json:"proxy,omitempty"`       // nil with -no-proxy
	Export      *exportReport      `json:"export,omitempty"`      // nil with -no-export
	Vacuum      *vacuumReport      `json:"vacuum,omitempty"`      // only with -vacuum
	Backup      *backupReport      `json:"backup,omitempty"`      // only with -backup
	Split       *splitReport       `json:"split,omitempty"`       // only with -split
}

// machine describes where the bench ran; rates mean little without it.
type machine struct {
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpu_model,omitempty"`
	Kernel    string `json:"kernel"`
	LoadAvg   string `json:"load_avg_at_start,omitempty"` // 1, 5, 15 min
	Go        string `json:"go"`
	Python    string `json:"python"`
	SQLite    string `json:"sqlite"` // the library Python's sqlite3 module uses
	Pagewire  string `json:"pagewire,omitempty"`
	WorkDir   string `json:"work_dir"`
	WorkDirFS string `json:"work_dir_fs"` // the plain-disk target and data.dir live here
}

// settings are the counts the run used.
type settings struct {
	Rounds      int `json:"rounds"`
	Inserts     int `json:"inserts_normal"`
	InsertsFull int `json:"inserts_full"`
	Reads       int `json:"reads"`
	Rows        int `json:"rows"`
}

// workloadReport is one workload on both targets.
type workloadReport struct {
	Name         string       `json:"name"`
	What         string       `json:"what"`
	Unit         string       `json:"unit"`
	Ops          int          `json:"ops_per_round"`
	Transactions int          `json:"transactions_per_round"`
	Disk         targetResult `json:"disk"`
	Mount        targetResult `json:"mount"`
	Ratio        float64      `json:"ratio"` // mount median rate / disk median rate
	PerTx        perTx        `json:"mount_per_transaction"`
}

// targetResult is one workload on one target, over all rounds.
type targetResult struct {
	Rates         []float64 `json:"rates"`   // ops/s, in round order
	Seconds       []float64 `json:"seconds"` // timed part, in round order
	MedianRate    float64   `json:"median_rate"`
	MedianSeconds float64   `json:"median_seconds"`
}

// perTx is the mount's counters per transaction, summed over all rounds and
// divided by all their transactions.
type perTx struct {
	Transactions int                `json:"transactions"` // summed over rounds
	FUSE         float64            `json:"fuse_requests"`
	FUSEByOp     map[string]float64 `json:"fuse_requests_by_op"`
	GRPC         float64            `json:"grpc_calls"`
	GRPCByMethod map[string]float64 `json:"grpc_calls_by_method"`
	Commits      float64            `json:"commits"` // litefs_db_commit_count of the workload's database
}

func (t *targetResult) add(r runResult) {
	t.Rates = append(t.Rates, float64(r.Ops)/r.Seconds)
	t.Seconds = append(t.Seconds, r.Seconds)
	t.MedianRate = median(t.Rates)
	t.MedianSeconds = median(t.Seconds)
}

// median of xs; the mean of the middle two for an even count.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// perTxFrom divides summed counter differences by transactions.
func perTxFrom(sum *counters, db []string, transactions int) perTx {
	p := perTx{Transactions: transactions, FUSEByOp: map[string]float64{}, GRPCByMethod: map[string]float64{}}
	if transactions == 0 {
		return p
	}
	n := float64(transactions)
	for k, v := range sum.FUSE {
		p.FUSEByOp[k] = v / n
	}
	for k, v := range sum.GRPC {
		p.GRPCByMethod[k] = v / n
	}
	p.FUSE, p.GRPC = total(sum.FUSE)/n, total(sum.GRPC)/n
	for _, name := range db {
		p.Commits += sum.Commits[name] / n
	}
	return p
}

// writeMarkdown prints the report's tables.
func (r *report) writeMarkdown(w io.Writer) error {
	b := bufio.NewWriter(w)
	m := r.Machine

	// The title and caveat depend on which sections ran.
	switch {
	case r.Vacuum != nil:
		fmt.Fprintf(b, "# pagewire bench: VACUUM\n\n")
	case r.Split != nil:
		fmt.Fprintf(b, "# pagewire bench: split mode\n\n")
		fmt.Fprintf(b, "Rates vary by machine and by what else it runs; the ratios are the point. Python sqlite3, WAL mode, a fresh database per run.\n\n")
	case r.Backup != nil:
		fmt.Fprintf(b, "# pagewire bench: backup\n\n")
		fmt.Fprintf(b, "Rates vary by machine and by what else it runs; the ratios, the RPO and the restore speed are the point.\n\n")
	case len(r.Workloads) == 0 && r.Replication == nil && r.Proxy == nil:
		fmt.Fprintf(b, "# pagewire bench: export\n\n")
		fmt.Fprintf(b, "Rates vary by machine and by what else it runs; the ratio is the point.\n\n")
	case len(r.Workloads) == 0 && r.Replication == nil:
		fmt.Fprintf(b, "# pagewire bench: proxy\n\n")
		fmt.Fprintf(b, "Rates vary by machine and by what else it runs; the ratios are the point.\n\n")
	case len(r.Workloads) == 0:
		fmt.Fprintf(b, "# pagewire bench: replication\n\n")
		fmt.Fprintf(b, "Rates vary by machine and by what else it runs. Python sqlite3, WAL mode, 100-byte values.\n\n")
	default:
		fmt.Fprintf(b, "# pagewire bench: plain disk vs mount\n\n")
		fmt.Fprintf(b, "Rates vary by machine and by what else it runs; the ratios are the point. "+
			"Each rate is the median of %d round(s); disk and mount runs alternate within each round. "+
			"Python sqlite3, WAL mode, a fresh database per run, 100-byte values.\n\n", r.Settings.Rounds)
	}

	// The machine and the software versions.
	fmt.Fprintf(b, "- machine: %d CPUs", m.CPUs)
	if m.CPUModel != "" {
		fmt.Fprintf(b, " (%s)", m.CPUModel)
	}
	fmt.Fprintf(b, ", Linux %s", m.Kernel)
	if m.LoadAvg != "" {
		fmt.Fprintf(b, ", load average at start %s", m.LoadAvg)
	}
	fmt.Fprintf(b, "\n- software: %s, Python %s, SQLite %s", m.Go, m.Python, m.SQLite)
	if m.Pagewire != "" {
		fmt.Fprintf(b, ", %s", m.Pagewire)
	}
	fmt.Fprintf(b, "\n- plain disk and data.dir on %s (%s)\n\n", m.WorkDirFS, m.WorkDir)

	// Then each section that ran.
	if len(r.Workloads) > 0 {
		r.writeWorkloads(b)
	}
	if r.Replication != nil {
		r.Replication.writeMarkdown(b, m.CPUs)
	}
	if r.Proxy != nil {
		r.Proxy.writeMarkdown(b)
	}
	if r.Export != nil {
		r.Export.writeMarkdown(b)
	}
	if r.Vacuum != nil {
		r.Vacuum.writeMarkdown(b)
	}
	if r.Backup != nil {
		r.Backup.writeMarkdown(b)
	}
	if r.Split != nil {
		r.Split.writeMarkdown(b)
	}
	return b.Flush()
}

// writeWorkloads prints the plain disk vs mount tables.
func (r *report) writeWorkloads(b io.Writer) {
	fmt.Fprintf(b, "| workload | plain disk | mount | mount/disk |\n|---|---|---|---|\n")
	for _, wr := range r.Workloads {
		disk, mnt := formatRate(wr.Disk.MedianRate)+" "+wr.Unit, formatRate(wr.Mount.MedianRate)+" "+wr.Unit
		if wr.Transactions == 1 {
			disk += fmt.Sprintf(" (%.3f s)", wr.Disk.MedianSeconds)
			mnt += fmt.Sprintf(" (%.3f s)", wr.Mount.MedianSeconds)
		}
		fmt.Fprintf(b, "| %s: %s, %s per run | %s | %s | %s |\n",
			wr.Name, wr.What, formatInt(wr.Ops), disk, mnt, formatRatio(wr.Ratio))
	}

	fmt.Fprintf(b, "\n## Per transaction on the mount\n\n"+
		"Counted from the node's /metrics just before and after each timed part, summed over rounds, "+
		"divided by transactions (a point read is one transaction; big-txn is one). "+
		"FUSE requests are what the kernel sent the mount; gRPC calls are StorageService calls, "+
		"the mount's in-process ones included; commits are litefs_db_commit_count of the workload's database.\n\n")
	fmt.Fprintf(b, "| workload | FUSE requests/tx | by op | gRPC calls/tx | by method | commits/tx |\n|---|---|---|---|---|---|\n")
	for _, wr := range r.Workloads {
		p := wr.PerTx
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s |\n", wr.Name,
			formatCount(p.FUSE), formatBreakdown(p.FUSEByOp), formatCount(p.GRPC), formatBreakdown(p.GRPCByMethod), formatCount(p.Commits))
	}
	fmt.Fprintln(b)
}

// writeJSON writes the report to path.
func (r *report) writeJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// formatRate is a rate rounded to an integer with thousands separators, or
// with one decimal below 10.
func formatRate(v float64) string {
	if v < 10 {
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return formatInt(int(math.Round(v)))
}

func formatInt(n int) string {
	s := strconv.Itoa(n)
	if n < 0 {
		return "-" + formatInt(-n)
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// formatRatio is a ratio as a percentage: one decimal below 10%.
func formatRatio(r float64) string {
	p := 100 * r
	if p < 10 {
		return strconv.FormatFloat(p, 'f', 1, 64) + "%"
	}
	return strconv.FormatFloat(p, 'f', 0, 64) + "%"
}

// formatCount is a per-transaction count: small ones keep two significant
// digits, so a rare op shows as 0.00033 rather than 0.
func formatCount(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v >= 100:
		return formatInt(int(math.Round(v)))
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case v >= 0.1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'g', 2, 64)
	}
}

// formatBreakdown lists non-zero counts, largest first: "WRITE 3.00, FSYNC 1.00".
func formatBreakdown(m map[string]float64) string {
	var parts []string
	for _, k := range byCount(m) {
		if m[k] != 0 {
			parts = append(parts, k+" "+formatCount(m[k]))
		}
	}
	if len(parts) == 0 {
		return "—"
	}
	return strings.Join(parts, ", ")
}

// machineInfo gathers what the report says about the machine. Python and
// its SQLite are required; the rest is best effort.
func machineInfo(ctx context.Context, bin, workDir string) (machine, error) {
	m := machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), WorkDir: workDir, WorkDirFS: fsType(workDir)}
	out, err := exec.CommandContext(ctx, "python3", "-c",
		"import platform, sqlite3; print(platform.python_version(), sqlite3.sqlite_version)").Output()
	if err != nil {
		return m, fmt.Errorf("python3 with its sqlite3 module is needed: %w", err)
	}
	if f := strings.Fields(string(out)); len(f) == 2 {
		m.Python, m.SQLite = f[0], f[1]
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			m.LoadAvg = strings.Join(f[:3], " ")
		}
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if out, err := exec.CommandContext(ctx, bin, "version").Output(); err == nil {
		m.Pagewire = strings.TrimSpace(string(out))
	}
	return m, nil
}

// fsType names the filesystem holding dir.
func fsType(dir string) string {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return "unknown filesystem"
	}
	names := map[int64]string{
		0xEF53:     "ext4",
		0x58465342: "xfs",
		0x9123683E: "btrfs",
		0x01021994: "tmpfs",
		0x794C7630: "overlayfs",
		0x2FC12FC1: "zfs",
		0x65735546: "fuse",
	}
	if name, ok := names[int64(st.Type)]; ok {
		return name
	}
	return fmt.Sprintf("filesystem type %#x", st.Type)
}
