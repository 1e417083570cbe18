# pagewire: `make test` runs every check and test CI runs (see .ci/run).
# It needs root (FUSE mounts) and installs what the tests use.

GO ?= go
# Integration tests start real nodes; they run one package at a time.
INTEGRATION_FLAGS ?= -race -tags integration -p 1 -timeout 40m
# The Consul agent the lease tests run, built once from deploy/consul
# (about 7 minutes cold on 2 cores) and reused.
CONSUL_BIN ?= $(HOME)/.cache/pagewire/consul-1.14.11
export CONSUL_BIN
# The SeaweedFS S3 server internal/s3test runs, built once from
# deploy/seaweedfs and reused. WEED_VERSION is SeaweedFS's release number
# and the commit of the module version deploy/seaweedfs/go.mod requires;
# s3test.Version must be the same (a unit test checks).
WEED_VERSION = 4.53-7506e5f91cd6
WEED_BIN ?= $(HOME)/.cache/pagewire/weed-$(WEED_VERSION)/weed
export WEED_BIN

.PHONY: test deps consul seaweedfs lint proto-check proto-breaking unit fuzz integration docker-test run bench

test: deps lint proto-check proto-breaking unit fuzz integration docker-test

# deps installs the tools the tests drive: fuse3 and the sqlite3 CLI from
# Debian; buf, protoc plugins and staticcheck are `go tool`s pinned in go.mod.
deps:
	@command -v sqlite3 >/dev/null && command -v fusermount3 >/dev/null && command -v python3 >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sqlite3 fuse3 python3 >/dev/null; }
	@test -e /dev/fuse || { echo "/dev/fuse is missing: the integration tests need FUSE"; exit 1; }
	$(GO) mod download
	@$(MAKE) --no-print-directory consul seaweedfs

# consul builds the Consul 1.14.11 agent into CONSUL_BIN unless it is there.
consul:
	@test -x $(CONSUL_BIN) || { echo "building Consul 1.14.11 into $(CONSUL_BIN) (once; about 7 minutes)"; \
		mkdir -p $(dir $(CONSUL_BIN)) && cd deploy/consul && $(GO) build -o $(CONSUL_BIN).tmp . && mv $(CONSUL_BIN).tmp $(CONSUL_BIN); }

# seaweedfs builds the weed binary into WEED_BIN unless it is there:
# -trimpath and no VCS stamp, so the same module version and Go toolchain
# give the same binary on every machine.
seaweedfs:
	@test -x $(WEED_BIN) || { echo "building SeaweedFS $(WEED_VERSION) into $(WEED_BIN) (once; 10-15 minutes cold on 2 cores)"; \
		mkdir -p $(dir $(WEED_BIN)) && cd deploy/seaweedfs && \
		$(GO) build -trimpath -buildvcs=false -ldflags='-s -w' -o $(WEED_BIN).tmp . && mv $(WEED_BIN).tmp $(WEED_BIN); }

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^proto/gen/')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags integration ./...
	$(GO) tool staticcheck ./...
	$(GO) tool staticcheck -tags integration ./...
	$(GO) vet -tags docker ./deploy/docker/
	$(GO) tool staticcheck -tags docker ./deploy/docker/
	$(GO) tool buf lint
	$(GO) tool buf format --diff --exit-code

# proto-check regenerates code and tidies modules; either changing the tree
# means someone forgot to commit the result.
proto-check:
	$(GO) tool buf generate
	$(GO) mod tidy
	@if [ -n "$$(git status --porcelain -- proto go.mod go.sum)" ]; then \
		echo "buf generate or go mod tidy changed the tree: run them and commit the result"; \
		git status --porcelain -- proto go.mod go.sum; exit 1; fi

