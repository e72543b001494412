# Rivet. `make lab` runs the lab, `make test` runs every test. See README.md.
SHELL := /bin/bash
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/rivetmetal/rivet/shared.Version=$(VERSION)
GO_BUILD := CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)'
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
UNIT_PKGS = $(shell go list ./... | grep -v /integration)

.PHONY: all build deps test test-unit test-integration lint bench lab lab-down clean

all: build

build:
	@mkdir -p bin
	$(GO_BUILD) -o bin/ ./coordinator/cmd/rivet ./agent/cmd/rivet-agent ./initramfs/cmd/rivet-mkinitramfs ./bench/cmd/rivet-bench
	@ls -l bin/ | awk 'NR>1 {printf "  %-20s %6.1f MB\n", $$9, $$5/1048576}'

test: build test-unit test-integration

test-unit:
	go test -race -count=1 -timeout 20m $(UNIT_PKGS)

# One `go test` per package: with several packages go test holds each one's output until
# it ends (~20 minutes of silence); alone, -v streams. The whole output goes to
# build/integration.log, the test lines, figures and failure messages (file_test.go:N: lines)
# to the terminal as they come; on failure the output before each failed test's end too.
INTEGRATION_PKGS = $(shell go list ./integration/...)
test-integration: build
	@mkdir -p build; : >build/integration.log; failed=""; \
	for pkg in $(INTEGRATION_PKGS); do \
		go test -count=1 -timeout 60m -v $$pkg 2>&1 | tee -a build/integration.log | \
			grep --line-buffered -E '^(=== RUN|--- |PASS|FAIL|ok|panic)|^ +--- FAIL|^ +[A-Za-z0-9_]+_test\.go:[0-9]+: |rivet-figure'; \
		[ "$${PIPESTATUS[0]}" = 0 ] || failed="$$failed $$pkg"; \
	done; \
	if [ -n "$$failed" ]; then \
		echo "=== the output before each failed test's --- FAIL line (multi-line messages included):"; \
		grep -B 120 -E '^--- FAIL' build/integration.log | tail -n 800; \
		echo "FAIL:$$failed (full output: build/integration.log)"; exit 1; fi

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	go vet ./...
	go run $(STATICCHECK) ./...

bench: build
	bin/rivet-bench store
	bin/rivet-bench image
	bin/rivet-bench boot
	bin/rivet-bench power
	bin/rivet-agent bench inventory

# Debian packages: build/deb/rivet_VERSION_amd64.deb and rivet-agent_VERSION_amd64.deb
# (packaging/deb/build.sh; reproducible for a given VERSION and commit).
.PHONY: debs
debs: $(if $(NO_DEPS),,build)
	bin/rivet-mkinitramfs --agent bin/rivet-agent --out build/initramfs
	VERSION=$(VERSION) packaging/deb/build.sh --bin bin --boot build/initramfs --out build/deb

# The lab OS image: build/labimage/rivet-lab.raw.zst (+ .sha256, .json). Needs root;
# cached: rebuilt only when packaging/labimage/ or the agent .deb change.
.PHONY: lab-image
lab-image: $(if $(NO_DEPS),,debs)
	packaging/labimage/build.sh --agent-deb "$$(ls build/deb/rivet-agent_*_amd64.deb)" --out build/labimage

# The lab: N qemu VMs PXE-boot from a coordinator in a network namespace, install the lab
# image and form a Swarm (needs root). `make lab LAB_ARGS="--machines 5 --firmware mixed"`.
# Running it again reuses the lab; `make lab-down` removes everything it made. Each stage
# says when it starts and how long it took (.ci/stage), and a summary ends the run;
# NO_DEPS=1 keeps a stage from redoing the one before (lab-image would rebuild the debs).
STAGE = STAGE_LOG=build/lab-stages.txt bash .ci/stage
SUBMAKE = $(MAKE) --no-print-directory
lab:
	@mkdir -p build; : >build/lab-stages.txt
	@$(STAGE) packages $(SUBMAKE) deps
	@$(STAGE) build $(SUBMAKE) build
	@$(STAGE) debs $(SUBMAKE) debs NO_DEPS=1
	@$(STAGE) image $(SUBMAKE) lab-image NO_DEPS=1
	@$(STAGE) "lab up" bin/rivet lab up $(LAB_ARGS)
	@$(STAGE) --summary

# The Debian packages the build, the tests and the lab need; quick when all are present.
deps:
	bash .ci/install-debs

lab-down:
	@test -x bin/rivet || $(MAKE) build
	bin/rivet lab down

clean:
	rm -rf bin build
