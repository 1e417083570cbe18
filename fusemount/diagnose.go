package fusemount

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// The checks and messages here explain, in one line each, why a mount
// could not be made: FUSE in a container needs the device, a capability
// and a security profile that allows mount(2), and each is a different
// docker run flag.

// devFuse is the FUSE device; a variable so that tests can point it
// elsewhere.
var devFuse = "/dev/fuse"

// capSysAdmin is CAP_SYS_ADMIN's bit in /proc/self/status's CapEff.
const capSysAdmin = 21

// checkDevice opens the FUSE device and closes it again, so that a missing
// or forbidden device is named before anything tries to mount.
func checkDevice() error {
	f, err := os.OpenFile(devFuse, os.O_RDWR, 0)
	if err != nil {
		return deviceError(err)
	}
	return f.Close()
}

// deviceError explains a failure to open the FUSE device.
func deviceError(err error) error {
	switch {
	case errors.Is(err, syscall.ENOENT):
		return fmt.Errorf("%s does not exist: FUSE needs it; in Docker run with --device /dev/fuse --cap-add SYS_ADMIN, on a host load the fuse module (modprobe fuse)", devFuse)
	case errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EACCES):
		return fmt.Errorf("%s cannot be opened (%v): in Docker run with --device /dev/fuse (the container's device list denies it otherwise); on a host run as root or join the fuse group", devFuse, errnoText(err))
	}
	return fmt.Errorf("open %s: %w", devFuse, err)
}

// mountError explains a failed mount(2) of dir once the device opened:
// hasSysAdmin is whether the process has CAP_SYS_ADMIN, which tells a
// missing capability from a security profile that blocks mount.
func mountError(dir string, err error, hasSysAdmin bool) error {
	switch {
	case errors.Is(err, syscall.EPERM) && !hasSysAdmin:
		return fmt.Errorf("mount fuse.dir %q: operation not permitted: the process lacks CAP_SYS_ADMIN; in Docker run with --cap-add SYS_ADMIN --device /dev/fuse", dir)
	case errors.Is(err, syscall.EPERM):
		return fmt.Errorf("mount fuse.dir %q: operation not permitted although the process has CAP_SYS_ADMIN: seccomp or AppArmor blocks mount(2); in Docker add --security-opt seccomp=unconfined, or --security-opt apparmor=unconfined on AppArmor hosts (Ubuntu)", dir)
	case errors.Is(err, syscall.EACCES):
		return fmt.Errorf("mount fuse.dir %q: permission denied: AppArmor, SELinux or seccomp blocks mount(2); in Docker add --security-opt apparmor=unconfined (Ubuntu hosts) or --security-opt seccomp=unconfined", dir)
	case errors.Is(err, syscall.ENODEV):
		return fmt.Errorf("mount fuse.dir %q: the kernel has no FUSE filesystem: load the fuse module on the host (modprobe fuse)", dir)
	}
	return fmt.Errorf("mount %q: %w (is /dev/fuse present and are you root or in the fuse group?)", dir, err)
}

// errnoText is err's errno as the kernel's text, or err itself.
func errnoText(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	return err.Error()
}

// hasCapability reports whether the process's effective capabilities,
// read from /proc/self/status, include bit; false if they cannot be read.
func hasCapability(bit uint) bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	return capabilityIn(string(b), bit)
}

// capabilityIn reports whether the CapEff line of a /proc/PID/status text
// has bit set.
func capabilityIn(status string, bit uint) bool {
	for _, line := range strings.Split(status, "\n") {
		hex, ok := strings.CutPrefix(line, "CapEff:")
		if !ok {
			continue
		}
		caps, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
		return err == nil && caps&(1<<bit) != 0
	}
	return false
}
