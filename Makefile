# meshgate: make demo | test | build | image | release
SHELL   := /bin/bash
GO      ?= go
BIN     := bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# Static, reproducible, stripped: no cgo, no local paths, no build ID.
GOFLAGS_BUILD := -trimpath -buildvcs=false -ldflags "-s -w -buildid= -X main.version=$(VERSION) -X github.com/meshgate/meshgate/inject.version=$(VERSION)"

IMAGE   ?= localhost/meshgate:$(VERSION)
BUILDAH ?= buildah --storage-driver vfs

.PHONY: build test demo vet staticcheck clean tools image image-offline reproducible bench

STATICCHECK_VERSION := v0.8.2

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

vet: staticcheck
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { gofmt -l .; echo "gofmt: files above need formatting"; exit 1; }

# staticcheck, pinned, from the Go module proxy.
staticcheck:
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

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

# ---- Release ---------------------------------------------------------------
# make release VERSION=vX.Y.Z writes DIST from a clean checkout, offline once
# the module cache holds the pinned tools below (make release-tools):
#   meshgate-OS-ARCH           the gate, static and stripped, for GATE_PLATFORMS
#   meshgate-inject-OS-ARCH    the manifest injector, for INJECT_PLATFORMS,
#                              when cmd/meshgate-inject exists
#   NAME.cdx.json              a CycloneDX SBOM of each binary: the modules
#                              its build information says it links
#   oci/                       an OCI image layout: one index, tagged VERSION,
#                              of the image for each of GATE_PLATFORMS
#   oci-inject/                the same for the meshgate-inject image, for
#                              GATE_PLATFORMS, when cmd/meshgate-inject exists:
#                              the binary and the CA bundle CA_BUNDLE
#   SHA256SUMS                 of every file above, the layouts' included
# Nothing depends on the clock or the machine: the binaries are built
# -trimpath without build IDs, the images are dated at the commit, the SBOMs
# carry no time stamp and a serial number derived from the binary. Two runs
# give the same bytes (the release test checks it). One input comes from the
# build machine: the meshgate-inject image's CA bundle is CA_BUNDLE, Debian's
# ca-certificates file, so that image is the same wherever that file is.
DIST             ?= dist
SOURCE_URL       := https://github.com/meshgate/meshgate
IMAGE_REPO       ?= ghcr.io/meshgate/meshgate
INJECT_IMAGE_REPO ?= ghcr.io/meshgate/meshgate-inject
# meshgate-inject reads registries over HTTPS: its image carries the build
# machine's CA bundle (Debian's ca-certificates package writes it).
CA_BUNDLE        ?= /etc/ssl/certs/ca-certificates.crt
GATE_PLATFORMS   := linux/amd64 linux/arm64
INJECT_PLATFORMS := linux/amd64 linux/arm64 darwin/amd64 darwin/arm64
# Built when the directory is there, so a checkout without it still releases.
INJECT_PKG       := $(if $(wildcard cmd/meshgate-inject/*.go),./cmd/meshgate-inject)
RELEASE_TOOLS    := $(BIN)/tools
CYCLONEDX_GOMOD  := github.com/CycloneDX/cyclonedx-gomod/cmd/cyclonedx-gomod@v1.10.0
CRANE            := github.com/google/go-containerregistry/cmd/crane@v0.22.1
ACTIONLINT       := github.com/rhysd/actionlint/cmd/actionlint@v1.7.12

.PHONY: release release-tools publish sign github-release lint-workflows ci

# The pinned tools, built -trimpath so that their own hashes, which the SBOMs
# name, do not depend on where the module cache is.
release-tools:
	GOBIN=$(CURDIR)/$(RELEASE_TOOLS) CGO_ENABLED=0 $(GO) install -trimpath $(CYCLONEDX_GOMOD)
	GOBIN=$(CURDIR)/$(RELEASE_TOOLS) CGO_ENABLED=0 $(GO) install -trimpath $(CRANE)

release: release-tools
	@set -euo pipefail; \
	if ! [[ "$(VERSION)" =~ ^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?$$ ]]; then \
		echo "make release: VERSION=$(VERSION) is not a version tag such as v1.2.3" >&2; exit 2; fi; \
	dirty=$$(git status --porcelain --untracked-files=normal); \
	if [ -n "$$dirty" ]; then \
		printf 'make release: the tree has uncommitted changes; commit or stash them:\n%s\n' "$$dirty" >&2; exit 2; fi; \
	case "$(DIST)" in ""|/|.|..|./|../) echo "make release: DIST=$(DIST) would remove more than a release" >&2; exit 2;; esac; \
	$(if $(INJECT_PKG),test -s "$(CA_BUNDLE)" || { echo "make release: no CA bundle at CA_BUNDLE=$(CA_BUNDLE): install ca-certificates" >&2; exit 2; };) \
	revision=$$(git rev-parse HEAD); created=$$(git log -1 --format=%ct HEAD); \
	rm -rf $(DIST); mkdir -p $(DIST); \
	build() { \
		local pkg=$$1 name=$$2 os=$${3%/*} arch=$${3#*/}; \
		echo "build $(DIST)/$$name-$$os-$$arch"; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build $(GOFLAGS_BUILD) -o $(DIST)/$$name-$$os-$$arch $$pkg; \
	}; \
	for p in $(GATE_PLATFORMS); do build ./cmd/meshgate meshgate $$p; done; \
	$(if $(INJECT_PKG),for p in $(INJECT_PLATFORMS); do build $(INJECT_PKG) meshgate-inject $$p; done;) \
	for f in $(DIST)/meshgate-*; do \
		h=$$(sha256sum "$$f" | cut -c1-32); \
		serial="$${h:0:8}-$${h:8:4}-5$${h:13:3}-8$${h:17:3}-$${h:20:12}"; \
		$(RELEASE_TOOLS)/cyclonedx-gomod bin -json -std -notimestamp -serial "$$serial" \
			-version $(VERSION) -output "$$f.cdx.json" "$$f"; \
	done; \
	digest=$$($(GO) run ./test/release oci -o $(DIST)/oci -version $(VERSION) -revision $$revision \
		-created $$created -source $(SOURCE_URL) \
		$(foreach p,$(GATE_PLATFORMS),$(p)=$(DIST)/meshgate-$(subst /,-,$(p)))); \
	$(if $(INJECT_PKG),inject=$$($(GO) run ./test/release oci -o $(DIST)/oci-inject -name meshgate-inject \
		-ca $(CA_BUNDLE) -version $(VERSION) -revision $$revision -created $$created -source $(SOURCE_URL) \
		$(foreach p,$(GATE_PLATFORMS),$(p)=$(DIST)/meshgate-inject-$(subst /,-,$(p))));) \
	(cd $(DIST) && find . -type f ! -name SHA256SUMS | sed 's|^\./||' | LC_ALL=C sort | xargs sha256sum > SHA256SUMS); \
	grep -Ev '  oci(-inject)?/' $(DIST)/SHA256SUMS; \
	echo "$(DIST)/oci: meshgate index $$digest, tagged $(VERSION), for $(GATE_PLATFORMS)"; \
	$(if $(INJECT_PKG),echo "$(DIST)/oci-inject: meshgate-inject index $$inject tagged $(VERSION) for $(GATE_PLATFORMS) with the CA bundle of $(CA_BUNDLE)")

