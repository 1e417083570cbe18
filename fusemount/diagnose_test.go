package fusemount

import (
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// Each way a mount fails in a container gets a message naming the cause
// and the docker run flag that fixes it.
func TestMountError(t *testing.T) {
	for _, tc := range []struct {
		name        string
		err         error
		hasSysAdmin bool
		want        []string
	}{
		{"no SYS_ADMIN", syscall.EPERM, false, []string{"lacks CAP_SYS_ADMIN", "--cap-add SYS_ADMIN"}},
		{"seccomp", syscall.EPERM, true, []string{"seccomp or AppArmor", "--security-opt seccomp=unconfined", "apparmor=unconfined"}},
		{"AppArmor", syscall.EACCES, true, []string{"AppArmor, SELinux or seccomp", "--security-opt apparmor=unconfined", "seccomp=unconfined"}},
		{"AppArmor without the capability", syscall.EACCES, false, []string{"AppArmor", "apparmor=unconfined"}},
		{"no fuse module", syscall.ENODEV, true, []string{"modprobe fuse"}},
		{"wrapped", fmt.Errorf("mount: %w", syscall.EPERM), false, []string{"--cap-add SYS_ADMIN"}},
		{"other", syscall.EINVAL, true, []string{"invalid argument", "/dev/fuse"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg := mountError("/litefs", tc.err, tc.hasSysAdmin).Error()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q lacks %q", msg, w)
				}
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("message %q is more than one line", msg)
			}
		})
	}
}

func TestDeviceError(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"missing", syscall.ENOENT, "does not exist: FUSE needs it; in Docker run with --device /dev/fuse --cap-add SYS_ADMIN"},
		{"denied by the device cgroup", syscall.EPERM, "cannot be opened (operation not permitted): in Docker run with --device /dev/fuse"},
		{"no permission", syscall.EACCES, "cannot be opened (permission denied)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := deviceError(tc.err).Error(); !strings.Contains(got, tc.want) {
				t.Errorf("message %q lacks %q", got, tc.want)
			}
		})
	}
}

func TestCheckDevice_Missing(t *testing.T) {
	old := devFuse
	devFuse = filepath.Join(t.TempDir(), "fuse")
	t.Cleanup(func() { devFuse = old })
	err := checkDevice()
	if err == nil || !strings.Contains(err.Error(), "--device /dev/fuse") {
		t.Fatalf("checkDevice()=%v, want the --device message", err)
	}
}

func TestCapabilityIn(t *testing.T) {
	const status = "Name:\tpagewire\nCapInh:\t0000000000000000\nCapEff:\t%s\nCapBnd:\t000001ffffffffff\n"
	for _, tc := range []struct {
		capEff string
		want   bool
	}{
		{"000001ffffffffff", true},  // root on a host
		{"00000000a80425fb", false}, // Docker's default set
		{"00000000a82425fb", true},  // Docker's default set with --cap-add SYS_ADMIN
		{"garbage", false},
	} {
		if got := capabilityIn(fmt.Sprintf(status, tc.capEff), capSysAdmin); got != tc.want {
			t.Errorf("CapEff %s: has SYS_ADMIN=%v, want %v", tc.capEff, got, tc.want)
		}
	}
	if capabilityIn("Name:\tx\n", capSysAdmin) {
		t.Error("a status without CapEff has SYS_ADMIN")
	}
}
