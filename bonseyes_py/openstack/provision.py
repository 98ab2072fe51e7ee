"""Provision or tear down the OpenStack premises of an inventory, with progress per server.

The work is done by playbooks/provision_openstack.yml and teardown_openstack.yml (openstack.cloud
modules); this runs them through ansible-runner and turns the events of their per-server plays into
one ``ServerProgress`` per server, and reads the servers' final state back with openstacksdk.
Only server names, statuses and failure messages are reported, never task results in full.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SERVER_HOST_PREFIX = "openstack-server-"
BOOT_TASK = "Boot the server with its premise in its metadata"
DELETE_TASK = "Delete the server and wait until it is gone"


@dataclass(frozen=True)
class ServerProgress:
    """One step of one server: ``requested``, then ``ACTIVE`` / ``deleted`` or ``failed`` with a message."""

    server: str
    state: str
    message: str = ""


@dataclass
class ProvisionResult:
    status: str = ""
    rc: int = 0
    servers: dict[str, str] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)


class ServerEvents:
    """ansible-runner event handler: server steps of the boot/delete plays, passed to ``on_progress``."""

    def __init__(self, result: ProvisionResult, on_progress: Callable[[ServerProgress], None]) -> None:
        self.result = result
        self.on_progress = on_progress

    def __call__(self, event: dict[str, Any]) -> bool:
        data = event.get("event_data") or {}
        host, task = str(data.get("host", "")), data.get("task", "")
        kind = event.get("event", "")
        if kind in ("runner_on_failed", "runner_on_unreachable") and not data.get("ignore_errors"):
            if "censored" in (data.get("res") or {}):
                return True  # a no_log task's failure: its rescue task fails next, saying why
            message = str((data.get("res") or {}).get("msg", "failed"))
            name = host.removeprefix(SERVER_HOST_PREFIX)
            self.result.failures[name] = message
            self._emit(ServerProgress(name, "failed", message))
        elif host.startswith(SERVER_HOST_PREFIX) and task in (BOOT_TASK, DELETE_TASK):
            name = host.removeprefix(SERVER_HOST_PREFIX)
            if kind == "runner_on_start":
                self._emit(ServerProgress(name, "requested"))
            elif kind == "runner_on_ok":
                server = (data.get("res") or {}).get("server") or {}
                state = "deleted" if task == DELETE_TASK else str(server.get("status", "ACTIVE"))
                self.result.servers[name] = state
                self._emit(ServerProgress(name, state))
        return True

    def _emit(self, progress: ServerProgress) -> None:
        self.on_progress(progress)


def print_progress(progress: ServerProgress, stream: Any = sys.stderr) -> None:
    suffix = f": {progress.message}" if progress.message else ""
    print(f"   server {progress.server}: {progress.state}{suffix}", file=stream, flush=True)


def run_openstack_playbook(inventory: str, *, teardown: bool = False, forks: int = 10,
                           on_progress: Callable[[ServerProgress], None] = print_progress,
                           extra_vars: dict[str, Any] | None = None, project_dir: Path = REPO) -> ProvisionResult:
    """Run provision_openstack.yml (or teardown_openstack.yml) over ``inventory``; ``forks`` servers at once."""
    import ansible_runner

    playbook = project_dir / "playbooks" / ("teardown_openstack.yml" if teardown else "provision_openstack.yml")
    result = ProvisionResult()
    with tempfile.TemporaryDirectory(prefix="bonseyes-openstack-") as private:
        env = {"ANSIBLE_CONFIG": str(project_dir / "ansible.cfg"),
               "ANSIBLE_COLLECTIONS_PATH": str(project_dir / ".ansible" / "collections"),
               "ANSIBLE_NOCOLOR": "1",
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        run = ansible_runner.run(
            private_data_dir=private, project_dir=str(project_dir), playbook=str(playbook),
            inventory=str(Path(inventory).resolve()), extravars=extra_vars or {}, envvars=env, forks=forks,
            quiet=True, event_handler=ServerEvents(result, on_progress), settings={"suppress_ansible_output": True})
        result.status, result.rc = str(run.status), int(run.rc or 0)
    return result


def premise_servers(cloud: str, prefix: str, *, clouds_yaml: str | None = None) -> dict[str, dict[str, Any]]:
    """The servers this prefix provisioned, read back with openstacksdk: name -> status, premise, addresses."""
    import openstack.config
    import openstack.connection

    config = openstack.config.OpenStackConfig(config_files=[clouds_yaml] if clouds_yaml else None)
    connection = openstack.connection.Connection(config=config.get_one(cloud=cloud))
    return {server.name: {"status": server.status, "premise": server.metadata.get("bonseyes_premise"),
                          "addresses": {net: [a["addr"] for a in addrs] for net, addrs in server.addresses.items()}}
            for server in connection.compute.servers(details=True)
            if server.metadata.get("bonseyes_vp") == prefix}
