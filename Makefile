# pier — see README.md. `make run` serves on the embedded default config;
# `make test` runs every test (unit, OCI conformance, real clients, crash).

GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# Once per make run: every binary, package and test sees the same version.
VERSION := $(VERSION)
LDFLAGS := -s -w -X main.version=$(VERSION)
PIER_BIN := $(CURDIR)/bin/pier

.PHONY: build run test unit deps e2e e2e-seaweed powercut bench bench-run vet clean cross deb fuzz fuzz-short FORCE

build: bin/pier

# Static, stripped, no cgo: the same binary runs on any Linux of its arch.
bin/pier: FORCE
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $@ ./cmd/pier

# Static binaries for boards: dist/pier-linux-{amd64,arm64,armv7,armv6}.
# armv7 (GOARM=7) is for Raspberry Pi 2 and later on a 32-bit system, armv6
# (GOARM=6) for a Pi Zero or 1. CGO_ENABLED=0 gives a static executable
# with no ELF interpreter: it runs on any Linux of its architecture.
CROSS := amd64 arm64 armv7 armv6
GOENV_amd64 := GOARCH=amd64
GOENV_arm64 := GOARCH=arm64
GOENV_armv7 := GOARCH=arm GOARM=7
GOENV_armv6 := GOARCH=arm GOARM=6

cross: $(CROSS:%=dist/pier-linux-%)

dist/pier-linux-%: FORCE
	CGO_ENABLED=0 GOOS=linux $(GOENV_$*) $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $@ ./cmd/pier

# Debian packages dist/pier_<version>_{amd64,arm64,armhf}.deb from the
# recipe in packaging/ (nfpm.yaml, unit files, maintainer scripts), built
# with the nfpm pinned in test/tools/go.mod. armhf carries the armv7 binary.
DEB_VERSION ?= $(shell packaging/debversion.sh $(VERSION))
DEB_VERSION := $(DEB_VERSION)
# Debian architecture:binary from `make cross`.
DEBS := amd64:amd64 arm64:arm64 armhf:armv7
NFPM := $(CURDIR)/bin/tools/nfpm
# Every file in the package gets the commit's time: the same commit gives
# the same .deb, byte for byte.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
SOURCE_DATE_EPOCH := $(SOURCE_DATE_EPOCH)

