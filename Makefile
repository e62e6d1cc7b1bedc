# docker2vm: build, test, lint, fuzz, bench and the demo.
GO ?= go
BIN := bin
PKGS := ./...
FUZZTIME ?= 30s

.PHONY: all build deps test test-unit test-integration lint fuzz bench demo clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

# Install the tools integration tests and the demo need (root: apt-get, npm).
deps:
	bash scripts/install-deps.sh

# The whole suite: unit, fuzz seed corpora and integration tests (real
# registry, umoci, e2fsck, loop mounts, QEMU boots). Integration tests need
# root and the tools .ci/run installs; outside CI a missing tool skips.
test: deps lint
	$(GO) test -count=1 -timeout 60m $(PKGS)

# Fast tests only (no external tools).
test-unit:
	$(GO) test -short -count=1 $(PKGS)

test-integration:
	$(GO) test -count=1 -timeout 60m -run 'Integration|E2E|Registry|Umoci|Mount|Boot' $(PKGS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

# Run every fuzz target for FUZZTIME each.
fuzz:
	@for pkg in $$($(GO) list $(PKGS)); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

# The main job: build a sample image, convert it, boot it with Gondolin.
# PLATFORM=linux/arm64 builds, converts and boots an arm64 guest (under
# qemu-system-aarch64).
PLATFORM ?= linux/amd64
demo: build deps
	$(GO) run ./internal/demo -bin $(BIN)/oci2gondolin -out out/demo -platform $(PLATFORM)

bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

# docker2vm against umoci unpack + mke2fs -d and the decompression floor on
# generated images (cached in ~/.cache/docker2vm-bench); root, a few GB of
# disk. Rewrites the results section of BENCHMARKS.md. BENCHFLAGS e.g.
# "-runs 5 -images small,debian-gzip -registry=false".
.PHONY: bench-compare
bench-compare: build
	$(GO) run ./bench -bin $(BIN)/oci2gondolin -md BENCHMARKS.md $(BENCHFLAGS)

clean:
	rm -rf $(BIN) out
