"""A real OpenStack control plane on 127.0.0.1 for the provisioning tests, started once per session.

scripts/ci/openstack/start.sh installs (cached venv) and starts Keystone, Placement, Glance, Nova
(fake virt driver) and Neutron (ML2, no agent processes: an Open vSwitch agent *record* lets ML2
bind ports, see scripts/ci/openstack/controlplane.py), with RabbitMQ and a private PostgreSQL for
Nova. Every start resets all databases. The tests drive it with ansible-playbook and openstacksdk.
"""

from __future__ import annotations

import os
import secrets
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
    if os.environ.get("BONSEYES_TEST_OPENSTACK_REUSE") == "1":
        # Developer loop: a control plane already started by scripts/ci/openstack/start.sh is used as it is
        # (not reset, not stopped); CI never sets this.
        plane = ControlPlane(STATE / "clouds.yaml")
        cloud = plane.connect()
        if cloud.get_image(IMAGE) is None:
            image_file = STATE / "tiny.img"
            image_file.write_bytes(b"\0" * 4096)
            cloud.create_image(IMAGE, filename=str(image_file), disk_format="raw", container_format="bare", wait=True)
        yield plane
        return
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


# -- provision -> inventory -> enrol on loopback test hosts --------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class EnrolLab:
    """A premise inventory whose OpenStack servers are loopback test hosts enrolled with a real SM.

    Each fake server ``<prefix>-hpc-NN`` is mapped by the dynamic inventory's ``compose`` to the local
    host 127.0.0.<ip_base + NN> (``ansible_connection: local``), with its own BM directory, supervisord
    and hardware tree (``sysroots/<server>``: a machine-id of its own and, on the GPU premise, a PCI
    display controller), so two BMs with two host identities coexist on this machine, each listening
    on its own address and reaching the SM from it.
    """

    prefix: str
    inventory: Path
    state: Path
    sm_port: int
    bm_port: int
    ip_base: int

    def server_dir(self, server: str) -> Path:
        return self.state / "servers" / server

    @property
    def sm_dir(self) -> Path:
        return self.state / "security-manager"

    def server_ip(self, server: str) -> str:
        return f"127.0.0.{self.ip_base + int(server[-2:])}"


def enrol_layout(plane: ControlPlane, prefix: str, count: int = 2) -> dict[str, Any]:
    """One premise ``hpc`` of ``count`` servers on its own network, no router: the smallest layout."""
    return premise_vars(
        plane, prefix,
        bonseyes_openstack_flavors=[{"name": f"{prefix}-kvm", "vcpus": 1, "ram": 64, "disk": 1,
                                     "extra_specs": {"hw:cpu_policy": "shared"}}],
        bonseyes_openstack_premises=[{"name": "hpc", "count": count, "flavor": f"{prefix}-kvm", "image": IMAGE,
                                      "cidrs": ["10.44.0.0/24"], "network": {"cidr": "10.44.0.0/24"}}])


