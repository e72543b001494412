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
	$(GO_BUILD) -o bin/ ./coordinator/cmd/rivet ./agent/cmd/rivet-agent ./initramfs/cmd/rivet-mkinitramfs
	@ls -l bin/ | awk 'NR>1 {printf "  %-20s %6.1f MB\n", $$9, $$5/1048576}'

test: build test-unit test-integration

test-unit:
	go test -race -count=1 -timeout 20m $(UNIT_PKGS)

test-integration: build
	@mkdir -p build; go test -count=1 -timeout 60m -v ./integration/... 2>&1 | tee build/integration.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)|rivet-figure' ; exit $${PIPESTATUS[0]}

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	go vet ./...
	go run $(STATICCHECK) ./...

bench: build
	bin/rivet bench store
	bin/rivet bench image
	bin/rivet bench boot
	bin/rivet-agent bench inventory

# Debian packages: build/deb/rivet_VERSION_amd64.deb and rivet-agent_VERSION_amd64.deb
# (packaging/deb/build.sh; reproducible for a given VERSION and commit).
.PHONY: debs
debs: build
	bin/rivet-mkinitramfs --agent bin/rivet-agent --out build/initramfs
	VERSION=$(VERSION) packaging/deb/build.sh --bin bin --boot build/initramfs --out build/deb

# The lab OS image: build/labimage/rivet-lab.raw.zst (+ .sha256, .json). Needs root;
# cached: rebuilt only when packaging/labimage/ or the agent .deb change.
.PHONY: lab-image
lab-image: debs
	packaging/labimage/build.sh --agent-deb "$$(ls build/deb/rivet-agent_*_amd64.deb)" --out build/labimage

# The lab: N qemu VMs PXE-boot from a coordinator in a network namespace, install the lab
# image and form a Swarm (needs root). `make lab LAB_ARGS="--machines 5 --firmware mixed"`.
# Running it again reuses the lab; `make lab-down` removes everything it made.
lab: deps build debs lab-image
	bin/rivet lab up $(LAB_ARGS)

# The Debian packages the build, the tests and the lab need; quick when all are present.
deps:
	bash .ci/install-debs

lab-down:
	@test -x bin/rivet || $(MAKE) build
	bin/rivet lab down

clean:
	rm -rf bin build
