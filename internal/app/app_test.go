package app

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/docker2vm/docker2vm/convert"
	"github.com/docker2vm/docker2vm/hint"
	"github.com/docker2vm/docker2vm/internal/cli"
	"github.com/docker2vm/docker2vm/internal/testenv/imagetest"
)

func run(t *testing.T, cmd *cli.Command, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := cmd.Exec(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestOCI2GondolinFlagRules(t *testing.T) {
	tar := filepath.Join(t.TempDir(), "img.tar")
	if err := os.WriteFile(tar, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		args   []string
		stderr string
	}{
		{"no source", []string{"--out", "o"}, "Error: Exactly one input source is required.\nHow to fix:\n  - Pass one of --image REF, --oci-layout PATH or --oci-tar PATH.\n"},
		{"two sources", []string{"--image", "a", "--oci-tar", tar, "--out", "o"}, "Error: Input source flags are mutually exclusive.\nHow to fix:\n  - Pass only one of --image, --oci-tar.\n"},
		{"three sources", []string{"--image", "a", "--oci-layout", "l", "--oci-tar", tar, "--out", "o"}, "Error: Input source flags are mutually exclusive."},
		{"missing out", []string{"--image", "busybox"}, "Error: Missing required flag --out."},
		{"bad mode", []string{"--image", "busybox", "--out", "o", "--mode", "disk"}, `Error: Invalid --mode "disk".`},
		{"bad platform", []string{"--image", "busybox", "--out", "o", "--platform", "windows/amd64"}, "windows/amd64"},
		{"bad arch", []string{"--image", "busybox", "--out", "o", "--platform", "linux/riscv64"}, "linux/riscv64"},
		{"unknown flag", []string{"--image", "busybox", "--out", "o", "--fast"}, "Error: Unknown flag --fast."},
		{"positional", []string{"busybox", "--out", "o"}, `Error: Unexpected argument "busybox".`},
		{"duplicate", []string{"--image", "a", "--image", "b", "--out", "o"}, "Error: Flag --image was given more than once."},
		{"missing tar", []string{"--oci-tar", "/nonexistent/x.tar", "--out", "o"}, "Error: --oci-tar /nonexistent/x.tar cannot be read: no such file or directory"},
		{"missing layout", []string{"--oci-layout", "/nonexistent/dir:app", "--out", "o"}, "Error: --oci-layout /nonexistent/dir:app cannot be read: no such file or directory"},
		{"bad size", []string{"--image", "a", "--out", "o", "--size", "big"}, `Error: Invalid size for --size: "big".`},
		{"long label", []string{"--image", "a", "--out", "o", "--fs-label", "a-label-longer-than-16"}, "is longer than 16 bytes"},
		{"empty image", []string{"--image", "", "--out", "o"}, "Error: --image needs a reference."},
		{"platform twice", []string{"--image", "a", "--out", "o", "--platform", "arm64,linux/arm64/v8"}, "platform linux/arm64 is given twice"},
		{"publish rootfs", []string{"--image", "a", "--out", "o", "--publish", "r", "--tag", "a:1"}, "--publish needs --mode assets"},
		{"publish untagged", []string{"--image", "a", "--out", "o", "--publish", "r", "--mode", "assets"}, "--publish needs --tag NAME:TAG"},
		{"publish-url alone", []string{"--image", "a", "--out", "o", "--publish-url", "https://x/", "--mode", "assets"}, "--publish-url needs --publish DIR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := run(t, OCI2Gondolin(), tt.args...)
			if code != 1 {
				t.Errorf("exit code %d, want 1", code)
			}
			if stdout != "" {
				t.Errorf("stdout must stay empty on failure, got %q", stdout)
			}
			if !strings.Contains(stderr, tt.stderr) {
				t.Errorf("stderr = %q, want it to contain %q", stderr, tt.stderr)
			}
		})
	}
}

func TestModeCaseInsensitive(t *testing.T) {
	for _, m := range []string{"ROOTFS", "Assets", "rootfs"} {
		var c commonFlags
		if err := cli.Parse([]string{"--mode", m}, c.flags()); err != nil {
			t.Fatal(err)
		}
		if _, err := parseMode(c.mode); err != nil {
			t.Errorf("mode %q: %v", m, err)
		}
	}
}

func TestHelp(t *testing.T) {
	for _, cmd := range []*cli.Command{OCI2Gondolin(), Dockerfile2Gondolin()} {
		code, stdout, stderr := run(t, cmd, "--help")
		if code != 0 || stderr != "" {
			t.Errorf("%s --help: code %d stderr %q", cmd.Name, code, stderr)
		}
		for _, f := range cmd.Flags {
			if !strings.Contains(stdout, "--"+f.Name) {
				t.Errorf("%s --help does not document --%s", cmd.Name, f.Name)
			}
		}
	}
}

func TestDockerfile2GondolinFlagRules(t *testing.T) {
	dir := t.TempDir()
	df := filepath.Join(dir, "Dockerfile")
	if err := os.WriteFile(df, []byte("FROM scratch\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	empty := t.TempDir()
	missing := filepath.Join(empty, "missing")
	tests := []struct {
		name   string
		args   []string
		stderr string
	}{
		{"missing out", []string{"--file", df, "--context", dir}, "Error: Missing required flag --out."},
		{"no Dockerfile in the context", []string{"--context", empty, "--out", "o", "--dry-run"}, "Error: Dockerfile " + filepath.Join(empty, "Dockerfile") + " not found."},
		{"empty --file", []string{"--file", "", "--context", dir, "--out", "o"}, "Error: --file needs a path."},
		{"bad builder", []string{"--file", df, "--context", dir, "--out", "o", "--builder", "kaniko", "--dry-run"}, `Unknown builder "kaniko"`},
		{"build arg without a name", []string{"--context", dir, "--out", "o", "--build-arg", "=x", "--dry-run"}, `Invalid --build-arg "=x": the name is empty.`},
		{"build context without =", []string{"--context", dir, "--out", "o", "--build-context", "vendor", "--dry-run"}, `Invalid --build-context "vendor".`},
		{"build context missing", []string{"--context", dir, "--out", "o", "--build-context", "vendor=" + missing}, "--build-context vendor=" + missing + ": " + missing + " does not exist."},
		{"secret missing", []string{"--context", dir, "--out", "o", "--secret", "id=npmrc,src=" + missing}, "--secret id=npmrc,src=" + missing + ": the file " + missing + " does not exist."},
		{"ssh key missing", []string{"--context", dir, "--out", "o", "--ssh", "default=" + missing}, "--ssh default=" + missing + ": " + missing + " does not exist."},
		{"bad progress", []string{"--context", dir, "--out", "o", "--progress", "fancy", "--dry-run"}, `Unknown --progress "fancy".`},
		{"tty progress off a terminal", []string{"--context", dir, "--out", "o", "--progress", "tty"}, "--progress tty needs a terminal"},
		{"bad network", []string{"--context", dir, "--out", "o", "--network", "bridge"}, `Unknown --network "bridge".`},
		{"dockerfile missing", []string{"--file", df + "x", "--context", dir, "--out", "o", "--dry-run"}, "not found"},
		{"addr with buildx", []string{"--context", dir, "--out", "o", "--buildkit-addr", "tcp://127.0.0.1:1"}, "--buildkit-addr applies to --builder buildctl only."},
		{"long fs label", []string{"--context", dir, "--out", "o", "--fs-label", "a-label-longer-than-16", "--dry-run"}, "is longer than 16 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Nothing runs: a docker or buildctl called anyway would fail
			// differently.
			t.Setenv("PATH", t.TempDir())
			t.Setenv("TMPDIR", t.TempDir())
			code, stdout, stderr := run(t, Dockerfile2Gondolin(), tt.args...)
			if code != 1 || stdout != "" || !strings.Contains(stderr, tt.stderr) {
				t.Errorf("code %d stdout %q stderr %q; want 1, empty, %q", code, stdout, stderr, tt.stderr)
			}
			if left, _ := filepath.Glob(filepath.Join(os.TempDir(), "*")); len(left) > 0 {
				t.Errorf("bad input made %v", left)
			}
		})
	}
}

// TestDockerfile2GondolinChecksBeforeBuilding: what the conversion would
// refuse is refused before the builder runs, and a dry run refuses it
// too. The builders on PATH record any call.
func TestDockerfile2GondolinChecksBeforeBuilding(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	foreign := filepath.Join(t.TempDir(), "out")
	os.MkdirAll(foreign, 0o755)
	os.WriteFile(filepath.Join(foreign, "notes.txt"), []byte("mine"), 0o644)
	bogusBase := t.TempDir()
	os.WriteFile(filepath.Join(bogusBase, "rootfs.ext4"), []byte("x"), 0o644)
	out := filepath.Join(t.TempDir(), "out")
	tests := []struct {
		name   string
		args   []string
		stderr string
	}{
		{"--tag without --mode assets", []string{"--out", out, "--tag", "app:1"}, "--tag needs --mode assets"},
		{"--plain with --mode assets", []string{"--out", out, "--mode", "assets", "--plain"}, "--plain cannot be used with --mode assets"},
		{"--publish without --tag", []string{"--out", out, "--mode", "assets", "--publish", t.TempDir()}, "--publish needs --tag NAME:TAG"},
		{"--out of other files", []string{"--out", foreign}, "does not hold a docker2vm output"},
		{"missing --base", []string{"--out", out, "--base", filepath.Join(dir, "nope"), "--platform", "linux/amd64"}, filepath.Join(dir, "nope")},
		{"bogus --base", []string{"--out", out, "--base", bogusBase, "--platform", "linux/amd64"}, "missing guest assets"},
		{"platforms twice", []string{"--out", out, "--platform", "linux/amd64,amd64"}, "given twice"},
	}
	for _, tt := range tests {
		for _, dry := range []bool{false, true} {
			name := tt.name
			if dry {
				name += "/dry-run"
			}
			t.Run(name, func(t *testing.T) {
				bin := t.TempDir()
				called := filepath.Join(t.TempDir(), "called")
				for _, b := range []string{"docker", "buildctl", "buildkitd"} {
					script := "#!/bin/sh\necho \"$0 $*\" >> " + called + "\nexit 1\n"
					if err := os.WriteFile(filepath.Join(bin, b), []byte(script), 0o755); err != nil {
						t.Fatal(err)
					}
				}
				t.Setenv("PATH", bin)
				t.Setenv("GONDOLIN_GUEST_DIR", "")
				args := append([]string{"--context", dir}, tt.args...)
				if dry {
					args = append(args, "--dry-run")
				}
				code, stdout, stderr := run(t, Dockerfile2Gondolin(), args...)
				if code != 1 || stdout != "" || !strings.Contains(stderr, tt.stderr) {
					t.Errorf("code %d stdout %q stderr %q; want 1, empty, %q", code, stdout, stderr, tt.stderr)
				}
				if b, err := os.ReadFile(called); err == nil {
					t.Errorf("the builder ran: %s", b)
				}
				if _, err := os.Stat(out); !os.IsNotExist(err) {
					t.Errorf("%s was made", out)
				}
			})
		}
	}
	if b, _ := os.ReadFile(filepath.Join(foreign, "notes.txt")); string(b) != "mine" {
		t.Error("the user's file changed")
	}
}

// TestDockerfile2GondolinDockerHabits: docker build's spellings mean the
// same here (a positional context, -f, -o/--output, -t), and those that
// do not get a hint.
func TestDockerfile2GondolinDockerHabits(t *testing.T) {
	offerBase(t)
	dir := t.TempDir()
	df := filepath.Join(t.TempDir(), "Dockerfile.app")
	os.WriteFile(df, []byte("FROM scratch\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\n"), 0o644)
	out := filepath.Join(t.TempDir(), "out")
	t.Chdir(filepath.Dir(dir))
	for _, args := range [][]string{
		{"-f", df, "-o", out, filepath.Base(dir)},
		{"--file=" + df, "--output", out, dir},
		{"-f" + df, "-o=" + out, "--context", dir},
	} {
		plan, _ := dryRun(t, args...)
		if plan.Source.Context != dir || plan.Source.Path != df || plan.OutDir != out {
			t.Errorf("%q: context %q, Dockerfile %q, out %q", args, plan.Source.Context, plan.Source.Path, plan.OutDir)
		}
	}
	plan, _ := dryRun(t, "-o", out, "--mode", "assets", "-t", "app:1", dir)
	if plan.Source.Context != dir || plan.Source.Path != filepath.Join(dir, "Dockerfile") {
		t.Errorf("context %q, Dockerfile %q", plan.Source.Context, plan.Source.Path)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-o", out, "--context", dir, dir}, "The build context is given twice"},
		{[]string{"-o", out, dir, dir}, `Unexpected argument "` + dir + `".`},
		{[]string{"-o", "type=local,dest=x", dir}, "is docker build's --output syntax"},
		{[]string{"-o", out, "-"}, "only a local directory is supported"},
		{[]string{"-o", out, "https://github.com/x/y.git"}, "only a local directory is supported"},
		{[]string{"-o", out, "-q", dir}, "Unknown flag -q.\nHow to fix:\n  - Use --progress quiet."},
		{[]string{"-o", out, "-t", "app:1", dir}, "--tag needs --mode assets"},
	} {
		code, stdout, stderr := run(t, Dockerfile2Gondolin(), append(tc.args, "--dry-run")...)
		if code != 1 || stdout != "" || !strings.Contains(stderr, tc.want) {
			t.Errorf("%q: code %d stdout %q stderr %q; want %q", tc.args, code, stdout, stderr, tc.want)
		}
	}
	code, stdout, _ := run(t, Dockerfile2Gondolin(), "--help")
	if code != 0 || !strings.Contains(stdout, "-f, --file PATH") || !strings.Contains(stdout, "-o, --out PATH") {
		t.Errorf("--help does not show the short flags: %s", stdout)
	}
}

// dryRun runs dockerfile2gondolin --dry-run and returns its plan.
func dryRun(t *testing.T, args ...string) (DryRunPlan, string) {
	t.Helper()
	code, stdout, stderr := run(t, Dockerfile2Gondolin(), append(args, "--dry-run")...)
	if code != 0 {
		t.Fatalf("code %d stderr %q", code, stderr)
	}
	var plan DryRunPlan
	if err := json.Unmarshal([]byte(stdout), &plan); err != nil {
		t.Fatalf("stdout is not one JSON document: %v\n%s", err, stdout)
	}
	return plan, stderr
}

func TestDockerfile2GondolinDryRun(t *testing.T) {
	offerBase(t)
	dir := t.TempDir()
	df := filepath.Join(dir, "Dockerfile")
	if err := os.WriteFile(df, []byte("FROM scratch\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	plan, _ := dryRun(t, "--file", df, "--context", dir, "--out", out,
		"--builder", "buildctl", "--buildkit-addr", "tcp://127.0.0.1:1234", "--platform", "linux/arm64",
		"--build-arg", "A=1", "--target", "t", "--label", "app=x", "--no-cache", "--pull")
	if !plan.DryRun || plan.Platform != "linux/arm64" || plan.Builder != "buildctl" || plan.BuildxBuilder != "" || plan.Progress != "plain" || len(plan.Build) != 1 {
		t.Fatalf("plan = %+v", plan)
	}
	argv := strings.Join(plan.Build[0].Argv, " ")
	for _, want := range []string{"buildctl --addr tcp://127.0.0.1:1234 build --progress plain", "--opt platform=linux/arm64", "--opt build-arg:A=1",
		"--opt target=t", "--opt label:app=x", "--no-cache", "--opt image-resolve-mode=pull"} {
		if !strings.Contains(argv, want) {
			t.Errorf("build command %q lacks %q", argv, want)
		}
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("dry run created %s", out)
	}
}

// TestSourcePathsAbsolute: a relative --oci-layout is recorded as an
// absolute path, the REF suffix kept.
func TestSourcePathsAbsolute(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "lay"), 0o755)
	os.WriteFile(filepath.Join(dir, "lay", "index.json"), []byte("{}"), 0o644)
	t.Chdir(dir)
	if got := absPathRef("lay:app-v2"); got != filepath.Join(dir, "lay")+":app-v2" {
		t.Errorf("absPathRef = %q", got)
	}
	if got := absPathRef("lay"); got != filepath.Join(dir, "lay") {
		t.Errorf("absPathRef = %q", got)
	}
}

func TestHowToBoot(t *testing.T) {
	for _, tc := range []struct {
		res  convert.Result
		want string
	}{
		{convert.Result{Mode: convert.ModeAssets, OutDir: "/o/guest"}, `gondolin bash --image /o/guest (SDK: VM.create({ sandbox: { imagePath: "/o/guest" } })`},
		{convert.Result{Mode: convert.ModeAssets, OutDir: "/o/my guest"}, `gondolin bash --image '/o/my guest'`},
		{convert.Result{Mode: convert.ModeAssets, OutDir: "/o/g", Imported: &convert.Imported{Tag: "app:1"}}, "gondolin bash --image app:1"},
		{convert.Result{Mode: convert.ModeRootfs, RootfsPath: "/o/rootfs.ext4", Platform: "linux/arm64"}, `rootDiskPath: "/o/rootfs.ext4", rootDiskFormat: "raw"`},
	} {
		if got := howToBoot(&tc.res); !strings.Contains(got, tc.want) {
			t.Errorf("howToBoot(%+v) = %q, want %q", tc.res, got, tc.want)
		}
	}
}

// TestHowToBootPlatforms: several platforms tagged alike boot one way,
// said once; otherwise each platform's line is named.
func TestHowToBootPlatforms(t *testing.T) {
	tagged := []*convert.Result{
		{Mode: convert.ModeAssets, OutDir: "/o/linux_amd64", Platform: "linux/amd64", Imported: &convert.Imported{Tag: "app:1"}},
		{Mode: convert.ModeAssets, OutDir: "/o/linux_arm64", Platform: "linux/arm64", Imported: &convert.Imported{Tag: "app:1"}},
	}
	var b strings.Builder
	sayHowToBootAll(convert.Options{Progress: &b}, tagged)
	if strings.Count(b.String(), "\n") != 1 || !strings.HasPrefix(b.String(), "Boot it: gondolin bash --image app:1") {
		t.Errorf("tagged: %q", b.String())
	}
	tagged[0].Imported, tagged[1].Imported = nil, nil
	b.Reset()
	sayHowToBootAll(convert.Options{Progress: &b}, tagged)
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "[linux/amd64] Boot it: gondolin bash --image /o/linux_amd64") || !strings.HasPrefix(lines[1], "[linux/arm64] ") {
		t.Errorf("untagged: %q", lines)
	}
}

