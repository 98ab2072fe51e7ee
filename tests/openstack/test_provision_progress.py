"""Per-server progress of `bonseyes deploy` provisioning, from ansible-runner events (no cloud needed)."""

from __future__ import annotations

from bonseyes_py.openstack.provision import BOOT_TASK, ProvisionResult, ServerEvents, ServerProgress


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
