#!/usr/bin/env bash
# Prepare this machine for the daemonless image tests (pytest -m images): install buildah, podman,
# runc and mmdebstrap, configure them for a machine without cgroup delegation, and build a local
# Debian Python base image (registry images cannot be pulled here).
#
#   bash tests/images/prepare.sh          # idempotent; about a minute the first time
#
# Needs root and the Debian mirror. The base image is tagged $BASE_IMAGE (below), which the tests
# pass to the Dockerfiles as --build-arg BASE_IMAGE=... .
set -euo pipefail

BASE_IMAGE="${BASE_IMAGE:-localhost/ml-batch-jobs/debian-python:bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if [ "$(id -u)" != 0 ]; then
  echo "prepare.sh: needs root (apt-get, /etc/containers, rootful podman storage)" >&2
  exit 1
fi

start_all=$SECONDS
if ! command -v buildah >/dev/null || ! command -v podman >/dev/null || ! command -v runc >/dev/null \
   || ! command -v mmdebstrap >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q buildah podman runc mmdebstrap \
    || { apt-get update -q && apt-get install -y -q buildah podman runc mmdebstrap; }
fi

# crun (podman's default) fails here on cgroups and rlimits; runc works. The ulimits keep podman from
# copying the host's (larger than allowed) rlimits into the container.
# (The tests pass these flags themselves; the file makes plain `podman run` and the docker CLI
# through `podman system service` work the same way.) An existing file is kept as .orig.
mkdir -p /etc/containers
if ! grep -qs 'ml-batch-jobs' /etc/containers/containers.conf; then
  [ -f /etc/containers/containers.conf ] && cp /etc/containers/containers.conf /etc/containers/containers.conf.orig
  cat >/etc/containers/containers.conf <<'CONF'
# written by ml-batch-jobs tests/images/prepare.sh
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
fi

if ! podman image exists "$BASE_IMAGE"; then
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  start=$SECONDS
  # minbase + Python: the same role as python:*-slim (Debian's Python 3.11 instead of 3.12).
  mmdebstrap --quiet --variant=minbase \
    --include=python3,python3-venv,python-is-python3,ca-certificates \
    bookworm "$work/rootfs.tar" "$MIRROR"
  podman import --change 'ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD=["python3"]' "$work/rootfs.tar" "$BASE_IMAGE" >/dev/null
  echo "built $BASE_IMAGE in $((SECONDS - start)) s"
fi
podman image inspect --format "$BASE_IMAGE {{.Id}} {{.Size}} bytes" "$BASE_IMAGE"
echo "prepare.sh: ready in $((SECONDS - start_all)) s"