// TestDockerfile2GondolinDefaults: as with docker build, the context is
// the current directory and the Dockerfile CONTEXT/Dockerfile; docker
// buildx builds with the persistent builder docker2vm, created if
// missing and never removed.
func TestDockerfile2GondolinDefaults(t *testing.T) {
	offerBase(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	t.Setenv("FROM_ENV", "v")
	plan, _ := dryRun(t, "--out", "o", "--quiet", "--build-arg", "FROM_ENV", "--build-arg", "UNSET_HERE_"+t.Name())
	if plan.Source.Path != filepath.Join(dir, "Dockerfile") || plan.Source.Context != dir {
		t.Errorf("source = %+v, want %s/Dockerfile in %s", plan.Source, dir, dir)
	}
	if plan.Builder != "docker-buildx" || plan.BuildxBuilder != "docker2vm" || plan.Progress != "quiet" {
		t.Errorf("plan = %+v", plan)
	}
	var roles []string
	for _, s := range plan.Build {
		roles = append(roles, s.Role)
		if slices.Contains(s.Argv, "rm") {
			t.Errorf("a build step removes a builder: %q", s.Argv)
		}
	}
	if got := strings.Join(roles, " "); got != "check find-builder create-builder build" {
		t.Fatalf("roles %q", got)
	}
	if got := plan.Build[2]; got.When == "" || strings.Join(got.Argv, " ") != "docker buildx create --name docker2vm --driver docker-container" {
		t.Errorf("create step %+v", got)
	}
	build := strings.Join(plan.Build[3].Argv, " ")
	if !strings.HasPrefix(build, "docker buildx build --builder docker2vm --file "+filepath.Join(dir, "Dockerfile")) ||
		!strings.Contains(build, "--progress plain") || !strings.Contains(build, "--build-arg FROM_ENV ") ||
		strings.Contains(build, "UNSET_HERE") || !strings.HasSuffix(build, " "+dir) {
		t.Errorf("build %q", build)
	}
}

// TestLabelFlags: dockerfile2gondolin's --label is an image label, as in
// docker build; the filesystem label is --fs-label in both commands, and
// oci2gondolin's --label still sets it, with a deprecation note.
func TestLabelFlags(t *testing.T) {
	offerBase(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	plan, stderr := dryRun(t, "--context", dir, "--out", "o", "--label", "org.example=1", "--label", "root", "--fs-label", "myroot")
	build := strings.Join(plan.Build[len(plan.Build)-1].Argv, " ")
	if !strings.Contains(build, "--label org.example=1 --label root ") {
		t.Errorf("image labels not passed to the build: %q", build)
	}
	if !strings.Contains(stderr, `note: --label root sets an image label root=""`) || strings.Contains(stderr, "deprecated") {
		t.Errorf("stderr %q", stderr)
	}

	tests := []struct {
		args    []string
		label   string
		warning bool
		err     string
	}{
		{[]string{"--fs-label", "myroot"}, "myroot", false, ""},
		{[]string{"--label", "old"}, "old", true, ""},
		{[]string{"--label", "old", "--fs-label", "new"}, "", true, "--label and --fs-label are both given"},
		{[]string{"--fs-label", "a-label-longer-than-16"}, "", false, "pass a shorter --fs-label"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			o := parseOCIFlags(t, append([]string{"--out", "o"}, tc.args...)...)
			var errb strings.Builder
			opts, err := o.baseOptions("oci2gondolin", &errb)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error()+strings.Join(hint.Of(err), " "), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if opts.FS.Label != tc.label {
				t.Errorf("label %q, want %q", opts.FS.Label, tc.label)
			}
			if got := strings.Contains(errb.String(), "--label is deprecated: use --fs-label"); got != tc.warning {
				t.Errorf("deprecation note %v, want %v: %q", got, tc.warning, errb.String())
			}
		})
	}
}

func TestCacheMaxInput(t *testing.T) {
	for _, tc := range []struct {
		env  string
		args []string
		want string
	}{
		{"", []string{"--cache-max", "lots"}, `Error: Invalid size for --cache-max: "lots".`},
		{"", []string{"--cache-max", "0"}, "would empty the cache"},
		{"zz", nil, `Error: Invalid DOCKER2VM_CACHE_MAX "zz".`},
		{"", []string{"--cache-dir", "/etc/hostname", "--plain"}, "cannot create the blob cache /etc/hostname"},
	} {
		t.Setenv("DOCKER2VM_CACHE_MAX", tc.env)
		code, _, stderr := run(t, OCI2Gondolin(), append([]string{"--image", "127.0.0.1:1/x:1", "--out", filepath.Join(t.TempDir(), "o")}, tc.args...)...)
		if code != 1 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v (env %q): exit %d, stderr %q; want %q", tc.args, tc.env, code, stderr, tc.want)
		}
	}
}

