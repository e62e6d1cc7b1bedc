package buildkit

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/docker2vm/docker2vm/internal/require"
	"github.com/docker2vm/docker2vm/internal/testenv"
	"github.com/docker2vm/docker2vm/internal/testenv/buildkittest"
	"github.com/docker2vm/docker2vm/internal/testenv/gondolintest"
	"github.com/docker2vm/docker2vm/internal/testenv/imagetest"
	"github.com/docker2vm/docker2vm/internal/testenv/registrytest"
)

// The flags against real builders: buildkitd (testenv, root, the OCI
// worker) through buildctl, and through docker buildx with a remote-driver
// builder pointed at the same daemon (no Docker engine). Each build's OCI
// archive is opened to check what the flags did to the image.

type realEnv struct {
	bk     *buildkittest.Daemon
	from   string // REGISTRY/busybox:base
	config string // DOCKER_CONFIG with the buildx builder "real"
}

func realPrereqs(t *testing.T) *realEnv {
	t.Helper()
	require.Integration(t, "runs buildkitd")
	require.Tool(t, registrytest.Binary)
	reg := registrytest.Start(t, registrytest.Options{})
	base := gondolintest.BaseBundleArch(t, testenv.AMD64)
	bk := buildkittest.Start(t, buildkittest.Options{InsecureRegistries: []string{reg.Host}})
	bk.PutOnPath(t)
	from := reg.Push(t, "busybox:base", imagetest.Busybox(t, gondolintest.BaseBusybox(t, base)), nil)
	cfg := buildkittest.DockerBuildx(t)
	t.Setenv("DOCKER_CONFIG", cfg)
	bk.BuildxBuilder(t, cfg, "real")
	return &realEnv{bk: bk, from: from, config: cfg}
}

// options are a build of df in ctxDir with builder b against the test's
// daemon, its plain log in the returned builder.
func (e *realEnv) options(t *testing.T, b Builder, df, ctxDir string) (Options, *strings.Builder) {
	o := Options{Builder: b, Dockerfile: df, Context: ctxDir, Platform: "linux/amd64", Progress: ProgressPlain,
		Output: filepath.Join(t.TempDir(), "image.tar")}
	if b == Buildctl {
		o.Addr = e.bk.Addr
	} else {
		o.BuildxBuilder = "real"
	}
	log := &strings.Builder{}
	o.Log = log
	return o, log
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// archiveImage opens an OCI archive with one image and returns its labels
// and the files of its merged tree.
func archiveImage(t *testing.T, archive string) (map[string]string, map[string]string) {
	t.Helper()
	dir := t.TempDir()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.Clean("/"+h.Name))
		if h.Typeflag == tar.TypeDir {
			os.MkdirAll(p, 0o755)
			continue
		}
		os.MkdirAll(filepath.Dir(p), 0o755)
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	lp, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := lp.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil || len(im.Manifests) != 1 {
		t.Fatalf("index: %v %+v", err, im)
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	rc := mutate.Extract(img)
	defer rc.Close()
	fr := tar.NewReader(rc)
	for {
		h, err := fr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			var b bytes.Buffer
			io.Copy(&b, fr)
			files["/"+strings.TrimPrefix(h.Name, "/")] = b.String()
		}
	}
	return cf.Config.Labels, files
}

var (
	reStepName   = regexp.MustCompile(`(?m)^#(\d+) (\[.*)$`)
	reStepCached = regexp.MustCompile(`(?m)^#(\d+) CACHED$`)
)

// cachedSteps lists the steps a plain build log marks CACHED, by name
// ("[2/3] RUN make").
func cachedSteps(log string) []string {
	names := map[string]string{}
	for _, m := range reStepName.FindAllStringSubmatch(log, -1) {
		names[m[1]] = m[2]
	}
	var out []string
	for _, m := range reStepCached.FindAllStringSubmatch(log, -1) {
		out = append(out, names[m[1]])
	}
	return out
}

func hasStep(steps []string, part string) bool {
	for _, s := range steps {
		if strings.Contains(s, part) {
			return true
		}
	}
	return false
}

