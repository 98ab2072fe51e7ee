"""site.yml on inventories/local for real: deploy twice (the second run changes only the demo play),
then bad input against the deployed premise: malformed/missing role variables, an unreachable SM,
and a host whose hardware changed. Each run uses its own state directory and free ports."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bonseyes_py.cli.deploy_commands import DeploySummary, run_deploy

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.docker]
REPO = Path(__file__).resolve().parents[2]
DEMO_PLAY = "Run the two-stage demo pipeline through all six steps and print what stage 2 received"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_supervisord(state: Path) -> None:
    """End the supervisord this test's run started (its pid file), which stops its services."""
    pidfile = state / "supervisor" / "supervisord.pid"
    if pidfile.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)


def forget_pull_endpoint(premise: Premise) -> None:
    """Remove what this run's pull endpoint left on the shared engine: its certs.d entry and the pulled images."""
    registry = f"registry.bonseyes.test:{premise.vars['bonseyes_registry_pull_port']}"
    shutil.rmtree(Path("/etc/docker/certs.d") / registry, ignore_errors=True)
    listed = subprocess.run(["docker", "images", "--format", "{{.Repository}}@{{.Digest}} {{.ID}}"],
                            capture_output=True, text=True, check=False)
    ids = {line.split()[1] for line in listed.stdout.splitlines() if line.startswith(registry + "/")}
    if ids:
        subprocess.run(["docker", "rmi", "-f", *sorted(ids)], capture_output=True, check=False)


def bundle_vars(premise: Premise, tmp_path: Path) -> Path:
    """The SM's CA bundle as the role variable, in a vars file (site.yml publishes it; single plays need it)."""
    path = tmp_path / "bundle.json"
    bundle = (premise.state / "security-manager/tls/ca-bundle.pem").read_text()
    path.write_text(json.dumps({"bonseyes_module_sm_ca_bundle_pem": bundle}))
    return path


class Premise:
    def __init__(self, state: Path) -> None:
        self.state = state
        self.vars: dict[str, Any] = {
            "bonseyes_state_dir": str(state), "bonseyes_sm_port": free_port(), "bonseyes_registry_port": free_port(),
            "bonseyes_registry_pull_port": free_port(), "bonseyes_bm_port": free_port()}
        self.runs: list[DeploySummary] = []

    def args(self, **extra: Any) -> list[str]:
        values = dict(self.vars, **extra)
        return [arg for key, value in values.items() for arg in ("-e", f"{key}={value}")]


@pytest.fixture(scope="module")
def premise(installed_collections: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Premise]:
    premise = Premise(tmp_path_factory.mktemp("premise") / "state")
    try:
        with open(os.devnull, "w") as quiet:
            for _ in range(2):
                premise.runs.append(run_deploy("inventories/local", extra_vars=premise.vars, stream=quiet))
        yield premise
    finally:
        stop_supervisord(premise.state)
        forget_pull_endpoint(premise)


def test_site_deploys_and_runs_the_demo_then_only_the_demo_changes(premise: Premise) -> None:
    first, second = premise.runs
    assert first.status == "successful", first.failed
    deployment = ["Deploy the Security Manager", "Deploy the Marketplace and its registry", DEMO_PLAY]
    assert all(play in first.plays for play in deployment), first.plays
    assert not [play for play in first.changed if "OpenStack" in play or "servers" in play], first.changed
    assert "Deploy the Security Manager" in first.changed
    received = [m for m in first.messages if isinstance(m, dict) and "stage_2_received" in m]
    assert received
    assert received[0]["stage_2_received"][0].startswith("RECEIVED hello-from-stage-0 FROM 127.0.0.1")
    accepted = received[0]["stage_2_bl_accepted"]
    assert accepted
    assert "accepted runtime rt-" in accepted[0], accepted  # BL names the peer's runtime (its SAN URI's name)
    assert any("KEY UNREADABLE" in line for line in received[0]["stage_2_payload_secrets"])
    assert "TLS ENV []" in received[0]["stage_2_payload_secrets"], received[0]["stage_2_payload_secrets"]
    # --network none: the payload has loopback only, and BM's relay sockets are BL's alone.
    assert "INTERFACES ['lo']" in received[0]["stage_2_payload_secrets"], received[0]["stage_2_payload_secrets"]
    assert any("RELAY SOCKETS UNREACHABLE" in line for line in received[0]["stage_2_payload_secrets"])
    assert received[0]["stages"] == ["running", "running"]
    assert second.status == "successful", second.failed
    assert set(second.changed) == {DEMO_PLAY}, second.changed
    assert (premise.state / "bm/tls/host.key").stat().st_mode & 0o777 == 0o600
    assert (premise.state / "users/demo-user/user.key").stat().st_mode & 0o777 == 0o600


