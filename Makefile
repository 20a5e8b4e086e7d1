# turnpath — run `make help` for the targets.
SHELL        := /bin/bash
GO           ?= go
# The BPF compiler is pinned: the committed objects are reproducible only with the same clang.
CLANG        ?= clang-16
BPF_CFLAGS   ?= -O2 -g -Wall -Werror
VERSION      ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS      := -X main.version=$(VERSION)
BIN          := bin/turnpath
# Debian packages the tests and the lab need; installed only when missing.
APT_TEST     := coturn dnsmasq-base iproute2 bpftool procps util-linux chromium graphviz time tshark nftables whois prometheus libcap2-bin
APT_GEN      := clang-16 llvm-16
DEMO_PREFIX  ?= tpdemo
DEMO_TARGET  ?= 198.19.1.1

.DEFAULT_GOAL := help

.PHONY: help
help: ## show this help
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z_-]+:.*## /{printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## build bin/turnpath (no clang needed: the BPF objects are committed)
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/turnpath

.PHONY: generate
generate: deps-gen ## recompile bpf/*.c with the pinned clang into loader/ and reflector/ *_bpfel.{go,o}
	cd loader && BPF_CLANG=$(CLANG) BPF_CFLAGS="$(BPF_CFLAGS)" $(GO) generate ./...
	cd reflector && BPF_CLANG=$(CLANG) BPF_CFLAGS="$(BPF_CFLAGS)" $(GO) generate ./...

.PHONY: check-generated
check-generated: generate ## fail when the committed BPF objects are stale
	@git diff --exit-code --stat -- loader/ reflector/ || { echo "loader/, reflector/: committed BPF objects are stale: run 'make generate' and commit" >&2; exit 1; }
	@test -z "$$(git status --porcelain -- loader/ reflector/)" || { git status --porcelain -- loader/ reflector/; echo "loader/, reflector/: untracked generated files" >&2; exit 1; }

.PHONY: deps
deps: ## install what the tests need (apt-get, as root, only when missing; the offline AS dataset by npm pack)
	@./scripts/apt-need.sh $(APT_TEST)
	@./scripts/asn-data.sh

.PHONY: deps-gen
deps-gen:
	@./scripts/apt-need.sh $(APT_GEN)

.PHONY: vet
vet: ## go vet
	$(GO) vet ./...

.PHONY: test
test: deps vet ## vet, unit tests and the privileged netns integration tests (as root)
	@# One package at a time: the lab tests of several packages at once on 2 cores made the
	@# first IPv6 trace of a fresh lab lose its far hops (seen twice, cause not found yet).
	$(GO) test -count=1 -p 1 -timeout 20m ./...

.PHONY: lint
lint: ## gofmt, go vet, staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go')); test -z "$$out" || { echo "gofmt needed: $$out"; exit 1; }
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@2025.1.1 ./...

.PHONY: demo
demo: build deps ## bring the lab up, run turnpath in it, show the output, bring it down
	@./scripts/demo.sh $(BIN) $(DEMO_PREFIX) $(DEMO_TARGET)

.PHONY: bench
BENCH_PREFIX ?= tpbench
BENCH_FLAGS  ?=
bench: build ## turnpath vs traceroute, mtr, scamper in the lab, capacity, memory and monitor cost against the XDP reflector, many relays under ICMP limits, offline AS data, Go benchmarks -> BENCHMARKS.md/.json (root, ~15 min; BENCH_FLAGS=-quick)
	$(GO) build -trimpath -o bin/tpbench ./cmd/tpbench
	bin/tpbench -turnpath $(BIN) -prefix $(BENCH_PREFIX) $(BENCH_FLAGS)

.PHONY: clean
clean: ## remove build output (and a demo lab left behind)
	-@[ ! -x $(BIN) ] || $(BIN) lab down --prefix $(DEMO_PREFIX) 2>/dev/null
	rm -rf bin
