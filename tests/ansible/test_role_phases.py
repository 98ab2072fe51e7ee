"""The service roles' lifecycle phases, each run alone with --tags against one real premise.

One premise (site.yml on inventories/local without the demo artefacts and pipeline: SM, registry, a BM
enrolled with the SM, all under one supervisord on loopback) is deployed once for the module; then, in
order: ``--tags config`` alone keeps the host ID in bm.json and restarts nothing; ``--tags stop`` closes
every service's port and leaves the state, and ``--tags deploy`` alone starts them again; ``--tags
upgrade`` with ``<role>_extra_settings`` renders them into sm.json, bm.json and both registry configurations
and leaves the services answering over mutual TLS; a typo in those settings is refused naming the key before anything is
replaced. The collection metadata is checked against what the roles use.
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_playbooks import recap
from test_site_premise import Premise, bundle_vars, forget_pull_endpoint, stop_supervisord

from bonseyes_py import safejson

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.docker]
REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
# Other collections a task, module default, lookup or inventory plugin may name (ansible.builtin ships with core).
FQCN = re.compile(r"(?m)^\s*(?:-\s+)?(?:group/)?([a-z][a-z0-9_]*\.[a-z][a-z0-9_]*)\.[a-z][a-z0-9_]*:"
                  r"|\b(?:lookup|query)\('([a-z][a-z0-9_]*\.[a-z][a-z0-9_]*)\.[a-z0-9_]+'"
                  r"|^plugin:\s*([a-z][a-z0-9_]*\.[a-z][a-z0-9_]*)\.[a-z0-9_]+")
CORE = {"ansible.builtin", "bonseyes.vp"}


class Deployed:
    """The premise, and how to run playbooks against it and look at its services."""

    def __init__(self, premise: Premise, collections: str, scratch: Path) -> None:
        self.premise = premise
        self.collections = collections
        self.scratch = scratch
        self.state = premise.state

    def play(self, *args: str, playbook: str = "site.yml", **extra: Any) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_COLLECTIONS_PATH=self.collections,
                   ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", PATH=f"{VENV_BIN}:{os.environ.get('PATH', '')}")
        variables = self.scratch / "vars.json"
        variables.write_text(json.dumps(dict(self.premise.vars, **extra), default=str))
        return subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", "inventories/local", "-e", f"@{variables}",
                               *args, playbook], cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
                              check=False)

    def supervisorctl(self, *args: str) -> str:
        return subprocess.run([str(VENV_BIN / "supervisorctl"), "-c", str(self.state / "supervisor/supervisord.conf"),
                               *args], capture_output=True, text=True, timeout=60, check=False).stdout

    def pids(self) -> dict[str, str]:
        return {program: self.supervisorctl("pid", program).strip()
                for program in ("bonseyes-sm", "bonseyes-registry", "bonseyes-registry-pull", "bonseyes-bm")}

    def ports(self) -> dict[str, int]:
        return {"sm": self.premise.vars["bonseyes_sm_port"], "bm": self.premise.vars["bonseyes_bm_port"],
                "registry": self.premise.vars["bonseyes_registry_port"]}

    def sm_get(self, path: str, user: str = "admin") -> dict[str, Any]:
        """A GET on the SM over mutual TLS, as its first admin or as the host's owner."""
        sm = self.state / "security-manager"
        context = ssl.create_default_context(cafile=str(sm / "tls/ca-bundle.pem"))
        if user == "admin":
            context.load_cert_chain(str(sm / "admin/admin-chain.pem"), str(sm / "admin/admin.key"))
        else:
            context.load_cert_chain(str(self.state / f"users/{user}/user.pem"),
                                    str(self.state / f"users/{user}/user.key"))
        url = f"https://127.0.0.1:{self.premise.vars['bonseyes_sm_port']}{path}"
        with urllib.request.urlopen(url, context=context, timeout=10) as answer:
            return safejson.loads_object(answer.read(), what=f"SM answer to {path}")

    def bm_json(self) -> dict[str, Any]:
        return safejson.load_object_file(self.state / "bm/bm.json", what="bm.json")


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def failed_tasks(run: subprocess.CompletedProcess[str]) -> str:
    return "\n".join(line for line in run.stdout.splitlines() if "fatal:" in line or "FAILED" in line)[-3000:] \
        or run.stdout[-3000:] + run.stderr[-2000:]


