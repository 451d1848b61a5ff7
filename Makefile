# meshgate: make demo | test | build | image
SHELL   := /bin/bash
GO      ?= go
BIN     := bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# Static, reproducible, stripped: no cgo, no local paths, no build ID.
GOFLAGS_BUILD := -trimpath -buildvcs=false -ldflags "-s -w -buildid= -X main.version=$(VERSION) -X github.com/meshgate/meshgate/inject.version=$(VERSION)"

IMAGE   ?= localhost/meshgate:$(VERSION)
BUILDAH ?= buildah --storage-driver vfs

.PHONY: build test demo vet clean tools image image-offline reproducible bench

# meshgate is the gate; meshgate-inject rewrites manifests to use it.
build:
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $(BIN)/meshgate ./cmd/meshgate
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $(BIN)/meshgate-inject ./cmd/meshgate-inject

# Two builds from scratch must give the same bytes: no time stamps, paths or
# build IDs in the binary.
reproducible:
	@set -e; a=$$(mktemp -d); b=$$(mktemp -d); trap 'rm -rf $$a $$b' EXIT; \
	CGO_ENABLED=0 GOCACHE=$$a/cache $(GO) build $(GOFLAGS_BUILD) -o $$a/meshgate ./cmd/meshgate; \
	CGO_ENABLED=0 GOCACHE=$$b/cache $(GO) build $(GOFLAGS_BUILD) -o $$b/meshgate ./cmd/meshgate; \
	sha256sum $$a/meshgate $$b/meshgate; cmp $$a/meshgate $$b/meshgate && echo "reproducible: identical"

# Test helpers: the proxy emulator, the app behind the gate, and the
# reference gate the benchmark holds meshgate to.
tools:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/emulator ./test/emulator
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/app ./test/app
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w" -o $(BIN)/refgate ./test/refgate

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { gofmt -l .; echo "gofmt: files above need formatting"; exit 1; }

# The end-to-end tests in test/ use the binary built here.
test: vet build
	MESHGATE_BIN=$(CURDIR)/$(BIN)/meshgate MESHGATE_INJECT_BIN=$(CURDIR)/$(BIN)/meshgate-inject GORACE=atexit_sleep_ms=0 $(GO) test -race -count=1 ./...

# The emulator plays a proxy that starts late; meshgate holds the app until
# it is ready. Ports: DEMO_ADDR.
DEMO_ADDR ?= 127.0.0.1:15020
demo: build tools
	@echo "== a proxy that takes 3s to start, and an app behind meshgate =="
	@$(BIN)/emulator --listen $(DEMO_ADDR) --phases closed:1s,503:2s,200 & emu=$$!; \
	trap 'kill $$emu 2>/dev/null; wait $$emu 2>/dev/null' EXIT; \
	APP_FETCH=http://$(DEMO_ADDR)/healthz/ready sh -c 'echo "meshgate starts as PID $$$$"; exec "$$@"' sh \
		$(BIN)/meshgate --log-format console --probe http://$(DEMO_ADDR)/healthz/ready --timeout 30s -- \
		$(BIN)/app --port 8080; \
	echo "== exit status $$? =="

# Measures bin/meshgate against reference gates (test/refgate) and the
# classic curl loop in one run, idle and with every core busy, and prints
# the figures and the goals as ratios to the references. Timings are not
# tests: CI does not run this. The curl loop needs curl. BENCH_FLAGS passes
# more flags (go run ./test/bench -h lists them).
bench: build tools
	$(GO) run ./test/bench --meshgate $(BIN)/meshgate --app $(BIN)/app --refgate $(BIN)/refgate $(BENCH_FLAGS)

# The image, built with the machine's builder: docker if its engine runs,
# else buildah. The builder stage pulls BUILDER_IMAGE (golang:1.26).
image:
	if docker info >/dev/null 2>&1; then \
		docker build --build-arg VERSION=$(VERSION) -t $(IMAGE) . ; \
	else \
		$(BUILDAH) bud --isolation chroot --layers=false --build-arg VERSION=$(VERSION) -t $(IMAGE) . ; \
	fi

# Offline: packs bin/meshgate as built (and tested) into the final stage,
# pulling nothing, and exports it as an OCI layout in dist/oci.
image-offline: build
	if docker info >/dev/null 2>&1; then \
		docker build --target prebuilt -t $(IMAGE) $(BIN) -f Dockerfile ; \
	else \
		$(BUILDAH) bud --isolation chroot --pull=never --target prebuilt -f Dockerfile -t $(IMAGE) $(BIN) && \
		mkdir -p dist && $(BUILDAH) push $(IMAGE) oci:dist/oci:$(VERSION) && \
		echo "OCI layout: dist/oci (tag $(VERSION))" ; \
	fi

clean:
	rm -rf $(BIN) dist

# kube-apiserver and etcd for the admission webhook tests, built once from
# the Go module proxy (test/kube/apiserver and test/kube/etcd pin them) into
# a cache outside the clone that later runs and CI reuse. About 10 minutes
# of CPU cold; nothing to do when the folder holds both.
KUBE_VERSION := v1.37.2
ETCD_VERSION := v3.6.13
KUBE_BINS    ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/meshgate/kube-$(KUBE_VERSION)-etcd-$(ETCD_VERSION)
KUBE_LDFLAGS := -s -w -X k8s.io/component-base/version.gitVersion=$(KUBE_VERSION) \
	-X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37 \
	-X k8s.io/component-base/version.gitTreeState=clean

.PHONY: kube-bins
kube-bins:
	@mkdir -p $(KUBE_BINS)
	@if [ -x $(KUBE_BINS)/etcd ]; then echo "kube-bins: etcd $(ETCD_VERSION) cached in $(KUBE_BINS)"; else \
		echo "kube-bins: building etcd $(ETCD_VERSION)" && \
		cd test/kube/etcd && CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w" -o $(KUBE_BINS)/etcd.tmp go.etcd.io/etcd/server/v3 && \
		mv $(KUBE_BINS)/etcd.tmp $(KUBE_BINS)/etcd; fi
	@if [ -x $(KUBE_BINS)/kube-apiserver ]; then echo "kube-bins: kube-apiserver $(KUBE_VERSION) cached in $(KUBE_BINS)"; else \
		echo "kube-bins: building kube-apiserver $(KUBE_VERSION) (about 10 minutes cold)" && \
		cd test/kube/apiserver && CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(KUBE_LDFLAGS)" -o $(KUBE_BINS)/kube-apiserver.tmp k8s.io/kubernetes/cmd/kube-apiserver && \
		mv $(KUBE_BINS)/kube-apiserver.tmp $(KUBE_BINS)/kube-apiserver; fi

# Admits BENCH_PODS pods (default 500) through a real API server and
# meshgate-inject's webhook, with a warm cache, and prints the webhook's
# p50/p99 per admission and its memory. Timings are not tests: CI does not
# run this.
.PHONY: bench-webhook
bench-webhook: kube-bins build
	MESHGATE_INJECT_BIN=$(CURDIR)/$(BIN)/meshgate-inject $(GO) test -run '^$$' -bench '^BenchmarkAdmission$$' -benchtime 1x -count 1 ./test/admission
