#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs and starts what the tests need, lints, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { echo; echo "==> $*"; }

step "Python environment"; bash scripts/bootstrap.sh
for script in scripts/ci/install_docker.sh scripts/ci/start_docker.sh scripts/ci/build_base_images.sh \
              scripts/ci/install_postgres.sh scripts/install_collections.sh; do
  if [ -f "$script" ]; then step "$script"; bash "$script"; fi
done

step "ruff"; .venv/bin/ruff check .
step "mypy"; .venv/bin/mypy
if [ -f scripts/lint_ansible.sh ]; then step "ansible-lint and ansible-test sanity"; bash scripts/lint_ansible.sh; fi

# BL (a PyInstaller build, cached by a hash of its sources) is built once here, not by each pytest worker.
step "Bonseyes Layer build (cached)"; .venv/bin/python -m bonseyes_py.bl.build onedir

# The suite runs on pytest-xdist workers (one per core unless BONSEYES_TEST_WORKERS says otherwise); tests
# that share a machine-wide resource are pinned to one worker by the groups of tests/conftest.py.
workers=${BONSEYES_TEST_WORKERS:-$(nproc)}
step "pytest ($workers workers)"
.venv/bin/pytest -p no:cacheprovider -n "$workers" --durations=25 "$@"
