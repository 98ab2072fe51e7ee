"""``bonseyes deploy -i INVENTORY [--playbook site.yml]``: run the collection's playbooks over ansible-runner.

Operators use the project through Ansible; this command is the same run with progress per play and
task on stderr and, at the end, what changed per play and host. Only event names, task names, hosts
and the ``changed`` flags are printed: task results (which may hold certificates or tokens) are not,
and ansible-runner's own stdout is kept in its artifacts directory, never echoed.

OpenStack premises (the inventory sets ``bonseyes_openstack_enabled``, or ``--openstack``): the servers
are provisioned first, by playbooks/provision_openstack.yml with one progress line per server, and the
playbook then runs over the refreshed dynamic inventory (so the premises it defines and the Bonseyes
Modules it enrols include the new servers) with the provisioning plays skipped, as they just ran.
``--teardown`` runs playbooks/teardown_openstack.yml instead: hosts revoked at the SM, then the
provisioned resources deleted, again with a line per server.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    """ansible-runner event handler: one line per play and task start, and per changed or failed result."""

    def __init__(self, summary: DeploySummary, stream: Any = sys.stderr) -> None:
        self.summary = summary
        self.stream = stream
        self.play = ""

    def __call__(self, event: dict[str, Any]) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data", {})
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


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on", "y", "t")
    return bool(value)


def inventory_wants_openstack(inventory: str, extra_vars: dict[str, Any] | None = None, *,
                              project_dir: Path = REPO) -> bool:
    """Whether the run must provision OpenStack premises: ``bonseyes_openstack_enabled`` from the extra
    vars, else from the inventory's ``all`` group (or localhost). Only the static sources are read
    (the dynamic OpenStack source is not queried: the servers may not exist yet)."""
    if extra_vars and "bonseyes_openstack_enabled" in extra_vars:
        return _truthy(extra_vars["bonseyes_openstack_enabled"])
    env = {**os.environ, **_ansible_env(project_dir), "ANSIBLE_INVENTORY_ENABLED": "host_list,yaml,ini,toml",
           "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False"}
    listing = subprocess.run([str(Path(sys.executable).parent / "ansible-inventory"), "-i",
                              str(Path(inventory).resolve()), "--list", "--export"],
                             cwd=project_dir, env=env, capture_output=True, text=True, check=False)
    if listing.returncode != 0:
        return False
    data = json.loads(listing.stdout or "{}")
    value = (data.get("all", {}).get("vars") or {}).get("bonseyes_openstack_enabled")
    if value is None:
        value = data.get("_meta", {}).get("hostvars", {}).get("localhost", {}).get("bonseyes_openstack_enabled")
    return _truthy(value) if value is not None else False


def run_deploy(inventory: str, playbook: str = "site.yml", *, extra_vars: dict[str, Any] | None = None,
               check: bool = False, tags: str | None = None, skip_tags: str | None = None,
               project_dir: Path = REPO, stream: Any = sys.stderr) -> DeploySummary:
    import ansible_runner

    summary = DeploySummary()
    cmdline = ["--check"] if check else []
    with tempfile.TemporaryDirectory(prefix="bonseyes-deploy-") as private:
        result = ansible_runner.run(
            private_data_dir=private, project_dir=str(project_dir), playbook=str(project_dir / playbook),
            inventory=str(Path(inventory).resolve()), extravars=extra_vars or {}, envvars=_ansible_env(project_dir),
            cmdline=" ".join(cmdline) or None, tags=tags, skip_tags=skip_tags, quiet=True,
            event_handler=ProgressPrinter(summary, stream), settings={"suppress_ansible_output": True})
        summary.status, summary.rc = str(result.status), int(result.rc or 0)
        if summary.rc != 0 and not summary.failed:
            # Failed before any task (syntax, missing collection): ansible's own last words explain it.
            output = result.stdout.read() if result.stdout else ""
            summary.failed.extend(line for line in output.splitlines()[-5:] if line.strip())
    return summary


def cmd_deploy(args: argparse.Namespace) -> int:
    extra: dict[str, Any] = {}
    for item in args.extra_vars or []:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"error: -e {item}: expected KEY=VALUE", file=sys.stderr)
            return 2
        extra[key] = value
    if not Path(args.inventory).exists():
        print(f"error: inventory {args.inventory} does not exist", file=sys.stderr)
        return 2
    from bonseyes_py.openstack.provision import ProvisionResult, print_progress, run_openstack_playbook

    def openstack_report(result: ProvisionResult) -> dict[str, Any]:
        return {"status": result.status, "rc": result.rc, "servers": result.servers, "failures": result.failures}

    if args.teardown:
        print("== OpenStack teardown: revoke the premise hosts at the SM, then delete the servers", file=sys.stderr,
              flush=True)
        down = run_openstack_playbook(args.inventory, teardown=True, forks=args.forks, extra_vars=extra,
                                      on_progress=print_progress)
        print(json.dumps({"openstack": openstack_report(down)}, indent=2, sort_keys=True))
        return 0 if down.status == "successful" else 1

    report: dict[str, Any] = {}
    skip_tags = None
    openstack = args.openstack if args.openstack is not None else inventory_wants_openstack(args.inventory, extra)
    if openstack and not args.check:
        print("== OpenStack premises: provisioning the servers", file=sys.stderr, flush=True)
        # Enrolment is the playbook's job below, once the SM of this run is up.
        extra["bonseyes_openstack_enrol"] = False
        provisioned = run_openstack_playbook(args.inventory, forks=args.forks, extra_vars=extra,
                                             on_progress=print_progress)
        report["openstack"] = openstack_report(provisioned)
        if provisioned.status != "successful":
            report.update(status=provisioned.status, rc=provisioned.rc)
            print(json.dumps(report, indent=2, sort_keys=True))
            return 1
        skip_tags = "provision"
    summary = run_deploy(args.inventory, args.playbook, extra_vars=extra, check=args.check, tags=args.tags,
                         skip_tags=skip_tags)
    print(json.dumps({**summary.as_dict(), **report}, indent=2, sort_keys=True))
    return 0 if summary.status == "successful" else 1


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("deploy", help="run site.yml (or another playbook) over an inventory")
    parser.add_argument("-i", "--inventory", required=True, help="inventory file or directory")
    parser.add_argument("--playbook", default="site.yml", help="playbook relative to the project (default site.yml)")
    parser.add_argument("-e", "--extra-vars", action="append", help="KEY=VALUE (repeatable)")
    parser.add_argument("--check", action="store_true", help="check mode: report what would change")
    parser.add_argument("--tags", help="only plays/tasks with these tags (comma-separated)")
    parser.add_argument("--openstack", action=argparse.BooleanOptionalAction, default=None,
                        help="provision the OpenStack premises first, with progress per server (default: when "
                             "the inventory sets bonseyes_openstack_enabled)")
    parser.add_argument("--teardown", action="store_true",
                        help="revoke the OpenStack premise hosts at the SM and delete what provisioning created")
    parser.add_argument("--forks", type=int, default=10, help="servers booted or deleted at once (default 10)")
    parser.set_defaults(func=cmd_deploy)


__all__ = ["DeploySummary", "ProgressPrinter", "inventory_wants_openstack", "register", "run_deploy"]
