#!/bin/sh
# Install the PostgreSQL server binaries the SM tests start themselves (initdb + pg_ctl in a temp dir).
# Idempotent: does nothing when /usr/lib/postgresql/*/bin/initdb already exists. Needs root (apt-get).
set -eu

if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo "postgresql server binaries present: $(ls /usr/lib/postgresql/*/bin/initdb | head -n 1)"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends postgresql
# The Debian package creates and starts a cluster of its own; the tests never use it.
if command -v pg_lsclusters >/dev/null 2>&1; then
    pg_lsclusters --no-header | while read -r version name _; do
        pg_ctlcluster "$version" "$name" stop || true
    done
fi
ls /usr/lib/postgresql/*/bin/initdb
