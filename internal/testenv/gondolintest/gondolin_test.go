package gondolintest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker2vm/docker2vm/gondolin"
	"github.com/docker2vm/docker2vm/internal/require"
	"github.com/docker2vm/docker2vm/internal/testenv"
)

// TestFixtureUUID: the fixture filesystem's UUIDs are stable,
// UUID-shaped and differ by name.
func TestFixtureUUID(t *testing.T) {
	a, b := fixtureUUID("rootfs\nk"), fixtureUUID("hash\nk")
	if a != fixtureUUID("rootfs\nk") || a == b {
		t.Fatalf("%s %s", a, b)
	}
	if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(a) {
		t.Fatalf("%s is not a version 4 UUID", a)
	}
}

// TestWriteManifest: a fixture's manifest is a valid Gondolin
// manifest whose build id is package gondolin's over the files' sha256.
func TestWriteManifest(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{BundleKernel, BundleInitramfs, BundleRootfs} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := writeManifest(dir, "aarch64", "busybox"); err != nil {
		t.Fatal(err)
	}
	m, err := gondolin.ReadManifest(filepath.Join(dir, BundleManifest))
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256([]byte(BundleRootfs)); m.Checksums.Rootfs != hex.EncodeToString(sum[:]) {
		t.Errorf("checksums.rootfs %s", m.Checksums.Rootfs)
	}
	if m.BuildID != gondolin.BuildID(m.Checksums, "aarch64") || m.Config.Arch != "aarch64" || m.RuntimeDefaults == nil || m.RuntimeDefaults.RootfsMode != gondolin.RootfsCOW {
		t.Errorf("manifest %+v", m)
	}
	if got := BundleArch(t, dir); got != testenv.ARM64 {
		t.Errorf("BundleArch = %s", got)
	}
}

func TestCpio(t *testing.T) {
	cpio := require.Tool(t, "cpio")
	tr := newTree()
	tr.file("bin/hello", 0o755, []byte("#!/bin/sh\necho hi\n"), "")
	tr.symlink("bin/sh", "/bin/busybox")
	tr.dir("a/b/c", 0o700)
	tr.dev("dev/console", 0o600, 5, 1)
	var buf bytes.Buffer
	if err := tr.writeCpio(&buf); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(cpio, "-itv", "--quiet")
	cmd.Stdin = &buf
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -t: %v\n%s", err, out)
	}
	for _, want := range []string{"drwx------", "a/b/c", "-rwxr-xr-x", "bin/hello", "bin/sh -> /bin/busybox", "crw-------", "dev/console"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("listing lacks %q:\n%s", want, out)
		}
	}
}

// TestBaseBundle builds the fixture bundle for each architecture
// and checks its files without booting it.
func TestBaseBundle(t *testing.T) {
	require.Integration(t, "builds a kernel bundle")
	for _, arch := range testenv.Arches {
		t.Run(arch, func(t *testing.T) { testBaseBundle(t, arch) })
	}
}

