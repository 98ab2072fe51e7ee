"""Pipeline set-up benchmark: the six steps for one artefact, then a 10-stage pipeline on 5 BMs.

Usage: ``.venv/bin/python bench/bench_pipeline.py`` (root, Docker engine up; a lab on loopback is
built in a temporary directory: SM, registry, MP registration, BMs on 127.0.0.2..6).

Split of one stage's set-up (what BM reports per runtime, plus the SM's side):

- Docker time: the image pull of step 3 (cold: image absent from the engine) and the container
  start (``containers.run``) of step 5;
- protocol time: everything else: the SM's checks and signatures (step 3 digest verification,
  host licence with a fresh runtime key pair, artefact licence), BM's licence checks and the
  runtime directory, and BL's step 5/6 work (licence verification, two mTLS calls). BL's own
  interpreter start-up is counted with the protocol since it is BL's cost, not Docker's.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "e2e"))

import docker  # noqa: E402
from lab import Lab  # noqa: E402

from bonseyes_py.bl.build import build_layer  # noqa: E402

PREMISE = "bench"


def remove_image(lab: Lab, digest: str) -> None:
    for image in lab.docker.images.list(all=True):
        if any(entry.endswith("@" + digest) for entry in image.attrs.get("RepoDigests") or []):
            lab.docker.images.remove(image.id, force=True)


def one_stage(lab: Lab, host_id: str, cold: bool) -> dict[str, float]:
    alice = lab.user("alice")
    if cold:
        remove_image(lab, lab.relay["digest"])
    began = time.perf_counter()
    requested = alice.post("/v1/pipelines", {"premise": PREMISE, "stages": [
        {"artefact_id": "relay", "host_id": host_id}]})
    assert requested.status_code == 201, requested.text
    step3 = time.perf_counter() - began
    pipeline_id = requested.json()["pipeline_id"]
    began = time.perf_counter()
    started = alice.post(f"/v1/pipelines/{pipeline_id}/start").json()
    steps456 = time.perf_counter() - began
    stage = started["stages"][0]
    assert stage["status"] == "running", json.dumps(started)
    timings = stage["timings"]
    alice.post(f"/v1/pipelines/{pipeline_id}/stop")
    return {"step3": step3, "steps456": steps456, **{k: float(v) for k, v in timings.items()}}


def pull_time(lab: Lab) -> float:
    """A bare ``docker pull`` by digest of the same image, cold: the Docker share of step 3."""
    remove_image(lab, lab.relay["digest"])
    repository = lab.relay["reference"].partition("@")[0].replace(lab.registry.address, lab.pull_registry.address)
    began = time.perf_counter()
    lab.docker.images.pull(repository, tag=lab.relay["digest"])
    return time.perf_counter() - began


def main() -> None:
    client = docker.from_env(timeout=600)
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as work:
        lab = Lab(Path(work), client, build_layer())
        try:
            lab.start_sm()
            lab.enrol_user("alice")
            lab.put_premise(PREMISE, ["alice"])
            lab.start_registry()
            hosts = [lab.add_host(f"127.0.0.{i}", "alice", [PREMISE]) for i in range(2, 7)]
            for handle in hosts:
                lab.start_bm(handle)
            lab.relay = lab.register_artefact("relay", "alice")
            host = hosts[0].host_id

            one_stage(lab, host, cold=False)  # warm-up: BL build cache, gunicorn workers, engine
            runs = []
            for _ in range(3):
                pull = pull_time(lab)
                remove_image(lab, lab.relay["digest"])
                result = one_stage(lab, host, cold=True)
                result["docker_pull"] = pull
                runs.append(result)
            med = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
            total = med["step3"] + med["steps456"]
            docker_time = med["docker_pull"] + med["container_start"]
            protocol = total - docker_time
            print("one artefact, six steps (median of 3, cold image):")
            print(f"  total set-up          {total * 1000:8.0f} ms")
            print(f"  step 3 (fetch+verify) {med['step3'] * 1000:8.0f} ms"
                  f"  (bare docker pull {med['docker_pull'] * 1000:.0f} ms)")
            print(f"  steps 4-6             {med['steps456'] * 1000:8.0f} ms")
            for key in ("image_check", "host_licence", "material", "container_start", "bl_authorisation"):
                print(f"    BM {key:18s} {med[key] * 1000:8.0f} ms")
            print(f"  Docker time           {docker_time * 1000:8.0f} ms  ({docker_time / total:.0%})")
            print(f"  protocol time         {protocol * 1000:8.0f} ms  ({protocol / total:.0%})")

            # Warm single stage vs. 10 stages on 5 BMs (images already pulled: set-up cost only).
            warm = [one_stage(lab, host, cold=False) for _ in range(2)]
            single = statistics.median(w["step3"] + w["steps456"] for w in warm)
            alice = lab.user("alice")
            stages = [{"artefact_id": "relay", "host_id": hosts[i % 5].host_id} for i in range(10)]
            began = time.perf_counter()
            requested = alice.post("/v1/pipelines", {"premise": PREMISE, "stages": stages})
            assert requested.status_code == 201, requested.text
            pipeline_id = requested.json()["pipeline_id"]
            ten_step3 = time.perf_counter() - began
            started = alice.post(f"/v1/pipelines/{pipeline_id}/start").json()
            ten = time.perf_counter() - began
            assert all(s["status"] == "running" for s in started["stages"]), json.dumps(started)
            alice.post(f"/v1/pipelines/{pipeline_id}/stop")
            print(f"warm single stage       {single * 1000:8.0f} ms")
            print(f"10 stages on 5 BMs      {ten * 1000:8.0f} ms  ({ten / single:.1f}x a single stage; "
                  f"step 3 {ten_step3 * 1000:.0f} ms, steps 4-6 {(ten - ten_step3) * 1000:.0f} ms)")
            slowest = max(started["stages"], key=lambda s: s["seconds"])
            print(f"  slowest stage steps 4-6 {slowest['seconds'] * 1000:.0f} ms: "
                  + ", ".join(f"{k} {v * 1000:.0f}" for k, v in slowest["timings"].items()))
        finally:
            lab.close()


if __name__ == "__main__":
    main()