// TestRealBuildersFlags: every flag reaches BuildKit through both builders
// and does what docker buildx build does with it.
func TestRealBuildersFlags(t *testing.T) {
	e := realPrereqs(t)
	keygen := require.Tool(t, "ssh-keygen")
	for _, b := range []Builder{Buildctl, DockerBuildx} {
		t.Run(string(b), func(t *testing.T) {
			dir := t.TempDir()
			ctxDir := filepath.Join(dir, "ctx")
			extra := filepath.Join(dir, "extra")
			writeFiles(t, dir, map[string]string{
				"ctx/app.txt":     "from the context\n",
				"extra/extra.txt": "from a named context\n",
				"secret":          "s3cr3t",
				// Outside the context, as docker allows.
				"dockerfiles/Dockerfile": `FROM ` + e.from + `
ARG FROM_ENV_ARG
ARG LITERAL_ARG
ARG UNSET_ARG=dockerfile-default
COPY app.txt /app.txt
COPY --from=extra extra.txt /extra.txt
COPY --from=img /srv/app.sh /from-image.sh
RUN echo "$FROM_ENV_ARG|$LITERAL_ARG|$UNSET_ARG" > /args
RUN --mount=type=secret,id=tok cat /run/secrets/tok > /secret-copy
RUN --mount=type=ssh test -S "$SSH_AUTH_SOCK" && echo agent > /ssh
RUN grep -c : /proc/net/dev > /interfaces
`,
			})
			key := filepath.Join(dir, "id_ed25519")
			if out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "", "-f", key).CombinedOutput(); err != nil {
				t.Fatalf("ssh-keygen: %v\n%s", err, out)
			}
			t.Setenv("FROM_ENV_ARG", "value from the environment")
			o, log := e.options(t, b, filepath.Join(dir, "dockerfiles", "Dockerfile"), ctxDir)
			o.BuildArgs = []string{"FROM_ENV_ARG", "LITERAL_ARG=literal value", "UNSET_ARG"}
			o.BuildContexts = []string{"extra=" + extra, "img=docker-image://" + e.from}
			o.Secrets = []string{"id=tok,src=" + filepath.Join(dir, "secret")}
			o.SSH = []string{"default=" + key}
			o.Labels = []string{"org.example.built-by=docker2vm", "org.example.empty"}
			o.Network = "none"
			o.Pull = true
			if err := Build(context.Background(), o); err != nil {
				t.Fatalf("%v\n%s", err, log)
			}
			labels, files := archiveImage(t, o.Output)
			if labels["org.example.built-by"] != "docker2vm" || labels["org.example.empty"] != "" || len(labels) != 2 {
				t.Errorf("labels %v", labels)
			}
			for name, want := range map[string]string{
				"/app.txt":        "from the context\n",
				"/extra.txt":      "from a named context\n",
				"/args":           "value from the environment|literal value|dockerfile-default\n",
				"/secret-copy":    "s3cr3t",
				"/ssh":            "agent\n",
				"/interfaces":     "1\n", // lo alone: --network none
				"/from-image.sh":  "#!/bin/sh\necho \"app says $GREETING from $(pwd) as $(id -u) with $*\"\n",
				"/etc/os-release": "NAME=\"docker2vm sample\"\nID=busybox\n",
			} {
				if files[name] != want {
					t.Errorf("%s = %q, want %q", name, files[name], want)
				}
			}
		})
	}
}

// TestRealBuildersCache: the builder's cache makes a second build of the
// same Dockerfile CACHED; --no-cache builds every step again; --cache-to
// exports the cache and --cache-from brings it back into a pruned builder.
func TestRealBuildersCache(t *testing.T) {
	e := realPrereqs(t)
	for _, b := range []Builder{Buildctl, DockerBuildx} {
		t.Run(string(b), func(t *testing.T) {
			dir := t.TempDir()
			// The builder's name in the steps: unique per subtest, so that
			// the other builder's cache does not count.
			writeFiles(t, dir, map[string]string{"Dockerfile": "FROM " + e.from + "\nRUN echo " + string(b) + "-slow-step > /slow\nRUN echo last > /last\n"})
			df := filepath.Join(dir, "Dockerfile")
			build := func(name string, modify func(*Options)) []string {
				t.Helper()
				o, log := e.options(t, b, df, dir)
				if modify != nil {
					modify(&o)
				}
				if err := Build(context.Background(), o); err != nil {
					t.Fatalf("%s: %v\n%s", name, err, log)
				}
				cached := cachedSteps(log.String())
				t.Logf("%s: CACHED %q", name, cached)
				return cached
			}
			if c := build("first", nil); hasStep(c, "-slow-step") {
				t.Errorf("first build: RUN step CACHED: %q", c)
			}
			if c := build("second", nil); !hasStep(c, "-slow-step") || !hasStep(c, "echo last") {
				t.Errorf("second build: RUN steps not CACHED: %q", c)
			}
			if c := build("--no-cache", func(o *Options) { o.NoCache = true }); hasStep(c, "-slow-step") || hasStep(c, "echo last") {
				t.Errorf("--no-cache build: CACHED %q", c)
			}
			cache := filepath.Join(t.TempDir(), "cache")
			build("--cache-to", func(o *Options) { o.CacheTo = []string{"type=local,dest=" + cache + ",mode=max"} })
			if _, err := os.Stat(filepath.Join(cache, "index.json")); err != nil {
				t.Fatalf("--cache-to type=local wrote no cache: %v", err)
			}
			prune := func() {
				argv := []string{e.bk.Buildctl, "--addr", e.bk.Addr, "prune", "--all"}
				if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
					t.Fatalf("%q: %v\n%s", argv, err, out)
				}
			}
			prune()
			if c := build("pruned", nil); hasStep(c, "-slow-step") {
				t.Errorf("a pruned builder still has the RUN step: %q", c)
			}
			prune()
			if c := build("pruned, --cache-from", func(o *Options) { o.CacheFrom = []string{"type=local,src=" + cache} }); !hasStep(c, "-slow-step") {
				t.Errorf("--cache-from type=local into a pruned builder: RUN step not CACHED: %q", c)
			}
		})
	}
}
