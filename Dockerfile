# syntax=docker/dockerfile:1
#
# openfunction-dapr image: the release binary on distroless, non-root.
#
#   docker build -t openfunction-dapr:0.1.0 .
#
# (BuildKit, the default builder since Docker 23, for the cache mounts.)

# --- build -------------------------------------------------------------------
# rust:1 is the latest stable toolchain (the crate needs >= 1.89, edition 2024);
# bookworm matches the glibc of the distroless/cc-debian12 runtime image.
FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# The registry and the target directory are cache mounts: rebuilds after a
# source change recompile only this crate. --locked: exactly Cargo.lock.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build --release --locked --bin openfunction-dapr \
 && install -D -m 0755 target/release/openfunction-dapr /out/openfunction-dapr

# --- runtime -----------------------------------------------------------------
# glibc, libgcc and CA certificates; no shell, no package manager. The
# :nonroot tag runs as uid/gid 65532 (the manifests' runAsUser).
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="openfunction-dapr" \
      org.opencontainers.image.description="Admission webhook and controller wiring OpenFunction functions to Dapr" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/openfunction-dapr /usr/local/bin/openfunction-dapr
USER 65532:65532
# 9443: the webhook (HTTPS); 9090: /livez, /readyz, /metrics (HTTP).
EXPOSE 9443 9090
ENTRYPOINT ["/usr/local/bin/openfunction-dapr"]
CMD ["serve"]