# Pushes the index of DIST/oci to IMAGE_REPO, and that of DIST/oci-inject
# (when the release has it) to INJECT_IMAGE_REPO, as VERSION, and as latest
# unless VERSION is a pre-release (v1.2.3-rc.1). Both layouts are checked
# before anything is pushed. Logs in with the credentials of
# ~/.docker/config.json (docker login, or the release workflow's login step).
# A registry on localhost is spoken to over plain HTTP, as crane does.
publish: release-tools
	@set -euo pipefail; \
	test -f $(DIST)/oci/index.json || { echo "make publish: no $(DIST)/oci: run make release VERSION=... first" >&2; exit 2; }; \
	layouts="$(DIST)/oci=$(IMAGE_REPO)"; \
	if [ -d $(DIST)/oci-inject ]; then layouts="$$layouts $(DIST)/oci-inject=$(INJECT_IMAGE_REPO)"; \
	elif [ -n "$(INJECT_PKG)" ]; then echo "make publish: no $(DIST)/oci-inject: run make release VERSION=... again" >&2; exit 2; fi; \
	for l in $$layouts; do $(GO) run ./test/release digest $${l%%=*} $(VERSION) >/dev/null; done; \
	for l in $$layouts; do \
		dir=$${l%%=*} repo=$${l#*=}; \
		digest=$$($(GO) run ./test/release digest $$dir $(VERSION)); \
		pushed=$$($(RELEASE_TOOLS)/crane push $$dir $$repo:$(VERSION)); \
		if [ "$$pushed" != "$$repo@$$digest" ]; then \
			echo "make publish: pushed $$pushed, want $$repo@$$digest" >&2; exit 1; fi; \
		echo "pushed $$repo:$(VERSION) = $$pushed"; \
		case "$(VERSION)" in *-*) echo "$(VERSION) is a pre-release: $$repo:latest stays where it is";; \
		*) $(RELEASE_TOOLS)/crane tag $$repo@$$digest latest && echo "tagged $$repo:latest = $$pushed";; esac; \
	done

