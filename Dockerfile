# syntax=docker/dockerfile:1
# The controller image: bulwark-controller and bulwarkctl on Debian bookworm, non-root.
#   docker build -t bulwark-controller .
# The Helm chart (helm/bulwark) runs it as a StatefulSet; by hand:
#   docker run -v bulwark-data:/var/lib/bulwark -v $PWD/pki:/etc/bulwark/pki:ro \
#     bulwark-controller --node-id 1 --listen 0.0.0.0:7000 --http-listen 0.0.0.0:7080 ...

FROM rust:1-bookworm AS build
WORKDIR /src
# Manifests first, so the dependency layer is cached across source edits.
COPY Cargo.toml Cargo.lock rustfmt.toml clippy.toml ./
COPY proto ./proto
COPY controller ./controller
COPY agent ./agent
COPY integration-tests ./integration-tests
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p bulwark-controller --bins \
 && mkdir -p /out \
 && cp target/release/bulwark-controller target/release/bulwarkctl /out/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 bulwark \
 && useradd --system --uid 10001 --gid bulwark --home-dir /var/lib/bulwark \
      --shell /usr/sbin/nologin bulwark \
 && install -d -o bulwark -g bulwark -m 0700 /var/lib/bulwark \
 && install -d -o root -g bulwark -m 0750 /etc/bulwark
COPY --from=build /out/bulwark-controller /out/bulwarkctl /usr/bin/
COPY policies /usr/share/bulwark/policies
USER 10001:10001
ENV BULWARK_DATA_DIR=/var/lib/bulwark \
    BULWARK_LISTEN=0.0.0.0:7000 \
    BULWARK_HTTP_LISTEN=0.0.0.0:7080
VOLUME ["/var/lib/bulwark"]
# 7000: mutual-TLS gRPC (peers, admins, agents); 7080: /healthz, /readyz, /metrics.
EXPOSE 7000 7080
ENTRYPOINT ["/usr/bin/bulwark-controller"]