func testBaseBundle(t *testing.T, arch string) {
	a := testenv.ArchOf(t, arch)
	start := time.Now()
	dir := BaseBundleArch(t, arch)
	t.Logf("first call %s", time.Since(start))
	start = time.Now()
	if again := BaseBundleArch(t, arch); again != dir {
		t.Fatalf("second call returned %s, want %s", again, dir)
	}
	t.Logf("second call %s", time.Since(start))
	if arch == testenv.AMD64 && BaseBundle(t) != dir {
		t.Fatal("BaseBundle is not the amd64 bundle")
	}
	if got := BundleArch(t, dir); got != arch {
		t.Fatalf("BundleArch = %s", got)
	}

	m, err := gondolin.ReadManifest(filepath.Join(dir, BundleManifest))
	if err != nil {
		t.Fatal(err)
	}
	if m.Version != 1 || m.Config.Arch != a.Gondolin || m.Assets != gondolin.DefaultAssets() {
		t.Fatalf("manifest %+v", m)
	}
	for _, asset := range []struct{ name, sum string }{
		{m.Assets.Kernel, m.Checksums.Kernel}, {m.Assets.Initramfs, m.Checksums.Initramfs}, {m.Assets.Rootfs, m.Checksums.Rootfs},
	} {
		sum, err := fileSHA256(filepath.Join(dir, asset.name))
		if err != nil {
			t.Fatal(err)
		}
		if asset.sum != sum {
			t.Errorf("checksum of %s: manifest %s, file %s", asset.name, asset.sum, sum)
		}
	}
	if want := gondolin.BuildID(m.Checksums, a.Gondolin); m.BuildID != want {
		t.Errorf("buildId %s, want %s", m.BuildID, want)
	}
	// The kernel is one the target boots: a bzImage or an arm64 Image.
	kernel, err := os.ReadFile(filepath.Join(dir, BundleKernel))
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case arch == testenv.AMD64 && (len(kernel) < 0x206 || string(kernel[0x202:0x206]) != "HdrS"):
		t.Error("vmlinuz-virt is not an x86 bzImage")
	case arch == testenv.ARM64 && (len(kernel) < 0x40 || string(kernel[0x38:0x3c]) != "ARM\x64"):
		t.Error("vmlinuz-virt is not an arm64 Image")
	}
	if !isStatic(Sandboxd(t, arch), a.Machine) {
		t.Errorf("Sandboxd(%s) is not a static %s binary", arch, a.Machine)
	}
	if got := testenv.ArchOfELF(BaseBusybox(t, dir)); got != arch {
		t.Errorf("the rootfs's /bin/busybox is for %q", got)
	}
	tools := require.Tools(t, "e2fsprogs", "e2fsck", "debugfs")
	if out, err := exec.Command(tools["e2fsck"], "-fn", filepath.Join(dir, BundleRootfs)).CombinedOutput(); err != nil {
		t.Errorf("e2fsck: %v\n%s", err, out)
	}
	out, err := exec.Command(tools["debugfs"], "-R", "stat /usr/bin/sandboxd", filepath.Join(dir, BundleRootfs)).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Mode:  0755") {
		t.Errorf("debugfs stat /usr/bin/sandboxd: %v\n%s", err, out)
	}
}

// TestBoot boots the base bundle as is (its own rootfs.ext4) with
// the real Gondolin host: the x86_64 one in every rootfs mode, the aarch64
// one (emulated, so slower) in the default mode.
func TestBoot(t *testing.T) {
	require.Integration(t, "boots QEMU")
	for _, tc := range []struct{ arch, mode string }{
		{testenv.AMD64, "cow"}, {testenv.AMD64, "readonly"}, {testenv.AMD64, "memory"}, {testenv.ARM64, "cow"},
	} {
		t.Run(tc.arch+"/"+tc.mode, func(t *testing.T) {
			mode := tc.mode
			dir := BaseBundleArch(t, tc.arch)
			res := Boot(t, dir, BootOptions{RootfsMode: mode},
				[]string{"/bin/echo", "hello"},
				[]string{"id", "-u"},
				[]string{"/bin/cat", "/proc/cmdline"},
				[]string{"/bin/sh", "-c", "echo err >&2; exit 7"},
				[]string{"/bin/sh", "-c", "touch /probe && echo writable || echo readonly"},
				[]string{"uname", "-m"},
				// What the inits left on the agent's (PID 1's) fds 0-2.
				[]string{"/bin/sh", "-c", "for fd in 0 1 2; do readlink /proc/1/fd/$fd; done"},
			)
			if r := res[0]; r.ExitCode != 0 || r.Stdout != "hello\n" {
				t.Errorf("echo: %+v", r)
			}
			if r := res[1]; r.ExitCode != 0 || r.Stdout != "0\n" {
				t.Errorf("id -u: %+v", r)
			}
			if r := res[2]; r.ExitCode != 0 || !strings.Contains(r.Stdout, "console=ttyS0") {
				t.Errorf("cmdline: %+v", r)
			}
			if r := res[3]; r.ExitCode != 7 || r.Stderr != "err\n" {
				t.Errorf("exit/stderr: %+v", r)
			}
			want := "writable\n"
			if mode == "readonly" {
				want = "readonly\n"
			}
			if r := res[4]; r.Stdout != want {
				t.Errorf("rootfs write probe: %+v, want %q", r, want)
			}
			if r := res[5]; r.Stdout != testenv.ArchOf(t, tc.arch).Gondolin+"\n" {
				t.Errorf("uname -m: %+v", r)
			}
			// Gondolin gives the x86_64 guest console=ttyS0, which exists,
			// and the aarch64 guest the same, which does not exist there:
			// its init found fds 0-2 closed and reopened them. (The nodes
			// were the initramfs's, deleted by switch_root.)
			wantFds := "/dev/console\n/dev/console\n/dev/console\n"
			if tc.arch == testenv.ARM64 {
				wantFds = "/dev/null\n/dev/kmsg\n/dev/kmsg\n"
			}
			if r := res[6]; strings.ReplaceAll(r.Stdout, " (deleted)", "") != wantFds {
				t.Errorf("PID 1's fds 0-2: %+v, want %q", r, wantFds)
			}
		})
	}
}

