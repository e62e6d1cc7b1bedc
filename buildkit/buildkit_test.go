package buildkit

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func testOptions(t *testing.T, b Builder) Options {
	t.Helper()
	dir := t.TempDir()
	df := filepath.Join(dir, "sub", "Dockerfile.app")
	if err := os.MkdirAll(filepath.Dir(df), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(df, []byte("FROM scratch\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return Options{Builder: b, Dockerfile: df, Context: dir, Platform: "linux/arm64", Output: filepath.Join(dir, "out.tar")}
}

func TestCommands(t *testing.T) {
	bx := testOptions(t, DockerBuildx)
	bx.Target = "prod"
	bx.BuildArgs = []string{"A=1", "B=two words"}
	bx.Secrets = []string{"id=npmrc,src=/x"}
	got := Commands(bx, "tmpb")
	want := []Step{
		{Argv: []string{"docker", "buildx", "create", "--name", "tmpb", "--driver", "docker-container"}},
		{Argv: []string{"docker", "buildx", "build", "--builder", "tmpb", "--file", bx.Dockerfile, "--platform", "linux/arm64",
			"--output", "type=oci,dest=" + bx.Output, "--provenance=false", "--target", "prod",
			"--build-arg", "A=1", "--build-arg", "B=two words", "--secret", "id=npmrc,src=/x", bx.Context}},
		{Argv: []string{"docker", "buildx", "rm", "--force", "tmpb"}, Cleanup: true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("buildx commands:\n got %v\nwant %v", got, want)
	}

	bx.BuildxBuilder = "shared"
	got = Commands(bx, "tmpb")
	if len(got) != 1 || got[0].Argv[4] != "shared" {
		t.Errorf("named builder: got %v, want one build step using builder shared", got)
	}

	bc := testOptions(t, Buildctl)
	bc.Addr = "tcp://127.0.0.1:1234"
	bc.TLSCACert = "/ca.pem"
	bc.BuildArgs = []string{"A=1"}
	bc.Secrets = []string{"id=s,src=/s"}
	bc.Target = "t"
	got = Commands(bc, "ignored")
	wantBC := []string{"buildctl", "--addr", "tcp://127.0.0.1:1234", "--tlscacert", "/ca.pem", "build",
		"--frontend", "dockerfile.v0", "--local", "context=" + bc.Context, "--local", "dockerfile=" + filepath.Dir(bc.Dockerfile),
		"--opt", "filename=Dockerfile.app", "--opt", "platform=linux/arm64", "--opt", "target=t", "--opt", "build-arg:A=1",
		"--secret", "id=s,src=/s", "--output", "type=oci,dest=" + bc.Output}
	if len(got) != 1 || !reflect.DeepEqual(got[0].Argv, wantBC) {
		t.Errorf("buildctl:\n got %v\nwant %q", got, wantBC)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Options)
		want   string
	}{
		{"ok", func(o *Options) {}, ""},
		{"bad builder", func(o *Options) { o.Builder = "podman" }, `Unknown builder "podman"`},
		{"arg without equals", func(o *Options) { o.BuildArgs = []string{"NOVALUE"} }, `Invalid --build-arg "NOVALUE"`},
		{"arg bad key", func(o *Options) { o.BuildArgs = []string{"1X=2"} }, `Invalid --build-arg "1X=2"`},
		{"arg empty value ok", func(o *Options) { o.BuildArgs = []string{"X="} }, ""},
		{"empty secret", func(o *Options) { o.Secrets = []string{" "} }, "Empty --secret"},
		{"missing dockerfile", func(o *Options) { o.Dockerfile += ".missing" }, "not found"},
		{"context not dir", func(o *Options) { o.Context = o.Dockerfile }, "is not a directory"},
		{"addr with buildx", func(o *Options) { o.Addr = "tcp://x:1" }, "--buildkit-addr applies to --builder buildctl only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := testOptions(t, DockerBuildx)
			tt.modify(&o)
			err := Validate(o)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

// fakeDocker puts testdata/fake-docker.sh on PATH as docker and returns
// the file where it logs its invocations.
func fakeDocker(t *testing.T, fail string) string {
	t.Helper()
	bin := t.TempDir()
	script, err := filepath.Abs("testdata/fake-docker.sh")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(script, filepath.Join(bin, "docker")); err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(bin, "archive.tar")
	if err := os.WriteFile(archive, []byte("pretend OCI archive"), 0o644); err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(bin, "log")
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	t.Setenv("FAKE_DOCKER_LOG", log)
	t.Setenv("FAKE_DOCKER_ARCHIVE", archive)
	t.Setenv("FAKE_DOCKER_FAIL", fail)
	return log
}

func readLog(t *testing.T, path string) [][]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]string
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		out = append(out, append([]string{"docker"}, strings.Split(line, "\t")...))
	}
	return out
}

func TestBuildWithFakeDocker(t *testing.T) {
	tests := []struct {
		name     string
		fail     string
		wantErr  string
		wantHint string
	}{
		{name: "success"},
		{name: "build fails", fail: "build", wantErr: `docker buildx build failed (exit status 1): failed to solve: process "/bin/sh -c false" did not complete successfully: exit code: 1`, wantHint: "Read the build log above"},
		{name: "daemon down", fail: "daemon", wantErr: "cannot reach the Docker daemon", wantHint: "Start Docker"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := fakeDocker(t, tt.fail)
			o := testOptions(t, DockerBuildx)
			var buildLog strings.Builder
			o.Log = &buildLog
			err := Build(context.Background(), o)
			calls := readLog(t, log)
			// The throwaway builder is created, used and removed in every case.
			if len(calls) != 3 || calls[0][2] != "create" || calls[1][2] != "build" || calls[2][2] != "rm" {
				t.Fatalf("calls = %q", calls)
			}
			name := calls[0][4]
			if !strings.HasPrefix(name, "docker2vm-") || calls[1][4] != name || calls[2][4] != name {
				t.Errorf("builder names differ: %q", calls)
			}
			want := Commands(o, name)
			for i := range want {
				if !reflect.DeepEqual(calls[i], want[i].Argv) {
					t.Errorf("call %d = %q, want %q", i, calls[i], want[i].Argv)
				}
			}
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if b, _ := os.ReadFile(o.Output); string(b) != "pretend OCI archive" {
					t.Errorf("archive = %q", b)
				}
				return
			}
			var be *Error
			if !errors.As(err, &be) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			if len(be.Fixes) == 0 || !strings.Contains(be.Fixes[0], tt.wantHint) {
				t.Errorf("hints = %q, want %q", be.Fixes, tt.wantHint)
			}
			if _, serr := os.Stat(o.Output); !os.IsNotExist(serr) {
				t.Errorf("archive left behind after failure: %v", serr)
			}
			if !strings.Contains(buildLog.String(), "docker buildx build") {
				t.Errorf("build log misses the command line: %q", buildLog.String())
			}
			if tt.fail == "build" && !strings.Contains(buildLog.String(), "ERROR: failed to solve") {
				t.Errorf("build log misses the builder's output: %q", buildLog.String())
			}
		})
	}
}

func TestBuildNamedBuilderNotRemoved(t *testing.T) {
	log := fakeDocker(t, "")
	o := testOptions(t, DockerBuildx)
	o.BuildxBuilder = "team"
	if err := Build(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	calls := readLog(t, log)
	if len(calls) != 1 || calls[0][2] != "build" || calls[0][4] != "team" {
		t.Fatalf("calls = %q, want one build with builder team", calls)
	}
}

func TestBuildMissingTool(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	for _, b := range []Builder{DockerBuildx, Buildctl} {
		o := testOptions(t, b)
		err := Build(context.Background(), o)
		var be *Error
		if !errors.As(err, &be) || !strings.Contains(err.Error(), "not found on PATH") || len(be.Fixes) == 0 {
			t.Errorf("%s: err = %v", b, err)
		}
	}
}

func TestBuildCancelledRemovesArchive(t *testing.T) {
	log := fakeDocker(t, "")
	o := testOptions(t, DockerBuildx)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := Build(ctx, o)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if _, serr := os.Stat(o.Output); !os.IsNotExist(serr) {
		t.Errorf("archive exists after cancel")
	}
	// Nothing was created, so nothing needed removing, but the cleanup
	// step still runs: a throwaway builder must never outlive a run.
	calls := readLog(t, log)
	if len(calls) != 1 || calls[0][2] != "rm" {
		t.Errorf("calls after cancel = %q, want only the cleanup", calls)
	}
}

// TestStepErrorCauses: a failed build is explained by its cause, from the
// builder's own log.
func TestStepErrorCauses(t *testing.T) {
	ctl := Step{Argv: []string{"buildctl", "--addr", "unix:///x.sock", "build"}}
	bx := Step{Argv: []string{"docker", "buildx", "build"}}
	tests := []struct {
		name    string
		o       Options
		s       Step
		log     string
		msg     []string
		hintHas string
	}{
		{"buildkitd unreachable", Options{Builder: Buildctl}, ctl, "error: failed to dial: connection refused\n",
			[]string{"cannot reach the BuildKit daemon"}, "--buildkit-addr"},
		{"foreign RUN without emulation", Options{Builder: Buildctl, Platform: "linux/amd64,linux/arm64"}, ctl,
			"#5 [linux/arm64 2/2] RUN echo hi\n#5 0.012 exec /bin/sh: exec format error\nerror: failed to solve: process \"/bin/sh -c echo hi\" did not complete successfully: exit code: 1\n",
			[]string{"cannot run on this host", "linux/amd64,linux/arm64", "exit code: 1"}, "qemu-user-static"},
		{"failing RUN", Options{Builder: DockerBuildx, Log: io.Discard}, bx, "ERROR: process \"/bin/sh -c false\" did not complete successfully: exit code: 1\n",
			[]string{"docker buildx build failed", "exit code: 1"}, "without --quiet"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := stepError(tc.o, tc.s, errors.New("exit status 1"), tc.log)
			var he *Error
			if !errors.As(err, &he) {
				t.Fatalf("not a hint error: %v", err)
			}
			for _, m := range tc.msg {
				if !strings.Contains(he.Msg, m) {
					t.Errorf("message %q lacks %q", he.Msg, m)
				}
			}
			if !strings.Contains(strings.Join(he.Fixes, "\n"), tc.hintHas) {
				t.Errorf("hints %q lack %q", he.Fixes, tc.hintHas)
			}
		})
	}
}
