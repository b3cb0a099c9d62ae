# metrics-relay container image.
#
#   docker build -t metrics-relay:0.1.0 .
#   docker run --rm -p 9795:9795 \
#     -v "$PWD/config/ack-one.yml:/etc/metrics-relay/config.yml:ro" \
#     -v "$PWD/tls:/etc/metrics-relay/tls:ro" metrics-relay:0.1.0
#
# Two stages: the build stage (the full image, which has gcc) installs the project, compiling its line
# engine, into a virtual environment; the runtime stage (slim, no compiler) copies only that environment,
# so neither the build context nor the toolchain lands in the final image. Both images have the same
# Python in /usr/local on the same Debian release, so the environment's interpreter path stays valid.

ARG PYTHON_VERSION=3.11.13
ARG DEBIAN_RELEASE=bookworm

FROM python:${PYTHON_VERSION}-${DEBIAN_RELEASE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1
WORKDIR /src
RUN python -m venv /opt/metrics-relay
# Only what `pip install .` reads, and the lock; .dockerignore keeps the rest of the checkout out anyway.
COPY requirements/constraints.txt ./requirements/
COPY pyproject.toml setup.py README.md ./
COPY relay ./relay
# Every version comes from the lock: pip (--build-constraint needs pip >= 25.3) and the venv's own
# setuptools first, then the project with its dependencies (--constraint) and the setuptools and Cython
# that build it (--build-constraint: pip's isolated build does not read --constraint). The import fails
# the build if the compiled engine was not built (setup.py would fall back to Python); -P keeps /src/relay,
# the uncompiled sources in the working directory, from shadowing the installed package.
RUN /opt/metrics-relay/bin/pip install --no-cache-dir --constraint requirements/constraints.txt pip setuptools \
 && /opt/metrics-relay/bin/pip install --no-cache-dir --constraint requirements/constraints.txt \
      --build-constraint requirements/constraints.txt . \
 && /opt/metrics-relay/bin/python -P -c "import relay._engine" \
 && /opt/metrics-relay/bin/metrics-relay --help >/dev/null

FROM python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE}
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