// TestExecFeatures checks env, cwd and stdin through the real host.
func TestExecFeatures(t *testing.T) {
	require.Integration(t, "boots QEMU")
	dir := BaseBundle(t)
	in := "line1\nline2\n"
	rep, err := Run(t, dir, BootOptions{RootfsMode: "memory"},
		ExecSpec{Argv: []string{"/bin/sh", "-c", "echo $FOO; pwd; echo $HOME"}, Env: []string{"FOO=bar"}, Cwd: "/etc"},
		ExecSpec{Argv: []string{"wc", "-l"}, Stdin: &in}, // PATH lookup: /usr/bin/wc
		ExecSpec{Argv: []string{"/no/such/binary"}},
		// sandboxd is PID 1: orphans must be reaped, and a background
		// child holding stdout must not block the exec.
		ExecSpec{Argv: []string{"/bin/sh", "-c", "(sleep 0.3 &); sleep 5 & echo bg"}},
		ExecSpec{Argv: []string{"/bin/sh", "-c", "sleep 1; cat /proc/1/comm; cat /proc/[0-9]*/stat | awk '$3 == \"Z\"' | wc -l"}},
	)
	if err != nil {
		t.Fatalf("%v\n%s", err, testenv.Tail(rep.Log, 8000))
	}
	if got := rep.Results[0].Stdout; got != "bar\n/etc\n/root\n" {
		t.Errorf("env/cwd: %q", got)
	}
	if got := strings.TrimSpace(rep.Results[1].Stdout); got != "2" {
		t.Errorf("stdin: %+v", rep.Results[1])
	}
	if r := rep.Results[2]; r.ExitCode != 127 {
		t.Errorf("missing binary: %+v", r)
	}
	if r := rep.Results[3]; r.Stdout != "bg\n" {
		t.Errorf("background child: %+v", r)
	}
	if r := rep.Results[4]; r.Stdout != "sandboxd\n0\n" {
		t.Errorf("PID 1 / zombies: %+v", r)
	}
	t.Logf("boot %s exec %s total %s", rep.BootTime, rep.ExecTime, rep.Total)
}

// TestAssets boots the base rootfs through Assets (the
// path end-to-end tests of converted images take).
func TestAssets(t *testing.T) {
	require.Integration(t, "boots QEMU")
	base := BaseBundle(t)
	dir := Assets(t, base, filepath.Join(base, BundleRootfs))
	res := Boot(t, dir, BootOptions{}, []string{"/bin/cat", "/etc/os-release"})
	if !strings.Contains(res[0].Stdout, "docker2vm-testenv") {
		t.Fatalf("got %+v", res[0])
	}
}

