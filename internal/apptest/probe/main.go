//go:build linux

// Command d2v-probe is what the application tests run inside a container
// (under runc) and inside a converted guest (under Gondolin) to observe
// the same things both ways. It prints results in a fixed form, so that
// the two outputs can be compared line by line. It is built statically and
// copied into every test image as /usr/local/bin/d2v-probe.
//
//	d2v-probe http URL SUBSTR      GET URL (retrying for a minute until the server answers): "status 200, body has SUBSTR"
//	d2v-probe retry SECONDS CMD... run CMD until it exits 0 (or SECONDS pass) and print its output
//	d2v-probe proc NAME            the oldest process named NAME (waiting for it): ids, groups, cwd, RLIMIT_NOFILE, environment
//	d2v-probe resolve NAME         the addresses NAME resolves to (the pure Go resolver: /etc/hosts), sorted
//	d2v-probe fs PATH...           each path's type after following symlinks, or "missing"
//	d2v-probe links PATH...        each path's symlink target, or what it is instead
//	d2v-probe mounts PATH...       the file system type mounted at each path, or "not a mount point"
//	d2v-probe hostname             the kernel's host name
package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fail("usage: d2v-probe http|retry|proc|resolve|fs|hostname ...")
	}
	args := os.Args[2:]
	var err error
	switch os.Args[1] {
	case "http":
		err = probeHTTP(args)
	case "retry":
		err = retry(args)
	case "proc":
		err = proc(args)
	case "resolve":
		err = resolve(args)
	case "fs":
		err = files(args)
	case "links":
		err = links(args)
	case "mounts":
		err = mounts(args)
	case "hostname":
		var h string
		h, err = os.Hostname()
		fmt.Println(h)
	default:
		fail("unknown probe " + os.Args[1])
	}
	if err != nil {
		fail(err.Error())
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "d2v-probe:", msg)
	os.Exit(1)
}

const patience = 90 * time.Second

func probeHTTP(args []string) error {
	if len(args) != 2 {
		return fmt.Errorf("http URL SUBSTR")
	}
	client := &http.Client{Timeout: 10 * time.Second}
	deadline := time.Now().Add(patience)
	for {
		resp, err := client.Get(args[0])
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			fmt.Printf("status %d, body has %q: %v\n", resp.StatusCode, args[1], bytes.Contains(body, []byte(args[1])))
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func retry(args []string) error {
	if len(args) < 2 {
		return fmt.Errorf("retry SECONDS CMD...")
	}
	secs, err := strconv.Atoi(args[0])
	if err != nil {
		return err
	}
	deadline := time.Now().Add(time.Duration(secs) * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		out, err := exec.CommandContext(ctx, args[1], args[2:]...).CombinedOutput()
		cancel()
		if err == nil || time.Now().After(deadline) {
			os.Stdout.Write(out)
			return err
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// proc prints what a process of the service runs with.
func proc(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("proc NAME")
	}
	deadline := time.Now().Add(patience)
	for {
		pid, err := findProc(args[0])
		if err == nil {
			return describe(pid)
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// findProc returns the oldest process (lowest start time) whose command
// name is name.
func findProc(name string) (int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	best, bestStart := 0, uint64(0)
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil || strings.TrimSpace(string(comm)) != name {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(f) < 20 {
			continue
		}
		start, _ := strconv.ParseUint(f[19], 10, 64)
		if best == 0 || start < bestStart {
			best, bestStart = pid, start
		}
	}
	if best == 0 {
		return 0, fmt.Errorf("no process named %s", name)
	}
	return best, nil
}

func describe(pid int) error {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, _ := strings.Cut(line, ":")
		switch k {
		case "Uid", "Gid":
			f := strings.Fields(v)
			fmt.Printf("%s %s\n", strings.ToLower(k), strings.Join(f, " "))
		case "Groups":
			f := strings.Fields(v)
			sort.Slice(f, func(i, j int) bool { a, _ := strconv.Atoi(f[i]); b, _ := strconv.Atoi(f[j]); return a < b })
			fmt.Printf("groups %s\n", strings.Join(f, " "))
		}
	}
	cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
	if err != nil {
		return err
	}
	fmt.Printf("cwd %s\n", cwd)
	limits, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(limits), "\n") {
		if strings.HasPrefix(line, "Max open files") {
			f := strings.Fields(line)
			fmt.Printf("nofile %s %s\n", f[3], f[4])
		}
	}
	environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return err
	}
	var env []string
	for _, kv := range strings.Split(string(environ), "\x00") {
		if kv != "" {
			env = append(env, "env "+kv)
		}
	}
	sort.Strings(env)
	fmt.Println(strings.Join(env, "\n"))
	return nil
}

func resolve(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("resolve NAME")
	}
	r := &net.Resolver{PreferGo: true}
	addrs, err := r.LookupHost(context.Background(), args[0])
	if err != nil {
		return err
	}
	sort.Strings(addrs)
	fmt.Println(strings.Join(addrs, " "))
	return nil
}

func files(args []string) error {
	for _, p := range args {
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			fmt.Printf("%s missing\n", p)
			continue
		}
		kind := map[uint32]string{syscall.S_IFDIR: "directory", syscall.S_IFREG: "file", syscall.S_IFCHR: "char device",
			syscall.S_IFBLK: "block device", syscall.S_IFIFO: "fifo", syscall.S_IFSOCK: "socket"}[st.Mode&syscall.S_IFMT]
		fmt.Printf("%s %s\n", p, kind)
	}
	return nil
}

func links(args []string) error {
	for _, p := range args {
		target, err := os.Readlink(p)
		if err != nil {
			fmt.Printf("%s is not a symlink\n", p)
			continue
		}
		fmt.Printf("%s -> %s\n", p, target)
	}
	return nil
}

// mounts reads /proc/self/mountinfo: the last mount at a path is the one
// in use.
func mounts(args []string) error {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	types := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		for i := 6; i+1 < len(f); i++ {
			if f[i] == "-" {
				types[f[4]] = f[i+1]
				break
			}
		}
	}
	for _, p := range args {
		if t, ok := types[p]; ok {
			fmt.Printf("%s %s\n", p, t)
		} else {
			fmt.Printf("%s is not a mount point\n", p)
		}
	}
	return nil
}