deb: $(foreach d,$(DEBS),dist/pier-linux-$(word 2,$(subst :, ,$(d)))) $(NFPM)
	@rm -f dist/pier_*.deb
	@for d in $(DEBS); do \
		arch=$${d%%:*}; out=dist/pier_$(DEB_VERSION)_$$arch.deb; \
		SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) DEB_ARCH=$$arch DEB_VERSION='$(DEB_VERSION)' PIER_BINARY=dist/pier-linux-$${d#*:} \
			$(NFPM) package --config packaging/nfpm.yaml --packager deb --target $$out >/dev/null || exit 1; \
		echo "$$out"; \
	done

# test/setup.sh builds the same binary with the other pinned tools.
$(NFPM): test/tools/go.mod test/tools/go.sum
	cd test/tools && CGO_ENABLED=0 $(GO) build -mod=readonly -trimpath -o $@ github.com/goreleaser/nfpm/v2/cmd/nfpm

run: build
	./bin/pier serve

vet:
	$(GO) vet ./...
	cd test && $(GO) vet ./...
	# armv7 is 32-bit: int is 32 bits and statfs fields differ there.
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=7 $(GO) vet ./...

# Unit tests with the race detector (it needs cgo; gcc is on the machine).
unit:
	CGO_ENABLED=1 $(GO) test -race -count=1 ./...

# Go fuzz targets, one for every parser that reads network input (names,
# digests, tags, routes, Content-Range and Range, manifests and indexes,
# bearer tokens, the config, htpasswd files, access patterns), as
# package:target. Each starts from its seed corpus (testdata/fuzz/, with
# path traversal attempts) and the f.Add seeds; what a run finds is written
# there as a regression case. `make test` runs each FUZZTIME (a few
# seconds); `make fuzz` longer.
FUZZ_TARGETS := store/oci:FuzzValidateName store/oci:FuzzParseDigest store/oci:FuzzValidateTag \
	httpapi:FuzzRoute httpapi:FuzzContentRange httpapi:FuzzBlobRange store:FuzzParseManifest \
	httpapi/auth:FuzzVerifyToken httpapi/auth:FuzzParseHtpasswd httpapi/auth:FuzzGlobMatch configs:FuzzParse
FUZZTIME ?= 3s

# A run that ends with the fuzzer's own "context deadline exceeded" and no
# failing input (a worker starved of CPU past the time limit, on a busy
# machine) is run once more; a failing input fails at once.
fuzz-short:
	@for t in $(FUZZ_TARGETS); do \
		echo "fuzz $$t for $(FUZZTIME)"; \
		for try in 1 2; do \
			out=$$($(GO) test -run '^$$' -fuzz "^$${t#*:}\$$" -fuzztime $(FUZZTIME) ./$${t%%:*} 2>&1) && break; \
			if [ $$try = 1 ] && printf '%s' "$$out" | grep -q 'context deadline exceeded' && \
				! printf '%s' "$$out" | grep -q 'Failing input'; then \
				echo "fuzz $$t: the fuzzer timed out without a failing input; once more"; continue; \
			fi; \
			printf '%s\n' "$$out"; exit 1; \
		done; \
	done

# `make fuzz FUZZ_LONG=10m` for a longer hunt.
FUZZ_LONG ?= 2m
fuzz:
	$(MAKE) fuzz-short FUZZTIME=$(FUZZ_LONG)

# Debian packages (skopeo) and the pinned Go tools (test/tools/go.mod) the
# end-to-end suites drive pier with; fast when all are present.
deps:
	GO=$(GO) test/setup.sh

# End-to-end suites under test/ drive the real binary; test/cross and
# test/packaging the binaries and packages in dist/.
e2e: build deps cross deb
	cd test && PIER_BIN=$(PIER_BIN) PIER_TOOLS=$(CURDIR)/bin/tools \
		PIER_DIST=$(CURDIR)/dist PIER_VERSION='$(VERSION)' PIER_DEB_VERSION='$(DEB_VERSION)' \
		$(GO) test -count=1 -timeout 15m ./...

# Real power cuts: pier in a qemu VM whose power is cut at random moments,
# CYCLES times, after a self-test that a pier built without fsync loses
# acknowledged writes (test/powercut). `make test` runs the short default;
# `make powercut CYCLES=500` a long one. One VM at a time, ~15 s a cut.
CYCLES ?= 15
# Only this target runs the power-cut test: not e2e's `go test ./...`.
unexport CYCLES PIER_POWERCUT
powercut: deps
	cd test && PIER_POWERCUT=1 CYCLES=$(CYCLES) $(GO) test -count=1 -v -timeout $$((10 + $(CYCLES)))m -run '^TestPowerCut$$' ./powercut

# The s3 driver's tests and the S3 suites again, on SeaweedFS
# (test/services/seaweed.sh). Two cases of the driver contract are left
# out: its listing hides every `.uploads` directory (UploadDelete) and
# keeps emptied directories (Prune) (README, On S3).
e2e-seaweed: build deps
	PIER_TEST_S3_ENDPOINT=$$PIER_TEST_SEAWEED_ENDPOINT $(GO) test -count=1 -skip '^TestDriver$$/^(UploadDelete|Prune)$$' ./store/driver/s3/
	cd test && PIER_TEST_S3_ENDPOINT=$$PIER_TEST_SEAWEED_ENDPOINT PIER_BIN=$(PIER_BIN) PIER_TOOLS=$(CURDIR)/bin/tools \
		$(GO) test -count=1 -timeout 15m ./s3/
	cd test && PIER_TEST_S3_ENDPOINT=$$PIER_TEST_SEAWEED_ENDPOINT PIER_BIN=$(PIER_BIN) PIER_TOOLS=$(CURDIR)/bin/tools \
		$(GO) test -count=1 -timeout 15m -run '^TestConformanceS3$$' ./conformance/

# Every suite, with the real servers they use (test/services.sh) up for the
# whole run.
test: deps
	test/services.sh $(MAKE) vet unit fuzz-short e2e e2e-seaweed powercut

bench: build deps
	test/services.sh $(MAKE) bench-run

bench-run: build
	cd test && PIER_BIN=$(PIER_BIN) $(GO) test -count=1 -run '^$$' -bench . -benchtime 1x -timeout 30m ./bench/...

clean:
	rm -rf bin dist test/results
