"""Security Manager throughput through the real HTTPS/mTLS API (gunicorn), next to its ceilings.

    .venv/bin/python bench/bench_sm.py [--seconds 4] [--clients 4] [--worker-class gthread|sync]
                                       [--workers 2] [--threads 8] [--hosts 1000] [--warmup 1]

Rows (each client is a separate process; latencies are per request, measured in the client):

- host licence, kept-alive connections (one ``requests.Session`` per client);
- host licence, a new TLS connection per request (a fresh Session each time);
- ``/v1/ping`` (mTLS, same server, same TLS settings, same host certificate and source address),
  both ways: the cost of the stack alone;
- server CPU ms per request (utime + stime of the gunicorn master and workers over the row, from
  /proc): steadier than req/s when other work shares the machine;
- the in-process ceiling: ``LicenceIssuer.issue_host_licence`` in a loop (no HTTP, no DB, no policy);
- heartbeats with ``--hosts`` registered hosts (already online), each client cycling over its share of host identities
  with kept-alive connections.

Set-up (``bench/sm_lab.py``) writes the users, host, premise, artefact, ready pipeline and the
``--hosts`` hosts in-process before gunicorn starts; it imports nothing from ``tests/``.
``verify=`` is passed per request because ``REQUESTS_CA_BUNDLE`` would override ``Session.verify``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sm_lab import HOST_IP, SourceAddressAdapter, build_bench_lab, free_port, start_server, stop_server, wait_ready

from bonseyes_py.identity.ids import RuntimeID
from bonseyes_py.licences import LicenceIssuer
from bonseyes_py.sm import SecurityManager


def _client_loop(args: tuple[str, str, list[tuple[str, str]], str, str, dict[str, Any] | None, bool, float,
                             str | None]) -> list[float]:
    base_url, path, identities, root, method, body_template, keepalive, seconds, source_ip = args

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


def server_cpu_seconds(master_pid: int) -> float:
    """User + system CPU time of the gunicorn master and its workers so far (from /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(entry) == master_pid or int(fields[1]) == master_pid:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


Row = tuple[float, float, float, int, float | None]


def measure(pool: Any, clients: int, base_url: str, path: str, identities: list[list[tuple[str, str]]], root: str,
            method: str, body: dict[str, Any] | None, keepalive: bool, seconds: float,
            source_ip: str | None = None, server_pid: int | None = None) -> Row:
    """(requests/s, p50 ms, p99 ms, count, server CPU ms per request).

    The server's CPU time per request does not depend on what else the machine runs, so it is the
    steadier measure of the service's own work when the throughput figures are noisy.
    """
    jobs = [(base_url, path, identities[i % len(identities)], root, method, body, keepalive, seconds, source_ip)
            for i in range(clients)]
    cpu_before = server_cpu_seconds(server_pid) if server_pid else 0.0
    start = time.perf_counter()
    results = pool.map(_client_loop, jobs)
    elapsed = time.perf_counter() - start
    cpu = (server_cpu_seconds(server_pid) - cpu_before) if server_pid else None
    latencies = sorted(x for r in results for x in r)
    count = len(latencies)
    p99 = latencies[min(count - 1, int(count * 0.99))]
    return (count / min(elapsed, seconds + max(latencies)), statistics.median(latencies) * 1000, p99 * 1000, count,
            cpu * 1000 / count if cpu is not None else None)


def in_process_ceiling(sm: SecurityManager, seconds: float) -> Row:
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
            latencies[int(len(latencies) * 0.99)] * 1000, len(latencies), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--worker-class", default="gthread", choices=("gthread", "sync"))
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--warmup", type=float, default=1.0,
                        help="seconds of licence and ping requests sent (and discarded) before the rows")
    parser.add_argument("--sqlite-synchronous", default="NORMAL", choices=("NORMAL", "FULL"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-sm-") as tmp:
        directory = Path(tmp)
        # Everything the rows need is written in-process before gunicorn starts (bench/sm_lab.py).
        lab = build_bench_lab(directory, heartbeat_ttl_seconds=3600,
                              sqlite_synchronous=args.sqlite_synchronous)
        started = time.perf_counter()
        # Pre-marked online from HOST_IP, so the heartbeat row measures refreshes, not first sightings.
        hosts = lab.register_hosts(args.hosts, ip=HOST_IP)
        registration = time.perf_counter() - started
        config = lab.sm.config
        lab.sm.close()
        port = free_port()
        base_url = f"https://127.0.0.1:{port}"
        log = directory / "server.log"
        server = start_server(config.directory, f"127.0.0.1:{port}", log, "--workers", str(args.workers),
                              "--threads", str(args.threads), "--worker-class", args.worker_class)
        rows: list[tuple[str, Row]] = []
        try:
            root = str(config.ca_directory / "root.pem")
            admin = (str(config.admin_certificate), str(config.admin_key))
            wait_ready(base_url, admin, root, server, log)
            host_id = [[lab.host_identity]]
            body = lab.licence_request
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(args.clients) as pool:
                pool.map(time.sleep, [0.01] * args.clients)  # Warm the pool processes up.
                # Warm the workers up (imports, compiled statements, parsed policy, cached reads) so the
                # first row does not carry each worker's one-off start-up; these requests are discarded.
                if args.warmup > 0:
                    for path, method, request_body in (("/v1/licences/host", "POST", body), ("/v1/ping", "GET", None)):
                        measure(pool, args.clients, base_url, path, host_id, root, method, request_body, True,
                                args.warmup, source_ip=HOST_IP, server_pid=server.pid)
                for keepalive, label in ((True, "kept-alive"), (False, "new TLS conn/request")):
                    rows.append((f"host licence, {label}", measure(
                        pool, args.clients, base_url, "/v1/licences/host", host_id, root, "POST", body,
                        keepalive, args.seconds, source_ip=HOST_IP, server_pid=server.pid)))
                    # The same client certificate (with its chain) and source address as the licence row.
                    rows.append((f"/v1/ping, {label}", measure(
                        pool, args.clients, base_url, "/v1/ping", host_id, root, "GET", None, keepalive,
                        args.seconds, source_ip=HOST_IP, server_pid=server.pid)))
                sm = SecurityManager.open(config)
                rows.append(("in-process issue_host_licence (1 core)", in_process_ceiling(sm, args.seconds)))
                sm.close()
                shares = [hosts[i::args.clients] for i in range(args.clients)]
                rows.append((f"heartbeat, {args.hosts} hosts, kept-alive", measure(
                    pool, args.clients, base_url, "/v1/hosts/heartbeat", shares, root, "POST", {}, True,
                    args.seconds, source_ip=HOST_IP, server_pid=server.pid)))
        finally:
            stop_server(server)

    print(f"\nSM over HTTPS/mTLS: gunicorn {args.worker_class}, {args.workers} workers x {args.threads} threads, "
          f"SQLite synchronous={args.sqlite_synchronous}, "
          f"{args.clients} client processes, {args.seconds:.0f} s per row, "
          f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC")
    print(f"{'row':48} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'n':>7} {'srv CPU ms/req':>15}")
    for label, (rate, p50, p99, count, cpu) in rows:
        cpu_text = f"{cpu:15.3f}" if cpu is not None else f"{'-':>15}"
        print(f"{label:48} {rate:9.1f} {p50:8.2f} {p99:8.2f} {count:7d} {cpu_text}")
    ping = {label.split(", ", 1)[1]: row for label, row in rows if label.startswith("/v1/ping")}
    for label, (rate, _p50, _p99, _count, cpu) in rows:
        if label.startswith("host licence"):
            mode = label.split(", ", 1)[1]
            ping_rate, ping_cpu = ping[mode][0], ping[mode][4]
            extra = f"; server CPU per licence - per ping: {cpu - ping_cpu:.3f} ms" if cpu and ping_cpu else ""
            print(f"licences/ping, {mode}: {rate / ping_rate:.0%} (goal >= 70%){extra}")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    print(f"(registered {args.hosts} hosts in-process in {registration:.1f} s)")


if __name__ == "__main__":
    main()
