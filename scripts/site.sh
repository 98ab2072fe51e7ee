#!/usr/bin/env bash
# The main job: deploy the all-in-one virtual premise with site.yml on inventories/local.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
for script in scripts/ci/install_docker.sh scripts/ci/start_docker.sh scripts/ci/build_base_images.sh \
              scripts/install_collections.sh; do
  if [ -f "$script" ]; then echo "==> $script"; bash "$script"; fi
done
export PATH="$PWD/.venv/bin:$PATH"
exec ansible-playbook -i inventories/local site.yml "$@"
