# The meshgate image: a single static binary, FROM scratch, run as a
# non-root user. Used as an init container that copies the binary into a
# shared emptyDir, mounted at /meshgate in both containers:
#
#	meshgate install /meshgate
#
# The binary lives in /usr/local/bin, not at /meshgate: the volume must be
# mountable at /meshgate in the init container too, and a directory cannot
# be mounted over a file.
#
# Two ways to build it:
#
#	docker build -t meshgate .
#		Compiles in the builder stage (BUILDER_IMAGE, VERSION) and
#		produces the default, last stage.
#
#	docker build --target prebuilt -t meshgate DIR
#		Packs a binary compiled elsewhere: DIR holds a static
#		(CGO_ENABLED=0), executable file named "meshgate". Nothing is
#		pulled and no Go toolchain is needed, so this works offline
#		(buildah bud --pull=never) and lets CI ship the exact binary it
#		tested.
#
# "prebuilt" comes before the builder stage on purpose: a builder that runs
# every stage up to the target (older buildah, the legacy Docker builder) then
# never reaches the FROM ${BUILDER_IMAGE} it would have to pull. USER and
# ENTRYPOINT are repeated in both targets rather than inherited from a shared
# "FROM scratch" stage, because buildah commits such a stage as an extra, empty
# layer.

ARG BUILDER_IMAGE=golang:1.26

FROM scratch AS prebuilt
COPY meshgate /usr/local/bin/meshgate
# 65532 is the conventional "nonroot" user of distroless images: no passwd
# entry is needed, and the binary only has to be readable and executable.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/meshgate"]

# The builder runs on the build machine's platform and cross-compiles, which
# is fast and needs no emulation for multi-platform builds (buildx, buildah
# --platform). BuildKit sets TARGETOS and TARGETARCH; left empty (buildah 1.28
# warns about them), Go builds for the builder image's own platform.
FROM --platform=${BUILDPLATFORM} ${BUILDER_IMAGE} AS build
ARG VERSION=dev
ARG TARGETOS
ARG TARGETARCH
WORKDIR /src
# Modules first, so a source change does not refetch them.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Static, without local paths or symbols: the binary must run in any image,
# including scratch and distroless ones without a libc.
RUN CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} go build -trimpath -ldflags "-s -w -buildid= -X main.version=${VERSION}" \
	-o /out/meshgate ./cmd/meshgate

FROM scratch
COPY --from=build /out/meshgate /usr/local/bin/meshgate
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/meshgate"]
