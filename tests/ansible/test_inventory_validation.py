"""Inventory values the roles' argument specs let through are refused by the roles' own validation, in check mode.

Every role of the collection imports ``tasks/validate.yml`` first (tagged ``always``): an ``assert`` over
``bonseyes.vp.validation_problems``, the checks of the ``bonseyes`` CLI and the trust core. These tests run
the operator's ``site.yml`` on ``inventories/local`` with ``--check --tags validate`` (only the validation,
in every play) with one malformed value at a time given by ``-e``, and assert that the run fails with a
message naming the variable; the inventory as committed passes. One run without ``--tags`` shows that the
validation is the first thing the Security Manager role does, before it touches anything. Check-mode runs
start no service: no supervisord socket, no state directory is left.

Names that enter a certificate request (the host key's CSR label, premise names) are refused when they
hold control characters, by the modules before anything is written, in check mode too.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
ROLES = sorted(p.name for p in (REPO / "roles").iterdir() if (p / "tasks" / "main.yml").exists())


def site_check(ansible_playbook, collections: str, state: Path, *extra: str, tags: str | None = "validate"):
    """``ansible-playbook -i inventories/local site.yml --check [--tags validate]`` with a private state dir.

    ``security_manager_ca_bundle_pem`` is what the Security Manager play publishes when its tasks run; with
    ``--tags validate`` they do not, and the BM role's argument spec needs it."""
    args = ["-i", "inventories/local", "--check", "-e", f"bonseyes_state_dir={state}",
            "-e", "security_manager_ca_bundle_pem=", *extra, "site.yml"]
    if tags:
        args[:0] = ["--tags", tags]
    return ansible_playbook(*args, collections_path=collections)


def assert_refused(run, variable: str, *fragments: str) -> str:
    output = run.stdout + run.stderr
    assert run.returncode != 0, output
    failures = [line for line in output.splitlines() if line.startswith("fatal:")]
    assert failures, output
    assert "malformed role variables" in failures[0] or "malformed inventory variables" in failures[0], failures[0]
    assert variable in failures[0], failures[0]
    for fragment in fragments:
        assert fragment in failures[0], failures[0]
    return failures[0]


def assert_nothing_started(state: Path) -> None:
    """Check mode wrote nothing of the premise: no supervisord (socket, pid), no service directories."""
    leftovers = sorted(str(p.relative_to(state)) for p in state.rglob("*")) if state.exists() else []
    # The controller-side root passphrase file (a password lookup of the inventory) is all there may be.
    assert [p for p in leftovers if not p.startswith("secrets")] == [], leftovers


def test_every_role_validates_its_variables_first() -> None:
    for role in ROLES:
        main = (REPO / "roles" / role / "tasks" / "main.yml").read_text()
        first_task = main.split("\n- name:", 2)[1]
        assert "ansible.builtin.import_tasks: validate.yml" in first_task, role
        assert "tags: [validate, always]" in first_task, role
        assert "bonseyes.vp.validation_problems" in (REPO / "roles" / role / "tasks" / "validate.yml").read_text()


def test_the_committed_inventory_passes_validation_in_check_mode(ansible_playbook, installed_collections: str,
                                                                 tmp_path: Path) -> None:
    run = site_check(ansible_playbook, installed_collections, tmp_path / "state")
    assert run.returncode == 0, run.stdout + run.stderr
    for role in ("security_manager", "marketplace", "bonseyes_module", "supervisor"):
        assert f"TASK [bonseyes.vp.{role} : Check the formats of the {role} variables]" in run.stdout, role
    assert_nothing_started(tmp_path / "state")


