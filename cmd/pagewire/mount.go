package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/pagewire/pagewire/config"
	"github.com/pagewire/pagewire/replicator"
)

// runMount runs a node until a signal stops it, the app exits or a part
// fails. Each step builds one part of the node, in the order they start;
// run runs them.
func runMount(ctx context.Context, args []string) error {
	// Signals from here on stop the node, even one that arrives during
	// start-up; once the app runs they go to the app.
	n := &node{sigs: make(chan os.Signal, 1), applyLag: newApplyLag()}
	signal.Notify(n.sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(n.sigs)

	if err := n.loadConfig(args); err != nil {
		return err
	}
	if err := n.identify(); err != nil {
		return err
	}
	if err := n.openStore(); err != nil {
		return err
	}
	defer n.store.Close()
	if err := restoreOnStart(ctx, n.log, n.cfg.Backup, n.store, n.cfg.Data.Dir); err != nil {
		return err
	}
	if err := n.openBackup(ctx); err != nil {
		return err
	}
	defer n.closeBackup()
	if err := n.decideRole(); err != nil {
		return err
	}
	if err := n.listen(); err != nil {
		return err
	}
	// A step that fails from here on closes the listener too.
	for _, step := range []func() error{n.newProxy, n.newServer, n.newMount} {
		if err := step(); err != nil {
			n.lis.Close()
			return err
		}
	}
	return n.run(ctx)
}

// follower is a replica of one primary and its connection.
type follower struct {
	*replicator.Replica
	conn interface{ Close() error }
}

// Run replicates until ctx is done, then closes the connection.
func (f *follower) Run(ctx context.Context) error {
	defer f.conn.Close()
	return f.Replica.Run(ctx)
}

// runApps runs the exec commands and the -- command. All but the last
// command run to completion first; the last one gets forwarded signals and
// its exit code becomes pagewire's.
func runApps(ctx context.Context, cfg config.Config, app []string, sigs <-chan os.Signal, log *slog.Logger) error {
	var cmds [][]string
	for _, e := range cfg.Exec {
		if e.IfCandidate && !cfg.Lease.Candidate {
			continue
		}
		cmds = append(cmds, shellArgs(e.Cmd))
	}
	if len(app) > 0 {
		cmds = append(cmds, app)
	}
	for i, argv := range cmds {
		last := i == len(cmds)-1
		if err := runChild(ctx, argv, sigs, log); err != nil {
			var ee *exitError
			if !last && errors.As(err, &ee) {
				return fmt.Errorf("exec %q failed with exit code %d; the app was not started", strings.Join(argv, " "), ee.code)
			}
			return err
		}
	}
	return nil
}

// shellArgs runs a command line through sh only when it needs a shell.
func shellArgs(cmd string) []string {
	if strings.ContainsAny(cmd, "|&;<>()$`\\\"'*?[]#~=%{}") {
		return []string{"/bin/sh", "-c", cmd}
	}
	return strings.Fields(cmd)
}

// runChild runs one command, forwarding signals, and returns an *exitError
// for a non-zero exit.
func runChild(ctx context.Context, argv []string, sigs <-chan os.Signal, log *slog.Logger) error {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %q: %w", argv[0], err)
	}
	log.Info("started app", "cmd", strings.Join(argv, " "), "pid", cmd.Process.Pid)

	// Wait for the app in the background.
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	// Forward signals until the app exits; when ctx is done, stop it with SIGTERM, then SIGKILL after 10s.
	for {
		select {
		case sig := <-sigs:
			log.Info("forwarding signal to app", "signal", sig.String())
			_ = cmd.Process.Signal(sig)
		case <-ctx.Done():
			_ = cmd.Process.Signal(syscall.SIGTERM)
			t := time.AfterFunc(10*time.Second, func() { _ = cmd.Process.Kill() })
			<-done
			t.Stop()
			return nil
		case err := <-done:
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code := ee.ExitCode()
				if code < 0 { // killed by a signal
					code = 128 + int(ee.Sys().(syscall.WaitStatus).Signal())
				}
				log.Info("app exited", "cmd", argv[0], "code", code)
				return &exitError{code: code}
			}
			if err != nil {
				return err
			}
			log.Info("app exited", "cmd", argv[0], "code", 0)
			return nil
		}
	}
}

// embeddedDefault is loadConfig's source when no config file was found.
const embeddedDefault = "embedded default"

// loadConfig finds and loads the config, or the embedded default.
func loadConfig(explicit string) (config.Config, string, error) {
	path, err := config.Find(explicit)
	if err != nil {
		return config.Config{}, "", err
	}
	if path == "" {
		return config.Default(), embeddedDefault, nil
	}
	cfg, err := config.Load(path, os.Getenv)
	return cfg, path, err
}

func newLogger(c config.LogConfig) *slog.Logger {
	opts := &slog.HandlerOptions{Level: slog.LevelInfo}
	if c.Debug {
		opts.Level = slog.LevelDebug
	}
	if c.Format == config.LogFormatJSON {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}