// TestImageCredentialsRefused: credentials typed inside --image are
// refused, and neither the error nor anything else echoes the password.
func TestImageCredentialsRefused(t *testing.T) {
	for _, ref := range []string{"alice:s3cretpw@registry.example.com/app:1", "https://alice:s3cretpw@registry.example.com/app", "alice:s3cretpw@busybox"} {
		code, stdout, stderr := run(t, OCI2Gondolin(), "--image", ref, "--out", filepath.Join(t.TempDir(), "out"), "--dry-run")
		if code != 1 || stdout != "" || !strings.Contains(stderr, "holds credentials") || strings.Contains(stderr, "s3cretpw") {
			t.Errorf("--image %s: exit %d, stderr %q", ref, code, stderr)
		}
	}
}

// offerBase points Gondolin's image registry at a local document that
// offers alpine-base:latest for both architectures, with an empty image
// store and cache: a dry run finds a base to download (it looks the build up and
// never fetches it).
func offerBase(t *testing.T) {
	t.Helper()
	const amd, arm = "11111111-2222-5333-8444-555555555555", "11111111-2222-5333-8444-666666666666"
	sum := strings.Repeat("a", 64)
	doc := `{"schema":1,"refs":{"alpine-base:latest":{"x86_64":"` + amd + `","aarch64":"` + arm + `"}},"builds":{` +
		`"` + amd + `":{"arch":"x86_64","url":"amd.tar.gz","sha256":"` + sum + `"},` +
		`"` + arm + `":{"arch":"aarch64","url":"arm.tar.gz","sha256":"` + sum + `"}}}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/registry.json" {
			t.Errorf("a dry run fetched %s", r.URL.Path)
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, doc)
	}))
	t.Cleanup(srv.Close)
	t.Setenv("GONDOLIN_IMAGE_REGISTRY_URL", srv.URL+"/registry.json")
	t.Setenv("XDG_CACHE_HOME", t.TempDir()) // no older Gondolin cache either
	t.Setenv("GONDOLIN_IMAGE_STORE", t.TempDir())
	t.Setenv("GONDOLIN_GUEST_DIR", "")
}

// TestDryRunWithoutABase: with no base on the machine, a dry run asks
// Gondolin's image registry for the build a run would download, says
// which, and refuses (exit 1, with the way out) when there is none to
// download, as the run would.
func TestDryRunWithoutABase(t *testing.T) {
	layout := imagetest.WriteLayout(t, filepath.Join(t.TempDir(), "layout"), imagetest.LayoutEntry{Image: imagetest.New(t, imagetest.Spec{OCI: true})})
	args := []string{"--oci-layout", layout, "--platform", "linux/amd64", "--mode", "assets", "--out", filepath.Join(t.TempDir(), "out"), "--dry-run"}

	offerBase(t)
	code, stdout, stderr := run(t, OCI2Gondolin(), args...)
	var plan convert.Plan
	if code != 0 || json.Unmarshal([]byte(stdout), &plan) != nil {
		t.Fatalf("code %d stdout %q stderr %q", code, stdout, stderr)
	}
	if b := plan.Base; b == nil || !b.Download || b.BuildID != "11111111-2222-5333-8444-555555555555" || !strings.HasSuffix(b.URL, "/amd.tar.gz") {
		t.Errorf("plan.Base = %+v, want the x86_64 build to download", plan.Base)
	}

	srv := httptest.NewServer(http.NotFoundHandler()) // offline, or a registry without it
	t.Cleanup(srv.Close)
	t.Setenv("GONDOLIN_IMAGE_REGISTRY_URL", srv.URL+"/registry.json")
	ctxDir := t.TempDir()
	os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), []byte("FROM scratch\n"), 0o644)
	for _, c := range []struct {
		cmd  *cli.Command
		args []string
	}{
		{OCI2Gondolin(), args},
		{Dockerfile2Gondolin(), []string{"--context", ctxDir, "--platform", "linux/amd64", "--out", filepath.Join(t.TempDir(), "out"), "--dry-run"}},
	} {
		code, stdout, stderr = run(t, c.cmd, c.args...)
		if code != 1 || stdout != "" || !strings.Contains(stderr, "Error: no Gondolin base bundle for x86_64 found") ||
			!strings.Contains(stderr, "404 Not Found") || !strings.Contains(stderr, "pass --plain") {
			t.Errorf("%s: code %d stdout %q stderr %q", c.cmd.Name, code, stdout, stderr)
		}
	}
}
