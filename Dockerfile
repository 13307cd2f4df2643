# syntax=docker/dockerfile:1
#
# callhippo-ingest: build with  docker build -t callhippo-ingest .
# Run:  docker run -e DATABASE_URL=postgres://… -e WEBHOOK_TOKEN=… -p 8080:8080 callhippo-ingest
# (see docker-compose.yml for a complete setup with PostgreSQL).

ARG RUST_VERSION=1
ARG DEBIAN_SUITE=bookworm

# ---------------------------------------------------------------- manifests
# Only what Cargo needs to resolve and build the dependencies: every Cargo.toml and
# Cargo.lock of the workspace (the root package and members such as bench/), with
# placeholder sources for the targets they name. This stage reruns on every change,
# but its output changes only with the manifests, so the dependency layer below
# stays cached while only the project's own code changes.
FROM rust:${RUST_VERSION}-${DEBIAN_SUITE} AS manifests
SHELL ["/bin/bash", "-eo", "pipefail", "-c"]
WORKDIR /src
COPY . .
RUN set -eu; \
    mkdir -p /manifests; \
    find . -path ./target -prune -o \( -name Cargo.toml -o -name Cargo.lock \) -type f -print | \
    while read -r f; do \
        d=$(dirname "$f"); \
        mkdir -p "/manifests/$d"; \
        cp "$f" "/manifests/$f"; \
        [ "$(basename "$f")" = Cargo.toml ] || continue; \
        for p in $(sed -n 's/^[[:space:]]*path[[:space:]]*=[[:space:]]*"\([^"]*\.rs\)".*/\1/p' "$f") \
                 src/main.rs src/lib.rs $(find "$d/src/bin" -name '*.rs' -printf 'src/bin/%P\n' 2>/dev/null || true); do \
            [ -e "$d/$p" ] || continue; \
            mkdir -p "$(dirname "/manifests/$d/$p")"; \
            case "$p" in \
                */lib.rs) : > "/manifests/$d/$p" ;; \
                *) echo 'fn main() {}' > "/manifests/$d/$p" ;; \
            esac; \
        done; \
    done; \
    find /manifests -type f | sort

# ---------------------------------------------------------------- build
FROM rust:${RUST_VERSION}-${DEBIAN_SUITE} AS builder
WORKDIR /build
ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0 \
    SQLX_OFFLINE=true

# 1. The dependencies, built against the placeholders (cached while the manifests
#    stay the same); then the placeholders go.
COPY --from=manifests /manifests/ ./
RUN cargo build --release --locked --bin callhippo-ingest \
    && find . -path ./target -prune -o -name '*.rs' -type f -exec rm -f {} +

# 2. The project itself (src/, migrations/ embedded at compile time, bench/, …;
#    .dockerignore keeps target/ and .git out). The sources are touched so that
#    Cargo never takes the placeholders' artifacts for up to date.
COPY . .
RUN find . -path ./target -prune -o -type f \( -name '*.rs' -o -name '*.sql' \) -exec touch {} + \
    && cargo build --release --locked --bin callhippo-ingest \
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