@pytest.fixture(scope="module")
def deployed(installed_collections: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    premise = Premise(tmp_path_factory.mktemp("phases") / "state")
    deployed = Deployed(premise, installed_collections, tmp_path_factory.mktemp("phases-run"))
    try:
        first = deployed.play("--skip-tags", "artefacts,demo")
        assert first.returncode == 0, failed_tasks(first)
        yield deployed
    finally:
        stop_supervisord(premise.state)
        forget_pull_endpoint(premise)


def test_config_alone_keeps_the_host_id_and_restarts_nothing(deployed: Deployed) -> None:
    host_id = deployed.bm_json()["host_id"]
    assert host_id.startswith("h-")
    pids = deployed.pids()
    run = deployed.play("--tags", "config")
    assert run.returncode == 0, failed_tasks(run)
    assert recap(run.stdout)["changed"] == 0, run.stdout[-4000:]
    assert deployed.bm_json()["host_id"] == host_id
    assert deployed.pids() == pids


def test_stop_closes_every_port_and_deploy_alone_starts_them_again(deployed: Deployed) -> None:
    host_id = deployed.bm_json()["host_id"]
    assert all(port_open(port) for port in deployed.ports().values())
    stopped = deployed.play("--tags", "stop")
    assert stopped.returncode == 0, failed_tasks(stopped)
    closed = {name: port for name, port in deployed.ports().items() if port_open(port)}
    assert not closed, closed
    assert "RUNNING" not in deployed.supervisorctl("status")
    assert (deployed.state / "bm/tls/host.key").exists()
    assert (deployed.state / "security-manager/sm.db").exists()
    again = deployed.play("--tags", "stop", playbook="playbooks/security_manager.yml")  # a stopped SM stays as it is
    assert again.returncode == 0, failed_tasks(again)
    assert recap(again.stdout)["changed"] == 0, again.stdout[-3000:]

    started = deployed.play("--tags", "deploy")
    assert started.returncode == 0, failed_tasks(started)
    assert all(port_open(port) for port in deployed.ports().values())
    assert deployed.sm_get("/v1/ping")
    assert deployed.sm_get(f"/v1/hosts/{host_id}", user="demo-user")["available"] is True


def test_upgrade_renders_extra_settings_and_leaves_the_services_answering(deployed: Deployed) -> None:
    host_id = deployed.bm_json()["host_id"]
    before = deployed.pids()
    run = deployed.play("--tags", "upgrade",
                        security_manager_extra_settings={"sqlite_synchronous": "FULL", "heartbeat_flush_seconds": 2.0},
                        bonseyes_module_extra_settings={"threads": 8},
                        marketplace_registry_extra_settings={"log": {"level": "debug"}})
    assert run.returncode == 0, failed_tasks(run)
    for name in ("config.yml", "pull.yml"):  # both registry endpoints, merged recursively: the rest of log stays
        registry = yaml.safe_load((deployed.state / "registry" / name).read_text())
        assert registry["log"] == {"level": "debug", "accesslog": {"disabled": True}}, registry
    sm = safejson.load_object_file(deployed.state / "security-manager/sm.json", what="sm.json")
    assert (sm["sqlite_synchronous"], sm["heartbeat_flush_seconds"]) == ("FULL", 2.0)
    assert sm["bind"].endswith(f":{deployed.premise.vars['bonseyes_sm_port']}")  # the role's own settings stay
    bm = deployed.bm_json()
    assert (bm["threads"], bm["host_id"]) == (8, host_id)
    assert "extra" not in sm
    assert "extra" not in bm
    after = deployed.pids()
    assert all(after[program] != before[program] for program in after), (before, after)  # all restarted
    assert "Migrate the database" in run.stdout
    assert deployed.sm_get("/v1/ping")
    assert deployed.sm_get(f"/v1/hosts/{host_id}", user="demo-user")["available"] is True


def test_a_typo_in_extra_settings_is_refused_naming_the_key(deployed: Deployed, tmp_path: Path) -> None:
    sm_json = deployed.state / "security-manager/sm.json"
    before, pid = sm_json.read_bytes(), deployed.pids()["bonseyes-sm"]
    run = deployed.play("--tags", "config", playbook="playbooks/security_manager.yml",
                        security_manager_extra_settings={"sqlite_synchronus": "FULL"})
    assert run.returncode != 0
    assert 'sm.json: key \\"sqlite_synchronus\\" is unknown (did you mean \\"sqlite_synchronous\\"?)' in run.stdout, \
        failed_tasks(run)
    assert sm_json.read_bytes() == before
    assert deployed.pids()["bonseyes-sm"] == pid
    typo = deployed.play("--tags", "config", "-e", f"@{bundle_vars(deployed.premise, tmp_path)}",
                         playbook="playbooks/bonseyes_module.yml", bonseyes_module_extra_settings={"thread": 8})
    assert typo.returncode != 0
    assert 'bm.json: key \\"thread\\" is unknown' in typo.stdout, failed_tasks(typo)


def test_phases_need_their_state_and_say_which_phase_makes_it(deployed: Deployed, tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    run = deployed.play("--tags", "deploy", "-e", f"@{bundle_vars(deployed.premise, tmp_path)}",
                        playbook="playbooks/bonseyes_module.yml", bonseyes_module_dir=str(fresh / "bm"))
    assert run.returncode != 0
    assert "this host is not enrolled" in run.stdout, failed_tasks(run)
    assert "run the bootstrap phase first" in run.stdout
    assert not (fresh / "bm").exists()


# -- collection metadata ------------------------------------------------------------------------------


def used_collections() -> dict[str, list[str]]:
    """Collections other than ansible.builtin and this one, with the files that name them."""
    used: dict[str, list[str]] = {}
    files = [*REPO.glob("roles/**/*.yml"), *REPO.glob("playbooks/*.yml"), REPO / "site.yml"]
    for path in files:
        for match in FQCN.finditer(path.read_text()):
            collection = next(group for group in match.groups() if group)
            if collection not in CORE and not collection.startswith(("openstack.metadata", "openstack.flavor",
                                                                      "openstack.addresses")):
                used.setdefault(collection, []).append(str(path.relative_to(REPO)))
    return used


def test_galaxy_dependencies_name_every_collection_the_content_uses() -> None:
    used = used_collections()
    assert {"community.crypto", "community.docker", "openstack.cloud"} <= set(used), used
    dependencies = yaml.safe_load((REPO / "galaxy.yml").read_text())["dependencies"]
    missing = {name: where[:3] for name, where in used.items() if name not in dependencies}
    assert not missing, f"galaxy.yml does not declare {missing}"
    installed = REPO / ".ansible/collections/ansible_collections"
    for name, spec in dependencies.items():
        manifest = installed / name.replace(".", "/") / "MANIFEST.json"
        if manifest.exists():  # the version scripts/install_collections.sh installs satisfies the declared range
            version = tuple(int(part) for part in safejson.load_object_file(manifest, what=name)[
                "collection_info"]["version"].split("."))
            for clause in spec.split(","):
                operator, bound = re.fullmatch(r"(>=|<)(\d+\.\d+\.\d+)", clause.strip()).groups()  # type: ignore[union-attr]
                limit = tuple(int(part) for part in bound.split("."))
                assert (version >= limit) if operator == ">=" else (version < limit), (name, version, spec)


def test_roles_require_the_ansible_version_the_collection_requires() -> None:
    required = yaml.safe_load((REPO / "meta/runtime.yml").read_text())["requires_ansible"]
    minimum = re.fullmatch(r">=(\d+\.\d+)(?:\.\d+)?", required)
    assert minimum, required
    for meta in sorted(REPO.glob("roles/*/meta/main.yml")):
        declared = str(yaml.safe_load(meta.read_text())["galaxy_info"]["min_ansible_version"])
        assert declared == minimum.group(1), f"{meta.relative_to(REPO)}: {declared} vs requires_ansible {required}"
