#!/usr/bin/env bash
# Install the real parts the project's CI needs: the Docker engine (docker.io), the CNCF
# distribution registry (docker-registry) and debootstrap (to build base images locally, since no
# public registry is reachable). Idempotent: installs only what is missing, runs apt-get update once.
set -euo pipefail

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)

if [ "${#need[@]}" -eq 0 ]; then
    echo "install_docker: docker.io, docker-registry and debootstrap already installed"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install_docker: missing ${need[*]} and not root; run as root" >&2
    exit 1
fi

stamp=/var/lib/bonseyes/apt-updated
if [ ! -e "$stamp" ]; then
    echo "install_docker: apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    mkdir -p "$(dirname "$stamp")"
    touch "$stamp"
fi
echo "install_docker: apt-get install -y ${need[*]}"
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
echo "install_docker: done"
