#!/usr/bin/env bash
# Fills ./.ansible/collections (the collections_path of ansible.cfg) without a Galaxy server:
#   1. links this repository as ansible_collections/bonseyes/vp, so playbooks use the modules in place;
#   2. extracts community.crypto, community.docker (+ community.library_inventory_filtering_v1, which it
#      needs), openstack.cloud and ansible.posix from the `ansible` wheel on PyPI (about 6.5 MB of it).
# Re-runs are cheap: the wheel is fetched only while a wanted collection is missing, and is cached.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

# The ansible community package whose bundled collections match the ansible-core in .venv (2.19.x).
ANSIBLE_PACKAGE_VERSION=${ANSIBLE_PACKAGE_VERSION:-12.3.0}
COLLECTIONS=(community/crypto community/docker community/library_inventory_filtering_v1 openstack/cloud ansible/posix)
PYTHON=${PYTHON:-$root/.venv/bin/python}
dest=$root/.ansible/collections/ansible_collections
cache=${BONSEYES_CACHE_DIR:-$root/.ansible/cache}

mkdir -p "$dest/bonseyes" "$cache"
# .ansible/ is machine-local state: keep it out of git without touching the project's .gitignore.
[ -f "$root/.ansible/.gitignore" ] || printf '*\n' > "$root/.ansible/.gitignore"

link=$dest/bonseyes/vp
if [ "$(readlink "$link" 2>/dev/null || true)" != "$root" ]; then
  rm -rf "$link"
  ln -s "$root" "$link"
  echo "[collections] linked $link -> $root"
fi

missing=()
for collection in "${COLLECTIONS[@]}"; do
  [ -f "$dest/$collection/MANIFEST.json" ] || missing+=("$collection")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "[collections] present: ${COLLECTIONS[*]//\//.} (ansible $ANSIBLE_PACKAGE_VERSION)"
  exit 0
fi

wheel=$cache/ansible-$ANSIBLE_PACKAGE_VERSION-py3-none-any.whl
if [ ! -f "$wheel" ]; then
  echo "[collections] downloading the ansible $ANSIBLE_PACKAGE_VERSION wheel (PyPI, ~55 MB) to extract ${missing[*]//\//.}"
  "$PYTHON" -m pip download -q --no-deps --disable-pip-version-check "ansible==$ANSIBLE_PACKAGE_VERSION" -d "$cache" \
    2>&1 | grep -v '^WARNING: Location' || true
  [ -f "$wheel" ] || { echo "[collections] error: pip did not produce $wheel" >&2; exit 1; }
fi

# Extract into a temporary directory and move each collection into place whole, so an interrupted
# run never leaves a half-extracted collection that the MANIFEST.json check above would accept.
"$PYTHON" - "$wheel" "$dest" "${missing[@]}" <<'PY'
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

wheel, dest, wanted = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
with zipfile.ZipFile(wheel) as archive, tempfile.TemporaryDirectory(dir=dest) as scratch:
    for collection in wanted:
        prefix = f"ansible_collections/{collection}/"
        members = [m for m in archive.namelist() if m.startswith(prefix) and not m.endswith("/")]
        if not members:
            sys.exit(f"[collections] error: {collection} is not in {wheel}")
        for member in members:
            target = Path(scratch, member).resolve()
            if not str(target).startswith(str(Path(scratch).resolve()) + "/"):
                sys.exit(f"[collections] error: unsafe path {member} in {wheel}")
            archive.extract(member, scratch)
        final = dest / collection
        final.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(final, ignore_errors=True)
        shutil.move(str(Path(scratch, prefix)), str(final))
        print(f"[collections] installed {collection.replace('/', '.')} ({len(members)} files)")
PY
