# metrics-relay container image.
#
#   docker build -t metrics-relay:0.1.0 .
#   docker run --rm -p 9795:9795 \
#     -v "$PWD/config/ack-one.yml:/etc/metrics-relay/config.yml:ro" \
#     -v "$PWD/tls:/etc/metrics-relay/tls:ro" metrics-relay:0.1.0
#
# Two stages: the build stage installs the project and its wheels into a virtual environment, the
# runtime stage copies only that environment, so neither the build context nor build-time leftovers land
# in the final image. Both stages use the same base image, so the environment's interpreter path stays
# valid.

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1
WORKDIR /src
RUN python -m venv /opt/metrics-relay
# Only what `pip install .` reads; .dockerignore keeps the rest of the checkout out anyway.
COPY pyproject.toml README.md ./
COPY relay ./relay
# Installs the project from the build context; its dependencies are bounded in pyproject.toml.
RUN /opt/metrics-relay/bin/pip install --no-cache-dir . \
 && /opt/metrics-relay/bin/metrics-relay --help >/dev/null

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="metrics-relay" \
      org.opencontainers.image.description="Relays an mTLS-protected Prometheus endpoint (ACK One Metrics Aggregator) on plain HTTP" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/metrics-relay /opt/metrics-relay
# Bytecode was compiled at install time; the root filesystem is read-only in the Kubernetes manifests.
ENV PATH=/opt/metrics-relay/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The "nonroot" uid/gid of distroless images; the manifests' securityContext uses the same numbers.
USER 65532:65532
EXPOSE 9795
ENTRYPOINT ["metrics-relay"]
CMD ["--config.file=/etc/metrics-relay/config.yml"]
