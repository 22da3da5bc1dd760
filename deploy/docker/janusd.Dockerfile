# syntax=docker/dockerfile:1
# janusd, the node agent. Static musl binary on a distroless static base.
# Build from the workspace root:
#   docker build -f deploy/docker/janusd.Dockerfile -t ghcr.io/clustergarage/janusd:0.1.0 .
# (Not built in CI: the CI machine has no container engine.)
ARG RUST_VERSION=1.95
FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
RUN rustup target add x86_64-unknown-linux-musl && \
    apt-get update && apt-get install -y --no-install-recommends musl-tools && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The toolchain file pins the version; the target is added above.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p janus-agent --target x86_64-unknown-linux-musl && \
    install -D -m 0755 target/x86_64-unknown-linux-musl/release/janusd /out/janusd && \
    install -D -m 0755 target/x86_64-unknown-linux-musl/release/janusctl /out/janusctl

# distroless/static: no shell, no package manager, CA certificates and tzdata only.
# The agent runs as root (fanotify needs CAP_SYS_ADMIN), with capabilities
# dropped to SYS_ADMIN, SYS_PTRACE and DAC_READ_SEARCH by the DaemonSet.
FROM gcr.io/distroless/static-debian12:latest
COPY --from=build /out/janusd /usr/local/bin/janusd
COPY --from=build /out/janusctl /usr/local/bin/janusctl
USER 0:0
EXPOSE 9440 9441
ENTRYPOINT ["/usr/local/bin/janusd"]
CMD ["serve"]