# proto-breaking fails when the protos would break a client built from the
# ones before them (buf's FILE rules: a renumbered, retyped or removed field,
# message or RPC): uncommitted proto changes against HEAD, else the last
# commit that changed the protos against its parent. A deliberate break goes
# through review with the reason in its commit, and the check is run on the
# commit after it.
proto-breaking:
	@git=$$(git rev-parse --git-common-dir) || exit 1; \
	if ! git diff --quiet HEAD -- proto/pagewire; then base=HEAD; \
	else base=$$(git log -1 --format=%H -- proto/pagewire)~1; fi; \
	if ! git rev-parse -q --verify "$$base^{commit}" >/dev/null; then \
		echo "proto-breaking: $$base is not in this clone: fetch its history (git fetch --unshallow) and run make proto-breaking again"; exit 1; fi; \
	echo "buf breaking against $$(git rev-parse --short $$base)"; \
	$(GO) tool buf breaking --against "$$git#ref=$$(git rev-parse $$base),subdir=proto"

unit:
	$(GO) test -race -short -count=1 ./...

# Each fuzzer runs briefly on top of its seed corpus, for a number of
# executions rather than a time: with -fuzztime as a duration, Go 1.26's fuzz
# coordinator can fail a run with a bare "context deadline exceeded" when
# the deadline meets a busy worker (go.dev/issue/75804, fixed in Go 1.27).
# Each entry is package:Fuzzer:executions. `go test -fuzz` in a package
# without the fuzzer runs nothing and passes, so fuzz first checks that
# this list and the module's Fuzz functions are the same.
FUZZERS = \
	backup:FuzzApplyPack:3000x \
	engine:FuzzDecodeMeta:50000x \
	engine:FuzzDecodePageSums:50000x \
	engine:FuzzStore_WALWrites:5000x \
	engine:FuzzDecodeRecord:50000x \
	engine:FuzzCheckImport:200000x \
	config:FuzzExpand:300000x \
	config:FuzzParse:150000x \
	proxy:FuzzPattern_Match:100000x \
	proxy:FuzzParseTXID:100000x \
	server:FuzzRPC:150x \
	wal:FuzzDecodeHeader:200000x \
	wal:FuzzReader:50000x \
	wal:FuzzDecodeIndexHeader:200000x \
	wal:FuzzDecodeCkptInfo:200000x

fuzz:
	@listed=$$(for f in $(FUZZERS); do echo $$f | cut -d: -f1,2; done | sort); \
	found=$$(grep -rHo --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*' . | sed 's|^\./||; s|/[^/]*_test.go:func |:|' | sort); \
	if [ "$$listed" != "$$found" ]; then \
		echo "the Makefile's FUZZERS and the module's Fuzz functions differ: list every fuzzer once, with its package"; \
		echo "listed:"; echo "$$listed"; echo "found:"; echo "$$found"; exit 1; fi
	@for f in $(FUZZERS); do \
		pkg=$$(echo $$f | cut -d: -f1); name=$$(echo $$f | cut -d: -f2); n=$$(echo $$f | cut -d: -f3); \
		echo "$(GO) test -run '^$$' -fuzz '^'$$name'$$' -fuzztime $$n ./$$pkg/"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $$n ./$$pkg/ || exit 1; \
	done

integration:
	$(GO) test $(INTEGRATION_FLAGS) -count=1 ./...

# docker-test runs the Docker image for real (deploy/docker): Docker's
# engine, Compose v1 and debootstrap come from Debian when missing; the
# tests start dockerd (no bridge, no iptables), build the base images once
# (debootstrap; kept as debian:bookworm-slim and golang:1.26-bookworm),
# `docker build .`, and stop dockerd again. Where dockerd cannot start they
# print "docker tests skipped: dockerd cannot start here: <reason>" and pass.
docker-test:
	@command -v dockerd >/dev/null && command -v debootstrap >/dev/null && command -v docker-compose >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io docker-compose debootstrap >/dev/null; } || \
		echo "docker tests: could not install docker.io, docker-compose and debootstrap"
	$(GO) test -tags docker -count=1 -timeout 30m -v ./deploy/docker/

# run starts a node on the embedded default: a single-node static primary
# mounted at ./pagewire/mnt with its data in ./pagewire/data, API on :20202.
run:
	$(GO) run ./cmd/pagewire mount

bench:
	$(GO) run ./bench
