#!/usr/bin/env bash
# Installs (cached) and starts the local OpenStack control plane; prints where clouds.yaml is.
# Every start resets all databases: see controlplane.py.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
VENV=${OPENSTACK_VENV:-/var/cache/bonseyes/openstack-venv}
bash "$here/install.sh"
exec "$VENV/bin/python" "$here/controlplane.py" start
