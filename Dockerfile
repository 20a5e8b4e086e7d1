# syntax=docker/dockerfile:1
# turnpath's container image: a static, cgo-free binary, run as a non-root user that
# gets exactly the four capabilities it needs from the binary's file capabilities.
#
#   docker build -t turnpath --build-arg VERSION=$(git describe --tags --always) .
#   docker run --rm --network host --cap-drop ALL \
#     --cap-add BPF --cap-add PERFMON --cap-add NET_ADMIN --cap-add NET_RAW \
#     turnpath monitor --listen :9469 relay.example.net
#
# File capabilities only take effect when the container's bounding set has them (the
# --cap-add above, securityContext.capabilities.add in Kubernetes) and privilege
# escalation is allowed (no_new_privs would ignore them: allowPrivilegeEscalation must
# not be false). CAP_BPF and CAP_PERFMON need Linux 5.8 or later.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# The BPF objects are committed (loader/, reflector/): no clang in the image.
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-X main.version=${VERSION}" -o /out/turnpath ./cmd/turnpath

FROM debian:bookworm-slim
# libcap2-bin for setcap (and getcap, to check an image). The binary is copied and given
# its capabilities in one step: Docker's COPY does not keep file capabilities, and a
# setcap after a COPY would store the binary twice.
RUN apt-get update && apt-get install -y --no-install-recommends libcap2-bin && rm -rf /var/lib/apt/lists/*
RUN --mount=type=bind,from=build,source=/out,target=/mnt/out \
    install -m 0755 /mnt/out/turnpath /usr/local/bin/turnpath && \
    setcap cap_bpf,cap_perfmon,cap_net_admin,cap_net_raw=ep /usr/local/bin/turnpath
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/turnpath"]
CMD ["--help"]
