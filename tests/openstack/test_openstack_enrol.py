"""provision -> dynamic inventory -> enrol -> teardown against the local OpenStack control plane, for real.

The test provisions a two-server GPU premise; the dynamic inventory's ``compose`` maps every fake
server to a loopback test host of its own (127.0.0.<base+NN>, local connection, its own BM directory,
supervisord and hardware tree), and the bonseyes_module role enrols both with a real Security Manager
(deployed by site.yml's SM play under the test's short-lived state directory). The SM's HTTPS API, queried with its
admin certificate, must show each server's host identity available from the server's own address; after
the teardown the same hosts are revoked (their certificates on the SM's CRL) and the OpenStack resources
of the prefix are gone, while look-alike resources the provisioning did not create are still there.

The entry points are the operators': ``bonseyes deploy`` (site.yml over the inventory, with a progress
line per server) and ``bonseyes deploy --teardown`` (teardown_openstack.yml). One cycle, to keep the
time of tests/openstack down: each of provisioning, enrolment and teardown costs about a minute here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from openstack_lab import (
    NOTHING,
    PUBLIC_KEY,
    ROOT,
    ControlPlane,
    EnrolLab,
    free_port,
    resources_of,
    sm_admin_get,
    stop_supervisords,
    write_enrol_inventory,
)

from bonseyes_py.pki.roles import identity_of

pytestmark = [pytest.mark.openstack, pytest.mark.integration, pytest.mark.slow, pytest.mark.docker]
SERVERS = ("hpc-01", "hpc-02")
BM_PLAY = "Install, enrol and run the Bonseyes Module of every premise host"


def ansible_env() -> dict[str, str]:
    return {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "ANSIBLE_COLLECTIONS_PATH": str(ROOT / ".ansible/collections"),
            "PATH": f"{ROOT / '.venv/bin'}{os.pathsep}{os.environ.get('PATH', '')}"}


def playbooks(lab: EnrolLab, *names: str) -> subprocess.CompletedProcess[str]:
    """One ansible-playbook run over several playbooks (facts such as the SM's CA bundle carry over)."""
    return subprocess.run([str(ROOT / ".venv/bin/ansible-playbook"), "-i", str(lab.inventory),
                           *(str(ROOT / "playbooks" / name) for name in names)],
                          cwd=ROOT, env=ansible_env(), capture_output=True, text=True, timeout=900, check=False)


def bonseyes(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ROOT / ".venv/bin/bonseyes"), *args], cwd=ROOT, env=ansible_env(),
                          capture_output=True, text=True, timeout=900, check=False)


@pytest.fixture
def lab_factory(control_plane: ControlPlane, tmp_path: Path) -> Iterator[Any]:
    """Makes the lab; afterwards stops its supervisords (SM, BMs) and removes whatever a failed test left."""
    labs: list[EnrolLab] = []
    # State lives under a short /tmp path: supervisord's UNIX socket path must stay under 108 bytes.
    short = Path(tempfile.mkdtemp(prefix="bvos-"))

    def make(prefix: str, ip_base: int, **overrides: Any) -> EnrolLab:
        lab = write_enrol_inventory(tmp_path / prefix / "inventory", control_plane, prefix,
                                    state=short / prefix, sm_port=free_port(), ip_base=ip_base, **overrides)
        labs.append(lab)
        return lab

    try:
        yield make
    finally:
        for lab in labs:
            stop_supervisords(lab.state)
            if resources_of(control_plane, lab.prefix)["servers"]:
                playbooks(lab, "teardown_openstack.yml")
        shutil.rmtree(short, ignore_errors=True)


