"""``bonseyes deploy -i INVENTORY [--playbook site.yml]``: run the collection's playbooks over ansible-runner.

Operators use the project through Ansible; this command is the same run with progress per play and
task on stderr and, at the end, what changed per play and host. Only event names, task names, hosts
and the ``changed`` flags are printed: task results (which may hold certificates or tokens) are not,
and ansible-runner's own stdout is kept in its artifacts directory, never echoed.

OpenStack premises: when the inventory sets ``bonseyes_openstack_enabled`` (or with ``--openstack``),
site.yml provisions the servers (playbooks/provision_openstack.yml) before the Bonseyes Module play
enrols them, in the same run; each server's progress (requested, ACTIVE, or failed with the cloud's
message) is printed as its own line, and the final report lists the servers. ``--teardown`` runs
playbooks/teardown_openstack.yml instead: the premise hosts revoked at the SM, then exactly the
provisioned resources deleted, again with a line per server.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bonseyes_py.cli import arguments
from bonseyes_py.errors import InputError
from bonseyes_py.openstack.provision import (
    SERVER_HOST_PREFIX,
    ProvisionResult,
    ServerEvents,
    print_progress,
    run_openstack_playbook,
)

REPO = Path(__file__).resolve().parents[2]


@dataclass
class DeploySummary:
    """What a run did, per play: hosts with changed tasks, and the names of those tasks."""

    plays: list[str] = field(default_factory=list)
    changed: dict[str, dict[str, list[str]]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(list)))
    failed: list[str] = field(default_factory=list)
    messages: list[Any] = field(default_factory=list)  # what the playbooks chose to show (debug tasks)
    status: str = ""
    rc: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "rc": self.rc, "plays": self.plays, "failed": self.failed,
                "messages": self.messages,
                "changed": {play: dict(hosts) for play, hosts in self.changed.items()}}


class ProgressPrinter:
    """ansible-runner event handler: one line per play and task start, and per changed or failed result;
    the events of OpenStack servers also go to ``servers`` (progress per server)."""

    def __init__(self, summary: DeploySummary, stream: Any = sys.stderr,
                 servers: Callable[[dict[str, Any]], Any] | None = None) -> None:
        self.summary = summary
        self.stream = stream
        self.play = ""
        self.servers = servers

    def __call__(self, event: dict[str, Any]) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data", {})
        if self.servers is not None and str(data.get("host", "")).startswith(SERVER_HOST_PREFIX):
            self.servers(event)
        if kind == "playbook_on_play_start":
            self.play = data.get("play", "")
            self.summary.plays.append(self.play)
            print(f"== play: {self.play}", file=self.stream, flush=True)
        elif kind == "playbook_on_task_start":
            print(f"   task: {data.get('task', '')}", file=self.stream, flush=True)
        elif kind == "runner_on_ok" and data.get("task_action") in ("debug", "ansible.builtin.debug"):
            self.summary.messages.append((data.get("res") or {}).get("msg"))
        elif kind == "runner_on_ok" and (data.get("res") or {}).get("changed"):
            task = data.get("task", "")
            hosts = self.summary.changed[self.play]
            if task not in hosts[data.get("host", "")]:
                hosts[data.get("host", "")].append(task)
            print(f"      changed: {data.get('host', '')}", file=self.stream, flush=True)
        elif kind in ("runner_on_failed", "runner_on_unreachable") and not data.get("ignore_errors"):
            message = str((data.get("res") or {}).get("msg", ""))[:500]
            line = f"{self.play} / {data.get('task', '')} on {data.get('host', '')}: {message}"
            self.summary.failed.append(line)
            print(f"      FAILED: {line}", file=self.stream, flush=True)
        return False  # ansible-runner need not keep the event on disk for us


def _ansible_env(project_dir: Path) -> dict[str, str]:
    return {"ANSIBLE_CONFIG": str(project_dir / "ansible.cfg"),
            "ANSIBLE_COLLECTIONS_PATH": str(project_dir / ".ansible" / "collections"),
            "ANSIBLE_NOCOLOR": "1",
            # ansible-playbook of the same environment as this command, first on PATH.
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def run_deploy(inventory: str, playbook: str = "site.yml", *, extra_vars: dict[str, Any] | None = None,
               check: bool = False, tags: str | None = None, project_dir: Path = REPO,
               stream: Any = sys.stderr, servers: ProvisionResult | None = None) -> DeploySummary:
    """Run ``playbook``; with ``servers``, OpenStack server progress is printed and collected there too."""
    import ansible_runner

    summary = DeploySummary()
    printer = ProgressPrinter(summary, stream, ServerEvents(servers, lambda progress: print_progress(
        progress, stream)) if servers is not None else None)
    cmdline = ["--check"] if check else []
    with tempfile.TemporaryDirectory(prefix="bonseyes-deploy-") as private:
        result = ansible_runner.run(
            private_data_dir=private, project_dir=str(project_dir), playbook=str(project_dir / playbook),
            inventory=str(Path(inventory).resolve()), extravars=extra_vars or {}, envvars=_ansible_env(project_dir),
            cmdline=" ".join(cmdline) or None, tags=tags, quiet=True, event_handler=printer,
            settings={"suppress_ansible_output": True})
        summary.status, summary.rc = str(result.status), int(result.rc or 0)
        if summary.rc != 0 and not summary.failed:
            # Failed before any task (syntax, missing collection): ansible's own last words explain it.
            output = result.stdout.read() if result.stdout else ""
            summary.failed.extend(line for line in output.splitlines()[-5:] if line.strip())
    return summary


def cmd_deploy(args: argparse.Namespace) -> int:
    extra: dict[str, Any] = dict(args.extra_vars or [])
    if not (REPO / args.playbook).is_file():
        raise InputError(f"playbook {args.playbook!r} is not a file of the project {REPO}", check="usage")
    if args.openstack is not None:
        extra["bonseyes_openstack_enabled"] = args.openstack
    if args.teardown:
        print("== OpenStack teardown: revoke the premise hosts at the SM, then delete the servers", file=sys.stderr,
              flush=True)
        down = run_openstack_playbook(args.inventory, teardown=True, forks=args.forks, extra_vars=extra,
                                      on_progress=print_progress)
        print(json.dumps({"openstack": {"status": down.status, "rc": down.rc, "servers": down.servers,
                                        "failures": down.failures}}, indent=2, sort_keys=True))
        return 0 if down.status == "successful" else 1
    servers = ProvisionResult()
    summary = run_deploy(args.inventory, args.playbook, extra_vars=extra, check=args.check, tags=args.tags,
                         servers=servers)
    report = summary.as_dict()
    if servers.servers or servers.failures:
        report["openstack"] = {"servers": servers.servers, "failures": servers.failures}
    print(json.dumps(report, indent=2, sort_keys=True))
    return 0 if summary.status == "successful" else 1


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("deploy", help="run site.yml (or another playbook) over an inventory")
    parser.add_argument("-i", "--inventory", required=True, type=arguments.existing_path,
                        help="inventory file or directory")
    parser.add_argument("--playbook", default="site.yml", help="playbook relative to the project (default site.yml)")
    parser.add_argument("-e", "--extra-vars", action="append", type=arguments.key_value, help="KEY=VALUE (repeatable)")
    parser.add_argument("--check", action="store_true", help="check mode: report what would change")
    parser.add_argument("--tags", help="only plays/tasks with these tags (comma-separated)")
    parser.add_argument("--openstack", action=argparse.BooleanOptionalAction, default=None,
                        help="provision the OpenStack premises in site.yml, with progress per server (default: "
                             "when the inventory sets bonseyes_openstack_enabled)")
    parser.add_argument("--teardown", action="store_true",
                        help="revoke the OpenStack premise hosts at the SM and delete what provisioning created")
    parser.add_argument("--forks", type=arguments.bounded_int(1, 1000), default=10,
                        help="servers deleted at once by --teardown (default 10)")
    parser.set_defaults(func=cmd_deploy)


__all__ = ["DeploySummary", "ProgressPrinter", "register", "run_deploy"]