def write_enrol_inventory(directory: Path, plane: ControlPlane, prefix: str, *, state: Path, sm_port: int,
                          ip_base: int, count: int = 2, **overrides: Any) -> EnrolLab:
    """Static SM on localhost + the dynamic OpenStack premises, as an operator's inventory would be."""
    import uuid

    lab = EnrolLab(prefix, directory, state, sm_port, free_port(), ip_base)
    venv = ROOT / ".venv"
    servers = state / "servers"
    for number in range(1, count + 1):
        sysroot = lab.server_dir(f"{prefix}-hpc-{number:02d}") / "sysroot"
        (sysroot / "etc").mkdir(parents=True, exist_ok=True)
        (sysroot / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
        gpu = sysroot / "sys/bus/pci/devices/0000:00:05.0"
        gpu.mkdir(parents=True, exist_ok=True)
        for name, value in (("class", "0x030200"), ("vendor", "0x10de"), ("device", "0x20b0")):
            (gpu / name).write_text(value + "\n")
    address = f"'127.0.0.' ~ ({ip_base} + (openstack.name[-2:] | int))"
    per_server = f"'{servers}/' ~ openstack.name"
    (directory / "group_vars").mkdir(parents=True, exist_ok=True)
    (directory / "openstack.yml").write_text(yaml.safe_dump({
        "plugin": "openstack.cloud.openstack", "only_clouds": [CLOUD], "clouds_yaml_path": [str(plane.clouds_yaml)],
        "use_names": True, "legacy_groups": True, "expand_hostvars": False, "fail_on_errors": True,
        "compose": {"ansible_host": address, "ansible_connection": "'local'", "bonseyes_host_ip": address,
                    "bonseyes_module_bind_ip": address, "bonseyes_module_dir": f"{per_server} ~ '/bm'",
                    "supervisor_dir": f"{per_server} ~ '/supervisor'",
                    "bonseyes_module_sysroot": f"{per_server} ~ '/sysroot'"}}))
    (directory / "hosts.yml").write_text(yaml.safe_dump({"all": {
        "hosts": {"localhost": {"ansible_connection": "local"}},
        "children": {"security_manager": {"hosts": {"localhost": None}}, "premises": None}}}))
    layout = enrol_layout(plane, prefix, count)
    # The SM role refuses to create a plaintext root key: the passphrase lives in a 0600 file of the lab.
    passphrase_file = state / "root.passphrase"
    passphrase_file.parent.mkdir(parents=True, exist_ok=True)
    passphrase_file.touch(mode=0o600)
    passphrase_file.write_text(secrets.token_urlsafe(32) + "\n")
    layout.update({
        "security_manager_root_passphrase_file": str(passphrase_file),
        "bonseyes_openstack_enabled": True,
        "bonseyes_venv": str(venv), "ansible_python_interpreter": str(venv / "bin/python"),
        "bonseyes_cli": str(venv / "bin/bonseyes"), "bonseyes_state_dir": str(state),
        "supervisor_dir": str(state / "supervisor"), "supervisor_bin_dir": str(venv / "bin"),
        "security_manager_dir": str(lab.sm_dir), "security_manager_trust_domain": "hpcaas.test",
        "security_manager_port": sm_port, "security_manager_python": str(venv / "bin/python"),
        "bonseyes_users_dir": str(state / "users"),
        "bonseyes_users": [{"user_id": "hpc-operator", "organisation": "HPCaaS test lab"}],
    })
    layout.update(overrides)
    (directory / "group_vars" / "all.yml").write_text(yaml.safe_dump(layout))
    users = state / "users" / "hpc-operator"
    (directory / "group_vars" / "premises.yml").write_text(yaml.safe_dump({
        "bonseyes_module_port": lab.bm_port, "bonseyes_module_python": str(venv / "bin/python"),
        "bonseyes_module_sm_url": f"https://127.0.0.1:{sm_port}",
        "bonseyes_module_sm_ca_bundle_pem":
            "{{ hostvars[groups['security_manager'][0]]['security_manager_ca_bundle_pem'] }}",
        "bonseyes_module_registry": "registry.bonseyes.test:5001",
        "bonseyes_module_owner_cert": str(users / "user.pem"), "bonseyes_module_owner_key": str(users / "user.key"),
        "bonseyes_module_premises": ["{{ bonseyes_premise.name }}"],
        "bonseyes_module_heartbeat_seconds": 2,
    }))
    (directory / "group_vars" / "premise_hpc.yml").write_text(yaml.safe_dump({
        "bonseyes_premise": {"name": "hpc", "members": ["hpc-operator"]}}))
    return lab


def stop_supervisords(state: Path) -> None:
    """End the supervisord processes this lab started (SM and one per fake server), by their pid files."""
    import contextlib
    import signal

    for pidfile in state.glob("**/supervisord.pid"):
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)


def sm_admin_get(lab: EnrolLab, path: str) -> Any:
    """GET on the SM's HTTPS API with its first admin's certificate (mutual TLS)."""
    import requests

    from bonseyes_py.sm import SMConfig

    config = SMConfig.load(lab.sm_dir)
    answer = requests.get(f"https://127.0.0.1:{lab.sm_port}{path}", timeout=30,
                          cert=(str(config.admin_certificate), str(config.admin_key)),
                          verify=str(config.ca_directory / "root.pem"))
    answer.raise_for_status()
    return answer
