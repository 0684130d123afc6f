# One image holding the three services; the command chooses the binary:
#   docker run IMAGE ingest | processor | query-api | query-api migrate
# Configuration comes from the environment (keys and defaults in example.env).

FROM rust:1-bookworm AS builder
WORKDIR /src
# librdkafka is built from source by rdkafka-sys (its own configure + make, with
# SSL, SASL, zstd and lz4 disabled by the default features); the compilers, make
# and zlib headers it needs are already in rust:1-bookworm.
# migrations/ is part of the context: sqlx::migrate! embeds it at compile time,
# so the binaries need no migration files at run time.
COPY . .
RUN cargo build --release --locked -p ingest -p processor -p query-api

FROM debian:bookworm-slim
# curl is only for the query-api health check (GET /healthz).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin monitor
COPY --from=builder /src/target/release/ingest /src/target/release/processor /src/target/release/query-api /usr/local/bin/
USER monitor
# The services shut down gracefully on Ctrl-C (SIGINT) only; as PID 1 they would
# ignore Docker's default SIGTERM and be killed after the stop timeout.
STOPSIGNAL SIGINT
EXPOSE 8000
