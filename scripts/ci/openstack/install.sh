#!/usr/bin/env bash
# Installs a real OpenStack control plane (Keystone, Placement, Glance, Nova, Neutron) from PyPI into
# its own venv, so that tests/openstack and bench/bench_openstack.py can run the openstack.cloud
# collection against real services on loopback. The venv is cached (~0.5 GB) and reused when its
# stamp matches the pinned release set below; a re-run then costs nothing.
#
#   OPENSTACK_VENV   where the venv lives (default /var/cache/bonseyes/openstack-venv)
set -euo pipefail

VENV=${OPENSTACK_VENV:-/var/cache/bonseyes/openstack-venv}
PYTHON=${PYTHON:-python3}
# One coordinated release: the services of a release agree with each other and with the oslo
# libraries of their time better than "latest of each" does.
PACKAGES=(
  "keystone==${KEYSTONE_VERSION:-30.0.0}"
  "openstack-placement==${PLACEMENT_VERSION:-16.0.0}"
  "glance==${GLANCE_VERSION:-33.0.0}"
  "nova==${NOVA_VERSION:-34.0.0}"
  "neutron==${NEUTRON_VERSION:-29.0.0}"
  "python-openstackclient"
  "gunicorn"
  "psycopg2-binary"
)
STAMP_TEXT="${PACKAGES[*]}"
stamp=$VENV/.bonseyes-stamp

# The message broker (see controlplane.py for why RabbitMQ and not the in-process fake:/ transport).
if [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
  echo "[openstack] installing rabbitmq-server (Debian)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends rabbitmq-server >/dev/null
fi

# PostgreSQL serves Nova's databases (see controlplane.py: start_postgres).
bash "$(dirname "$0")/../install_postgres.sh" >/dev/null

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$STAMP_TEXT" ]; then
  echo "[openstack] cached venv at $VENV (${PACKAGES[*]})"
  exit 0
fi

echo "[openstack] installing ${PACKAGES[*]} into $VENV"
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip setuptools wheel
"$VENV/bin/pip" install --quiet "${PACKAGES[@]}"
printf '%s' "$STAMP_TEXT" > "$stamp"
echo "[openstack] installed into $VENV ($(du -sh "$VENV" | cut -f1))"