@pytest.mark.parametrize(("assignment", "variable", "fragment"), [
    # The three values of the review: a host IP that is no address, a trust domain with spaces, a BM
    # registry on 127.0.0.0/8 (which the Docker engine treats as insecure: no TLS, no host certificate).
    ("bonseyes_host_ip=999.1.1.1", "bonseyes_host_ip", "'999.1.1.1' is not an IP address"),
    ("bonseyes_trust_domain='has spaces.local'", "bonseyes_trust_domain", "has spaces.local"),
    ("bonseyes_module_registry=127.0.0.1:15001", "bonseyes_module_registry", "insecure registry"),
    ("bonseyes_module_registry=localhost:15001", "bonseyes_module_registry", "insecure registry"),
    # Ports, URLs, names and paths of each role.
    ("bonseyes_sm_port=70000", "bonseyes_sm_port", "65535"),
    ("security_manager_bind_address=sm.example", "security_manager_bind_address", "not an IP address"),
    ('{"security_manager_server_names": ["bad name"]}', "security_manager_server_names", "not a DNS name"),
    ('{"security_manager_server_ips": ["127.0.0.1", "300.1.1.1"]}', "security_manager_server_ips", "300.1.1.1"),
    ("security_manager_host_licence_seconds=-5", "security_manager_host_licence_seconds", "out of range"),
    ("security_manager_workers=0", "security_manager_workers", "out of range"),
    ("security_manager_dir=relative/sm", "security_manager_dir", "not an absolute path"),
    ("supervisor_dir=supervisor", "supervisor_dir", "not an absolute path"),
    ("bonseyes_registry_port=0", "bonseyes_registry_port", "out of range"),
    ("marketplace_registry_pull_address=127.0.0.2", "marketplace_registry_pull_address", "127.0.0.0/8"),
    ("bonseyes_registry_pull_name=localhost", "bonseyes_registry_pull_name", "127.0.0.0/8"),
    ("bonseyes_registry_pull_name='bad name'", "bonseyes_registry_pull_name", "not a DNS name"),
    ("marketplace_sm_ca_host=nowhere", "marketplace_sm_ca_host", "not one of"),
    ("bonseyes_module_sm_url=http://127.0.0.1:8443", "bonseyes_module_sm_url", "https://"),
    ("bonseyes_module_sm_url='https://127.0.0.1:8443 x'", "bonseyes_module_sm_url", "not a URL"),
    ("bonseyes_bm_port=65536", "bonseyes_bm_port", "65535"),
    ('{"bonseyes_module_premises": ["lo cal"]}', "bonseyes_module_premises", "premise 'lo cal'"),
    ("bonseyes_module_heartbeat_seconds=0", "bonseyes_module_heartbeat_seconds", "out of range"),
    ("bonseyes_module_sysroot=sysroot", "bonseyes_module_sysroot", "not an absolute path"),
], ids=lambda value: value if "=" in value or value.startswith("{") else None)
def test_site_check_refuses_a_malformed_value_naming_the_variable(ansible_playbook, installed_collections: str,
                                                                  tmp_path: Path, assignment: str, variable: str,
                                                                  fragment: str) -> None:
    run = site_check(ansible_playbook, installed_collections, tmp_path / "state", "-e", assignment)
    assert_refused(run, variable, fragment)
    assert_nothing_started(tmp_path / "state")


def test_validation_is_the_first_thing_a_full_check_run_does(ansible_playbook, installed_collections: str,
                                                             tmp_path: Path) -> None:
    """site.yml opens with the inventory checks of every play: a bad value of a later role stops the first play."""
    state = tmp_path / "state"
    run = site_check(ansible_playbook, installed_collections, state, "-e", "bonseyes_module_heartbeat_seconds=0",
                     tags=None)
    assert_refused(run, "bonseyes_module_heartbeat_seconds")
    plays = [line for line in run.stdout.splitlines() if line.startswith("PLAY [")]
    assert len(plays) == 1, plays  # the checks only: no deployment play started
    assert plays[0].startswith("PLAY [Check the inventory before anything is deployed]"), plays
    tasks = [line for line in run.stdout.splitlines() if line.startswith("TASK [")]
    assert all("Check" in task or "arg spec" in task for task in tasks), tasks
    assert_nothing_started(state)


