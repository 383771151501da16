# pier — see README.md. `make run` serves on the embedded default config;
# `make test` runs every test (unit, OCI conformance, real clients, crash).

GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
PIER_BIN := $(CURDIR)/bin/pier

.PHONY: build run test unit deps e2e bench vet clean FORCE

build: bin/pier

# Static, stripped, no cgo: the same binary runs on any Linux of its arch.
bin/pier: FORCE
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $@ ./cmd/pier

run: build
	./bin/pier serve

vet:
	$(GO) vet ./...
	cd test && $(GO) vet ./...

# Unit tests with the race detector (it needs cgo; gcc is on the machine).
unit:
	CGO_ENABLED=1 $(GO) test -race -count=1 ./...

# Debian packages (skopeo) and the pinned Go tools (test/tools/go.mod) the
# end-to-end suites drive pier with; fast when all are present.
deps:
	GO=$(GO) test/setup.sh

# End-to-end suites under test/ drive the real binary.
e2e: build deps
	cd test && PIER_BIN=$(PIER_BIN) PIER_TOOLS=$(CURDIR)/bin/tools $(GO) test -count=1 -timeout 15m ./...

test: vet unit e2e

bench: build
	cd test && PIER_BIN=$(PIER_BIN) $(GO) test -count=1 -run '^$$' -bench . -benchtime 1x -timeout 30m ./bench/...

clean:
	rm -rf bin dist test/results
