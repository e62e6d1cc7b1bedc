# docker2vm: build, test, lint, fuzz, bench and the demo.
GO ?= go
BIN := bin
PKGS := ./...
FUZZTIME ?= 30s
# Stamped into the binaries (--version), so it is right even where Go does
# not record the VCS revision (GOFLAGS=-buildvcs=false, a source archive).
VERSION ?= $(shell sh scripts/version.sh)
LDFLAGS := -s -w -X github.com/docker2vm/docker2vm/internal/cli.stamped=$(VERSION)
# golang.org/x/tools' deadcode, which make lint runs.
DEADCODE_VERSION := v0.52.0
# The hosts docker2vm runs on; `make cross` builds and vets for each.
HOSTS := linux/amd64 linux/arm64 darwin/amd64 darwin/arm64

.PHONY: man all build dist npm image cross deps test test-unit test-integration test-portable test-arm64 lint fuzz bench demo demo-gondolin clean

all: build

# Static binaries (no cgo: one file that runs on any Linux or macOS).
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

# Man pages of the three commands in man/, from their flag definitions.
man:
	$(GO) run ./internal/tools/genman -out man

# Release binaries for every host in dist/<os>_<arch>/, with SHA256SUMS.
dist:
	VERSION='$(VERSION)' sh scripts/dist.sh

# The npm packages in dist/npm/: one per host with its binaries, and the
# main package (launchers, JavaScript API), each with its npm pack tarball.
npm:
	VERSION='$(VERSION)' sh scripts/npm.sh

# The container image (container/Dockerfile), linux/amd64 and linux/arm64,
# as an OCI archive: dist/image/docker2vm.oci.tar.
image:
	VERSION='$(VERSION)' sh scripts/image.sh

# Every host compiles, and go vet is clean for each (tests included).
cross:
	@for p in $(HOSTS); do \
	  echo "== $$p"; \
	  CGO_ENABLED=0 GOOS=$${p%/*} GOARCH=$${p#*/} $(GO) build -o /dev/null ./cmd/... || exit 1; \
	  CGO_ENABLED=0 GOOS=$${p%/*} GOARCH=$${p#*/} $(GO) vet $(PKGS) || exit 1; \
	done
	$(GO) vet -tags docker2vm_portable $(PKGS)

# Install the tools integration tests and the demo need (root: apt-get, npm).
deps:
	bash scripts/install-deps.sh

# The whole suite, without -short: unit tests, fuzz seed corpora and the
# integration tests (real registry, umoci, loop mounts, BuildKit, QEMU
# boots). Integration tests need root and the tools .ci/run installs;
# outside CI a missing tool skips (internal/require decides).
SUITE := $(GO) test -count=1 -timeout 60m $(PKGS)

test: deps lint cross test-portable test-arm64
	$(SUITE)

# The unit tests: -short skips exactly the integration tests (those that
# call require.Integration, directly or through a fixture under
# internal/testenv). A few unit tests use host tools (e2fsck, loop mounts
# as root, shells) and skip without them.
test-unit:
	$(GO) test -short -count=1 $(PKGS)

# The unit tests with the portable file I/O (what a host without Linux's or
# macOS's calls gets), forced on this host; and, chosen by package as the
# other tiers choose by the gate, all the tests of the package that
# publishes outputs and keeps the result cache with that I/O (kills,
# recovery, concurrent runs, the cache), integration tests included.
PORTABLE_FULL := ./convert
test-portable:
	$(GO) test -short -count=1 -tags docker2vm_portable $(PKGS)
	$(GO) test -count=1 -tags docker2vm_portable $(PORTABLE_FULL)

# The unit tests as linux/arm64 binaries under qemu-user.
test-arm64:
	-$(GO) run ./internal/testenv/cmd/qemuuser -binfmt arm64
	sh scripts/test-arm64.sh

# The integration tests are those -short skips, chosen by require.Integration,
# not by name: this is the whole suite without -short (the unit tests come
# along; they take seconds), without make test's deps, lint and cross steps.
test-integration:
	$(SUITE)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	@$(GO) mod tidy -diff >/dev/null 2>&1 || { echo "go.mod/go.sum are not tidy: run go mod tidy"; $(GO) mod tidy -diff; exit 1; }
	@out=$$($(GO) run golang.org/x/tools/cmd/deadcode@$(DEADCODE_VERSION) -test $(PKGS)) || exit 1; \
	if [ -n "$$out" ]; then echo "dead code (unreachable from the commands and the tests):"; echo "$$out"; exit 1; fi

# Run every fuzz target for FUZZTIME each. Minimization is off: with seeds
# of whole ext4 images and archives (hundreds of KB), the fuzzer otherwise
# spends its time minimizing each new input (a few executions a second)
# instead of fuzzing; a crasher is kept whole, and reproduces all the same.
fuzz:
	@for pkg in $$($(GO) list $(PKGS)); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 0 $$pkg || exit 1; \
	  done; \
	done

# The main job: build a sample image, convert it, boot it with Gondolin.
# PLATFORM=linux/arm64 builds, converts and boots an arm64 guest (under
# qemu-system-aarch64).
# On macOS (no apt for the fixtures), make demo is demo-gondolin.
PLATFORM ?= linux/amd64
ifeq ($(shell uname -s),Darwin)
demo: demo-gondolin
else
demo: build deps
	$(GO) run ./internal/demo -bin $(BIN)/oci2gondolin -out out/demo -platform $(PLATFORM)
endif

# Gondolin's own base (gondolin image pull) and CLI, a Docker Hub image,
# no apt and no root: what a Mac user runs. Needs the network, npm, QEMU.
demo-gondolin: build
	BIN=$(BIN) sh scripts/demo-gondolin.sh

bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

# docker2vm against umoci unpack + mke2fs -d and the decompression floor on
# generated images (cached in ~/.cache/docker2vm-bench); root, a few GB of
# disk. Rewrites the results section of BENCHMARKS.md. BENCHFLAGS e.g.
# "-runs 5 -images small,debian-gzip -registry=false".
.PHONY: bench-compare
bench-compare: build
	$(GO) run ./bench -bin $(BIN)/oci2gondolin -md BENCHMARKS.md $(BENCHFLAGS)

# Dockerfile builds with dockerfile2gondolin through buildctl and docker
# buildx (remote driver) on a local buildkitd: a first build, the same after
# editing its last step, and that with --no-cache. Root; rewrites the
# bench-build section of BENCHMARKS.md. BENCHFLAGS e.g. "-runs 5 -loops 2000000", or
# "-reconvert-only" for the reconversion after an edit alone.
.PHONY: bench-build
bench-build: build
	$(GO) run ./bench -builds -build-bin $(BIN)/dockerfile2gondolin -md BENCHMARKS.md $(BENCHFLAGS)

clean:
	rm -rf $(BIN) out dist man
