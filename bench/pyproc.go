package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// pythonTimeout bounds one Python process, setup and close included, so a
// hung mount ends the bench with an error instead of never.
const pythonTimeout = 10 * time.Minute

// pyProc is one python3 process the harness talks to: lines on its stdin,
// one JSON object per line on its stdout.
type pyProc struct {
	what   string // for errors, e.g. "workload insert-normal on /x/y.db"
	cmd    *exec.Cmd
	ctx    context.Context
	cancel context.CancelFunc
	stdin  io.WriteCloser
	lines  *bufio.Scanner
	stderr bytes.Buffer
}

// startPython starts `python3 -c script args...` in dir. The caller must
// call finish.
func startPython(ctx context.Context, what, script, dir string, args ...string) (*pyProc, error) {
	p := &pyProc{what: what}
	p.ctx, p.cancel = context.WithTimeout(ctx, pythonTimeout)
	p.cmd = exec.CommandContext(p.ctx, "python3", append([]string{"-c", script}, args...)...)
	p.cmd.Dir = dir
	// Its own process group: a Ctrl-C reaches the harness only, which then
	// ends the process (ctx) before it stops the nodes. Pdeathsig: it does
	// not outlive a killed harness.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p.cmd.WaitDelay = 5 * time.Second
	p.cmd.Stderr = &p.stderr
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		p.cancel()
		return nil, err
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		p.cancel()
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		p.cancel()
		return nil, fmt.Errorf("start python3: %w", err)
	}
	p.lines = bufio.NewScanner(stdout)
	// A poller's or writer's result carries one entry per transaction.
	p.lines.Buffer(make([]byte, 0, 64*1024), 256<<20)
	return p, nil
}

// read decodes the process's next stdout line into v.
func (p *pyProc) read(v any) error {
	if !p.lines.Scan() {
		if err := p.lines.Err(); err != nil {
			return err
		}
		return errors.New("python exited early")
	}
	if err := json.Unmarshal(p.lines.Bytes(), v); err != nil {
		return fmt.Errorf("python printed %q: %w", truncate(p.lines.Text(), 200), err)
	}
	return nil
}

// send writes one line to the process's stdin.
func (p *pyProc) send(line string) error {
	_, err := io.WriteString(p.stdin, line+"\n")
	return err
}

// finish closes stdin and waits for the process to exit. It returns err (the
// caller's, if any, else the process's), wrapped with what the process was
// and its stderr.
func (p *pyProc) finish(err error) error {
	defer p.cancel()
	if err != nil {
		// Something already went wrong: give the process a moment to see
		// its stdin close, then kill it.
		t := time.AfterFunc(5*time.Second, func() { _ = p.cmd.Process.Kill() })
		defer t.Stop()
	}
	p.stdin.Close()
	werr := p.cmd.Wait()
	if err == nil {
		err = werr
	}
	switch {
	case err == nil:
		return nil
	case p.ctx.Err() != nil:
		return fmt.Errorf("%s: %w", p.what, context.Cause(p.ctx))
	default:
		return fmt.Errorf("%s: %w\n%s", p.what, err, strings.TrimSpace(p.stderr.String()))
	}
}

// runPython runs a script to completion and decodes its last stdout line
// into v.
func runPython(ctx context.Context, what, script, dir string, v any, args ...string) (err error) {
	p, err := startPython(ctx, what, script, dir, args...)
	if err != nil {
		return err
	}
	defer func() { err = p.finish(err) }()
	return p.read(v)
}

// timedRun runs a script that follows workload.py's protocol (ready, go,
// {ops, seconds}, stdin closed) and checks it did n ops. before and after,
// when not nil, run just before and just after the timed part.
func timedRun(ctx context.Context, what, script, dir string, args []string, n int, before, after func(context.Context) error) (ops int, seconds float64, err error) {
	p, err := startPython(ctx, what, script, dir, args...)
	if err != nil {
		return 0, 0, err
	}
	defer func() { err = p.finish(err) }()

	// Wait for the script to say it is ready.
	var ready struct{ Ready bool }
	if err := p.read(&ready); err != nil {
		return 0, 0, err
	}
	if !ready.Ready {
		return 0, 0, errors.New("python did not say ready")
	}
	if before != nil {
		if err := before(p.ctx); err != nil {
			return 0, 0, err
		}
	}

	// Start the timed run and read what the script measured.
	if err := p.send("go"); err != nil {
		return 0, 0, err
	}
	var done struct {
		Ops     int     `json:"ops"`
		Seconds float64 `json:"seconds"`
	}
	if err := p.read(&done); err != nil {
		return 0, 0, err
	}
	if after != nil {
		if err := after(p.ctx); err != nil {
			return 0, 0, err
		}
	}

	// The script must have run all n ops.
	if done.Ops != n || done.Seconds <= 0 {
		return 0, 0, fmt.Errorf("python reported ops=%d seconds=%g, want ops=%d and seconds > 0", done.Ops, done.Seconds, n)
	}
	return done.Ops, done.Seconds, nil
}

// truncate shortens s to at most n bytes, for error messages.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
