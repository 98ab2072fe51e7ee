"""End-to-end: the six steps across two hosts, against the real engine, registry, SM and BMs."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from lab import BMHandle, Lab, clean_env, dump, logs_of, run_pipeline, wait_for

from bonseyes_py.bm.config import BMConfig
from bonseyes_py.bm.images import ImageStore, RegistryIdentity
from bonseyes_py.errors import InputError, LicenceError
from bonseyes_py.licences import Expectations, LicenceKind, verify_licence
from bonseyes_py.pki.certs import certificate_pem, load_certificate_chain
from bonseyes_py.pki.keys import generate_private_key, write_private_key
from bonseyes_py.pki.roles import Role

pytestmark = [pytest.mark.docker, pytest.mark.integration, pytest.mark.slow]
PREMISE = "lab"


def _runtime_material(lab: Lab, handle: BMHandle, nonce: str) -> tuple[Path, Path, bytes]:
    """A consistent copy of one runtime's certificate, key and host licence (BM renews them every 2 s)."""
    material = handle.directory / "runtimes" / nonce
    for _ in range(20):
        copy = lab.root / "knock" / nonce
        shutil.rmtree(copy, ignore_errors=True)
        copy.mkdir(parents=True)
        for name in ("runtime.pem", "runtime.key", "host-licence.jwt"):
            shutil.copyfile(material / name, copy / name)
        token = (copy / "host-licence.jwt").read_text().strip()
        chain = load_certificate_chain((copy / "runtime.pem").read_bytes())
        try:
            verify_licence(token, lab.ca.trust_store(), kind=LicenceKind.HOST,
                           expect=Expectations(runtime_certificate=chain[0]))
        except LicenceError:
            time.sleep(0.2)
            continue
        body = json.dumps({"host_licence": token}).encode()
        return copy / "runtime.pem", copy / "runtime.key", struct.pack("!I", len(body)) + body
    raise AssertionError(f"no consistent runtime material for {nonce}")


