"""Provisioning and teardown of virtual premises against a real OpenStack control plane on loopback.

The tests of this module share one control plane (session fixture) and run in order: bad inputs on
an empty cloud, then provision -> inventory -> re-run -> teardown, then quota exhaustion.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from openstack_lab import (
    NOTHING,
    ROOT,
    ControlPlane,
    enrol_layout,
    premise_vars,
    resources_of,
    run_playbook,
    write_inventory,
)

pytestmark = [pytest.mark.openstack, pytest.mark.integration, pytest.mark.slow]


def recap(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, int]]:
    """PLAY RECAP counters per host."""
    counters: dict[str, dict[str, int]] = {}
    for line in result.stdout.split("PLAY RECAP")[-1].splitlines():
        match = re.match(r"^(\S+)\s+:\s+(.*)$", line.strip())
        if match:
            counters[match.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(2))}
    return counters


def failed_output(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout[-3000:]
    return result.stdout + result.stderr


@pytest.mark.parametrize(("override", "expected"), [
    ({"flavor": "no-such-flavor"}, "unknown flavor(s) no-such-flavor"),
    ({"image": "no-such-image"}, "unknown image(s) no-such-image"),
], ids=["unknown-flavor", "unknown-image"])
def test_unknown_flavor_or_image_fails_before_creating_anything(control_plane: ControlPlane, tmp_path: Path,
                                                                 override: dict[str, str], expected: str) -> None:
    layout = premise_vars(control_plane, "bvbad")
    layout["bonseyes_openstack_premises"][1].update(override)
    output = failed_output(run_playbook(write_inventory(tmp_path, control_plane, layout), "provision_openstack.yml"))
    assert expected in output
    assert "nothing was created" in output
    assert resources_of(control_plane, "bvbad") == NOTHING


def test_bad_credentials_fail_naming_authentication(control_plane: ControlPlane, tmp_path: Path) -> None:
    clouds = yaml.safe_load(control_plane.clouds_yaml.read_text())
    clouds["clouds"]["bonseyes-local"]["auth"]["password"] = "wrong-password"
    bad = tmp_path / "clouds.yaml"
    bad.write_text(yaml.safe_dump(clouds))
    layout = premise_vars(control_plane, "bvbad", bonseyes_openstack_clouds_yaml=str(bad))
    output = failed_output(run_playbook(write_inventory(tmp_path / "inv", control_plane, layout),
                                        "provision_openstack.yml"))
    assert "Reach the cloud and its identity service" in output
    assert re.search(r"401|authenticat", output, re.IGNORECASE)
    assert resources_of(control_plane, "bvbad") == NOTHING


def test_unreachable_cloud_fails_naming_the_connection(control_plane: ControlPlane, tmp_path: Path) -> None:
    clouds = yaml.safe_load(control_plane.clouds_yaml.read_text())
    clouds["clouds"]["bonseyes-local"]["auth"]["auth_url"] = "http://127.0.0.1:9/v3"
    bad = tmp_path / "clouds.yaml"
    bad.write_text(yaml.safe_dump(clouds))
    layout = premise_vars(control_plane, "bvbad", bonseyes_openstack_clouds_yaml=str(bad),
                          bonseyes_openstack_timeout=10)
    output = failed_output(run_playbook(write_inventory(tmp_path / "inv", control_plane, layout),
                                        "provision_openstack.yml"))
    assert "Reach the cloud and its identity service" in output
    assert re.search(r"127\.0\.0\.1.*9|Connection refused|Unable to establish connection", output)
    assert resources_of(control_plane, "bvbad") == NOTHING


def test_provision_inventory_rerun_and_teardown(control_plane: ControlPlane, tmp_path: Path) -> None:
    prefix = "bvtest"
    inventory = write_inventory(tmp_path / "inventory", control_plane, premise_vars(control_plane, prefix))
    result = run_playbook(inventory, "provision_openstack.yml")
    assert result.returncode == 0, result.stdout[-4000:]

    # Exactly the expected resources.
    assert resources_of(control_plane, prefix) | {"ports": []} == {
        "servers": ["bvtest-hpc-01", "bvtest-hpc-02", "bvtest-partner-01"],
        "flavors": ["bvtest-gpu", "bvtest-kvm"], "keypairs": ["bvtest-key"],
        "security_groups": ["bvtest-hpc", "bvtest-partner"],
        "networks": ["bvtest-hpc-net", "bvtest-partner-net"], "subnets": ["bvtest-hpc-subnet", "bvtest-partner-subnet"],
        "routers": ["bvtest-hpc-router"], "ports": []}
    cloud = control_plane.connect()
    gpu = cloud.compute.find_flavor("bvtest-gpu", get_extra_specs=True)
    assert gpu.extra_specs == {"hw:cpu_policy": "dedicated", "pci_passthrough:alias": "a100:1", "bonseyes:vp": prefix}
    for server in cloud.compute.servers(details=True):
        premise = server.name.split("-")[1]
        assert server.status == "ACTIVE"
        assert server.metadata == {"groups": f"premises,premise_{premise}", "bonseyes_vp": prefix,
                                   "bonseyes_premise": premise}
        assert [group["name"] for group in server.security_groups] == [f"bvtest-{premise}"]
        assert list(server.addresses) == [f"bvtest-{premise}-net"]
    group = cloud.network.find_security_group("bvtest-hpc")
    ingress = sorted((r["protocol"], r["port_range_min"], r["remote_ip_prefix"]) for r in group.security_group_rules
                     if r["direction"] == "ingress")
    assert ingress == [("tcp", 5001, "10.42.0.0/24"), ("tcp", 8443, "10.42.0.0/24"), ("tcp", 8444, "10.42.0.0/24")]

    # The dynamic inventory groups the servers into the premises, each mapped to a loopback test host.
    listing = subprocess.run([str(ROOT / ".venv/bin/ansible-inventory"), "-i", str(inventory), "--list"],
                             cwd=ROOT, capture_output=True, text=True, check=True)
    inventory_data = json.loads(listing.stdout)
    assert sorted(inventory_data["premise_hpc"]["hosts"]) == ["bvtest-hpc-01", "bvtest-hpc-02"]
    assert inventory_data["premise_partner"]["hosts"] == ["bvtest-partner-01"]
    assert sorted(inventory_data["premises"]["hosts"]) == ["bvtest-hpc-01", "bvtest-hpc-02", "bvtest-partner-01"]
    hostvars = inventory_data["_meta"]["hostvars"]
    ansible_host = hostvars["bvtest-hpc-02"]["ansible_host"]
    # ansible-inventory marks templated values as unsafe in its JSON.
    assert (ansible_host.get("__ansible_unsafe") if isinstance(ansible_host, dict) else ansible_host) == "127.0.0.12"

    # (The chain on to the hosts, BM enrolment with a real SM on loopback test hosts, is test_openstack_enrol.py.)

    # A re-run changes nothing.
    again = run_playbook(inventory, "provision_openstack.yml")
    assert again.returncode == 0, again.stdout[-4000:]
    assert all(counters["changed"] == 0 for counters in recap(again).values()), again.stdout[-4000:]

    # Teardown leaves nothing of the prefix behind, and a second teardown has nothing to do.
    down = run_playbook(inventory, "teardown_openstack.yml")
    assert down.returncode == 0, down.stdout[-4000:]
    assert resources_of(control_plane, prefix) == NOTHING
    again = run_playbook(inventory, "teardown_openstack.yml")
    assert again.returncode == 0, again.stdout[-4000:]
    assert all(counters["changed"] == 0 for counters in recap(again).values())


def test_quota_exceeded_fails_naming_the_quota_and_teardown_removes_the_rest(control_plane: ControlPlane,
                                                                            tmp_path: Path) -> None:
    cloud = control_plane.connect()
    project = cloud.current_project_id
    before = cloud.get_compute_quotas(project)
    cloud.set_compute_quotas(project, instances=2)
    try:
        # One premise of three servers, no router: the smallest layout that crosses the quota of two.
        inventory = write_inventory(tmp_path, control_plane, enrol_layout(control_plane, "bvquota", count=3))
        output = failed_output(run_playbook(inventory, "provision_openstack.yml", forks=1))
        assert re.search(r"[Qq]uota exceeded", output)
        # What was created before the quota hit is tracked: the teardown finds and removes all of it.
        assert len(resources_of(control_plane, "bvquota")["servers"]) == 2
        down = run_playbook(inventory, "teardown_openstack.yml")
        assert down.returncode == 0, down.stdout[-4000:]
        assert resources_of(control_plane, "bvquota") == NOTHING
    finally:
        cloud.set_compute_quotas(project, instances=before["instances"])
