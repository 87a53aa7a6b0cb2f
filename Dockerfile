# syntax=docker/dockerfile:1
# Multi-stage build: dependencies are compiled in their own layer (cached until Cargo.toml or
# Cargo.lock change), then the sources; the runtime image is slim and runs as a non-root user.
# Configuration is by environment only (see config/default.toml for every variable).

FROM rust:1.95-slim-bookworm AS build
WORKDIR /app
# 1. Dependencies only: a skeleton of the workspace with empty sources.
COPY Cargo.toml Cargo.lock ./
COPY actors/Cargo.toml actors/Cargo.toml
RUN mkdir -p src actors/src config \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs actors/src/lib.rs config/default.toml \
 && cargo build --release --locked \
 && rm -rf src actors/src config
# 2. The real sources.
COPY config config
COPY actors actors
COPY src src
RUN touch src/main.rs src/lib.rs actors/src/lib.rs \
 && cargo build --release --locked --bin cs-user-management

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home app
COPY --from=build /app/target/release/cs-user-management /usr/local/bin/cs-user-management
USER app
ENV APP_ENV=production HOST=0.0.0.0 PORT=8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/health/live || exit 1
ENTRYPOINT ["/usr/local/bin/cs-user-management"]
