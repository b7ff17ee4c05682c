package store

import (
	"bytes"
	"fmt"

	"golang.org/x/sys/unix"
)

// bootIDPath is where the kernel exposes the current boot's random ID.
const bootIDPath = "/proc/sys/kernel/random/boot_id"

// CurrentBootID returns the ID of the running boot.
func CurrentBootID() (string, error) {
	// A plain read: os.File would register the pollable /proc file with
	// the runtime's poller, a cost paid on every CNI call.
	fd, err := unix.Open(bootIDPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("read boot ID: %w", err)
	}
	defer unix.Close(fd)
	var buf [64]byte
	n, err := unix.Read(fd, buf[:])
	if err != nil || n == 0 {
		return "", fmt.Errorf("read boot ID: %v (%d bytes)", err, n)
	}
	return string(bytes.TrimSpace(buf[:n])), nil
}
