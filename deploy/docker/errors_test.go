//go:build docker

package docker

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Each way LiteFS users misconfigure FUSE in Docker stops the node at
// start with one line that names the cause and the flag or setting that
// fixes it.
func TestStartErrors(t *testing.T) {
	const eperm, eacces = 1, 13
	for _, tc := range []struct {
		name string
		edit func(t *testing.T, o *runOptions) // from everything FUSE needs
		want string
	}{
		{"no /dev/fuse", func(t *testing.T, o *runOptions) { o.fuse = false },
			"/dev/fuse does not exist: FUSE needs it; in Docker run with --device /dev/fuse --cap-add SYS_ADMIN"},
		{"no SYS_ADMIN", func(t *testing.T, o *runOptions) { o.sysAdmin = false },
			`mount fuse.dir "/litefs": operation not permitted: the process lacks CAP_SYS_ADMIN; in Docker run with --cap-add SYS_ADMIN --device /dev/fuse`},
		{"seccomp denies mount", func(t *testing.T, o *runOptions) {
			o.extra = []string{"--security-opt", "seccomp=" + seccompProfile(t, eperm)}
		}, "operation not permitted although the process has CAP_SYS_ADMIN: seccomp or AppArmor blocks mount(2); in Docker add --security-opt seccomp=unconfined, or --security-opt apparmor=unconfined"},
		// AppArmor's denial is EACCES; this kernel has no AppArmor, so a
		// seccomp profile returns the same errno.
		{"security module denies mount (EACCES)", func(t *testing.T, o *runOptions) {
			o.extra = []string{"--security-opt", "seccomp=" + seccompProfile(t, eacces)}
		}, "permission denied: AppArmor, SELinux or seccomp blocks mount(2); in Docker add --security-opt apparmor=unconfined (Ubuntu hosts) or --security-opt seccomp=unconfined"},
		{"read-only data volume", func(t *testing.T, o *runOptions) { o.readOnly = true },
			`data.dir "/var/lib/pagewire" is on a read-only filesystem: mount its volume read-write (in Docker, drop :ro from -v)`},
		{"fuse.dir inside data.dir", func(t *testing.T, o *runOptions) {
			o.config = writeConfig(t, strings.Replace(staticConfig(freePort(t), ""), "dir: /litefs", "dir: /var/lib/pagewire/mnt", 1))
		}, `fuse.dir "/var/lib/pagewire/mnt" is inside data.dir "/var/lib/pagewire": use directories that do not contain each other`},
		{"second node on the same volume", func(t *testing.T, o *runOptions) {
			port := freePort(t)
			first := *o
			first.config = writeConfig(t, staticConfig(port, ""))
			startContainer(t, "first", port, first)
		}, `data.dir "/var/lib/pagewire" is in use by another pagewire process (another node or container on the same volume?): stop it, or give each node its own data.dir`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := grant(newVolume(t, "data"), writeConfig(t, staticConfig(freePort(t), "")))
			tc.edit(t, &o)
			line := failedStart(t, o)
			if !strings.Contains(line, tc.want) {
				t.Fatalf("the node's error is\n\t%s\nwant it to contain\n\t%s", line, tc.want)
			}
		})
	}
}

// failedStart runs a node that must fail to start, and returns its one
// error line ("pagewire: ...").
func failedStart(t *testing.T, o runOptions) string {
	t.Helper()
	c := name(t, "failing")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", append([]string{"run", "--rm"}, o.args(c)...)...).CombinedOutput()
	if err == nil || ctx.Err() != nil {
		_, _ = dockerOutput("rm", "-f", c)
		t.Fatalf("the node started (or hung: %v):\n%s", ctx.Err(), out)
	}
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "pagewire: ") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 {
		t.Fatalf("want one error line, got %d; output:\n%s", len(lines), out)
	}
	return lines[0]
}

// seccompProfile writes a seccomp profile that allows every system call
// but mount(2), which fails with errno.
func seccompProfile(t *testing.T, errno int) string {
	t.Helper()
	profile := `{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_ERRNO", "errnoRet": ` +
		strconv.Itoa(errno) + `}]}`
	path := filepath.Join(t.TempDir(), "seccomp.json")
	if err := os.WriteFile(path, []byte(profile), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
