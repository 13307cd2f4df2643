# syntax=docker/dockerfile:1
#
# callhippo-ingest: build with  docker build -t callhippo-ingest .
# Run:  docker run -e DATABASE_URL=postgres://… -e WEBHOOK_TOKEN=… -p 8080:8080 callhippo-ingest
# (see docker-compose.yml for a complete setup with PostgreSQL).

ARG RUST_VERSION=1
ARG DEBIAN_SUITE=bookworm

# ---------------------------------------------------------------- chef
# cargo-chef (from crates.io) turns the workspace's manifests and lock file into a recipe,
# then builds the dependencies alone from it: that layer stays cached while only the
# project's own code changes.
FROM rust:${RUST_VERSION}-${DEBIAN_SUITE} AS chef
ARG CARGO_CHEF_VERSION=0.1.78
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /build
ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# ---------------------------------------------------------------- build
FROM chef AS builder
COPY --from=planner /build/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json --bin callhippo-ingest
# The project itself (src/, migrations/ embedded at compile time, bench/, …; .dockerignore
# keeps target/ and .git out).
COPY . .
RUN cargo build --release --locked --bin callhippo-ingest \
    && install -D -m 0755 target/release/callhippo-ingest /out/callhippo-ingest

# ---------------------------------------------------------------- runtime
FROM debian:${DEBIAN_SUITE}-slim

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --gid 10001 callhippo \
    && useradd --uid 10001 --gid callhippo --home-dir /var/lib/callhippo \
        --no-create-home --shell /usr/sbin/nologin callhippo \
    && install -d -o callhippo -g callhippo -m 0750 /var/lib/callhippo /var/lib/callhippo/spool

COPY --from=builder /out/callhippo-ingest /usr/local/bin/callhippo-ingest

# hadolint ignore=DL3066
USER callhippo
WORKDIR /var/lib/callhippo
ENV SPOOL_DIR=/var/lib/callhippo/spool \
    LISTEN_ADDR=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["callhippo-ingest", "healthcheck"]
ENTRYPOINT ["callhippo-ingest"]
CMD ["serve"]
