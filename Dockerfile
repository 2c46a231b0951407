# Build stage: compile the release binary.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# Build settings for the bundled SQLite (fdatasync for durable commits).
COPY .cargo .cargo
COPY src src
COPY migrations migrations
COPY config config
COPY templates templates
COPY benches benches
# A workspace member: cargo reads its manifest to load the workspace, even for one binary.
COPY tests/fake-entra tests/fake-entra
RUN cargo build --release --locked --bin killswitch

# Runtime stage: the binary, CA certificates for Microsoft's endpoints, and an unprivileged user.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/killswitch --create-home killswitch \
 && mkdir -p /var/lib/killswitch/data \
 && chown -R killswitch:killswitch /var/lib/killswitch
COPY --from=build /src/target/release/killswitch /usr/local/bin/killswitch
# Numeric, so a runtime that checks runAsNonRoot can tell without the image's /etc/passwd.
USER 10001:10001
WORKDIR /var/lib/killswitch
ENV KILLSWITCH_SERVER__LISTEN=0.0.0.0:8080 \
    KILLSWITCH_DATA_DIR=/var/lib/killswitch/data \
    KILLSWITCH_LOG__FORMAT=json
VOLUME ["/var/lib/killswitch/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["killswitch", "healthcheck"]
ENTRYPOINT ["killswitch"]
CMD ["serve"]
