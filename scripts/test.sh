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

step "pytest"
.venv/bin/pytest -p no:cacheprovider "$@"
