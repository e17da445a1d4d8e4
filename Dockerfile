# syntax=docker/dockerfile:1
#
# etcdguard image: `etcdguard serve` by default, any etcdguard command otherwise
# (`docker run IMAGE snapshot ...`). tini is PID 1: it forwards SIGTERM to etcdguard (which
# aborts an upload in flight and cleans up) and reaps orphaned children. etcd 3.5 from Debian
# (the packages' signatures checked by apt) is inside, so `verify --sandbox process` works with
# no Docker daemon. No keys or credentials are baked in: mount them at run time (docs/deploy.md).
#
#   docker build -t etcdguard:0.1.0 .
#   docker run -p 9479:9479 -v /etc/etcdguard:/etc/etcdguard:ro \
#       -e ETCDGUARD_CONFIG=/etc/etcdguard/etcdguard.yaml etcdguard:0.1.0
#
# For reproducible builds pin the base image by digest:
#   docker build --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest> .

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: a self-contained virtualenv with etcdguard, and the etcd binaries ---------------
FROM ${PYTHON_IMAGE} AS build

# Debian trixie's etcd 3.5 (never 3.5.0-3.5.2, which have a data-inconsistency bug); the
# statically linked Go binaries run on bookworm.
ARG ETCD_DEBIAN_SUITE=trixie
ARG ETCD_DEBIAN_VERSION=3.5.16-4
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

COPY scripts/fetch-etcd-debian.sh /usr/local/bin/fetch-etcd-debian
RUN ETCD_DEBIAN_VERSION="${ETCD_DEBIAN_VERSION}" fetch-etcd-debian /opt/etcd "${ETCD_DEBIAN_SUITE}" \
    && for b in etcd etcdctl etcdutl; do head -c 4 "/opt/etcd/usr/bin/$b" | grep -q ELF; done \
    && /opt/etcd/usr/bin/etcd --version | grep -q "^etcd Version: 3\.5\."

# The venv lives at the same path in both stages (venvs are not relocatable).
RUN python -m venv /opt/etcdguard

WORKDIR /src
# Every dependency (and the build backend) pinned with sha256 hashes
# (scripts/lock-image-requirements.sh writes requirements/image.txt).
COPY requirements/image.txt ./requirements.txt
RUN /opt/etcdguard/bin/pip install --no-cache-dir --require-hashes --no-deps -r requirements.txt
COPY pyproject.toml README.md ./
COPY etcdguard ./etcdguard
RUN /opt/etcdguard/bin/pip install --no-cache-dir --no-deps --no-index --no-build-isolation . \
    && /opt/etcdguard/bin/pip check \
    && /opt/etcdguard/bin/pip uninstall --yes setuptools wheel pip \
    && find /opt/etcdguard -name '__pycache__' -type d -prune -exec rm -rf {} + \
    && /opt/etcdguard/bin/etcdguard --version

# ---- runtime -------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

ARG VERSION=0.1.0
ARG TINI_VERSION=0.19.0-1+b3
LABEL org.opencontainers.image.title="etcdguard" \
      org.opencontainers.image.description="Encrypted, verified etcd backups, quorum monitoring and guided disaster recovery" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN apt-get update \
    && apt-get install -y --no-install-recommends "tini=${TINI_VERSION}" \
    && rm -rf /var/lib/apt/lists/*

# Non-root by default. In Kubernetes, reading kubeadm's root-only etcd client key needs uid 0:
# the Helm chart makes runAsUser configurable (see docs/deploy.md).
RUN groupadd --system --gid 10001 etcdguard \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/etcdguard --create-home \
       --shell /usr/sbin/nologin etcdguard \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/etcdguard/backups \
    && install -d -m 0755 /etc/etcdguard

COPY --from=build /opt/etcdguard /opt/etcdguard
COPY --from=build /opt/etcd/usr/bin/etcd /opt/etcd/usr/bin/etcdctl /opt/etcd/usr/bin/etcdutl /opt/etcd/bin/

ENV PATH=/opt/etcdguard/bin:${PATH} \
    ETCDGUARD_ETCD_PATH=/opt/etcd/bin \
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

# tini -g: SIGTERM goes to etcdguard's whole process group (a verification etcd too).
ENTRYPOINT ["tini", "-g", "--", "etcdguard"]
CMD ["serve", "--listen", "[::]:9479"]
