"""Benchmark: provisioning and teardown of a 20-server premise on the local OpenStack control plane.

Starts (or reuses, with --reuse) the control plane of scripts/ci/openstack, then for forks 1 and 10
runs playbooks/provision_openstack.yml and teardown_openstack.yml over a one-premise layout of N
servers and prints wall times and the forks-1/forks-10 ratio. Checks after each teardown that nothing
of the premise is left. A script, not a test:

    .venv/bin/python bench/bench_openstack.py [--servers 20] [--reuse]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "openstack"))

from openstack_lab import (  # noqa: E402 - the helpers of the tests, reused as-is
    IMAGE,
    NOTHING,
    PORT_BASE,
    SCRIPTS,
    STATE,
    ControlPlane,
    premise_vars,
    resources_of,
    run_playbook,
    write_inventory,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=20)
    parser.add_argument("--forks", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--reuse", action="store_true", help="use a control plane already started by this script")
    args = parser.parse_args()
    env = {**os.environ, "OPENSTACK_STATE": str(STATE), "OPENSTACK_PORT_BASE": PORT_BASE}
    if not args.reuse:
        started = time.perf_counter()
        subprocess.run(["bash", str(SCRIPTS / "start.sh")], env=env, check=True)
        print(f"control plane start: {time.perf_counter() - started:.1f} s", flush=True)
    plane = ControlPlane(STATE / "clouds.yaml")
    cloud = plane.connect()
    if not cloud.image.find_image(IMAGE):
        image_file = STATE / "tiny.img"
        image_file.write_bytes(b"\0" * 4096)
        cloud.create_image(IMAGE, filename=str(image_file), disk_format="raw", container_format="bare", wait=True)
    cloud.set_compute_quotas(cloud.current_project_id, instances=-1, cores=-1, ram=-1)
    cloud.set_network_quotas(cloud.current_project_id, port=-1)
    figures: dict[str, dict[str, float]] = {}
    try:
        for forks in args.forks:
            prefix = f"bvbench{forks}"
            layout = premise_vars(plane, prefix, bonseyes_openstack_premises=[
                {"name": "hpc", "count": args.servers, "flavor": f"{prefix}-kvm", "image": IMAGE,
                 "cidrs": ["10.44.0.0/24"], "network": {"cidr": "10.44.0.0/24", "router": True}}])
            with tempfile.TemporaryDirectory() as directory:
                inventory = write_inventory(Path(directory), plane, layout)
                started = time.perf_counter()
                up = run_playbook(inventory, "provision_openstack.yml", forks=forks)
                provision = time.perf_counter() - started
                if up.returncode != 0:
                    print(up.stdout[-4000:], file=sys.stderr)
                active = len([s for s in cloud.compute.servers() if s.name.startswith(prefix) and s.status == "ACTIVE"])
                started = time.perf_counter()
                down = run_playbook(inventory, "teardown_openstack.yml", forks=forks)
                teardown = time.perf_counter() - started
                if down.returncode != 0:
                    print(down.stdout[-4000:], file=sys.stderr)
                left = resources_of(plane, prefix)
            figures[f"forks={forks}"] = {"provision_s": round(provision, 1), "teardown_s": round(teardown, 1),
                                         "active_servers": active, "left_after_teardown": int(left != NOTHING)}
            print(f"forks={forks}: provision {provision:.1f} s ({active}/{args.servers} ACTIVE), "
                  f"teardown {teardown:.1f} s, nothing left: {left == NOTHING}", flush=True)
    finally:
        if not args.reuse:
            subprocess.run(["bash", str(SCRIPTS / "stop.sh")], env=env, check=False)
    if "forks=1" in figures and "forks=10" in figures:
        one, ten = figures["forks=1"], figures["forks=10"]
        print(f"ratio forks1/forks10: provision {one['provision_s'] / ten['provision_s']:.2f}x, "
              f"teardown {one['teardown_s'] / ten['teardown_s']:.2f}x")
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