@pytest.mark.parametrize(("role", "assignment", "variable"), [
    ("sm_ca", "sm_ca_trust_domain=Upper.Case", "sm_ca_trust_domain"),
    ("sm_ca", "sm_ca_dir=ca", "sm_ca_dir"),
    ("host_identity", "host_identity_dir=host", "host_identity_dir"),
])
def test_roles_outside_site_yml_validate_too(ansible_playbook, installed_collections: str, tmp_path: Path,
                                             role: str, assignment: str, variable: str) -> None:
    playbook = tmp_path / "role.yml"
    playbook.write_text(f"- hosts: all\n  gather_facts: false\n  roles:\n    - role: bonseyes.vp.{role}\n")
    run = ansible_playbook("-i", "localhost,", "-c", "local", "--check", "-e",
                           f"ansible_python_interpreter={sys.executable}", "-e", assignment, str(playbook),
                           collections_path=installed_collections)
    assert_refused(run, variable)


# -- names that enter a certificate request ---------------------------------------------------------


@pytest.mark.parametrize("label", ["h-0123\nCN=forged", "h-0123\r", "h-\x1b[31m", "h-0123\x00", " h-0123"])
@pytest.mark.parametrize("check_mode", [True, False])
def test_host_key_refuses_a_label_with_control_characters(run_module, tmp_path: Path, label: str,
                                                          check_mode: bool) -> None:
    args = {"path": str(tmp_path / "tls" / "host.key"), "csr_path": str(tmp_path / "tls" / "host.csr"),
            "common_name": label}
    result = run_module("bonseyes_host_key", args, check_mode=check_mode)
    assert result.failed, result
    assert result["check"] == "common-name", result
    assert not (tmp_path / "tls").exists()


def test_build_csr_refuses_control_characters_and_keeps_printable_labels() -> None:
    from bonseyes_py.errors import InputError
    from bonseyes_py.pki.csr import build_csr, csr_common_name, csr_matches_key
    from bonseyes_py.pki.keys import generate_private_key

    key = generate_private_key()
    with pytest.raises(InputError, match="control characters"):
        build_csr(key, "h-1\nCN=admin")
    csr = build_csr(key, "h-0123 lab host")
    assert csr_common_name(csr) == "h-0123 lab host"
    assert csr_matches_key(csr, key, "h-0123 lab host")
    assert csr_common_name(build_csr(key, "x" * 80)) == "x" * 64


def test_trust_domain_check_refuses_non_strings() -> None:
    from bonseyes_py.errors import InputError
    from bonseyes_py.pki.roles import check_trust_domain

    with pytest.raises(InputError):
        check_trust_domain(None)  # type: ignore[arg-type]
    with pytest.raises(InputError):
        check_trust_domain("bonseyes.local\n")


def test_host_enrol_refuses_a_malformed_premise_before_anything(run_module, tmp_path: Path) -> None:
    args = {"csr_path": str(tmp_path / "host.csr"), "certificate_path": str(tmp_path / "host.pem"),
            "premises": ["lab\nother"], "sm_url": "https://127.0.0.1:1", "client_cert": str(tmp_path / "o.pem"),
            "client_key": str(tmp_path / "o.key"), "ca_cert": str(tmp_path / "ca.pem")}
    result = run_module("bonseyes_host_enrol", args, check_mode=True)
    assert result.failed, result
    assert result["check"] == "premise", result


def test_host_enrol_refuses_a_file_as_sysroot(run_module, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    args = {"csr_path": str(tmp_path / "host.csr"), "certificate_path": str(tmp_path / "host.pem"),
            "sysroot": str(tmp_path / "file"), "sm_url": "https://127.0.0.1:1", "client_cert": str(tmp_path / "o.pem"),
            "client_key": str(tmp_path / "o.key"), "ca_cert": str(tmp_path / "ca.pem")}
    result = run_module("bonseyes_host_enrol", args, check_mode=True)
    assert result.failed, result
    assert result["check"] == "sysroot", result
