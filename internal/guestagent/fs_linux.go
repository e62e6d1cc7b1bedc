//go:build linux

package guestagent

import (
	"fmt"
	"io"
	"log"
	"os"

	"golang.org/x/sys/unix"
)

// MountFS mounts a fuse.sandboxfs filesystem on mount point and serves it
// from rpc (the host's filesystem service) until it is unmounted, as
// Gondolin's sandboxfs does. ready, when not nil, is called once the
// mount is in place.
func MountFS(mount string, rpc io.ReadWriter, logger *log.Logger, ready func()) error {
	// A raw descriptor in blocking mode: Go's poller would make it
	// non-blocking, and a read of /dev/fuse then fails with EAGAIN.
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: "/dev/fuse", Err: err}
	}
	dev := fuseDev(fd)
	defer unix.Close(fd)
	data := fmt.Sprintf("fd=%d,rootmode=40000,user_id=0,group_id=0,default_permissions", fd)
	if err := unix.Mount("sandboxfs", mount, "fuse.sandboxfs", unix.MS_NOSUID|unix.MS_NODEV, data); err != nil {
		return fmt.Errorf("mount fuse.sandboxfs on %s: %w", mount, err)
	}
	if ready != nil {
		ready()
	}
	fs := &FS{Dev: dev, RPC: rpc, Log: logger}
	return fs.Serve()
}

// fuseDev is /dev/fuse as a blocking descriptor: a Read returns one
// request, a Write takes one reply.
type fuseDev int

func (d fuseDev) Read(p []byte) (int, error) {
	for {
		n, err := unix.Read(int(d), p)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, err
		}
		return n, nil
	}
}

func (d fuseDev) Write(p []byte) (int, error) {
	for {
		n, err := unix.Write(int(d), p)
		if err == unix.EINTR {
			continue
		}
		return n, err
	}
}
