# Multi-stage build of taskd. The SQL is checked at run time (sqlx runtime
# queries), so the build needs no database.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
ENV SQLX_OFFLINE=true
RUN cargo build --release --locked --bin taskd

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /var/lib/taskd --create-home taskd
COPY --from=build /src/target/release/taskd /usr/local/bin/taskd
USER taskd
WORKDIR /var/lib/taskd
ENTRYPOINT ["taskd"]
CMD ["serve"]