// TestBootFailure checks that a rootfs that cannot boot (no /init)
// fails with the guest console in the log: Gondolin's initramfs cannot
// switch to it and the kernel panics, which ends the run.
func TestBootFailure(t *testing.T) {
	require.Integration(t, "boots QEMU")
	base := BaseBundle(t)
	mke2fs := require.Tool(t, "mke2fs")
	empty := filepath.Join(t.TempDir(), "empty.ext4")
	if out, err := exec.Command(mke2fs, "-q", "-F", "-t", "ext4", empty, "8M").CombinedOutput(); err != nil {
		t.Fatalf("mke2fs: %v\n%s", err, out)
	}
	start := time.Now()
	rep, err := Run(t, Assets(t, base, empty), BootOptions{Timeout: 30 * time.Second, StartTimeout: 25 * time.Second}, ExecSpec{Argv: []string{"/bin/true"}})
	if err == nil {
		t.Fatalf("boot without /init succeeded: %+v", rep.Results)
	}
	// Gondolin logs the console a line at a time, each line prefixed;
	// joined again, a line the kernel cut in two reads as one.
	console := strings.ReplaceAll(rep.Log, "\n[qemu] stdout: ", "")
	// switch_root's line reaches the console in pieces between the lines
	// of the kernel's panic, which it writes at the same time (seen:
	// "switch_r|<panic line>|oot: can", and "can|<panic>|'t execute '/in|
	// <two trace lines, one cut by an "i">|t'"), so it is looked for with
	// gaps as long as the trace. The kernel says "Kernel panic" twice,
	// at the start and the end of the trace.
	if !interleaved(console, "switch_root: can't execute '/init'", 4096) || !strings.Contains(console, "Kernel panic") {
		t.Errorf("console lacks the initramfs diagnostic; log tail:\n%s", testenv.Tail(rep.Log, 3000))
	}
	// The harness ends the run at the panic rather than at the timeout.
	if !strings.Contains(err.Error(), "the guest kernel panicked: ") || !strings.Contains(err.Error(), "Kernel panic") {
		t.Errorf("error %q does not name the kernel's panic", err)
	}
	t.Logf("failed after %s: %v", time.Since(start).Round(time.Millisecond), err)
}

// TestImageStore verifies the base with Gondolin's own CLI, imports
// it into a private image store and boots it by ref.
func TestImageStore(t *testing.T) {
	require.Integration(t, "boots QEMU")
	base := BaseBundle(t)
	Verify(t, base)
	store := "GONDOLIN_IMAGE_STORE=" + t.TempDir()
	out, err := CLI(t, []string{store}, "image", "import", base, "--tag", "docker2vm-test:latest")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	res := Boot(t, "docker2vm-test:latest", BootOptions{HostEnv: []string{store}}, []string{"/bin/echo", "from-store"})
	if res[0].Stdout != "from-store\n" {
		t.Fatalf("got %+v", res[0])
	}
}

// TestGuestArch checks how a boot finds its guest's architecture without
// booting anything.
func TestGuestArch(t *testing.T) {
	// An asset directory: its manifest. An image ref: the only
	// architecture the store has for it, else the host's.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, BundleManifest), []byte(`{"version":1,"config":{"arch":"aarch64"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := guestArch(dir, nil); got != testenv.ARM64 {
		t.Errorf("asset directory: %q", got)
	}
	store := t.TempDir()
	for _, ref := range []string{"one/latest/aarch64", "two/v1/aarch64", "two/v1/x86_64"} {
		p := filepath.Join(store, "refs", ref)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("../../../objects/x", p); err != nil {
			t.Fatal(err)
		}
	}
	env := []string{"GONDOLIN_IMAGE_STORE=" + store}
	for ref, want := range map[string]string{"one": testenv.ARM64, "one:latest": testenv.ARM64, "two:v1": runtime.GOARCH, "three:x": runtime.GOARCH} {
		if got := guestArch(ref, env); got != want {
			t.Errorf("guestArch(%q) = %q, want %q", ref, got, want)
		}
	}
}

