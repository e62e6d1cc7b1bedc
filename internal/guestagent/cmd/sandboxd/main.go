// Command sandboxd is a test guest agent for Gondolin micro-VMs. It is
// installed as /usr/bin/sandboxd in a guest rootfs (usually exec'd as PID 1 by
// the rootfs /init) and answers the host's exec requests on the virtio-serial
// port /dev/virtio-ports/virtio-port. Build it static:
//
//	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build ./internal/guestagent/cmd/sandboxd
package main

import (
	"flag"
	"log"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/docker2vm/docker2vm/internal/guestagent"
)

func main() {
	port := flag.String("port", "/dev/virtio-ports/virtio-port", "virtio-serial port device")
	verbose := flag.Bool("v", false, "log every reconnect")
	flag.Parse()

	logger := log.New(os.Stderr, "sandboxd: ", log.LstdFlags|log.Lmsgprefix)
	agent := guestagent.NewAgent()
	agent.Log = logger
	// Gondolin's init records a filesystem that did not come up here.
	agent.VfsError = func() string {
		data, err := os.ReadFile("/run/sandboxfs.failed")
		if err != nil {
			return ""
		}
		if msg := strings.TrimSpace(string(data)); msg != "" {
			return msg
		}
		return "vfs mount not ready"
	}
	if os.Getpid() == 1 {
		agent.EnableReaper()
	}

	backoff := 50 * time.Millisecond
	for attempt := 0; ; attempt++ {
		ensurePortNode(*port)
		f, err := os.OpenFile(*port, os.O_RDWR, 0)
		if err != nil {
			if attempt%100 == 0 {
				logger.Printf("open %s: %v (retrying)", *port, err)
			}
			time.Sleep(backoff)
			continue
		}
		err = agent.Serve(f)
		f.Close()
		if *verbose {
			logger.Printf("connection ended: %v", err)
		}
		// The host went away (or sent garbage we cannot resync from);
		// reopen and announce ourselves again.
		time.Sleep(backoff)
	}
}

// ensurePortNode creates the named port device from sysfs when no udev (or
// initramfs) did it: /sys/class/virtio-ports/vportNpM/{name,dev}.
func ensurePortNode(path string) {
	if _, err := os.Stat(path); err == nil {
		return
	}
	want := filepath.Base(path)
	dirs, _ := filepath.Glob("/sys/class/virtio-ports/vport*")
	for _, d := range dirs {
		name, err := os.ReadFile(filepath.Join(d, "name"))
		if err != nil || strings.TrimSpace(string(name)) != want {
			continue
		}
		dev, err := os.ReadFile(filepath.Join(d, "dev"))
		if err != nil {
			continue
		}
		maj, min, ok := strings.Cut(strings.TrimSpace(string(dev)), ":")
		if !ok {
			continue
		}
		ma, err1 := strconv.Atoi(maj)
		mi, err2 := strconv.Atoi(min)
		if err1 != nil || err2 != nil {
			continue
		}
		_ = os.MkdirAll(filepath.Dir(path), 0o755)
		devnum := (ma&0xfff)<<8 | (mi & 0xff) | (mi&^0xff)<<12
		_ = syscall.Mknod(path, syscall.S_IFCHR|0o600, devnum)
		return
	}
}
