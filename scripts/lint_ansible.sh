#!/usr/bin/env bash
# Lints the bonseyes.vp collection the way CI does:
#   1. ansible-lint (production profile, .ansible-lint) over playbooks, roles, inventories and tests;
#   2. ansible-test sanity on the built collection artefact, for Python 3.11, with every test.
#
# ansible-test needs the collection under a path ending in ansible_collections/bonseyes/vp and
# resolves symlinks, so it runs on the artefact of `ansible-galaxy collection build` extracted to a
# temporary directory: what is checked is exactly what would be published.
#
# ansible-test creates one virtualenv per sanity test and bootstraps pip in it with a get-pip script
# from a host that is not reachable here (only PyPI is). The stand-in written below bootstraps the pip
# that ships with Python (ensurepip) and then lets it install the pinned pip from PyPI, which is what
# get-pip itself would have done. The sanity requirements themselves come from PyPI, pinned by
# ansible-test, into .ansible/sanity-venv and ~/.ansible/test/venv (cached between runs).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

bash scripts/install_collections.sh >/dev/null

echo "[lint] ansible-lint (production profile)"
PATH="$root/.venv/bin:$PATH" .venv/bin/ansible-lint --nocolor -q

core_version=$(.venv/bin/python -c 'import ansible; print(ansible.__version__)')
sanity_venv=$root/.ansible/sanity-venv
stamp=$sanity_venv/.installed
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$core_version" ]; then
  echo "[lint] preparing $sanity_venv with ansible-core $core_version and the sanity requirements"
  rm -rf "$sanity_venv"
  .venv/bin/python -m venv "$sanity_venv"
  requirements=$(.venv/bin/python -c 'import ansible_test, os; print(os.path.join(os.path.dirname(ansible_test.__file__), "_data", "requirements"))')
  args=()
  for file in "$requirements"/sanity.*.txt; do args+=(-r "$file"); done
  "$sanity_venv/bin/python" -m pip install -q --disable-pip-version-check "ansible-core==$core_version" "${args[@]}" \
    2>&1 | grep -v '^WARNING: Location' || true
  "$sanity_venv/bin/python" -c 'import ansible_test, pylint, yamllint, voluptuous' \
    || { echo "[lint] error: installing the sanity requirements failed" >&2; exit 1; }
  echo "$core_version" > "$stamp"
fi

pip_version=$("$sanity_venv/bin/python" -c '
from ansible_test._internal.python_requirements import get_venv_packages
print(get_venv_packages(type("P", (), {"version": "3.11"})())["pip"])')
get_pip=$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py
if [ ! -f "$get_pip" ] || ! grep -q 'bonseyes stand-in v2' "$get_pip"; then
  mkdir -p "$(dirname "$get_pip")"
  cat > "$get_pip" <<'PY'
"""bonseyes stand-in v2 for get-pip.py: ensurepip's bundled pip, then `pip install` of what was asked."""
import ensurepip
import importlib
import os
import sys

config_file = os.environ.get("PIP_CONFIG_FILE")
ensurepip.bootstrap(upgrade=True)
# ensurepip points PIP_CONFIG_FILE at /dev/null for its own offline install; the pip run below must
# see the machine's pip configuration (index, certificates) again.
if config_file is None:
    os.environ.pop("PIP_CONFIG_FILE", None)
else:
    os.environ["PIP_CONFIG_FILE"] = config_file
importlib.invalidate_caches()
from pip._internal.cli.main import main  # noqa: E402

arguments = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.exit(main(["install", "--quiet", "--upgrade", "--force-reinstall", *arguments]))
PY
fi

workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT
collection=$workdir/ansible_collections/bonseyes/vp
mkdir -p "$collection"
.venv/bin/ansible-galaxy collection build --force --output-path "$workdir" . >/dev/null
tar xzf "$workdir"/bonseyes-vp-*.tar.gz -C "$collection"
if [ -d tests/sanity ]; then mkdir -p "$collection/tests" && cp -r tests/sanity "$collection/tests/"; fi

echo "[lint] ansible-test sanity --python 3.11 (on the built artefact)"
cd "$collection"
PATH="$sanity_venv/bin:$PATH" ansible-test sanity --python 3.11 --color no
