"""A real OpenStack control plane on 127.0.0.1 for the provisioning tests, started once per session.

scripts/ci/openstack/start.sh installs (cached venv) and starts Keystone, Placement, Glance, Nova
(fake virt driver) and Neutron (ML2, no agent processes: an Open vSwitch agent *record* lets ML2
bind ports, see scripts/ci/openstack/controlplane.py), with RabbitMQ and a private PostgreSQL for
Nova. Every start resets all databases. The tests drive it with ansible-playbook and openstacksdk.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts" / "ci" / "openstack"
STATE = Path(os.environ.get("BONSEYES_TEST_OPENSTACK_STATE", "/var/lib/bonseyes/openstack-tests"))
PORT_BASE = os.environ.get("BONSEYES_TEST_OPENSTACK_PORT_BASE", "18870")
CLOUD = "bonseyes-local"
IMAGE = "bonseyes-test-image"
PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKdJb6eA1u5Bv0cE6jB2y6m8G2Yl4kOQ8m3m1nE6n0Vq bonseyes-test"


@dataclass
class ControlPlane:
    clouds_yaml: Path

    def connect(self) -> Any:
        import openstack.config
        import openstack.connection

        region = openstack.config.OpenStackConfig(config_files=[str(self.clouds_yaml)]).get_one(cloud=CLOUD)
        return openstack.connection.Connection(config=region)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    env = {**os.environ, "OPENSTACK_STATE": str(STATE), "OPENSTACK_PORT_BASE": PORT_BASE}
    started = subprocess.run(["bash", str(SCRIPTS / "start.sh")], env=env, capture_output=True, text=True,
                             check=False)
    if started.returncode != 0:
        subprocess.run(["bash", str(SCRIPTS / "stop.sh")], env=env, check=False)
        pytest.fail(f"the OpenStack control plane did not start:\n{started.stdout[-4000:]}\n{started.stderr[-4000:]}")
    plane = ControlPlane(STATE / "clouds.yaml")
    image_file = STATE / "tiny.img"
    image_file.write_bytes(b"\0" * 4096)
    plane.connect().create_image(IMAGE, filename=str(image_file), disk_format="raw", container_format="bare",
                                 wait=True)
    try:
        yield plane
    finally:
        subprocess.run(["bash", str(SCRIPTS / "stop.sh")], env=env, check=False)


def premise_vars(plane: ControlPlane, prefix: str, **overrides: Any) -> dict[str, Any]:
    """A two-premise layout: hpc (2 servers, its own network and router) and partner (1 server)."""
    layout: dict[str, Any] = {
        "bonseyes_openstack_cloud": CLOUD,
        "bonseyes_openstack_clouds_yaml": str(plane.clouds_yaml),
        "bonseyes_openstack_prefix": prefix,
        "bonseyes_openstack_public_key": PUBLIC_KEY,
        "bonseyes_openstack_service_ports": [{"name": "sm", "port": 8443}, {"name": "bm", "port": 8444},
                                             {"name": "mp-registry", "port": 5001}],
        # The fake driver reports no NUMA topology, so the KVM flavor of the test uses a shared CPU policy;
        # the GPU flavor is created (extra specs checked) but no test server boots on it.
        "bonseyes_openstack_flavors": [
            {"name": f"{prefix}-kvm", "vcpus": 1, "ram": 64, "disk": 1, "extra_specs": {"hw:cpu_policy": "shared"}},
            {"name": f"{prefix}-gpu", "vcpus": 2, "ram": 128, "disk": 1,
             "extra_specs": {"hw:cpu_policy": "dedicated", "pci_passthrough:alias": "a100:1"}},
        ],
        "bonseyes_openstack_premises": [
            {"name": "hpc", "count": 2, "flavor": f"{prefix}-kvm", "image": IMAGE, "cidrs": ["10.42.0.0/24"],
             "network": {"cidr": "10.42.0.0/24", "router": True}},
            {"name": "partner", "count": 1, "flavor": f"{prefix}-kvm", "image": IMAGE, "cidrs": ["10.43.0.0/24"],
             "network": {"cidr": "10.43.0.0/24"}},
        ],
    }
    layout.update(overrides)
    return layout


def write_inventory(directory: Path, plane: ControlPlane, layout: dict[str, Any]) -> Path:
    """The openstack.cloud.openstack dynamic inventory, each server mapped to a loopback test host."""
    (directory / "group_vars").mkdir(parents=True, exist_ok=True)
    (directory / "openstack.yml").write_text(yaml.safe_dump({
        "plugin": "openstack.cloud.openstack", "only_clouds": [CLOUD], "clouds_yaml_path": [str(plane.clouds_yaml)],
        "use_names": True, "legacy_groups": True, "expand_hostvars": False, "fail_on_errors": True,
        "compose": {"ansible_host": "'127.0.0.' ~ (10 + (openstack.name[-2:] | int))",
                    "ansible_connection": "'local'"}}))
    (directory / "hosts.yml").write_text(yaml.safe_dump({"all": {"children": {"premises": None}}}))
    (directory / "group_vars" / "all.yml").write_text(yaml.safe_dump(layout))
    return directory


def run_playbook(inventory: Path, playbook: str, *, forks: int = 5) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
    return subprocess.run([str(ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", str(inventory),
                           str(ROOT / "playbooks" / playbook), "--forks", str(forks)],
                          cwd=ROOT, env=env, capture_output=True, text=True, check=False)


def resources_of(plane: ControlPlane, prefix: str) -> dict[str, list[str]]:
    """Everything on the cloud that carries the prefix, by kind (what teardown must remove)."""
    cloud = plane.connect()
    return {
        "servers": sorted(s.name for s in cloud.compute.servers() if s.name.startswith(prefix)),
        "flavors": sorted(f.name for f in cloud.compute.flavors() if f.name.startswith(prefix)),
        "keypairs": sorted(k.name for k in cloud.compute.keypairs() if k.name.startswith(prefix)),
        "security_groups": sorted(g.name for g in cloud.network.security_groups() if g.name.startswith(prefix)),
        "networks": sorted(n.name for n in cloud.network.networks() if n.name.startswith(prefix)),
        "subnets": sorted(n.name for n in cloud.network.subnets() if n.name.startswith(prefix)),
        "routers": sorted(r.name for r in cloud.network.routers() if r.name.startswith(prefix)),
        "ports": sorted(p.id for p in cloud.network.ports() if p.device_owner.startswith("compute:")),
    }


NOTHING: dict[str, list[str]] = {kind: [] for kind in ("servers", "flavors", "keypairs", "security_groups",
                                                       "networks", "subnets", "routers", "ports")}
