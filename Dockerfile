# syntax=docker/dockerfile:1
# Multi-stage build: dependencies are compiled in their own layer (cached until Cargo.toml or
# Cargo.lock change), then the sources; the runtime image is slim and runs as a non-root user.
# Configuration is by environment only (see config/default.toml for every variable).

FROM rust:1.95-slim-bookworm AS build
WORKDIR /app
# 1. Dependencies only: the workspace's manifests (every member's, or cargo cannot load the
#    workspace) with stub sources, so this layer is rebuilt only when a manifest changes.
COPY Cargo.toml Cargo.lock ./
COPY actors/Cargo.toml actors/Cargo.toml
COPY loadtest/Cargo.toml loadtest/Cargo.toml
RUN mkdir -p src actors/src loadtest/src \
 && echo 'fn main() {}' > src/main.rs && echo 'fn main() {}' > loadtest/src/main.rs \
 && touch src/lib.rs actors/src/lib.rs \
 && cargo build --release --locked --bin cs-user-management \
 && rm -rf src actors/src
# 2. The real sources (and what they include: the default configuration, the /ops page), and
#    the commit /metrics names (csum_build_info): `--build-arg CSUM_COMMIT=$(git rev-parse HEAD)`.
ARG CSUM_COMMIT=unknown
COPY build.rs build.rs
COPY config config
COPY static static
COPY actors actors
COPY src src
RUN touch src/main.rs src/lib.rs actors/src/lib.rs \
 && cargo build --release --locked --bin cs-user-management \
 && mkdir -p /data

# distroless: CA certificates and glibc, no shell, no package manager; "nonroot" is uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=build /app/target/release/cs-user-management /usr/local/bin/cs-user-management
# The embedded backend's directory (used when MONGODB_URI / REDIS_HOST are not set), owned by
# the runtime user; mount a volume there to keep its data.
COPY --from=build --chown=65532:65532 /data /data
USER 65532:65532
ENV APP_ENV=production HOST=0.0.0.0 PORT=8080 DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8080
# The binary checks itself (GET /health/live on its own port): no curl in the image.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/cs-user-management", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/cs-user-management"]
