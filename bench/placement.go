package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The write rates run in two placements. "shared": every process may run
// on every CPU, as the machine's scheduler likes. "separate": the primary
// and its writer on one half of the CPUs, the replicas on the other, as if
// they were separate machines; the replicas' work then cannot delay the
// primary's, and what is left is the primary's own cost of serving them.
const (
	placementShared   = "shared"
	placementSeparate = "separate"
)

// cpuSplit returns the CPUs this process may use, and that set cut in two
// halves for the separate placement; ok is false with fewer than two CPUs.
func cpuSplit() (all, primary, replicas []int, ok bool) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return nil, nil, nil, false
	}
	for cpu := range 1024 {
		if set.IsSet(cpu) {
			all = append(all, cpu)
		}
	}
	if len(all) < 2 {
		return all, nil, nil, false
	}
	half := len(all) / 2
	return all, all[:half], all[half:], true
}

// setAffinity lets every thread of process pid run only on cpus, and with
// tree, of its descendants too. Threads started later inherit it from the
// thread that starts them, and children from their parent.
func setAffinity(pid int, tree bool, cpus []int) error {
	var set unix.CPUSet
	for _, c := range cpus {
		set.Set(c)
	}
	procs := []int{pid}
	if tree {
		procs = append(procs, descendants(pid)...)
	}
	var errs []error
	for _, p := range procs {
		tasks, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(p), "task"))
		if err != nil {
			continue // gone meanwhile
		}
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil {
				continue
			}
			if err := unix.SchedSetaffinity(tid, &set); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("set the CPU affinity of thread %d of process %d: %w", tid, p, err))
			}
		}
	}
	return errors.Join(errs...)
}

// descendants returns the processes below pid, from /proc.
func descendants(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}

	// Map each process to its children, from /proc/*/stat.
	children := map[int][]int{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		rest := string(stat[strings.LastIndexByte(string(stat), ')')+1:])
		f := strings.Fields(rest)
		if len(f) < 2 {
			continue
		}
		if ppid, err := strconv.Atoi(f[1]); err == nil {
			children[ppid] = append(children[ppid], p)
		}
	}

	// Then walk the tree from pid, breadth first.
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		out = append(out, children[p]...)
		queue = append(queue, children[p]...)
	}
	return out
}
