"""Benchmark of artefact registration and digest verification (a script, not a test).

1. Registration of a ~200 MB image (Debian + python3 + 40 MB of incompressible data), broken into
   vet, layer build, push, digest and sign, against the real engine and registry.
2. Digest verification throughput: Python's sha256 over the image's blobs as the registry stores
   them, against ``openssl dgst -sha256`` over the same files in the same run (goal >= 0.8x).
3. BL start-up time, onedir against onefile, up to the verified host licence (step 6 needs a BM and SM).
4. With ``--service``: the same image registered through the MP service (gunicorn, mTLS), uploaded as
   a ``docker save`` archive: upload throughput and when each stage starts, seen by the client.

Run as root with the engine up: ``.venv/bin/python bench/bench_mp.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import secrets
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import docker

from bonseyes_py.bl.build import build_layer
from bonseyes_py.identity.ids import RuntimeID
from bonseyes_py.licences import LicenceIssuer
from bonseyes_py.mp.catalogue import Catalogue
from bonseyes_py.mp.registry import RegistryProcess
from bonseyes_py.mp.service import Marketplace, Timings
from bonseyes_py.mp.signing import LocalArtefactSigner
from bonseyes_py.pki.ca import CertificateAuthority
from bonseyes_py.pki.roles import Role

BENCH_IMAGE = "bonseyes-bench/payload-200mb:1"
CHUNK = 1024 * 1024


def bench_image(client: docker.DockerClient) -> str:
    dockerfile = ("FROM bonseyes/base-python:bookworm\n"
                  "RUN head -c 41943040 /dev/urandom > /opt/model.bin\n"
                  'CMD ["python3", "-c", "print(42)"]\n')
    try:
        client.images.get(BENCH_IMAGE)
    except docker.errors.ImageNotFound:
        client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=BENCH_IMAGE, rm=True, network_mode="none")
    return BENCH_IMAGE


def python_sha256(paths: list[Path]) -> tuple[float, list[str]]:
    started = time.perf_counter()
    digests = []
    for path in paths:
        hasher = hashlib.sha256()
        with path.open("rb", buffering=0) as handle:
            while chunk := handle.read(CHUNK):
                hasher.update(chunk)
        digests.append(hasher.hexdigest())
    return time.perf_counter() - started, digests


def openssl_sha256(paths: list[Path]) -> tuple[float, list[str]]:
    started = time.perf_counter()
    output = subprocess.run(["openssl", "dgst", "-sha256", "-r", *map(str, paths)], capture_output=True, text=True,
                            check=True).stdout
    return time.perf_counter() - started, [line.split()[0] for line in output.splitlines()]


def bl_start_time(client: docker.DockerClient, ca: CertificateAuthority, mode: str, work: Path, runs: int) -> float:
    """Median seconds for BL to start and verify the host licence, measured inside one container.

    Since issue 5, BL then needs the step-6 material (runtime key, SM endpoint) that only a BM hands
    it, and stops there with ``runtime-material``: the run ends at that refusal, which comes right
    after the licence checks. The full path to the payload's exec is timed by bench_pipeline.py.
    """
    bl = build_layer(mode=mode)
    licence_dir = work / f"licence-{mode}"
    licence_dir.mkdir()
    runtime = RuntimeID(image_digest="sha256:" + "0" * 64, artefact_id="bench", user_id="u", host_id="h",
                        nonce=secrets.token_urlsafe(16), host_ip="127.0.0.1")
    (licence_dir / "host-licence.jwt").write_text(LicenceIssuer(ca).issue_host_licence(runtime).token)
    meta = work / f"meta-{mode}"
    (meta / "certs").mkdir(parents=True)
    (meta / "certs" / "sm-root.pem").write_bytes(ca.paths.root_cert.read_bytes())
    (meta / "certs" / "sm-intermediate.pem").write_bytes(ca.paths.intermediate_cert.read_bytes())
    original = {"entrypoint": ["/bin/true"], "cmd": [], "env": [], "workdir": "/", "user": ""}
    (meta / "artefact.json").write_text(json.dumps({"artefact": "bench", "original": original}))
    script = ("for i in $(seq " + str(runs) + "); do s=$(date +%s.%N); "
              "out=$(/opt/bonseyes/bl/bonseyes-layer 2>&1); "
              'case "$out" in *runtime-material*) ;; *) echo "$out" >&2; exit 1;; esac; '
              "e=$(date +%s.%N); awk -v s=$s -v e=$e 'BEGIN{print e-s}'; done")
    output = client.containers.run(
        "bonseyes/base-minbase:bookworm", ["/bin/sh", "-c", script], remove=True, network_mode="none",
        volumes={str(bl): {"bind": "/opt/bonseyes/bl", "mode": "ro"},
                 str(meta / "certs"): {"bind": "/opt/bonseyes/certs", "mode": "ro"},
                 str(meta / "artefact.json"): {"bind": "/opt/bonseyes/artefact.json", "mode": "ro"},
                 str(licence_dir): {"bind": "/run/bonseyes", "mode": "ro"}})
    return statistics.median(float(line) for line in output.decode().split())


def bench_service(client: docker.DockerClient, ca: CertificateAuthority, registry: RegistryProcess, image: str,
                  work: Path) -> None:
    """Registration through the HTTPS service: ``docker save`` to disk, upload, then the server's stages."""
    import os
    import sys

    from bonseyes_py.mp.client import MarketplaceClient, MarketplaceRefusal
    from bonseyes_py.mp.registry import free_port
    from bonseyes_py.mp.server import init_mp
    from bonseyes_py.pki.certs import chain_pem
    from bonseyes_py.pki.keys import generate_private_key, write_private_key

    archive = work / "bench.tar"
    started = time.perf_counter()
    with archive.open("wb") as handle:
        for chunk in client.images.get(image).save(named=True):
            handle.write(chunk)
    save_seconds = time.perf_counter() - started
    port = free_port()
    config = init_mp(work / "mp", ca_directory=ca.paths.directory, bind=f"127.0.0.1:{port}", manage_registry=False,
                     registry_directory=str(registry.directory), registry_port=registry.port, workers=1)
    key = generate_private_key()
    cert = work / "bench-user.pem"
    cert.write_bytes(chain_pem([ca.issue(key.public_key(), ca.identity(Role.USER, "bench")), ca.intermediate]))
    key_path = write_private_key(work / "bench-user.key", key)
    env = {k: v for k, v in os.environ.items() if k != "REQUESTS_CA_BUNDLE"}
    with (work / "mp.log").open("ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "bonseyes_py.mp", str(config.directory)], stdout=log,
                                   stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                mp = MarketplaceClient(f"https://127.0.0.1:{port}", str(cert), str(key_path), str(ca.paths.root_cert))
                mp.ping()
                break
            except MarketplaceRefusal:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        first: dict[str, float] = {}
        started = time.perf_counter()

        def progress(stage: str, _detail: dict[str, object]) -> None:
            first.setdefault(stage, time.perf_counter() - started)

        mp.register_archive(archive, "bench-200mb-service", progress=progress)
        total = time.perf_counter() - started
        size = archive.stat().st_size
        print(f"registration through the MP service ({size / 1e6:.0f} MB archive; docker save took "
              f"{save_seconds:.2f} s): {total:.2f} s")
        upload_done = first.get("vet", total)
        print(f"  upload  {upload_done:7.2f} s  ({size / upload_done / 1e6:.0f} MB/s over mTLS, spooled to disk)")
        for stage in ("vet", "build", "push", "sign", "done"):
            print(f"  {stage:<7} starts at {first.get(stage, float('nan')):7.2f} s")
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bl-runs", type=int, default=10)
    parser.add_argument("--service", action="store_true", help="also register through the MP service (HTTPS)")
    args = parser.parse_args()
    client = docker.from_env(timeout=600)
    image = bench_image(client)
    size = client.images.get(image).attrs["Size"]
    with tempfile.TemporaryDirectory(prefix="bench-mp-") as work_dir:
        work = Path(work_dir)
        ca = CertificateAuthority.init(work / "ca")
        build_layer()  # cached build outside the timed registration
        with RegistryProcess(work / "registry") as registry:
            marketplace = Marketplace(catalogue=Catalogue.sqlite(work / "catalogue.db"), registry=registry.client(),
                                      registry_address=registry.address, credentials=registry.credentials(),
                                      signer=LocalArtefactSigner(ca), docker_client=client)
            timings = Timings()
            started = time.perf_counter()
            artefact = marketplace.register_local_image(image, owner=ca.identity(Role.USER, "bench"),
                                                        name="bench-200mb", timings=timings)
            total = time.perf_counter() - started
            print(f"registration of {image} ({size / 1e6:.0f} MB image, published {artefact.size / 1e6:.0f} MB):"
                  f" {total:.2f} s")
            for stage in ("vet", "layer", "push", "digest", "sign"):
                print(f"  {stage:<7} {timings.stages.get(stage, 0.0):7.2f} s")

            client_api = registry.client()
            blobs = client_api.blob_digests(artefact.repository, artefact.digest)
            root = registry.storage / "docker" / "registry" / "v2" / "blobs" / "sha256"
            paths = [root / blob[7:9] / blob[7:] / "data" for blob in blobs]
            total_bytes = sum(path.stat().st_size for path in paths)
            python_sha256(paths)  # warm the page cache so both hashers read from memory
            py_seconds, py_digests = python_sha256(paths)
            ossl_seconds, ossl_digests = openssl_sha256(paths)
            assert py_digests == ossl_digests == [blob[7:] for blob in blobs]
            started = time.perf_counter()
            client_api.verify_image(artefact.repository, artefact.digest)
            http_seconds = time.perf_counter() - started
            print(f"digest verification over {len(paths)} blobs, {total_bytes / 1e6:.0f} MB:")
            print(f"  python hashlib  {total_bytes / py_seconds / 1e6:8.0f} MB/s")
            print(f"  openssl dgst    {total_bytes / ossl_seconds / 1e6:8.0f} MB/s")
            print(f"  ratio python/openssl {ossl_seconds / py_seconds:.2f}x (goal >= 0.8x)")
            print(f"  via registry HTTP (RegistryClient.verify_image) {total_bytes / http_seconds / 1e6:8.0f} MB/s")
            if args.service:
                bench_service(client, ca, registry, image, work)
        for mode in ("onedir", "onefile"):
            seconds = bl_start_time(client, ca, mode, work, args.bl_runs)
            print(f"BL {mode}: median start to host licence verified {seconds * 1000:.0f} ms over {args.bl_runs} runs")


if __name__ == "__main__":
    main()