# Signs, keylessly with cosign (installed by the release workflow), each
# pushed index by digest (meshgate's, and meshgate-inject's when DIST has
# it), and each platform's image in it (--recursive: a policy that checks
# the digest a node resolved finds a signature too), and DIST/SHA256SUMS,
# whose bundle joins the release files. It needs an OIDC
# identity: in the release workflow, the job's.
sign:
	@set -euo pipefail; \
	command -v cosign >/dev/null || { echo "make sign: cosign is not installed" >&2; exit 2; }; \
	test -f $(DIST)/SHA256SUMS || { echo "make sign: no $(DIST)/SHA256SUMS: run make release VERSION=... first" >&2; exit 2; }; \
	digest=$$($(GO) run ./test/release digest $(DIST)/oci $(VERSION)); \
	cosign sign --yes --recursive $(IMAGE_REPO)@$$digest; \
	if [ -d $(DIST)/oci-inject ]; then \
		digest=$$($(GO) run ./test/release digest $(DIST)/oci-inject $(VERSION)); \
		cosign sign --yes --recursive $(INJECT_IMAGE_REPO)@$$digest; fi; \
	cosign sign-blob --yes --bundle $(DIST)/SHA256SUMS.sigstore.json $(DIST)/SHA256SUMS

# Creates the release of tag VERSION on the forge with the files of DIST
# (gh, with the workflow's token), as a pre-release for v1.2.3-rc.1.
github-release:
	@set -euo pipefail; \
	command -v gh >/dev/null || { echo "make github-release: gh is not installed" >&2; exit 2; }; \
	test -f $(DIST)/SHA256SUMS.sigstore.json || { echo "make github-release: $(DIST) is not signed: run make sign first" >&2; exit 2; }; \
	gh release create $(VERSION) --verify-tag --title "meshgate $(VERSION)" --generate-notes \
		$$(case "$(VERSION)" in *-*) echo --prerelease;; esac) \
		$(DIST)/meshgate-* $(DIST)/SHA256SUMS $(DIST)/SHA256SUMS.sigstore.json

# The workflows in .github/workflows, checked by actionlint (and the shell of
# their run steps by shellcheck, when it is installed).
lint-workflows:
	$(GO) run $(ACTIONLINT) -no-color

# What CI runs: .ci/run, as root on a fresh clone.
ci:
	CI=true bash .ci/run
