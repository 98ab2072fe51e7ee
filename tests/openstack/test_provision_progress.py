"""Per-server progress of `bonseyes deploy` provisioning, from ansible-runner events (no cloud needed)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from bonseyes_py.cli.deploy_commands import DeploySummary, ProgressPrinter
from bonseyes_py.openstack.provision import BOOT_TASK, ProvisionResult, ServerEvents, ServerProgress, print_progress


def event(kind: str, host: str, task: str = BOOT_TASK, res: dict[str, object] | None = None) -> dict[str, object]:
    return {"event": kind, "event_data": {"host": host, "task": task, "res": res or {}}}


def test_each_server_reports_requested_then_its_status_and_failures_name_the_problem() -> None:
    seen: list[ServerProgress] = []
    result = ProvisionResult()
    handler = ServerEvents(result, seen.append)
    handler(event("runner_on_start", "openstack-server-vp-hpc-01"))
    handler(event("runner_on_ok", "openstack-server-vp-hpc-01", res={"server": {"status": "ACTIVE"}}))
    handler(event("runner_on_start", "openstack-server-vp-hpc-02"))
    handler(event("runner_on_failed", "openstack-server-vp-hpc-02", res={"msg": "Quota exceeded for instances"}))
    handler(event("runner_on_ok", "localhost", task="List the flavors the cloud offers"))
    assert seen == [ServerProgress("vp-hpc-01", "requested"), ServerProgress("vp-hpc-01", "ACTIVE"),
                    ServerProgress("vp-hpc-02", "requested"),
                    ServerProgress("vp-hpc-02", "failed", "Quota exceeded for instances")]
    assert result.servers == {"vp-hpc-01": "ACTIVE"}
    assert result.failures == {"vp-hpc-02": "Quota exceeded for instances"}


def test_a_no_log_boot_failure_is_reported_by_its_rescue_with_the_reason() -> None:
    """The boot task runs with no_log (its result may hold the admin password): its own failure event is
    censored, and the rescue task that follows carries the reason."""
    seen: list[ServerProgress] = []
    result = ProvisionResult()
    handler = ServerEvents(result, seen.append)
    handler(event("runner_on_start", "openstack-server-vp-hpc-03"))
    handler(event("runner_on_failed", "openstack-server-vp-hpc-03",
                  res={"censored": "the output has been hidden due to the fact that 'no_log: true' was specified"}))
    handler(event("runner_on_failed", "openstack-server-vp-hpc-03",
                  task="Boot the server with its premise in its metadata - why it failed",
                  res={"msg": "server vp-hpc-03: Quota exceeded for instances"}))
    assert seen == [ServerProgress("vp-hpc-03", "requested"),
                    ServerProgress("vp-hpc-03", "failed", "server vp-hpc-03: Quota exceeded for instances")]
    assert result.failures == {"vp-hpc-03": "server vp-hpc-03: Quota exceeded for instances"}


def test_deploy_printer_passes_only_server_events_on_and_prints_one_line_per_server_step() -> None:
    stream = io.StringIO()
    result = ProvisionResult()
    printer = ProgressPrinter(DeploySummary(), stream,
                              ServerEvents(result, lambda progress: print_progress(progress, stream)))
    printer(event("runner_on_start", "openstack-server-vp-hpc-01"))
    printer(event("runner_on_ok", "openstack-server-vp-hpc-01", res={"server": {"status": "ACTIVE"}}))
    printer(event("runner_on_failed", "sm1", task="Enrol each user with the SM", res={"msg": "SM down"}))
    assert result.servers == {"vp-hpc-01": "ACTIVE"}
    assert result.failures == {}
    lines = stream.getvalue().splitlines()
    assert "   server vp-hpc-01: requested" in lines
    assert "   server vp-hpc-01: ACTIVE" in lines
    assert not [line for line in lines if line.startswith("   server sm1")]


def test_deploy_teardown_of_a_missing_inventory_is_refused_naming_it(tmp_path: Path) -> None:
    bonseyes = Path(sys.executable).parent / "bonseyes"
    run = subprocess.run([str(bonseyes), "deploy", "--teardown", "-i", str(tmp_path / "nope")],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 2
    assert f"argument -i/--inventory: '{tmp_path / 'nope'}' does not exist" in run.stderr
    assert len(run.stderr.splitlines()) == 1, run.stderr