def assert_enrolled(lab: EnrolLab) -> dict[str, dict[str, Any]]:
    """Each server's BM holds a host certificate of its own and the SM shows that host available from the
    server's own address, in the premise, with the GPU of its hardware tree. Returns server -> facts."""
    found: dict[str, dict[str, Any]] = {}
    for short in SERVERS:
        server = f"{lab.prefix}-{short}"
        bm = lab.server_dir(server) / "bm"
        settings = json.loads((bm / "bm.json").read_text())
        host_id = settings["host_id"]
        assert settings["bind_ip"] == lab.server_ip(server)
        assert (bm / "tls/host.key").stat().st_mode & 0o777 == 0o600
        certificate = x509.load_pem_x509_certificate((bm / "tls/host.pem").read_bytes())
        identity = identity_of(certificate)
        assert (identity.role.value, identity.name) == ("host", host_id)
        record = sm_admin_get(lab, f"/v1/hosts/{host_id}").json()
        assert record["available"] is True, record
        assert record["revoked"] is False
        assert record["ip"] == lab.server_ip(server)
        assert record["premises"] == ["hpc"]
        assert record["owner"] == "hpc-operator"
        assert record["gpu_count"] == 1
        found[server] = {"host_id": host_id, "serial": certificate.serial_number}
    assert len({facts["host_id"] for facts in found.values()}) == len(SERVERS)
    return found


def assert_revoked(lab: EnrolLab, enrolled: dict[str, dict[str, Any]]) -> None:
    """The hosts are revoked at the SM and their host certificates are on the CRL it serves."""
    crl = x509.load_pem_x509_crl(sm_admin_get(lab, "/v1/crl").content)
    for server, facts in enrolled.items():
        record = sm_admin_get(lab, f"/v1/hosts/{facts['host_id']}").json()
        assert record["revoked"] is True, (server, record)
        assert crl.get_revoked_certificate_by_serial_number(facts["serial"]) is not None, server


def test_deploy_provisions_and_enrols_each_server_and_teardown_revokes_them(control_plane: ControlPlane,
                                                                          lab_factory: Any) -> None:
    lab = lab_factory("bvenrol", 10)
    # site.yml as operators run it (the Marketplace and the demo left out by tags): the SM, the premises,
    # the OpenStack servers (the inventory sets bonseyes_openstack_enabled), then their Bonseyes Modules.
    run = bonseyes("deploy", "-i", str(lab.inventory), "--tags", "security_manager,premises,openstack,bonseyes_module")
    assert run.returncode == 0, run.stderr[-6000:] + run.stdout[-3000:]
    for short in SERVERS:
        assert re.search(rf"server bvenrol-{short}: requested\n(.*\n)*.*server bvenrol-{short}: ACTIVE", run.stderr)
    report = json.loads(run.stdout)
    assert report["status"] == "successful"
    assert report["openstack"]["servers"] == {f"bvenrol-{short}": "ACTIVE" for short in SERVERS}
    assert BM_PLAY in report["plays"]
    assert all("Register the host (owner-signed hardware ID, CSR) and install its certificate" in
               report["changed"][BM_PLAY][f"bvenrol-{short}"] for short in SERVERS), report["changed"]
    enrolled = assert_enrolled(lab)

    # Look-alikes the provisioning did not create: the teardown must leave them.
    cloud = control_plane.connect()
    theirs = cloud.create_flavor(f"{lab.prefix}-theirs", ram=64, vcpus=1, disk=1)
    keypair = cloud.create_keypair("bvkeep-key", public_key=PUBLIC_KEY)
    group = cloud.create_security_group("bvkeep-sg", "not ours")
    try:
        down = bonseyes("deploy", "-i", str(lab.inventory), "--teardown")
        assert down.returncode == 0, down.stderr[-6000:] + down.stdout[-3000:]
        for short in SERVERS:
            assert f"server bvenrol-{short}: deleted" in down.stderr
        assert json.loads(down.stdout)["openstack"]["servers"] == {f"bvenrol-{short}": "deleted" for short in SERVERS}
        assert_revoked(lab, enrolled)
        assert resources_of(control_plane, lab.prefix) == NOTHING | {"flavors": [f"{lab.prefix}-theirs"]}
        assert cloud.get_keypair("bvkeep-key") is not None
        assert cloud.get_security_group("bvkeep-sg") is not None
        # Only the premise's hosts were revoked: their owner still may act.
        assert sm_admin_get(lab, "/v1/users/hpc-operator").json()["revoked"] is False
    finally:
        cloud.delete_flavor(theirs.id)
        cloud.delete_keypair(keypair.name)
        cloud.delete_security_group(group.id)
