# Multi-stage build of taskd. The SQL is checked at run time (sqlx runtime
# queries), so the build needs no database.
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, in a layer of their own: it is rebuilt only when
# Cargo.toml or Cargo.lock change, not on every source change.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src/bin \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked --bin taskd \
 && rm -rf src
COPY src ./src
COPY migrations ./migrations
ENV SQLX_OFFLINE=true
# Touch the sources so cargo rebuilds taskd itself over the placeholder.
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin taskd

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /var/lib/taskd --create-home taskd
COPY --from=build /src/target/release/taskd /usr/local/bin/taskd
USER taskd
WORKDIR /var/lib/taskd
# The API (serve, demo) and the reference agent's default ports.
EXPOSE 8080 9090
# taskd probes itself: serve answers /readyz when its database does. Worker
# and agent containers set TASKD_HEALTH_URL (compose does) or turn it off.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["taskd", "health"]
ENTRYPOINT ["taskd"]
CMD ["serve"]
