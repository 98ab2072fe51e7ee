"""Security Manager throughput through the real HTTPS/mTLS API (gunicorn), next to its ceilings.

    .venv/bin/python bench/bench_sm.py [--seconds 4] [--clients 4] [--worker-class gthread|sync]
                                       [--workers 2] [--threads 8] [--hosts 1000]

Rows (each client is a separate process; latencies are per request, measured in the client):

- host licence, kept-alive connections (one ``requests.Session`` per client);
- host licence, a new TLS connection per request (a fresh Session each time);
- ``/v1/ping`` (mTLS, same server, same TLS settings), both ways: the cost of the stack alone;
- the in-process ceiling: ``LicenceIssuer.issue_host_licence`` in a loop (no HTTP, no DB, no policy);
- heartbeats with ``--hosts`` registered hosts, each client cycling over its share of host identities
  with kept-alive connections.

Setup reuses the test helpers (``tests/sm``): a BM test peer on 127.0.0.2 makes the pipeline ready.
``verify=`` is passed per request because ``REQUESTS_CA_BUNDLE`` would override ``Session.verify``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "sm"))

from conftest import World, build_lab, launch_sm  # noqa: E402
from sm_testlib import fake_hardware_id, new_csr, stop, write_identity  # noqa: E402

from bonseyes_py.identity.ids import RuntimeID, sign_host_id  # noqa: E402
from bonseyes_py.jose import Signer  # noqa: E402
from bonseyes_py.licences import LicenceIssuer  # noqa: E402
from bonseyes_py.pki.certs import load_certificate  # noqa: E402
from bonseyes_py.pki.roles import identity_of  # noqa: E402
from bonseyes_py.sm import SecurityManager  # noqa: E402
from bonseyes_py.sm.service import admin_identity  # noqa: E402


def _client_loop(args: tuple[str, str, list[tuple[str, str]], str, str, dict[str, Any] | None, bool, float,
                             str | None]) -> list[float]:
    base_url, path, identities, root, method, body_template, keepalive, seconds, source_ip = args
    from sm_testlib import SourceAddressAdapter

    def new_session() -> requests.Session:
        session = requests.Session()
        if source_ip:
            session.mount("https://", SourceAddressAdapter(source_ip))
        return session

    sessions = {cert: new_session() for cert, _ in identities} if keepalive else {}
    latencies = []
    deadline = time.perf_counter() + seconds
    index = 0
    while time.perf_counter() < deadline:
        cert, key = identities[index % len(identities)]
        index += 1
        session = sessions[cert] if keepalive else new_session()
        body = None
        if body_template is not None:
            body = {**body_template, "nonce": secrets.token_urlsafe(18)} if "nonce" in body_template else body_template
        start = time.perf_counter()
        response = session.request(method, base_url + path, json=body, cert=(cert, key), verify=root, timeout=30)
        latencies.append(time.perf_counter() - start)
        if response.status_code >= 300:
            raise RuntimeError(f"{path}: {response.status_code} {response.text[:300]}")
        if not keepalive:
            session.close()
    return latencies


def measure(pool: Any, clients: int, base_url: str, path: str, identities: list[list[tuple[str, str]]], root: str,
            method: str, body: dict[str, Any] | None, keepalive: bool, seconds: float,
            source_ip: str | None = None) -> tuple[float, float, float, int]:
    jobs = [(base_url, path, identities[i % len(identities)], root, method, body, keepalive, seconds, source_ip)
            for i in range(clients)]
    start = time.perf_counter()
    results = pool.map(_client_loop, jobs)
    elapsed = time.perf_counter() - start
    latencies = sorted(x for r in results for x in r)
    count = len(latencies)
    p99 = latencies[min(count - 1, int(count * 0.99))]
    return count / min(elapsed, seconds + max(latencies)), statistics.median(latencies) * 1000, p99 * 1000, count


def in_process_ceiling(sm: SecurityManager, seconds: float) -> tuple[float, float, float, int]:
    issuer = LicenceIssuer(sm.ca)
    latencies = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        runtime = RuntimeID(image_digest="sha256:" + "ab" * 32, artefact_id="bench", user_id="bench",
                            host_id="h-bench", nonce=secrets.token_urlsafe(18), host_ip="127.0.0.2")
        start = time.perf_counter()
        issuer.issue_host_licence(runtime)
        latencies.append(time.perf_counter() - start)
    latencies.sort()
    return (len(latencies) / sum(latencies), statistics.median(latencies) * 1000,
            latencies[int(len(latencies) * 0.99)] * 1000, len(latencies))


def register_hosts(sm: SecurityManager, directory: Path, count: int) -> list[tuple[str, str]]:
    admin = admin_identity(sm.config)
    key, csr = new_csr()
    owner = sm.enrol_user(admin, "bench-owner", csr_pem=csr)
    owner_cert = load_certificate(owner["certificate"].encode())
    signer = Signer(key, [owner_cert, sm.ca.intermediate])
    owner_identity = identity_of(owner_cert)
    identities = []
    for index in range(count):
        token = sign_host_id(signer, owner_identity.uri, fake_hardware_id(f"bench-host-{index}"))
        host_key, host_csr = new_csr()
        host = sm.register_host(owner_identity, token, host_csr)
        cert, key_path = write_identity(directory, host["host_id"], host_key, host["certificate"])
        identities.append((str(cert), str(key_path)))
    return identities


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--worker-class", default="gthread", choices=("gthread", "sync"))
    parser.add_argument("--hosts", type=int, default=1000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-sm-") as tmp:
        directory = Path(tmp)
        server = launch_sm(directory / "sm", workers=args.workers, threads=args.threads,
                           worker_class=args.worker_class, heartbeat_ttl_seconds=3600)
        world = World(server, directory / "world")
        rows: list[tuple[str, tuple[float, float, float, int]]] = []
        try:
            lab = build_lab(world, ip="127.0.0.2")
            root = str(server.root)
            host_id = [[(str(lab.host.cert), str(lab.host.key))]]
            admin_id = [[(str(server.config.admin_certificate), str(server.config.admin_key))]]
            body = lab.licence_request(secrets.token_urlsafe(18))
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(args.clients) as pool:
                pool.map(time.sleep, [0.01] * args.clients)  # Warm the pool processes up.
                for keepalive, label in ((True, "kept-alive"), (False, "new TLS conn/request")):
                    rows.append((f"host licence, {label}", measure(
                        pool, args.clients, server.base_url, "/v1/licences/host", host_id, root, "POST", body,
                        keepalive, args.seconds, source_ip="127.0.0.2")))
                    rows.append((f"/v1/ping, {label}", measure(
                        pool, args.clients, server.base_url, "/v1/ping", admin_id, root, "GET", None, keepalive,
                        args.seconds)))
                sm = SecurityManager.open(server.config)
                rows.append(("in-process issue_host_licence (1 core)", in_process_ceiling(sm, args.seconds)))
                started = time.perf_counter()
                hosts = register_hosts(sm, directory / "hosts", args.hosts)
                registration = time.perf_counter() - started
                shares = [hosts[i::args.clients] for i in range(args.clients)]
                rows.append((f"heartbeat, {args.hosts} hosts, kept-alive", measure(
                    pool, args.clients, server.base_url, "/v1/hosts/heartbeat", shares, root, "POST", {}, True,
                    args.seconds)))
                sm.close()
        finally:
            world.close()
            stop(server.process)

    print(f"\nSM over HTTPS/mTLS: gunicorn {args.worker_class}, {args.workers} workers x {args.threads} threads, "
          f"{args.clients} client processes, {args.seconds:.0f} s per row, "
          f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC")
    print(f"{'row':48} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'n':>7}")
    for label, (rate, p50, p99, count) in rows:
        print(f"{label:48} {rate:9.1f} {p50:8.2f} {p99:8.2f} {count:7d}")
    print(f"(registered {args.hosts} hosts in-process in {registration:.1f} s)")


if __name__ == "__main__":
    main()