// TestHarnessNode: the Node.js the harness runs Gondolin with satisfies
// the engines field of the installed Gondolin package, as its users' must.
func TestHarnessNode(t *testing.T) {
	require.Integration(t, "installs the Gondolin host from npm")
	tools := require.Tools(t, "nodejs npm", "node", "npm")
	dir := ensureHarness(t, tools)
	raw, err := os.ReadFile(filepath.Join(dir, "node_modules", "@earendil-works", "gondolin", "package.json"))
	if err != nil {
		t.Fatal(err)
	}
	var pkg struct {
		Engines struct{ Node string } `json:"engines"`
	}
	if err := json.Unmarshal(raw, &pkg); err != nil {
		t.Fatal(err)
	}
	min, ok := strings.CutPrefix(pkg.Engines.Node, ">=")
	if !ok {
		t.Fatalf("Gondolin's engines.node %q is not a lower bound", pkg.Engines.Node)
	}
	out, err := exec.Command(HarnessNode(dir), "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	got := strings.TrimPrefix(strings.TrimSpace(string(out)), "v")
	if compareVersions(got, min) < 0 {
		t.Fatalf("the harness's Node.js is %s; Gondolin needs %s", got, pkg.Engines.Node)
	}
	t.Logf("Node.js %s for Gondolin's %s", got, pkg.Engines.Node)
}

// compareVersions compares dotted decimal versions.
func compareVersions(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < max(len(as), len(bs)); i++ {
		var x, y int
		if i < len(as) {
			x, _ = strconv.Atoi(as[i])
		}
		if i < len(bs) {
			y, _ = strconv.Atoi(bs[i])
		}
		if x != y {
			return x - y
		}
	}
	return 0
}

// TestStalledBeforeInit: only a kernel that logged its start and never
// ran /init counts as an emulator stall worth a second boot.
func TestStalledBeforeInit(t *testing.T) {
	for _, tc := range []struct {
		log  string
		want bool
	}{
		{"[qemu] stdout: [    0.000000] Linux version 6.1.0\n[qemu] stdout: [    0.977433] clocksource: Switched to clocksource hpet\n", true},
		{"[qemu] stdout: [    0.000000] Linux version 6.1.0\n[qemu] stdout: [    2.146283] Run /init as init process\nsandboxd: failed\n", false},
		{"harness: Error: vm startup timed out\n", false}, // no console: nothing tells
		{"", false},
	} {
		if got := stalledBeforeInit(tc.log); got != tc.want {
			t.Errorf("%q: %v, want %v", tc.log, got, tc.want)
		}
	}
}

// TestInitDiedBeforeAgent: only a panic of Gondolin's rootfs init before
// it starts sandboxd counts (not the initramfs's, not a later one).
func TestInitDiedBeforeAgent(t *testing.T) {
	died := "[qemu] stdout: [    5.081319] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100\n"
	for _, tc := range []struct {
		log  string
		want bool
	}{
		{"[qemu] stdout: [init] loaded virtio_rng\n[qemu] stdout: [init] starting rngd\n" + died, true},
		{"[qemu] stdout: [init] starting sandboxd\n" + died, false},
		{"[qemu] stdout: switch_root: can't execute '/init': No such file or directory\n" + died, false},
		{"[qemu] stdout: [init] starting rngd\nharness: timeout\n", false},
	} {
		if got := initDiedBeforeAgent(tc.log); got != tc.want {
			t.Errorf("%q: %v, want %v", tc.log, got, tc.want)
		}
	}
}

// interleaved reports whether the bytes of want appear in s in order
// within a span of at most len(want)+extra bytes: a line another writer
// cut into, but not letters picked from all over the log.
func interleaved(s, want string, extra int) bool {
	for start := 0; start < len(s); start++ {
		if s[start] != want[0] {
			continue
		}
		rest, end := want, min(len(s), start+len(want)+extra)
		for i := start; i < end && rest != ""; i++ {
			if s[i] == rest[0] {
				rest = rest[1:]
			}
		}
		if rest == "" {
			return true
		}
	}
	return false
}

func TestInterleaved(t *testing.T) {
	const want = "switch_root: can't execute '/init'"
	panicLine := "[    2.478127] Kernel panic - not syncing: Attempted to kill init! exitcode=0x0"
	for _, tc := range []struct {
		s    string
		want bool
	}{
		{want, true},
		{"x " + want + " y", true},
		{"switch_r" + panicLine + "oot: can0000100\n't execute '/init': No such file", true},
		{"switch_root: cannot execute /init", false},
		{"switch_root: can" + panicLine + "00000100't execute '/in[    2.785938] CPU: 0 PID: 1 Comm: switch_root\n" +
			"[    2.786340] Hardware namei: QEMU Standard PC (Q35 + ICH9, 2009)\nt': No such file or directory", true},
		{"switch_r" + strings.Repeat(".", 5000) + "oot: can't execute '/init'", false},
		{"", false},
	} {
		if got := interleaved(tc.s, want, 4096); got != tc.want {
			t.Errorf("interleaved(%q) = %v, want %v", tc.s, got, tc.want)
		}
	}
}