def _knock(lab: Lab, ip: str, port: int, cert: Path | None = None, key: Path | None = None,
           frame: bytes = b"", message: bytes = b"intruder") -> bytes:
    """Speak HTTP to a stage's published port over TLS; returns what came back (b"" when refused)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(str(lab.ca_bundle))
    if cert is not None:
        context.load_cert_chain(str(cert), str(key))
    request = (b"POST /data HTTP/1.1\r\nHost: stage\r\nConnection: close\r\nContent-Length: "
               + str(len(message)).encode() + b"\r\n\r\n" + message)
    answer = b""
    try:
        with socket.create_connection((ip, port), timeout=15) as raw, context.wrap_socket(raw) as tls:
            tls.sendall(frame + request)
            while chunk := tls.recv(65536):
                answer += chunk
    except (ssl.SSLError, OSError):
        pass
    return answer


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
    first, second = started["stages"]
    received = wait_for(lambda: "RECEIVED hello-from-stage-0" in logs_of(receiver), 60, "stage 2 to receive")
    assert received
    wait_for(lambda: "SENT" in logs_of(sender), 30, "stage 1 to get the answer")
    # The data went BL to BL over mutual TLS: stage 1's BL dialled stage 2's runtime at B's published
    # port, stage 2's BL accepted stage 1's runtime certificate; both payloads spoke plain HTTP on loopback.
    assert f"connected to runtime {second['runtime_name']} at {lab.host_b.ip}:{second['port']}" in logs_of(sender)
    assert f"accepted runtime {first['runtime_name']} from {lab.host_a.ip}" in logs_of(receiver)
    assert "RECEIVED hello-from-stage-0 FROM 127.0.0.1" in logs_of(receiver)
    assert "uid 65534" in logs_of(receiver)
    # The payload (user nobody) cannot read the runtime key, and no TLS material is in its environment.
    for container in containers.values():
        assert "KEY UNREADABLE PermissionError" in logs_of(container)
        assert "BL MEMORY UNREADABLE PermissionError" in logs_of(container)
        assert "RELAY SOCKETS UNREACHABLE PermissionError" in logs_of(container)
        assert "INTERFACES ['lo']" in logs_of(container)
        assert "TLS ENV []" in logs_of(container)

    # Only a licensed runtime of this pipeline gets through stage 2's published port.
    port = second["port"]
    host_key = lab.host_a.directory / "tls" / "host.key"
    user_cert, user_key = lab.users["alice"]
    assert _knock(lab, lab.host_b.ip, port) == b""  # no certificate
    assert _knock(lab, lab.host_b.ip, port, user_cert, user_key) == b""  # a user
    assert _knock(lab, lab.host_b.ip, port, lab.host_a.directory / "tls" / "host.pem", host_key) == b""  # a host
    cert, key, frame = _runtime_material(lab, lab.host_a, first["nonce"])
    assert _knock(lab, lab.host_b.ip, port, cert, key) == b""  # a runtime without its licence frame
    other, other_started = run_pipeline(alice, PREMISE, [{"artefact_id": "relay", "host_id": lab.host_a.host_id}])
    assert other_started["stages"][0]["status"] == "running", dump(other_started)
    other_cert, other_key, other_frame = _runtime_material(lab, lab.host_a, other_started["stages"][0]["nonce"])
    assert _knock(lab, lab.host_b.ip, port, other_cert, other_key, other_frame) == b""  # another pipeline
    assert "intruder" not in logs_of(receiver)
    # The payload's own plain port exists only in the container's network namespace: no process of
    # the host reaches it (with host networking it listened on the host's 127.0.0.1).
    plain = re.search(r"relay inbound \S+ -> 127\.0\.0\.1:(\d+)", logs_of(receiver))
    assert plain is not None, logs_of(receiver)
    for address in ("127.0.0.1", lab.host_b.ip):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((address, int(plain.group(1))), timeout=5).close()
    refusals = logs_of(receiver)
    assert refusals.count("bonseyes-layer: refused") >= 5, refusals
    assert f"belongs to pipeline {other['pipeline_id']!r}" in refusals
    # Positive control: this pipeline's stage 1 runtime, with its licence, is let through.
    answer = _knock(lab, lab.host_b.ip, port, cert, key, frame, message=b"control")
    assert b"200 OK" in answer, answer
    assert b"control" in answer, answer
    assert alice.post(f"/v1/pipelines/{other['pipeline_id']}/stop").status_code == 200

    # Nothing secret in what `docker inspect` shows.
    for container in containers.values():
        env = "\n".join(container.attrs["Config"]["Env"])
        assert "PRIVATE KEY" not in env
        assert "BONSEYES_TLS_KEY" not in env
        assert container.attrs["HostConfig"]["Privileged"] is False
        mounts = sorted((m["Destination"], m["RW"]) for m in container.attrs["Mounts"])
        assert mounts == [("/run/bonseyes", False), ("/run/bonseyes-net", True)]
        # No network of its own: BM's relay sockets are the container's only way in and out.
        assert container.attrs["HostConfig"]["NetworkMode"] == "none"
    status = alice.get(f"/v1/pipelines/{pipeline_id}/runtime").json()
    assert [s["status"] for s in status["stages"]] == ["running", "running"]
    stopped = alice.post(f"/v1/pipelines/{pipeline_id}/stop")
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["status"] == "stopped"
    assert lab.pipeline_containers(pipeline_id) == []


def _blob_path(lab: Lab, digest: str) -> Path:
    hex_digest = digest.removeprefix("sha256:")
    return lab.registry.storage / "docker/registry/v2/blobs/sha256" / hex_digest[:2] / hex_digest / "data"


def test_payload_running_as_root_cannot_read_the_runtime_key_or_bl_memory(lab: Lab, tmp_path: Path) -> None:
    """An artefact whose payload runs as root: the runtime key stays BL's.

    BM mounts the runtime material in a 0000 directory; BL keeps CAP_DAC_OVERRIDE for itself but
    drops it (and CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE) from what the payload inherits, and is
    non-dumpable, so /proc/1 is closed to the payload. BL itself still reads the material (the stage
    ran, so steps 5 and 6 read the licence and key; renewals are covered by the revocation test).
    """
    context = tmp_path / "root-relay"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {lab.relay_image()}\nUSER root\n")
    tag = "bonseyes-e2e/relay-root:" + lab.relay_image().rpartition(":")[2]
    lab.docker.images.build(path=str(context), tag=tag, rm=True, forcerm=True, network_mode="none", pull=False)
    lab.register_artefact("relay-root", "alice", image=tag)
    alice = lab.user("alice")
    pipeline, started = run_pipeline(alice, PREMISE, [{"artefact_id": "relay-root", "host_id": lab.host_a.host_id}])
    assert started["stages"][0]["status"] == "running", dump(started)
    try:
        container = lab.pipeline_containers(pipeline["pipeline_id"])[0]
        wait_for(lambda: "PAYLOAD RUNNING" in logs_of(container), 60, "the root payload to start")
        logs = logs_of(container)
        assert "PAYLOAD UID 0" in logs
        assert "KEY UNREADABLE PermissionError" in logs, logs
        assert "BL MEMORY UNREADABLE PermissionError" in logs, logs
        assert "RELAY SOCKETS UNREACHABLE PermissionError" in logs, logs
        # BM's side of the mount: the runtime directory is closed to everyone without CAP_DAC_OVERRIDE.
        runtime = started["stages"][0]["runtime_name"]
        keys = list(lab.host_a.directory.rglob("runtime.key"))
        assert keys, f"no runtime material under {lab.host_a.directory} for {runtime}"
        assert all(key.parent.stat().st_mode & 0o777 == 0 for key in keys)
        assert all((key.parent / "net").stat().st_mode & 0o777 == 0 for key in keys)
    finally:
        alice.post(f"/v1/pipelines/{pipeline['pipeline_id']}/stop")


def test_tampered_layer_aborts_the_pipeline_and_every_bm_removes_its_images(lab: Lab) -> None:
    victim = lab.register_artefact("victim", "alice")
    layers = lab.registry.client().blob_digests(victim["repository"], victim["digest"])
    blob = _blob_path(lab, layers[-1])  # the BL layer: unique to this artefact, so never cached locally
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))
    alice = lab.user("alice")
    answer = alice.post("/v1/pipelines", {"premise": PREMISE, "stages": [
        {"artefact_id": "relay", "host_id": lab.host_a.host_id},
        {"artefact_id": "victim", "host_id": lab.host_b.host_id}]})
    assert answer.status_code == 409, answer.text
    assert answer.json()["error"] == "image-integrity"
    assert not lab.has_image(victim["digest"])
    assert not lab.has_image(lab.relay["digest"])
    for handle in (lab.host_a, lab.host_b):
        status = lab.bm_client(handle).get("/v1/status").json()
        assert status["runtimes"] == [] or all(r["status"] != "running" for r in status["runtimes"]
                                               if r["digest"] == victim["digest"])
    assert lab.bm_client(lab.host_a).get("/v1/status").json()["removed_digests"][-1] == lab.relay["digest"]
    assert lab.bm_client(lab.host_b).get("/v1/status").json()["removed_digests"][-1] == victim["digest"]
    assert [c for c in lab.containers() if c.labels.get("io.bonseyes.bm.pipeline") is None] == []


def test_container_started_by_hand_never_gets_a_licence(lab: Lab) -> None:
    lab.docker.images.pull(lab.relay["reference"].partition("@")[0], tag=lab.relay["digest"])
    output = lab.docker.containers.run(lab.relay["reference"], network_mode="host", remove=False, detach=True)
    try:
        result = output.wait(timeout=60)
        logs = logs_of(output)
    finally:
        output.remove(force=True)
    assert result["StatusCode"] == 77, logs
    assert "no host licence at /run/bonseyes/host-licence.jwt" in logs
    assert "LISTENING" not in logs
    assert "PAYLOAD RUNNING" not in logs


def test_host_licence_of_host_a_replayed_on_host_b_is_refused(lab: Lab, tmp_path: Path) -> None:
    alice = lab.user("alice")
    pipeline, started = run_pipeline(alice, PREMISE, [{"artefact_id": "relay", "host_id": lab.host_a.host_id}])
    assert started["stages"][0]["status"] == "running", dump(started)
    nonce = started["stages"][0]["nonce"]
    material = lab.host_a.directory / "runtimes" / nonce
    token = (material / "host-licence.jwt").read_text()
    # 1. B's BM checks licences against its own host ID: A's licence names A.
    with pytest.raises(LicenceError) as refused:
        verify_licence(token, lab.ca.trust_store(), kind=LicenceKind.HOST,
                       expect=Expectations(host_id=lab.host_b.host_id, host_ip=lab.host_b.ip))
    assert refused.value.check == "host-id"
    # 2. A's runtime presenting an artefact licence to B's BM: B never started that runtime.
    key = material / "runtime.key"
    chain = material / "runtime.pem"
    from lab import Client

    as_runtime = Client(lab.sm_url, chain, key, lab.ca_bundle)
    licence = as_runtime.post("/v1/licences/artefact", {"host_licence": token, "artefact_id": "relay"})
    assert licence.status_code == 201, licence.text
    to_b = Client(f"https://{lab.host_b.ip}:{lab.host_b.port}", chain, key, lab.ca_bundle,
                  assert_hostname=lab.host_b.host_id)
    answer = to_b.post("/v1/runtimes/licence", {"licence": licence.json()["licence"]})
    assert answer.status_code == 403, answer.text
    assert answer.json()["error"] == "unknown-runtime"
    # 3. A container on B started with A's copied material (B's BM as endpoint) never runs its payload.
    replay = tmp_path / "replay"
    shutil.copytree(material, replay, ignore=shutil.ignore_patterns("net"))  # not A's relay sockets
    endpoints = json.loads((replay / "endpoints.json").read_text())
    endpoints["bm_url"] = f"https://{lab.host_b.ip}:{lab.host_b.port}"
    endpoints.pop("relay")  # dialled directly, over the host's network
    (replay / "endpoints.json").write_text(json.dumps(endpoints))
    container = lab.docker.containers.run(lab.relay["reference"], network_mode="host", detach=True,
                                          volumes={str(replay): {"bind": "/run/bonseyes", "mode": "ro"}},
                                          environment={"BONSEYES_LISTEN": f"{lab.host_b.ip}:0"})
    try:
        result = container.wait(timeout=120)
        logs = logs_of(container)
    finally:
        container.remove(force=True)
    assert result["StatusCode"] == 77, logs
    assert "endpoint" in logs
    assert "PAYLOAD RUNNING" not in logs
    assert alice.post(f"/v1/pipelines/{pipeline['pipeline_id']}/stop").status_code == 200


def test_bm_of_unregistered_or_revoked_host_is_refused(lab: Lab) -> None:
    # Unregistered: a host certificate from the SM's CA for a host the SM has no record of.
    handle = lab.add_host("127.0.0.4", "alice", [PREMISE])
    answer = lab.admin.post("/v1/revocations", {"kind": "host", "id": handle.host_id, "reason": "e2e"})
    assert answer.status_code == 200, answer.text
    revoked = subprocess.run([sys.executable, "-m", "bonseyes_py.bm", str(handle.directory)], capture_output=True,
                             text=True, timeout=120, env=clean_env())
    assert revoked.returncode == 1
    assert "revoked" in revoked.stderr

    ghost_dir = lab.root / "hosts" / "ghost"
    shutil.copytree(handle.directory, ghost_dir)
    key = generate_private_key()
    certificate = lab.ca.issue(key.public_key(), lab.ca.identity(Role.HOST, "h-" + "0" * 32), dns_names=("ghost",))
    write_private_key(ghost_dir / "tls" / "host.key", key)
    (ghost_dir / "tls" / "host.pem").write_bytes(certificate_pem(certificate) + certificate_pem(lab.ca.intermediate))
    config = json.loads((ghost_dir / "bm.json").read_text())
    config.update(host_id="h-" + "0" * 32, directory=str(ghost_dir))
    (ghost_dir / "bm.json").write_text(json.dumps(config))
    ghost = subprocess.run([sys.executable, "-m", "bonseyes_py.bm", str(ghost_dir)], capture_output=True, text=True,
                           timeout=120, env=clean_env())
    assert ghost.returncode == 1
    assert "not-found" in ghost.stderr


def test_revoked_artefact_is_stopped_at_next_renewal_and_no_longer_licensed(lab: Lab) -> None:
    """BL renews the artefact licence itself (step 6 again), on its own clock, apart from BM's renewals.

    Licences of "doomed" live 60 s. This host's BM renews host licences every 15 s; BL renews its
    artefact licence when a third of its life has passed (about 20 s and 40 s after the start), each
    time with the newest host licence BM holds. The artefact is revoked right after BM's second host
    renewal (30 s): BL's renewal (40 s) comes before BM's next one (45 s), so the refusal that stops
    the revoked runtime is BL's.
    """
    handle = lab.add_host("127.0.0.5", "alice", [PREMISE], renew_seconds=15.0)
    lab.start_bm(handle)
    lab.register_artefact("doomed", "alice", licence_seconds=60)
    alice = lab.user("alice")
    pipeline, started = run_pipeline(alice, PREMISE, [{"artefact_id": "doomed", "host_id": handle.host_id}])
    assert started["stages"][0]["status"] == "running", dump(started)
    pipeline_id = pipeline["pipeline_id"]
    assert len(lab.pipeline_containers(pipeline_id)) == 1
    container = lab.pipeline_containers(pipeline_id)[0]
    bm = lab.bm_client(handle)

    def record() -> dict[str, Any]:
        return dict(bm.get("/v1/runtimes", params={"pipeline_id": pipeline_id}).json()["runtimes"][0])

    first = record()
    assert first["artefact_licences"] == 1
    # BM renews the host licence (15 s); BL does not follow at once: its own renewal is due at 20 s.
    second_host = wait_for(lambda: (r := record())["host_licence_id"] != first["host_licence_id"] and r, 40,
                           "BM's first host licence renewal")
    assert second_host["artefact_licences"] == 1
    renewed = wait_for(lambda: (r := record())["artefact_licences"] >= 2 and r, 30, "BL's first renewal")
    assert renewed["artefact_licence_id"] != first["artefact_licence_id"]
    assert renewed["host_licence_id"] == second_host["host_licence_id"]
    assert "artefact licence renewed" in logs_of(container)
    third_host = wait_for(lambda: (r := record())["host_licence_id"] != second_host["host_licence_id"] and r, 40,
                          "BM's second host licence renewal")
    assert third_host["artefact_licences"] == 2

    answer = lab.admin.post("/v1/revocations", {"kind": "artefact", "id": "doomed", "reason": "e2e"})
    assert answer.status_code == 200, answer.text
    wait_for(lambda: lab.pipeline_containers(pipeline_id) == [], 60, "the renewal to stop the runtime")
    stopped = record()
    assert stopped["status"] == "stopped"
    assert stopped["host_licence_id"] == third_host["host_licence_id"]  # BM renewed nothing after the revocation
    assert "payload exited with status 77" in stopped["detail"], stopped
    assert "artefact licence renewal refused" in stopped["detail"], stopped
    assert "revoked" in stopped["detail"], stopped
    again = alice.post("/v1/pipelines", {"premise": PREMISE, "stages": [
        {"artefact_id": "doomed", "host_id": lab.host_a.host_id}]})
    assert again.status_code == 403, again.text
    assert again.json()["error"] == "revoked"


def test_bm_restarted_during_set_up_leaves_nothing_running_unlicensed(lab: Lab) -> None:
    alice = lab.user("alice")
    requested = alice.post("/v1/pipelines", {"premise": PREMISE, "stages": [
        {"artefact_id": "relay", "host_id": lab.host_a.host_id},
        {"artefact_id": "relay", "host_id": lab.host_b.host_id}]})
    assert requested.status_code == 201, requested.text
    pipeline_id = requested.json()["pipeline_id"]
    outcome: dict[str, object] = {}

    def start() -> None:
        response = alice.post(f"/v1/pipelines/{pipeline_id}/start")
        outcome["status"] = response.status_code
        outcome["body"] = response.json()

    thread = threading.Thread(target=start)
    thread.start()
    # Kill B's BM as soon as its container exists: BL is then between steps 5 and 6.
    wait_for(lambda: any(c.labels.get("io.bonseyes.bm.host") == lab.host_b.host_id
                         for c in lab.pipeline_containers(pipeline_id)), 120, "B's container")
    lab.stop_bm(lab.host_b, signal.SIGKILL)
    lab.start_bm(lab.host_b)
    thread.join(timeout=300)
    assert outcome["status"] == 200, outcome
    body = outcome["body"]
    assert isinstance(body, dict)
    statuses = [s["status"] for s in body["stages"]]
    if body["status"] == "ready":  # it completed: every stage is a licensed runtime
        assert statuses == ["running", "running"]
    else:  # it failed cleanly: aborted, and every container of it is gone
        assert body["status"] == "aborted", dump(body)
        wait_for(lambda: lab.pipeline_containers(pipeline_id) == [], 60, "the aborted pipeline's containers to go")
    for container in lab.pipeline_containers(pipeline_id):
        handle = next(h for h in (lab.host_a, lab.host_b) if h.host_id == container.labels["io.bonseyes.bm.host"])
        records = lab.bm_client(handle).get("/v1/runtimes", params={"pipeline_id": pipeline_id}).json()["runtimes"]
        nonce = container.labels["io.bonseyes.bm.nonce"]
        assert [r["status"] for r in records if r["nonce"] == nonce] == ["running"], dump(records)
    alice.post(f"/v1/pipelines/{pipeline_id}/stop")


def test_running_stage_keeps_its_network_across_a_bm_restart(lab: Lab) -> None:
    """A licensed container has no network but BM's relay: a restarted BM opens its routes again."""
    alice = lab.user("alice")
    stages = [{"artefact_id": "relay", "host_id": lab.host_a.host_id},
              {"artefact_id": "relay", "host_id": lab.host_b.host_id}]
    pipeline, started = run_pipeline(alice, PREMISE, stages)
    assert [s["status"] for s in started["stages"]] == ["running", "running"], dump(started)
    first, second = started["stages"]
    cert, key, frame = _runtime_material(lab, lab.host_a, first["nonce"])
    assert b"200 OK" in _knock(lab, lab.host_b.ip, second["port"], cert, key, frame, message=b"before")
    lab.stop_bm(lab.host_b, signal.SIGKILL)
    # BM gone: so is the stage's published port (its relay lived in BM's process).
    assert _knock(lab, lab.host_b.ip, second["port"], cert, key, frame, message=b"while-down") == b""
    lab.start_bm(lab.host_b)
    answer = _knock(lab, lab.host_b.ip, second["port"], cert, key, frame, message=b"after-restart")
    assert b"200 OK" in answer, answer
    assert b"after-restart" in answer, answer
    records = lab.bm_client(lab.host_b).get("/v1/runtimes", params={"pipeline_id": pipeline["pipeline_id"]})
    assert [r["status"] for r in records.json()["runtimes"]] == ["running"], records.text
    # Its routes are open again: SM, BM and the published port (stage 2 has no next stage).
    assert lab.bm_client(lab.host_b).get("/v1/status").json()["relay_routes"][second["runtime_name"]] == 3
    assert alice.post(f"/v1/pipelines/{pipeline['pipeline_id']}/stop").status_code == 200


