"""Real ansible-playbook runs: the per-module integration playbooks, the inventories and site.yml."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bonseyes_py.policy.engine import PolicyEngine

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
PLAYBOOKS = sorted((Path(__file__).parent / "playbooks").glob("*.yml"))


def recap(output: str) -> dict[str, int]:
    """The counters of the (single) host in the PLAY RECAP."""
    match = re.search(r"^localhost\s*:\s*(.*)$", output.split("PLAY RECAP", 1)[1], re.MULTILINE)
    assert match, output
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", match.group(1))}


@pytest.mark.integration
@pytest.mark.parametrize("playbook", PLAYBOOKS, ids=[p.stem for p in PLAYBOOKS])
def test_module_integration_playbook(ansible_playbook, playbook: Path, tmp_path: Path) -> None:
    run = ansible_playbook("-i", "localhost,", "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}",
                           "-e", f"output_dir={tmp_path}", str(playbook))
    assert run.returncode == 0, run.stdout + run.stderr
    assert recap(run.stdout)["failed"] == 0


@pytest.mark.integration
@pytest.mark.slow
def test_trust_demo_check_mode_then_real_then_nothing_changes_the_second_time(
        ansible_playbook, installed_collections: str, tmp_path: Path) -> None:
    args = ("-i", "inventories/local", "-e", f"bonseyes_state_dir={tmp_path / 'state'}", "playbooks/trust_demo.yml")
    checked = ansible_playbook("--check", *args, collections_path=installed_collections)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert recap(checked.stdout)["changed"] > 0
    assert not (tmp_path / "state").exists()

    first = ansible_playbook(*args, collections_path=installed_collections)
    assert first.returncode == 0, first.stdout + first.stderr
    assert recap(first.stdout)["changed"] > 0
    assert "tampered licence refused: signature: signature does not verify" in first.stdout
    assert '"runtime {\\"artefact_id\\": \\"demo-artefact\\"' in first.stdout
    assert (tmp_path / "state/host/host.key").stat().st_mode & 0o777 == 0o600

    second = ansible_playbook(*args, collections_path=installed_collections)
    assert second.returncode == 0, second.stdout + second.stderr
    counters = recap(second.stdout)
    assert counters["changed"] == 0, second.stdout
    assert counters["failed"] == 0, second.stdout


def test_site_playbooks_pass_syntax_check(ansible_playbook, installed_collections: str) -> None:
    for inventory in ("inventories/local", "inventories/multinode"):
        run = ansible_playbook("-i", inventory, "--syntax-check", "site.yml", collections_path=installed_collections)
        assert run.returncode == 0, run.stdout + run.stderr


def inventory(name: str) -> dict:
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")}
    run = subprocess.run([str(VENV_BIN / "ansible-inventory"), "-i", f"inventories/{name}", "--list"], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(run.stdout)


def test_local_inventory_is_all_in_one() -> None:
    data = inventory("local")
    for group in ("security_manager", "marketplace", "premise_local"):
        assert data[group]["hosts"] == ["localhost"], group
    assert data["premises"]["children"] == ["premise_local"]
    assert data["_meta"]["hostvars"]["localhost"]["ansible_connection"] == "local"


def test_multinode_inventory_defines_premises_with_valid_policies() -> None:
    data = inventory("multinode")
    assert set(data["premises"]["children"]) == {"premise_hpc", "premise_partner"}
    assert data["security_manager"]["hosts"] == ["sm1.lab.example.org"]
    hostvars = data["_meta"]["hostvars"]
    engine = PolicyEngine()
    premises = {}
    for group in data["premises"]["children"]:
        for host in data[group]["hosts"]:
            premise = hostvars[host]["bonseyes_premise"]
            assert premise["members"], host
            premises[premise["name"]] = premise
    assert set(premises) == {"hpc", "partner"}
    for premise in premises.values():
        for policy in premise["policies"]:
            engine.validate(policy)  # raises PolicyError naming the problem
