# syntax=docker/dockerfile:1
#
# One image for both halves of guardwire on Kubernetes:
#   node agent:  guardwire run --config /run/guardwire/node.toml   (deploy/agent.yaml)
#   controller:  guardwire controller --etcd ... --listen 0.0.0.0:8443 (deploy/controller.yaml)
# /opt/cni/bin/guardwire-cni is the chained CNI plugin the agent's init container
# copies onto the node.
#
#   docker build -t guardwire .                  # with the official images
#   packaging/image.sh build                     # on a machine without a registry
#                                                # (builds both base images locally and
#                                                # passes them as RUST_IMAGE / BASE_IMAGE)

ARG RUST_IMAGE=docker.io/library/rust:1.95-slim-bookworm
ARG BASE_IMAGE=docker.io/library/debian:bookworm-slim

# ---------------------------------------------------------------- build
FROM ${RUST_IMAGE} AS build
# etcd-client compiles etcd's .proto files: protoc and the well-known types;
# build.rs compiles the kernel fast path's BPF program: clang and libbpf's headers.
RUN if ! command -v protoc >/dev/null || [ ! -e /usr/include/google/protobuf/timestamp.proto ] \
        || ! command -v clang >/dev/null || [ ! -e /usr/include/bpf/bpf_helpers.h ]; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            protobuf-compiler libprotobuf-dev pkg-config clang libbpf-dev linux-libc-dev \
        && apt-get clean && rm -rf /var/lib/apt/lists/*; \
    fi
WORKDIR /src
COPY . .
# The registry and target/ live in cache mounts, so a rebuild only recompiles
# what changed; the binaries are copied out of the cache into the layer.
RUN --mount=type=cache,id=guardwire-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=guardwire-target,target=/src/target \
    cargo build --release --locked --bin guardwire --bin guardwire-cni \
    && mkdir -p /out \
    && cp target/release/guardwire target/release/guardwire-cni /out/

# ---------------------------------------------------------------- runtime
FROM ${BASE_IMAGE}
# iproute2: the agent's start script makes the sec ns and the management link
# (ip netns, ip link); nftables: NAT between the management link and the node
# network (deploy/agent.yaml, setup.sh); ca-certificates: TLS to etcd.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        iproute2 nftables ca-certificates \
    && apt-get clean && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/guardwire /out/guardwire-cni /usr/local/bin/
COPY --from=build /out/guardwire-cni /opt/cni/bin/guardwire-cni
LABEL org.opencontainers.image.title="guardwire" \
      org.opencontainers.image.description="guardwire node agent, controller and CNI plugin"
ENTRYPOINT ["/usr/local/bin/guardwire"]
CMD ["--help"]