def test_hosts_pull_by_digest_over_mutual_tls_only(lab: Lab) -> None:
    pull = lab.pull_registry
    assert pull.url.startswith("https://registry.bonseyes.test:")
    # The pull endpoint speaks TLS only and wants a certificate from the SM's CA.
    plain = requests.get(f"http://{pull.address}/v2/", timeout=10)
    assert plain.status_code == 400  # "Client sent an HTTP request to an HTTPS server."
    with pytest.raises(requests.exceptions.RequestException):
        requests.get(f"{pull.url}/v2/", verify=str(lab.ca_bundle), timeout=10)
    config = BMConfig.load(lab.host_a.directory)
    assert config.registry == pull.address
    assert config.registry_scheme == "https"
    as_host = requests.get(f"{pull.url}/v2/", verify=str(lab.ca_bundle), timeout=10,
                           cert=(str(config.certificate), str(config.key)))
    assert as_host.status_code == 200
    # BM's image store with host A's identity: a tag is refused before the engine sees it ...
    store = ImageStore(lab.docker, config.registry, identity=RegistryIdentity(
        certificate=config.certificate, key=config.key, ca_bundle=config.ca_bundle, name=config.host_id,
        engine_certs_dir=Path(config.engine_certs_dir)))
    with pytest.raises(InputError) as by_tag:
        store.pull(f"{pull.address}/{lab.relay['repository']}:latest")
    assert by_tag.value.check == "pull-by-tag"
    assert store.fetch("relay:latest").computed == ""
    # ... and a digest is pulled by the engine over mutual TLS with the host identity BM linked for it.
    links = Path(config.engine_certs_dir) / pull.address
    assert (links / f"{config.host_id}.key").resolve() == config.key.resolve()
    assert (links / f"{config.host_id}.cert").resolve() == config.certificate.resolve()
    result = store.fetch(lab.relay["digest"])
    assert result.error == ""
    assert result.computed == lab.relay["digest"]
    assert result.reference == f"{pull.address}/{lab.relay['repository']}@{lab.relay['digest']}"
