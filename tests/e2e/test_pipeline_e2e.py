"""End-to-end: the six steps across two hosts, against the real engine, registry, SM and BMs."""

from __future__ import annotations

import pytest
from lab import Lab, dump, logs_of, run_pipeline, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.integration, pytest.mark.slow]
PREMISE = "lab"


def test_two_stage_pipeline_sends_data_over_licensed_mtls(lab: Lab) -> None:
    alice = lab.user("alice")
    stages = [{"artefact_id": "relay", "host_id": lab.host_a.host_id},
              {"artefact_id": "relay", "host_id": lab.host_b.host_id}]
    pipeline, started = run_pipeline(alice, PREMISE, stages)
    assert pipeline["status"] == "ready"
    assert [s["reported_digest"] for s in pipeline["stages"]] == [lab.relay["digest"]] * 2
    assert [s["status"] for s in started["stages"]] == ["running", "running"], dump(started)
    pipeline_id = pipeline["pipeline_id"]
    containers = {c.labels["io.bonseyes.bm.host"]: c for c in lab.pipeline_containers(pipeline_id)}
    assert set(containers) == {lab.host_a.host_id, lab.host_b.host_id}
    receiver = containers[lab.host_b.host_id]
    sender = containers[lab.host_a.host_id]
    received = wait_for(lambda: "RECEIVED hello-from-stage-0" in logs_of(receiver), 60, "stage 2 to receive")
    assert received
    wait_for(lambda: "SENT" in logs_of(sender), 30, "stage 1 to get the answer")
    # Stage 2 saw stage 1's runtime identity (a runtime certificate), and runs as the image's user.
    assert "/runtime/rt-" in logs_of(receiver)
    assert "uid 65534" in logs_of(receiver)
    # Nothing secret in what `docker inspect` shows.
    for container in containers.values():
        env = "\n".join(container.attrs["Config"]["Env"])
        assert "PRIVATE KEY" not in env
        assert "BONSEYES_TLS_KEY" not in env
        assert container.attrs["HostConfig"]["Privileged"] is False
        mounts = container.attrs["Mounts"]
        assert [(m["Destination"], m["RW"]) for m in mounts] == [("/run/bonseyes", False)]
    status = alice.get(f"/v1/pipelines/{pipeline_id}/runtime").json()
    assert [s["status"] for s in status["stages"]] == ["running", "running"]
    stopped = alice.post(f"/v1/pipelines/{pipeline_id}/stop")
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["status"] == "stopped"
    assert lab.pipeline_containers(pipeline_id) == []
