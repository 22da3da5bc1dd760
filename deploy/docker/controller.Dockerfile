# syntax=docker/dockerfile:1
# janus-controller. Static musl binary on a distroless static base, non-root.
# Build from the workspace root:
#   docker build -f deploy/docker/controller.Dockerfile -t ghcr.io/clustergarage/janus-controller:0.1.0 .
# (Not built in CI: the CI machine has no container engine.)
ARG RUST_VERSION=1.95
FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
RUN rustup target add x86_64-unknown-linux-musl && \
    apt-get update && apt-get install -y --no-install-recommends musl-tools && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p janus-controller --bin janus-controller --target x86_64-unknown-linux-musl && \
    install -D -m 0755 target/x86_64-unknown-linux-musl/release/janus-controller /out/janus-controller

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/janus-controller /usr/local/bin/janus-controller
# nonroot = 65532:65532, matching the Deployment's securityContext.
USER 65532:65532
EXPOSE 9442
ENTRYPOINT ["/usr/local/bin/janus-controller"]
