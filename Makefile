# leakguard — build, test, demo and benchmark entry points.
# `make demo` and `make test` are the two set-up commands (run as root).

GO        ?= go
BIN       := $(CURDIR)/bin
# Pinned versions of the real clients and neighbours our plugin is tested with.
CNI_VERSION     ?= v1.3.1
PLUGINS_VERSION ?= v1.10.0
CNI_BIN   := $(CURDIR)/.cache/cni/bin
# The linter make test runs, built from the Go module proxy (rules in .golangci.yml).
LINT_VERSION    ?= v2.15.0
TOOLS     := $(CURDIR)/.cache/tools
# containerd, crictl and cri-dockerd for the runtime tests (test/cri), at the
# versions scripts/install-runtime-tools.sh pins, one dir per tool and version.
RUNTIME_CACHE := $(CURDIR)/.cache/runtime
# Kubernetes (kubelet, kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl) and etcd for the cluster tests (test/kube, test/k8s), at the
# versions scripts/install-kube-tools.sh pins, under .cache/kube/<version>/bin.
KUBE_CACHE := $(CURDIR)/.cache/kube

# The image (make image): bin/leakguard-image.tar (an OCI layout that also
# carries a docker manifest.json: ctr images import and docker load both take
# it) and bin/leakguard-image.ref (the reference, one line).
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION  ?= $(shell git rev-parse HEAD 2>/dev/null)
# The commit's time, so that the same tree gives the same image.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
IMAGE_REPO ?= ghcr.io/leakguard/leakguard
IMAGE     ?= $(IMAGE_REPO):$(VERSION)
IMAGE_SOURCE ?= https://github.com/leakguard/leakguard

DESTDIR   ?=
CNI_BIN_DIR  ?= /opt/cni/bin
HOOK_DIR     ?= /usr/libexec/leakguard
SBIN_DIR     ?= /usr/local/sbin

# Static binaries, as CNI plugins are shipped: no dynamic loader at every
# CNI call (the reference plugins are built the same way for the benchmark).
export CGO_ENABLED := 0
GOFLAGS_BUILD := -trimpath -ldflags=-s\ -w

export LEAKGUARD_BIN_DIR := $(BIN)
export LEAKGUARD_CNI_BIN := $(CNI_BIN)
export LEAKGUARD_RUNTIME_CACHE := $(RUNTIME_CACHE)
export LEAKGUARD_KUBE_CACHE := $(KUBE_CACHE)

.PHONY: all build image test-bins test-deps runtime-deps kube-deps e2e-k8s test vet fmt-check shellcheck lint demo bench bench-install fuzz stress install clean

all: build

build:
	$(GO) build $(GOFLAGS_BUILD) -o $(BIN)/leakguard ./plugins/leakguard
	$(GO) build $(GOFLAGS_BUILD) -o $(BIN)/leakguard-hook ./plugins/leakguard-hook
	$(GO) build $(GOFLAGS_BUILD) -o $(BIN)/leakguardctl ./plugins/leakguardctl
	$(GO) build $(GOFLAGS_BUILD) -o $(BIN)/leakguard-nri ./plugins/leakguard-nri

# The binaries of `make build`, static, in /bin on an empty base (scripts/image).
image: build
	$(GO) run ./scripts/image --bin $(BIN) --out $(BIN)/leakguard-image.tar --ref-out $(BIN)/leakguard-image.ref \
		--image $(IMAGE) --version $(VERSION) --revision $(REVISION) --source $(IMAGE_SOURCE) --created $(SOURCE_DATE_EPOCH)
	@echo "$$(cat $(BIN)/leakguard-image.ref): $(BIN)/leakguard-image.tar ($$(du -k $(BIN)/leakguard-image.tar | cut -f1) KiB)"

# Binaries only used by tests, demo and benchmarks (e.g. the tke-eni-style main plugin).
test-bins:
	$(GO) build -o $(BIN)/test/ ./test/cmd/...

# cnitool and the reference plugins, built from the Go module proxy at pinned versions.
test-deps:
	CNI_VERSION=$(CNI_VERSION) PLUGINS_VERSION=$(PLUGINS_VERSION) scripts/install-cni-tools.sh $(CNI_BIN)

# containerd + shim + ctr, crictl and cri-dockerd, built from the Go module
# proxy (cold: several minutes; cached by version under .cache/runtime).
runtime-deps:
	scripts/install-runtime-tools.sh $(RUNTIME_CACHE) >/dev/null

# Kubernetes v1.37 and etcd, built from the Go module proxy (cold: about
# 10 minutes on 2 cores; cached by version under .cache/kube).
kube-deps:
	scripts/install-kube-tools.sh $(KUBE_CACHE)

# The e2e tests on a private single-node Kubernetes cluster (test/k8s): the
# DaemonSet of conf/kubernetes from `make image`, over a private containerd.
e2e-k8s: build test-bins test-deps runtime-deps kube-deps image
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 20m ./test/k8s/...

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

shellcheck:
	shellcheck scripts/*.sh .ci/run

$(TOOLS)/golangci-lint-$(LINT_VERSION):
	mkdir -p $(TOOLS)
	cd $(TOOLS) && GOBIN=$(TOOLS) GOFLAGS= $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(LINT_VERSION)
	mv $(TOOLS)/golangci-lint $@

lint: $(TOOLS)/golangci-lint-$(LINT_VERSION)
	$(TOOLS)/golangci-lint-$(LINT_VERSION) run ./...

# -race needs cgo: tests are built with it, the shipped binaries without.
test: build test-bins test-deps runtime-deps kube-deps image vet fmt-check shellcheck lint
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 40m ./...

demo: build test-bins test-deps
	scripts/demo.sh

bench: build test-bins test-deps
	scripts/bench.sh

# The stress suite at full size (`make test` runs its short form). Run from
# the package directory, so that go test streams the counts it prints
# ("stress: ..." lines) even when everything passes.
stress: build test-bins test-deps
	@start=$$(date +%s); \
	cd test/stress && LEAKGUARD_STRESS=full CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 60m; \
	status=$$?; echo "stress: wall time $$(( $$(date +%s) - start ))s"; exit $$status

# Every Fuzz* target for FUZZTIME each, one after the other; prints the
# executions per target. Their seed corpora (testdata/fuzz) run in `make test`.
FUZZTIME ?= 60s
FUZZMINIMIZETIME ?= 5s
fuzz:
	GO=$(GO) scripts/fuzz.sh $(FUZZTIME) $(FUZZMINIMIZETIME)

# Installer and agent figures: re-insertion latency, idle CPU, agent RSS (about 6 minutes: idle CPU over 5).
bench-install: build test-bins
	scripts/bench-install.sh

install: build
	install -d $(DESTDIR)$(CNI_BIN_DIR) $(DESTDIR)$(HOOK_DIR) $(DESTDIR)$(SBIN_DIR)
	install -m 0755 $(BIN)/leakguard $(DESTDIR)$(CNI_BIN_DIR)/leakguard
	install -m 0755 $(BIN)/leakguard-hook $(DESTDIR)$(HOOK_DIR)/leakguard-hook
	install -m 0755 $(BIN)/leakguard-nri $(DESTDIR)$(HOOK_DIR)/leakguard-nri
	install -m 0755 $(BIN)/leakguardctl $(DESTDIR)$(SBIN_DIR)/leakguardctl

clean:
	rm -rf $(BIN) .cache
