#!/usr/bin/env bash
# Build the two local base images every artefact test starts from, since no public registry is
# reachable: debootstrap a Debian bookworm minbase, tar it (without ./proc ./sys ./dev) and
# `docker import` it.
#   bonseyes/base-minbase:bookworm   glibc, no Python (proves BL is self-contained)
#   bonseyes/base-python:bookworm    minbase + python3
# Cached twice: skipped when the engine has the image; the tarball stays in /var/cache/bonseyes/
# so a fresh engine re-imports in seconds without debootstrap.
set -euo pipefail

CACHE=${BONSEYES_IMAGE_CACHE:-/var/cache/bonseyes}
SUITE=bookworm
SOURCES=/etc/apt/sources.list.d/debian.sources
ROOTFS=""

mirror() {
    # The first URIs line of the first stanza is the main archive (the security one comes later).
    local uri
    uri=$(awk '/^URIs:/ {print $2; exit}' "$SOURCES" 2>/dev/null || true)
    echo "${BONSEYES_DEBIAN_MIRROR:-${uri:-http://deb.debian.org/debian}}"
}

unmount_under() {
    # debootstrap leaves proc/sys/dev mounts behind (always when it fails); deepest mount first.
    local mnt
    for mnt in $(awk -v d="$1/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r); do
        umount -l "$mnt" 2>/dev/null || true
    done
}

cleanup_root() {
    local dir=$1
    [ -d "$dir" ] || return 0
    unmount_under "$dir"
    if grep -qF " $dir/" /proc/mounts; then
        echo "build_base_images: refusing to delete $dir: mounts remain under it" >&2
        return 1
    fi
    rm -rf --one-file-system "$dir"
}

build() {
    local image=$1 tarball=$2 include=$3
    if docker image inspect "$image" >/dev/null 2>&1; then
        echo "build_base_images: $image present in the engine, skipped"
        return 0
    fi
    if [ ! -s "$CACHE/$tarball" ]; then
        ROOTFS=$(mktemp -d /var/tmp/bonseyes-rootfs.XXXXXX)
        trap 'cleanup_root "$ROOTFS"' EXIT
        echo "build_base_images: debootstrap --variant=minbase ${include:+$include }$SUITE from $(mirror) (about a minute)"
        # shellcheck disable=SC2086
        if ! debootstrap --variant=minbase $include "$SUITE" "$ROOTFS" "$(mirror)" >"$CACHE/$tarball.log" 2>&1; then
            echo "build_base_images: debootstrap failed; last lines of $CACHE/$tarball.log:" >&2
            tail -n 10 "$CACHE/$tarball.log" >&2
            return 1
        fi
        unmount_under "$ROOTFS"
        # Keep the image small and reproducible-ish: no apt lists, no package caches.
        rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/cache/apt/archives/*.deb
        echo "build_base_images: packing $CACHE/$tarball"
        tar --numeric-owner -C "$ROOTFS" --exclude=./proc --exclude=./sys --exclude=./dev -cf "$CACHE/$tarball.tmp" .
        mv "$CACHE/$tarball.tmp" "$CACHE/$tarball"
        cleanup_root "$ROOTFS"
        trap - EXIT
    else
        echo "build_base_images: reusing cached $CACHE/$tarball"
    fi
    echo "build_base_images: docker import $image"
    docker import --change 'CMD ["/bin/bash"]' "$CACHE/$tarball" "$image" >/dev/null
    echo "build_base_images: $image ready ($(docker image inspect --format '{{.Size}}' "$image") bytes)"
}


if ! docker info >/dev/null 2>&1; then
    echo "build_base_images: no Docker engine answers; run scripts/ci/start_docker.sh first" >&2
    exit 1
fi
mkdir -p "$CACHE"
build bonseyes/base-minbase:bookworm base-minbase-bookworm.tar ""
build bonseyes/base-python:bookworm base-python-bookworm.tar "--include=python3"
echo "build_base_images: done"
