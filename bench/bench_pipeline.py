"""Pipeline set-up benchmark: the six steps for one artefact, then a 10-stage pipeline on 5 BMs.

Usage: ``.venv/bin/python bench/bench_pipeline.py [--model-mb N] [--runs 3]`` (root, Docker engine
up; a lab on loopback is built in a temporary directory: SM, registry with its mTLS pull endpoint,
MP registration, BMs on 127.0.0.2..6). ``--model-mb`` adds N MB of incompressible "model weights"
to the relay image, as AI artefacts carry.

Split of one stage's set-up, timed where the work happens, in the same set-up (not a separate run):

- Docker time: the engine's pull of step 3 (cold: image absent from the engine; timed by BM around
  the engine call, so it includes the engine's own digest checks) and ``containers.run`` (create +
  start) of step 5, timed by BM;
- protocol time: everything else of the wall time the user sees: the SM's checks and signatures
  (step 3 digest verification, host licence with a fresh runtime key pair, artefact licence), BM's
  registry lookup, licence checks and runtime directory, and BL (its bootloader and interpreter
  start, imports, step 5 verification, the two mTLS calls of step 6). BL's start-up is counted
  with the protocol: it is BL's cost, not Docker's. A bare ``docker pull`` of the same image is
  printed beside BM's pull as a cross-check.
"""

from __future__ import annotations

import argparse
import json
import os
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
    handle = next(h for h in lab.bms.values() if h.host_id == host_id)
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
    fetch = lab.bm_client(handle).get("/v1/status").json()["fetch_timings"][lab.relay["digest"]]
    alice.post(f"/v1/pipelines/{pipeline_id}/stop")
    return {"step3": step3, "steps456": steps456, **{k: float(v) for k, v in timings.items()},
            **{f"fetch_{k}": float(v) for k, v in fetch.items()}}


def pull_time(lab: Lab) -> float:
    """A bare ``docker pull`` by digest of the same image, cold: the Docker share of step 3."""
    remove_image(lab, lab.relay["digest"])
    repository = lab.relay["reference"].partition("@")[0].replace(lab.registry.address, lab.pull_registry.address)
    began = time.perf_counter()
    lab.docker.images.pull(repository, tag=lab.relay["digest"])
    return time.perf_counter() - began


def model_image(lab: Lab, megabytes: int) -> str:
    """The relay image plus ``megabytes`` of incompressible "model weights", as AI artefacts carry."""
    tag = f"bonseyes-bench/relay-model-{megabytes}mb:1"
    try:
        lab.docker.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    context = lab.root / "model-context"
    context.mkdir(exist_ok=True)
    with (context / "model.bin").open("wb") as handle:
        for _ in range(megabytes):
            handle.write(os.urandom(1024 * 1024))
    (context / "Dockerfile").write_text(f"FROM {lab.relay_image()}\nCOPY model.bin /srv/model.bin\n")
    lab.docker.images.build(path=str(context), tag=tag, rm=True, forcerm=True, network_mode="none", pull=False)
    return tag


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-mb", type=int, default=0,
                        help="add this many MB of random model weights to the artefact image (default: none)")
    parser.add_argument("--runs", type=int, default=3, help="cold single-stage runs (median reported)")
    args = parser.parse_args()
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
            image = model_image(lab, args.model_mb) if args.model_mb else None
            lab.relay = lab.register_artefact("relay", "alice", image=image)
            host = hosts[0].host_id

            one_stage(lab, host, cold=False)  # warm-up: gunicorn workers, engine, page cache
            runs = []
            for _ in range(args.runs):
                pull = pull_time(lab)
                remove_image(lab, lab.relay["digest"])
                result = one_stage(lab, host, cold=True)
                result["bare_pull"] = pull
                runs.append(result)
            med = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
            total = med["step3"] + med["steps456"]
            # Docker time: what the engine did in this very set-up, timed by BM around the engine calls:
            # the pull (with the engine's digest checks) and containers.run (create + start).
            docker_time = med["fetch_pull"] + med["container_start"]
            protocol = total - docker_time
            size = f", image +{args.model_mb} MB model" if args.model_mb else ""
            print(f"one artefact, six steps (median of {args.runs}, cold image{size}):")
            print(f"  total set-up            {ms(total)}")
            print(f"  step 3 (fetch+verify)   {ms(med['step3'])}")
            print(f"    BM registry lookup    {ms(med['fetch_lookup'])}")
            print(f"    BM engine pull        {ms(med['fetch_pull'])}  (bare docker pull of the same image "
                  f"{med['bare_pull'] * 1000:.0f} ms)")
            print(f"    BM digest read-back   {ms(med['fetch_readback'])}")
            print(f"  steps 4-6               {ms(med['steps456'])}")
            for key in ("image_check", "host_licence", "material", "container_start", "bl_authorisation"):
                print(f"    BM {key:20s} {ms(med[key])}")
            # BL's own clock. bl_boot runs from the creation of the container's first process (runc's
            # init, which waits while the engine sets up the container's namespaces) to BL's first line,
            # so it overlaps BM's container_start; what BL adds to the wall time is bl_authorisation.
            print("      BL's own clock (bl_boot overlaps container_start):")
            for key in ("bl_boot", "bl_imports", "bl_step5", "bl_material", "bl_sm", "bm_accept"):
                if key in med:
                    print(f"      {key:20s} {ms(med[key])}")
            print(f"  Docker time (pull + run){ms(docker_time)}  ({docker_time / total:.0%})")
            print(f"  protocol time           {ms(protocol)}  ({protocol / total:.0%}; of which BL after the engine "
                  f"started its container {med['bl_authorisation'] * 1000:.0f} ms)")

            # Warm single stage vs. 10 stages on 5 BMs (images already pulled: set-up cost only).
            warm = [one_stage(lab, host, cold=False) for _ in range(3)]
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
            print(f"warm single stage         {ms(single)}  (median of 3)")
            print(f"10 stages on 5 BMs        {ms(ten)}  ({ten / single:.1f}x a single stage; "
                  f"step 3 {ten_step3 * 1000:.0f} ms, steps 4-6 {(ten - ten_step3) * 1000:.0f} ms)")
            slowest = max(started["stages"], key=lambda s: s["seconds"])
            print(f"  slowest stage steps 4-6 {slowest['seconds'] * 1000:.0f} ms: "
                  + ", ".join(f"{k} {v * 1000:.0f}" for k, v in slowest["timings"].items()))
        finally:
            lab.close()


if __name__ == "__main__":
    main()
