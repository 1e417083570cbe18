package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"syscall"

	"github.com/pagewire/pagewire/internal/logkey"
	"github.com/pagewire/pagewire/replicator"
)

// runApplyWorker is `pagewire apply-worker`, started by a replica node: it
// appends transactions to databases on the node's mount, on requests read
// from stdin. It is a separate process so that the node never waits on its
// own mount (see replicator.ServeApply).
func runApplyWorker(_ context.Context, _ []string) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With(logkey.Component, "apply-worker")
	return replicator.ServeApply(os.Stdin, os.Stdout, log)
}

// applyWorker is a running apply worker.
type applyWorker struct {
	cmd    *exec.Cmd
	client *replicator.ApplyClient
	exited chan struct{} // closed once the process is reaped
}

// startApplyWorker starts this binary as an apply worker. It dies with the
// node (SIGKILL on the node's death).
func startApplyWorker(log *slog.Logger) (*applyWorker, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "apply-worker")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the apply worker: %w", err)
	}
	client := replicator.NewApplyClient(stdin, stdout, log)
	client.SetKill(func() { _ = cmd.Process.Kill() })
	return &applyWorker{cmd: cmd, client: client, exited: make(chan struct{})}, nil
}

// watch waits for the worker to exit: nil if the node is stopping,
// else an error that stops the node. exited is closed then.
func (w *applyWorker) watch(ctx context.Context) error {
	err := w.cmd.Wait()
	close(w.exited)
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("the apply worker exited (%v); the node stops so that it can be restarted", err)
}

// stop closes the worker's input; it exits once its requests are answered.
func (w *applyWorker) stop() { _ = w.client.Close() }
