#!/usr/bin/env bash
# Creates .venv with bonseyes_py and every extra the tests and playbooks need, on a fresh Debian 12.
# Re-runs are cheap: the install is skipped while pyproject.toml is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "[bootstrap] installing python3 (apt)"; apt-get update -qq && apt-get install -y -qq python3 python3-venv >/dev/null
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "[bootstrap] error: Python >= 3.11 is required, $("$PYTHON" --version) found; set PYTHON=..." >&2; exit 1
fi
if ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  echo "[bootstrap] installing python3-venv (apt)"; apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
fi
if [ ! -x .venv/bin/python ]; then
  echo "[bootstrap] creating .venv"; "$PYTHON" -m venv .venv
fi
stamp=.venv/.bonseyes-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[bootstrap] installing bonseyes_py and its extras into .venv (a few minutes on a fresh machine)"
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -m pip install -q -e ".[sm,mp,test,dev,postgres,deploy,build]" 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -c 'import bonseyes_py, cryptography, jwt, cedarpy, sqlalchemy, bcrypt, yaml, xdist' \
    || { echo "[bootstrap] error: the install into .venv failed; see pip output above" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
echo "[bootstrap] .venv ready: $(.venv/bin/python --version)"
