#!/usr/bin/env bash
# Stops the processes that start.sh started (by the pids it recorded, nothing else).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
VENV=${OPENSTACK_VENV:-/var/cache/bonseyes/openstack-venv}
exec "$VENV/bin/python" "$here/controlplane.py" stop
