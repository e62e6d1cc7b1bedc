//go:build linux

// Command sandboxfs is a test stand-in for Gondolin's sandboxfs: it mounts
// a FUSE filesystem (fuse.sandboxfs) at the mount point Gondolin's init
// gives it and serves it from the host's filesystem service over the
// virtio-fs port (package guestagent, FS). Gondolin's init starts it as
//
//	/usr/bin/sandboxfs --mount /data --rpc-path /dev/virtio-ports/virtio-fs
//
// Build it static:
//
//	CGO_ENABLED=0 GOOS=linux go build ./internal/guestagent/cmd/sandboxfs
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/docker2vm/docker2vm/internal/guestagent"
)

func main() {
	mount := flag.String("mount", "/data", "mount point")
	rpcPath := flag.String("rpc-path", "/dev/virtio-ports/virtio-fs", "the host's filesystem port")
	flag.Parse()
	// Gondolin's init sends the output to the console; the kernel log
	// reaches it too where the console is not the init's (an arm64 guest
	// of an x86_64 host).
	out := io.Writer(os.Stderr)
	if kmsg, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0); err == nil {
		out = io.MultiWriter(os.Stderr, kmsg)
	}
	logger := log.New(out, "sandboxfs: ", log.Lmsgprefix)
	if err := run(*mount, *rpcPath, logger); err != nil {
		logger.Print(err)
		os.Exit(1)
	}
}

func run(mount, rpcPath string, logger *log.Logger) error {
	rpc, err := openPort(rpcPath)
	if err != nil {
		return err
	}
	defer rpc.Close()
	return guestagent.MountFS(mount, rpc, logger, func() { logger.Printf("mounted on %s", mount) })
}

// openPort opens the port, by its path or else by its name in sysfs
// (/sys/class/virtio-ports/vportNpM/name), for up to 5 seconds: the ports
// appear as the virtio console driver finds them.
func openPort(path string) (*os.File, error) {
	want := filepath.Base(path)
	var err error
	for i := 0; i < 50; i++ {
		var f *os.File
		if f, err = os.OpenFile(path, os.O_RDWR, 0); err == nil {
			return f, nil
		}
		dirs, _ := filepath.Glob("/sys/class/virtio-ports/vport*")
		for _, d := range dirs {
			name, rerr := os.ReadFile(filepath.Join(d, "name"))
			if rerr != nil || strings.TrimSpace(string(name)) != want {
				continue
			}
			if f, oerr := os.OpenFile("/dev/"+filepath.Base(d), os.O_RDWR, 0); oerr == nil {
				return f, nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil, fmt.Errorf("the virtio-fs port %s: %w", path, err)
}
