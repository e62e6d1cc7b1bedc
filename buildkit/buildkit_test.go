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

	"github.com/docker2vm/docker2vm/hint"
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
	return Options{Builder: b, Dockerfile: df, Context: dir, Platform: "linux/arm64", Output: filepath.Join(dir, "out.tar"),
		LookupEnv: envOf(map[string]string{"FROM_ENV": "env value"})}
}

func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// TestCommands: every docker buildx build flag reaches each builder in
// its own spelling.
func TestCommands(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "npmrc")
	if err := os.WriteFile(secret, []byte("token"), 0o600); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "id_ed25519")
	if err := os.WriteFile(key, []byte("key"), 0o600); err != nil {
		t.Fatal(err)
	}
	vendor := filepath.Join(dir, "vendor")
	if err := os.Mkdir(vendor, 0o755); err != nil {
		t.Fatal(err)
	}
	full := func(o *Options) {
		o.Target = "prod"
		o.BuildArgs = []string{"A=1", "B=two words", "FROM_ENV", "UNSET_IN_ENV", "EMPTY="}
		o.Secrets = []string{"id=npmrc,src=" + secret}
		o.SSH = []string{"default=" + key}
		o.BuildContexts = []string{"vendor=" + vendor, "base=docker-image://127.0.0.1:5000/base:1"}
		o.CacheFrom = []string{"127.0.0.1:5000/app:cache", "type=local,src=/c"}
		o.CacheTo = []string{"type=local,dest=/c,mode=max"}
		o.Pull = true
		o.Network = "host"
		o.Labels = []string{"org.opencontainers.image.title=app", "flag"}
		o.NoCache = true
	}
	tests := []struct {
		name   string
		b      Builder
		modify func(*Options)
		want   func(o Options) [][]string
	}{
		{"buildx minimal", DockerBuildx, func(o *Options) {}, func(o Options) [][]string {
			return [][]string{
				{"docker", "buildx", "version"},
				{"docker", "buildx", "inspect", "docker2vm"},
				{"docker", "buildx", "create", "--name", "docker2vm", "--driver", "docker-container"},
				{"docker", "buildx", "build", "--builder", "docker2vm", "--file", o.Dockerfile, "--platform", "linux/arm64",
					"--output", "type=oci,dest=" + o.Output, "--provenance=false", "--progress", "plain", o.Context},
			}
		}},
		{"buildx every flag, named builder", DockerBuildx, func(o *Options) { full(o); o.BuildxBuilder = "team" }, func(o Options) [][]string {
			return [][]string{
				{"docker", "buildx", "version"},
				{"docker", "buildx", "inspect", "team"},
				{"docker", "buildx", "create", "--name", "team", "--driver", "docker-container"},
				{"docker", "buildx", "build", "--builder", "team", "--file", o.Dockerfile, "--platform", "linux/arm64",
					"--output", "type=oci,dest=" + o.Output, "--provenance=false", "--progress", "plain", "--target", "prod",
					"--build-arg", "A=1", "--build-arg", "B=two words", "--build-arg", "FROM_ENV", "--build-arg", "EMPTY=",
					"--secret", "id=npmrc,src=" + secret, "--ssh", "default=" + key,
					"--build-context", "vendor=" + vendor, "--build-context", "base=docker-image://127.0.0.1:5000/base:1",
					"--cache-from", "127.0.0.1:5000/app:cache", "--cache-from", "type=local,src=/c", "--cache-to", "type=local,dest=/c,mode=max",
					"--pull", "--network", "host", "--label", "org.opencontainers.image.title=app", "--label", "flag", "--no-cache", o.Context},
			}
		}},
		{"buildctl minimal", Buildctl, func(o *Options) {}, func(o Options) [][]string {
			return [][]string{{"buildctl", "build", "--progress", "plain", "--frontend", "dockerfile.v0",
				"--local", "context=" + o.Context, "--local", "dockerfile=" + filepath.Dir(o.Dockerfile),
				"--opt", "filename=Dockerfile.app", "--opt", "platform=linux/arm64", "--output", "type=oci,dest=" + o.Output}}
		}},
		{"buildctl every flag", Buildctl, func(o *Options) {
			full(o)
			o.Addr = "tcp://127.0.0.1:1234"
			o.TLSCACert = "/ca.pem"
		}, func(o Options) [][]string {
			return [][]string{{"buildctl", "--addr", "tcp://127.0.0.1:1234", "--tlscacert", "/ca.pem", "build", "--progress", "plain",
				"--frontend", "dockerfile.v0", "--local", "context=" + o.Context, "--local", "dockerfile=" + filepath.Dir(o.Dockerfile),
				"--opt", "filename=Dockerfile.app", "--opt", "platform=linux/arm64", "--opt", "target=prod",
				"--opt", "build-arg:A=1", "--opt", "build-arg:B=two words", "--opt", "build-arg:FROM_ENV=env value", "--opt", "build-arg:EMPTY=",
				"--secret", "id=npmrc,src=" + secret, "--ssh", "default=" + key,
				"--local", "vendor=" + vendor, "--opt", "context:vendor=local:vendor", "--opt", "context:base=docker-image://127.0.0.1:5000/base:1",
				"--import-cache", "type=registry,ref=127.0.0.1:5000/app:cache", "--import-cache", "type=local,src=/c",
				"--export-cache", "type=local,dest=/c,mode=max",
				"--opt", "image-resolve-mode=pull", "--opt", "force-network-mode=host", "--allow", "network.host",
				"--opt", "label:org.opencontainers.image.title=app", "--opt", "label:flag=", "--no-cache",
				"--output", "type=oci,dest=" + o.Output}}
		}},
		{"buildctl network none", Buildctl, func(o *Options) { o.Network = "none" }, func(o Options) [][]string {
			return [][]string{{"buildctl", "build", "--progress", "plain", "--frontend", "dockerfile.v0",
				"--local", "context=" + o.Context, "--local", "dockerfile=" + filepath.Dir(o.Dockerfile),
				"--opt", "filename=Dockerfile.app", "--opt", "platform=linux/arm64", "--opt", "force-network-mode=none",
				"--output", "type=oci,dest=" + o.Output}}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := testOptions(t, tt.b)
			tt.modify(&o)
			if err := Validate(o); err != nil {
				t.Fatal(err)
			}
			var got [][]string
			for _, s := range Commands(o) {
				got = append(got, s.Argv)
			}
			if want := tt.want(o); !reflect.DeepEqual(got, want) {
				t.Errorf("commands:\n got %q\nwant %q", got, want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	tests := []struct {
		name   string
		b      Builder
		modify func(*Options)
		want   string
	}{
		{"ok", DockerBuildx, func(o *Options) {}, ""},
		{"bad builder", DockerBuildx, func(o *Options) { o.Builder = "podman" }, `Unknown builder "podman"`},
		{"arg from env", DockerBuildx, func(o *Options) { o.BuildArgs = []string{"NOVALUE"} }, ""},
		{"arg empty key", DockerBuildx, func(o *Options) { o.BuildArgs = []string{"=x"} }, `Invalid --build-arg "=x": the name is empty`},
		{"arg empty", DockerBuildx, func(o *Options) { o.BuildArgs = []string{""} }, `Invalid --build-arg ""`},
		{"arg bad key", DockerBuildx, func(o *Options) { o.BuildArgs = []string{"1X=2"} }, `Invalid --build-arg "1X=2"`},
		{"arg empty value ok", DockerBuildx, func(o *Options) { o.BuildArgs = []string{"X="} }, ""},
		{"empty secret", DockerBuildx, func(o *Options) { o.Secrets = []string{" "} }, "Empty --secret"},
		{"secret missing file", DockerBuildx, func(o *Options) { o.Secrets = []string{"id=npmrc,src=" + missing} }, "--secret id=npmrc,src=" + missing + ": the file " + missing + " does not exist"},
		{"secret source= missing", Buildctl, func(o *Options) { o.Secrets = []string{"id=npmrc,source=" + missing} }, "the file " + missing + " does not exist"},
		{"secret is a dir", DockerBuildx, func(o *Options) { o.Secrets = []string{"id=d,src=" + o.Context} }, "is a directory"},
		{"secret env ok", DockerBuildx, func(o *Options) { o.Secrets = []string{"id=tok,env=UNSET_ANYWHERE"} }, ""},
		{"secret type=env ok", DockerBuildx, func(o *Options) { o.Secrets = []string{"type=env,id=tok,src=VAR"} }, ""},
		{"secret id from env ok", DockerBuildx, func(o *Options) { o.Secrets = []string{"id=FROM_ENV"} }, ""},
		{"secret id alone missing", DockerBuildx, func(o *Options) { o.Secrets = []string{"id=" + missing} }, "does not exist"},
		{"secret no id", DockerBuildx, func(o *Options) { o.Secrets = []string{"src=" + o.Dockerfile} }, "no id"},
		{"secret bad key", DockerBuildx, func(o *Options) { o.Secrets = []string{"id=a,path=/x"} }, `unknown key "path"`},
		{"secret bad type", DockerBuildx, func(o *Options) { o.Secrets = []string{"id=a,type=vault"} }, `unknown type "vault"`},
		{"ssh key missing", DockerBuildx, func(o *Options) { o.SSH = []string{"default=" + missing} }, "--ssh default=" + missing + ": " + missing + " does not exist"},
		{"ssh no agent", Buildctl, func(o *Options) { o.SSH = []string{"default"} }, "SSH_AUTH_SOCK is not set"},
		{"ssh agent gone", DockerBuildx, func(o *Options) {
			o.SSH = []string{"default"}
			o.LookupEnv = envOf(map[string]string{"SSH_AUTH_SOCK": missing})
		}, "the ssh agent socket " + missing + " (SSH_AUTH_SOCK) does not exist"},
		{"ssh agent ok", DockerBuildx, func(o *Options) {
			o.SSH = []string{"default"}
			o.LookupEnv = envOf(map[string]string{"SSH_AUTH_SOCK": o.Dockerfile})
		}, ""},
		{"ssh empty id", DockerBuildx, func(o *Options) { o.SSH = []string{"=x"} }, `Invalid --ssh "=x"`},
		{"context without =", DockerBuildx, func(o *Options) { o.BuildContexts = []string{"vendor"} }, `Invalid --build-context "vendor"`},
		{"context empty name", DockerBuildx, func(o *Options) { o.BuildContexts = []string{"=/tmp"} }, `Invalid --build-context "=/tmp"`},
		{"context missing dir", DockerBuildx, func(o *Options) { o.BuildContexts = []string{"vendor=" + missing} }, "--build-context vendor=" + missing + ": " + missing + " does not exist"},
		{"context is a file", Buildctl, func(o *Options) { o.BuildContexts = []string{"f=" + o.Dockerfile} }, "is not a directory"},
		{"context twice", DockerBuildx, func(o *Options) { o.BuildContexts = []string{"a=" + o.Context, "a=" + o.Context} }, "given twice"},
		{"context other scheme", DockerBuildx, func(o *Options) { o.BuildContexts = []string{"a=oci-layout:///x"} }, "oci-layout:// sources are not supported"},
		{"context empty image", DockerBuildx, func(o *Options) { o.BuildContexts = []string{"a=docker-image://"} }, "needs an image reference"},
		{"context named context, buildctl", Buildctl, func(o *Options) { o.BuildContexts = []string{"context=" + o.Context} }, "buildctl uses the name"},
		{"context named context, buildx", DockerBuildx, func(o *Options) { o.BuildContexts = []string{"context=" + o.Context} }, ""},
		{"cache-from empty", DockerBuildx, func(o *Options) { o.CacheFrom = []string{""} }, `Invalid --cache-from ""`},
		{"cache-to empty", Buildctl, func(o *Options) { o.CacheTo = []string{" "} }, `Invalid --cache-to " "`},
		{"bad network", DockerBuildx, func(o *Options) { o.Network = "bridge" }, `Unknown --network "bridge"`},
		{"label empty key", DockerBuildx, func(o *Options) { o.Labels = []string{"=v"} }, `Invalid --label "=v"`},
		{"bad progress", DockerBuildx, func(o *Options) { o.Progress = "fancy" }, `Unknown --progress "fancy"`},
		{"tty without terminal", DockerBuildx, func(o *Options) { o.Progress = ProgressTTY }, "--progress tty needs a terminal"},
		{"missing dockerfile", DockerBuildx, func(o *Options) { o.Dockerfile += ".missing" }, "not found"},
		{"default dockerfile missing", DockerBuildx, func(o *Options) { o.Dockerfile = filepath.Join(o.Context, "Dockerfile") }, "--file defaults to CONTEXT/Dockerfile"},
		{"dockerfile is a dir", DockerBuildx, func(o *Options) { o.Dockerfile = o.Context }, "not found"},
		{"dockerfile from stdin", DockerBuildx, func(o *Options) { o.Dockerfile = "-" }, "(--file -) is not supported"},
		{"dockerfile outside the context", Buildctl, func(o *Options) { o.Context = filepath.Join(o.Context, "sub", "ctx"); os.Mkdir(o.Context, 0o755) }, ""},
		{"context not dir", DockerBuildx, func(o *Options) { o.Context = o.Dockerfile }, "is not a directory"},
		{"addr with buildx", DockerBuildx, func(o *Options) { o.Addr = "tcp://x:1" }, "--buildkit-addr applies to --builder buildctl only"},
		{"tls with buildx", DockerBuildx, func(o *Options) { o.TLSCert = "/c.pem" }, "--tlscert applies to --builder buildctl only"},
		{"buildx builder with buildctl", Buildctl, func(o *Options) { o.BuildxBuilder = "b" }, "--buildx-builder applies to --builder docker-buildx only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := testOptions(t, tt.b)
			tt.modify(&o)
			err := Validate(o)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var he *hint.Error
			if !errors.As(err, &he) || len(he.Fixes) == 0 || !strings.Contains(err.Error()+"\n"+strings.Join(he.Fixes, "\n"), tt.want) {
				t.Fatalf("err = %v, want %q (in the message or a fix) with a fix", err, tt.want)
			}
		})
	}
}

// fakeDocker puts testdata/fake-docker.sh on PATH as docker and returns
// the file where it logs its invocations and the directory of its
// builders.
// installFake puts testdata/script first on the PATH as name, beside an
// archive for it to write as the build's output, and returns their
// directory and the archive.
func installFake(t *testing.T, name, script string) (dir, archive string) {
	t.Helper()
	dir = t.TempDir()
	abs, err := filepath.Abs(filepath.Join("testdata", script))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(abs, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
	archive = filepath.Join(dir, "archive.tar")
	if err := os.WriteFile(archive, []byte("pretend OCI archive"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	return dir, archive
}

func fakeDocker(t *testing.T, fail string) (string, string) {
	t.Helper()
	bin, archive := installFake(t, "docker", "fake-docker.sh")
	builders := filepath.Join(bin, "builders")
	if err := os.Mkdir(builders, 0o755); err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(bin, "log")
	t.Setenv("FAKE_DOCKER_LOG", log)
	t.Setenv("FAKE_DOCKER_ARCHIVE", archive)
	t.Setenv("FAKE_DOCKER_BUILDERS", builders)
	t.Setenv("FAKE_DOCKER_FAIL", fail)
	return log, builders
}

func readLog(t *testing.T, path string) [][]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out [][]string
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		out = append(out, append([]string{"docker"}, strings.Split(line, "\t")...))
	}
	return out
}

// subcommands lists the buildx subcommand of each call.
func subcommands(calls [][]string) string {
	var s []string
	for _, c := range calls {
		s = append(s, c[2])
	}
	return strings.Join(s, " ")
}

// TestBuildWithFakeDocker: the persistent builder is created when missing,
// reused when present, never removed; each failure is named by its cause.
func TestBuildWithFakeDocker(t *testing.T) {
	tests := []struct {
		name     string
		fail     string
		builder  string // --buildx-builder
		existing bool   // the builder exists before the build
		calls    string // the buildx subcommands run
		wantErr  string
		wantHint string
	}{
		{name: "first build creates the builder", calls: "version inspect create build"},
		{name: "later builds reuse it", existing: true, calls: "version inspect build"},
		{name: "named builder reused", builder: "team", existing: true, calls: "version inspect build"},
		{name: "named builder created", builder: "team", calls: "version inspect create build"},
		{name: "creation race lost", fail: "race", calls: "version inspect create inspect build"},
		{name: "no buildx plugin", fail: "noplugin", calls: "version",
			wantErr: "the docker buildx plugin is not installed", wantHint: "install docker-buildx"},
		{name: "no daemon", fail: "daemon", calls: "version inspect create inspect",
			wantErr: "cannot reach the Docker daemon to create the buildx builder docker2vm", wantHint: "Start Docker"},
		{name: "no daemon, builder exists", fail: "daemon", existing: true, calls: "version inspect build",
			wantErr: "cannot reach the Docker daemon", wantHint: "Start Docker"},
		{name: "creation fails", fail: "create", calls: "version inspect create inspect",
			wantErr: "creating the buildx builder docker2vm failed: failed to create builder: disk quota exceeded", wantHint: "docker buildx create --name docker2vm --driver docker-container to see why"},
		{name: "build fails", fail: "build", existing: true, calls: "version inspect build",
			wantErr: "docker buildx build failed (exit status 1): failed to solve: frontend grpc server closed unexpectedly", wantHint: "Read the build log above"},
		{name: "RUN fails", fail: "run", existing: true, calls: "version inspect build",
			wantErr: "a RUN step failed with exit code 7: [2/2] RUN echo about-to-fail && exit 7\nits last output lines:\n  about-to-fail", wantHint: "Fix the step at "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log, builders := fakeDocker(t, tt.fail)
			o := testOptions(t, DockerBuildx)
			o.BuildxBuilder = tt.builder
			name := o.buildxBuilder()
			if tt.existing {
				if err := os.WriteFile(filepath.Join(builders, name), nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			var buildLog strings.Builder
			o.Log = &buildLog
			err := Build(context.Background(), o)
			calls := readLog(t, log)
			if got := subcommands(calls); got != tt.calls {
				t.Fatalf("buildx calls %q, want %q: %q", got, tt.calls, calls)
			}
			// Every call is one of Commands', with this builder's name.
			want := map[string][]string{}
			for _, s := range Commands(o) {
				want[s.Argv[2]] = s.Argv
			}
			for _, c := range calls {
				if !reflect.DeepEqual(c, want[c[2]]) {
					t.Errorf("call %q, want %q", c, want[c[2]])
				}
			}
			if _, err := os.Stat(filepath.Join(builders, name)); tt.fail != "noplugin" && tt.fail != "daemon" && tt.fail != "create" && err != nil {
				t.Errorf("builder %s does not exist after the build", name)
			}
			if strings.Contains(tt.calls, "create") && tt.fail != "noplugin" && !strings.Contains(buildLog.String(), "remove it with: docker buildx rm "+name) {
				t.Errorf("the log does not say how to remove the builder:\n%s", buildLog.String())
			}
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if b, _ := os.ReadFile(o.Output); string(b) != "pretend OCI archive" {
					t.Errorf("archive = %q", b)
				}
				if !strings.Contains(buildLog.String(), "+ docker buildx build --builder "+name) || !strings.Contains(buildLog.String(), "building with fake docker") {
					t.Errorf("build log lacks the command or the builder's output:\n%s", buildLog.String())
				}
				return
			}
			var be *hint.Error
			if !errors.As(err, &be) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			if hints := strings.Join(be.Fixes, "\n"); !strings.Contains(hints, tt.wantHint) {
				t.Errorf("hints = %q, want %q", be.Fixes, tt.wantHint)
			}
			if strings.Contains(strings.Join(be.Fixes, "\n"), "Fix the Dockerfile or the build context") {
				t.Errorf("a hint blames the Dockerfile: %q", be.Fixes)
			}
			if _, serr := os.Stat(o.Output); !os.IsNotExist(serr) {
				t.Errorf("archive left behind after failure: %v", serr)
			}
			if strings.Contains(buildLog.String(), "Usage:") {
				t.Errorf("docker's usage text reached the log:\n%s", buildLog.String())
			}
		})
	}
}

// TestBuildConcurrentFirstUse: runs that find no builder at the same
// moment all create it; those that lose the race use the winner's.
func TestBuildConcurrentFirstUse(t *testing.T) {
	log, builders := fakeDocker(t, "")
	const runs = 6
	errs := make(chan error, runs)
	for range runs {
		o := testOptions(t, DockerBuildx)
		o.Log = io.Discard
		go func() { errs <- Build(context.Background(), o) }()
	}
	for range runs {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	calls := readLog(t, log)
	creates, builds := 0, 0
	for _, c := range calls {
		switch c[2] {
		case "create":
			creates++
		case "build":
			builds++
		case "rm":
			t.Errorf("a builder was removed: %q", c)
		}
	}
	ents, _ := os.ReadDir(builders)
	if creates == 0 || builds != runs || len(ents) != 1 || ents[0].Name() != DefaultBuildxBuilder {
		t.Errorf("%d creates, %d builds, builders %v; want >= 1, %d, [docker2vm]", creates, builds, ents, runs)
	}
	t.Logf("%d of %d runs tried to create the builder", creates, runs)
}

// TestBuildQuiet: with quiet progress nothing is written to the log, and a
// failing RUN step's last lines still reach the error.
func TestBuildQuiet(t *testing.T) {
	log, builders := fakeDocker(t, "run")
	if err := os.WriteFile(filepath.Join(builders, DefaultBuildxBuilder), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	o := testOptions(t, DockerBuildx)
	var buildLog strings.Builder
	o.Log, o.Progress = &buildLog, ProgressQuiet
	err := Build(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), "exit code 7") || !strings.Contains(err.Error(), "about-to-fail") {
		t.Fatalf("err = %v", err)
	}
	if buildLog.Len() != 0 {
		t.Errorf("quiet build wrote to the log:\n%s", buildLog.String())
	}
	calls := readLog(t, log)
	if argv := calls[len(calls)-1]; !strings.Contains(strings.Join(argv, " "), "--progress plain") {
		t.Errorf("quiet builds run the builder with --progress plain (kept for the error): %q", argv)
	}
}

func TestBuildMissingTool(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	for b, want := range map[Builder][2]string{
		DockerBuildx: {"docker not found on PATH", "Install Docker's CLI (with its buildx plugin), or use --builder buildctl"},
		Buildctl:     {"buildctl not found on PATH", "or use --builder docker-buildx"},
	} {
		o := testOptions(t, b)
		err := Build(context.Background(), o)
		var be *hint.Error
		if !errors.As(err, &be) {
			t.Fatalf("%s: err = %v, not a hint error", b, err)
		}
		if err.Error() != want[0] || len(be.Fixes) != 1 || !strings.Contains(be.Fixes[0], want[1]) {
			t.Errorf("%s: err = %v, hints %q; want %q, %q", b, err, be.Fixes, want[0], want[1])
		}
	}
}

func TestBuildCancelledRemovesArchive(t *testing.T) {
	log, _ := fakeDocker(t, "")
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
	if calls := readLog(t, log); len(calls) != 0 {
		t.Errorf("calls after cancel = %q, want none", calls)
	}
}

// Outputs of BuildKit v0.34 and buildx 0.29, as they print them.
const (
	runFailurePlain = `#5 [2/2] RUN echo line1 && echo line2 && exit 7
#5 0.108 line1
#5 0.108 line2
#5 ERROR: process "/bin/sh -c echo line1 && echo line2 && exit 7" did not complete successfully: exit code: 7
------
 > [2/2] RUN echo line1 && echo line2 && exit 7:
0.108 line1
0.108 line2
------
Dockerfile:2
--------------------
   1 |     FROM 127.0.0.1:38385/busybox:base
   2 | >>> RUN echo line1 && echo line2 && exit 7
   3 |     
--------------------
error: failed to solve: process "/bin/sh -c echo line1 && echo line2 && exit 7" did not complete successfully: exit code: 7
`
	runFailureTTY = "\x1b[0m\x1b[31m => ERROR [2/2] RUN echo line1 && echo line2 && exit 7                     0.3s\r\n" +
		"\x1b[0m\x1b[?25h------\r\n > [2/2] RUN echo line1 && echo line2 && exit 7:\r\n0.185 line1\r\n0.187 line2\r\n------\r\n" +
		"Dockerfile:2\r\n--------------------\r\n   1 |     FROM 127.0.0.1:38385/busybox:base\r\n   2 | >>> RUN echo line1 && echo line2 && exit 7\r\n" +
		"   3 |     \r\n--------------------\r\n" +
		"ERROR: failed to build: failed to solve: process \"/bin/sh -c echo line1 && echo line2 && exit 7\" did not complete successfully: exit code: 7\r\n"
	parseFailure = `#1 [internal] load build definition from Dockerfile.bad
#1 transferring dockerfile: 85B done
#1 DONE 0.0s
Dockerfile.bad:2
--------------------
   1 |     FROM 127.0.0.1:38385/busybox:base
   2 | >>> RUNN echo
   3 |     
--------------------
error: failed to solve: dockerfile parse error on line 2: unknown instruction: RUNN (did you mean RUN?)
`
)

// TestStepErrorCauses: a failed build is explained by its cause, from the
// builder's own output.
func TestStepErrorCauses(t *testing.T) {
	ctl := Step{Argv: []string{"buildctl", "--addr", "unix:///x.sock", "build"}, Role: RoleBuild}
	bx := Step{Argv: []string{"docker", "buildx", "build"}, Role: RoleBuild}
	df := "/src/app/Dockerfile"
	tests := []struct {
		name    string
		o       Options
		s       Step
		log     string
		msg     []string
		hintHas string
	}{
		{"buildkitd unreachable", Options{Builder: Buildctl, Addr: "unix:///x.sock"}, ctl,
			"error: failed to get status: rpc error: code = Unavailable desc = connection error: desc = \"transport: Error while dialing: dial unix /x.sock: connect: no such file or directory\"\n",
			[]string{"cannot reach the BuildKit daemon at unix:///x.sock"}, "--buildkit-addr"},
		{"buildx remote builder unreachable", Options{Builder: DockerBuildx, BuildxBuilder: "gone"}, bx,
			"#1 [internal] waiting for connection\n#1 ERROR: context deadline exceeded\n------\n > [internal] waiting for connection:\n------\nERROR: failed to build: context deadline exceeded\n",
			[]string{"cannot reach the BuildKit daemon of the buildx builder gone", "context deadline exceeded"}, "docker buildx inspect --bootstrap gone"},
		{"foreign RUN without emulation", Options{Builder: Buildctl, Platform: "linux/amd64,linux/arm64"}, ctl,
			"#5 [linux/arm64 2/2] RUN echo hi\n#5 0.012 exec /bin/sh: exec format error\nerror: failed to solve: process \"/bin/sh -c echo hi\" did not complete successfully: exit code: 1\n",
			[]string{"cannot run on this host", "linux/amd64,linux/arm64", "exit code: 1"}, "qemu-user-static"},
		{"failing RUN, plain", Options{Builder: Buildctl, Dockerfile: df}, ctl, runFailurePlain,
			[]string{"a RUN step failed with exit code 7: [2/2] RUN echo line1 && echo line2 && exit 7\nits last output lines:\n  line1\n  line2"}, "Fix the step at " + df + ":2"},
		{"failing RUN, live view", Options{Builder: DockerBuildx, Dockerfile: df}, bx, runFailureTTY,
			[]string{"a RUN step failed with exit code 7: [2/2] RUN echo line1 && echo line2 && exit 7\nits last output lines:\n  line1\n  line2"}, "Fix the step at " + df + ":2"},
		{"failing RUN, silent", Options{Builder: DockerBuildx, Dockerfile: df}, bx,
			"------\n > [2/2] RUN false:\n------\nERROR: failed to build: failed to solve: process \"/bin/sh -c false\" did not complete successfully: exit code: 1\n",
			[]string{"a RUN step failed with exit code 1: [2/2] RUN false (it printed nothing)"}, "Fix the step"},
		{"Dockerfile syntax", Options{Builder: Buildctl, Dockerfile: df}, ctl, parseFailure,
			[]string{"the Dockerfile " + df + " does not parse: line 2: unknown instruction: RUNN (did you mean RUN?)"}, "Fix line 2 of " + df},
		{"COPY of a missing file", Options{Builder: Buildctl, Dockerfile: df, Context: "/src/app"}, ctl,
			"Dockerfile:3\n--------------------\n   3 | >>> COPY nope.txt /\n--------------------\nerror: failed to solve: failed to compute cache key: failed to calculate checksum of ref 7c1b::abc: \"/nope.txt\": not found\n",
			[]string{df + ":3: /nope.txt is not in the build context /src/app"}, ".dockerignore"},
		{"base image missing", Options{Builder: DockerBuildx}, bx,
			"ERROR: failed to build: failed to solve: 127.0.0.1:5000/nope:1: failed to resolve source metadata for 127.0.0.1:5000/nope:1: 127.0.0.1:5000/nope:1: not found\n",
			[]string{"the image 127.0.0.1:5000/nope:1 cannot be pulled: 127.0.0.1:5000/nope:1: not found"}, "FROM"},
		{"secret not given", Options{Builder: Buildctl}, ctl, "error: failed to solve: secret tok: not found\n",
			[]string{"the build needs the secret tok, and no --secret id=tok was given"}, "--secret id=tok,src=PATH"},
		{"something else, quiet", Options{Builder: DockerBuildx, Log: nil}, bx, "ERROR: failed to build: failed to solve: frontend grpc server closed unexpectedly\n",
			[]string{"docker buildx build failed: failed to solve: frontend grpc server closed unexpectedly"}, "without --quiet"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := stepError(tc.o, tc.s, errors.New("exit status 1"), tc.log)
			var he *hint.Error
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