def test_malformed_role_variable_is_named_by_the_argument_spec(ansible_playbook, premise: Premise,
                                                                tmp_path: Path) -> None:
    run = ansible_playbook("-i", "inventories/local", *premise.args(bonseyes_bm_port="not-a-port"),
                           "-e", f"@{bundle_vars(premise, tmp_path)}", "-v",
                           "playbooks/bonseyes_module.yml",
                           collections_path=str(REPO / ".ansible/collections"))
    assert run.returncode != 0
    assert "bonseyes_module_port" in run.stdout + run.stderr
    assert "Validating arguments against arg spec" in run.stdout + run.stderr


def test_missing_role_variables_are_named_by_the_argument_spec(ansible_playbook, tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  children:\n    premises:\n      hosts:\n        localhost:\n"
                         "          ansible_connection: local\n")
    run = ansible_playbook("-i", str(inventory), "-e", f"ansible_python_interpreter={REPO / '.venv/bin/python'}",
                           "playbooks/bonseyes_module.yml", collections_path=str(REPO / ".ansible/collections"))
    assert run.returncode != 0
    for name in ("bonseyes_module_owner_cert", "bonseyes_module_owner_key", "bonseyes_module_sm_ca_bundle_pem"):
        assert name in run.stdout + run.stderr, run.stdout + run.stderr


def test_unreachable_sm_fails_the_play_and_leaves_the_host_as_it_was(ansible_playbook, premise: Premise,
                                                                     tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    run = ansible_playbook("-i", "inventories/local", *premise.args(), "-e", f"bonseyes_module_dir={fresh}/bm",
                           "-e", f"supervisor_dir={fresh}/supervisor", "-e", f"bonseyes_sm_port={free_port()}",
                           "-e", "bonseyes_module_sm_timeout=2", "-e", f"@{bundle_vars(premise, tmp_path)}",
                           "playbooks/bonseyes_module.yml", collections_path=str(REPO / ".ansible/collections"))
    assert run.returncode != 0
    assert "is unreachable" in run.stdout + run.stderr, run.stdout + run.stderr
    assert "this host was left as it was" in run.stdout + run.stderr
    assert not fresh.exists()


def test_host_whose_hardware_changed_is_refused_as_the_old_host(ansible_playbook, premise: Premise,
                                                                 tmp_path: Path) -> None:
    sysroot = tmp_path / "sysroot"
    (sysroot / "etc").mkdir(parents=True)
    (sysroot / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    certificate = premise.state / "bm/tls/host.pem"
    before = certificate.read_bytes()
    run = ansible_playbook("-i", "inventories/local", *premise.args(bonseyes_module_sysroot=sysroot),
                           "-e", f"@{bundle_vars(premise, tmp_path)}",
                           "playbooks/bonseyes_module.yml", collections_path=str(REPO / ".ansible/collections"))
    assert run.returncode != 0
    assert "hardware-changed" in run.stdout + run.stderr, run.stdout + run.stderr
    assert certificate.read_bytes() == before


def test_bonseyes_deploy_cli_reports_a_missing_inventory(tmp_path: Path) -> None:
    run = subprocess.run([str(REPO / ".venv/bin/bonseyes"), "deploy", "-i", str(tmp_path / "nope")],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 2
    assert "does not exist" in run.stderr
