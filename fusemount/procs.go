package fusemount

import (
	"log/slog"
	"os"
	"runtime"
	"sync"
)

// go-fuse waits for kernel requests in plain blocking read(2) calls on
// /dev/fuse: up to its reader limit plus one at a time, the limit being
// GOMAXPROCS when the server is made, kept within 2..16. A thread blocked
// in a syscall keeps its P (its right to run Go code) until the runtime's
// monitor takes it back, and the monitor, after a quiet spell, looks only
// every 10 ms and takes a P at its second look. With GOMAXPROCS at the CPU
// count, the idle readers alone can hold every P; a goroutine woken
// meanwhile (the next message of a replication stream, a storage call's
// reply) then waits 10–20 ms for a P. The replication bench saw exactly
// such stalls of the whole pipeline on 2 CPUs: p99 visibility lag of
// 3–14 ms with GOMAXPROCS=2 against 1.2–2.2 ms with 8 or more.
//
// So a process that mounts adds one P per reader that can be blocked, and
// its Go code keeps the CPUs it had. Extra Ps cost nothing while their
// threads wait in read(2). GOMAXPROCS set in the environment is left alone.

// goFuseReaderLimit is go-fuse's reader limit for the current GOMAXPROCS
// (fuse.NewServer's rule).
func goFuseReaderLimit() int {
	return min(max(runtime.GOMAXPROCS(0), 2), 16)
}

var reserveOnce sync.Once

// reserveReaderProcs raises GOMAXPROCS by readers+1, once per process.
// readers is goFuseReaderLimit taken before fuse.NewServer (which reads
// GOMAXPROCS); call it after.
func reserveReaderProcs(readers int, log *slog.Logger) {
	reserveOnce.Do(func() {
		if os.Getenv("GOMAXPROCS") != "" {
			log.Info("GOMAXPROCS is set in the environment; FUSE readers blocked in read(2) may hold every P and stall the node for 10–20 ms at times",
				"gomaxprocs", runtime.GOMAXPROCS(0), "fuse_readers", readers+1)
			return
		}
		before := runtime.GOMAXPROCS(0)
		runtime.GOMAXPROCS(before + readers + 1)
		log.Debug("GOMAXPROCS raised for FUSE readers", "from", before, "to", before+readers+1)
	})
}
