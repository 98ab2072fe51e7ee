"""What BM's byte relay costs a pipeline's stage-to-stage traffic, against direct loopback TCP in the same run.

    .venv/bin/python bench/bench_relay.py [--megabytes 256] [--round-trips 2000]

Artefact containers run with ``--network none``: the bytes of stage 1's BL reach stage 2's BL through
two relays, as on two hosts (stage 1's BM: Unix socket ``next-0.sock`` -> TCP; stage 2's BM: the
published TCP port -> Unix socket ``in.sock``). Each relay runs in its own process, as each BM does,
and so do the sender and the receiver. The baseline is what host networking gave: the sender's TCP
connection straight to the receiver.

Rows: bulk throughput (MB/s, one connection, 64 KiB writes) and 1-byte request/answer round trips per
second on one connection; first plain (the relay's own price at its worst), then with mutual TLS 1.3
end to end between sender and receiver, P-256 certificates from a Bonseyes CA, as BLs speak it (the
price a stage sees).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bonseyes_py.bm.netrelay import INBOUND, OUTBOUND, NetRelay, Route
from bonseyes_py.pki.ca import CertificateAuthority
from bonseyes_py.pki.certs import certificate_pem
from bonseyes_py.pki.keys import write_private_key

CHUNK = 64 * 1024


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _tls_context(directory: str, server: bool) -> ssl.SSLContext:
    """Mutual TLS 1.3 with the runtime certificates of ``_write_identities``, as BL configures it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_verify_locations(f"{directory}/ca.pem")
    name = "receiver" if server else "sender"
    context.load_cert_chain(f"{directory}/{name}.pem", f"{directory}/{name}.key")
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _write_identities(directory: Path) -> None:
    ca = CertificateAuthority.init(directory / "ca")
    (directory / "ca.pem").write_bytes(certificate_pem(ca.root) + certificate_pem(ca.intermediate))
    for name in ("sender", "receiver"):
        key, certificate = ca.issue_runtime_identity(f"rt-bench-{name}")
        (directory / f"{name}.pem").write_bytes(certificate_pem(certificate) + certificate_pem(ca.intermediate))
        write_private_key(directory / f"{name}.key", key)


def _serve(listener: socket.socket, tls: str | None) -> None:
    """The receiving stage: bulk connections are drained and answered with the byte count, others echo."""
    context = _tls_context(tls, server=True) if tls else None
    while True:
        raw, _ = listener.accept()
        if raw.family == socket.AF_INET:  # as BL's asyncio transports: no Nagle delay on small writes
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            connection: Any = context.wrap_socket(raw, server_side=True) if context else raw
        except (ssl.SSLError, OSError):
            raw.close()
            continue
        with connection:
            mode = connection.recv(1)
            if mode == b"B":  # announced size, then the bytes; answered with the count received
                header = b""
                while len(header) < 8 and (part := connection.recv(8 - len(header))):
                    header += part
                expected, total = int.from_bytes(header, "big"), 0
                while total < expected and (chunk := connection.recv(CHUNK)):
                    total += len(chunk)
                connection.sendall(total.to_bytes(8, "big"))
            else:
                while data := connection.recv(1):
                    connection.sendall(data)


def _receiver(kind: str, address: str | tuple[str, int], tls: str | None,
              ready: multiprocessing.synchronize.Event) -> None:
    family = socket.AF_UNIX if kind == "unix" else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    if family == socket.AF_INET:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(address)
    listener.listen(8)
    ready.set()
    _serve(listener, tls)


def _relay(source_ip: str, directory: str, routes: list[Route], ready: multiprocessing.synchronize.Event) -> None:
    relay = NetRelay(source_ip)
    relay.open("bench", Path(directory), routes)
    ready.set()
    while True:
        time.sleep(3600)


def _start(target: object, *args: object) -> multiprocessing.Process:
    ready = multiprocessing.Event()
    process = multiprocessing.Process(target=target, args=(*args, ready), daemon=True)
    process.start()
    if not ready.wait(30):
        raise SystemExit(f"{getattr(target, '__name__', target)} did not start")
    return process


def _connect(address: str | tuple[str, int], tls: ssl.SSLContext | None) -> Any:
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.connect(address)
    if family == socket.AF_INET:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return tls.wrap_socket(sock, server_hostname="stage") if tls else sock


def bulk(address: str | tuple[str, int], megabytes: int, tls: ssl.SSLContext | None) -> float:
    payload = os.urandom(CHUNK)
    total = megabytes * 1024 * 1024
    with _connect(address, tls) as sock:
        start = time.perf_counter()
        sock.sendall(b"B" + total.to_bytes(8, "big"))
        sent = 0
        while sent < total:
            sock.sendall(payload)
            sent += len(payload)
        answer = b""
        while len(answer) < 8 and (chunk := sock.recv(8)):
            answer += chunk
        elapsed = time.perf_counter() - start
    if int.from_bytes(answer, "big") != sent:
        raise SystemExit(f"the receiver got {int.from_bytes(answer, 'big')} of {sent} bytes")
    return sent / elapsed / 1e6


def round_trips(address: str | tuple[str, int], count: int, tls: ssl.SSLContext | None) -> float:
    with _connect(address, tls) as sock:
        sock.sendall(b"E")
        start = time.perf_counter()
        for _ in range(count):
            sock.sendall(b"x")
            if sock.recv(1) != b"x":
                raise SystemExit("the echo broke off")
        return count / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=256)
    parser.add_argument("--round-trips", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each row; the median is printed")
    args = parser.parse_args()
    multiprocessing.set_start_method("fork")
    host_a, host_b = "127.0.0.2", "127.0.0.3"
    with tempfile.TemporaryDirectory(prefix="bench-relay-") as work:
        dir_a, dir_b, tls_dir = Path(work, "a"), Path(work, "b"), Path(work, "tls")
        for directory in (dir_a, dir_b, tls_dir):
            directory.mkdir()
        _write_identities(tls_dir)
        published = {"plain": _free_port(host_b), "tls": _free_port(host_b)}
        direct = {"plain": (host_b, _free_port(host_b)), "tls": (host_b, _free_port(host_b))}
        processes = []
        for mode, tls in (("plain", None), ("tls", str(tls_dir))):
            # stage 2's BL behind its BM's relay, and on the host's network
            processes.append(_start(_receiver, "unix", str(dir_b / f"in-{mode}.sock"), tls))
            processes.append(_start(_receiver, "tcp", direct[mode], tls))
        processes.append(_start(_relay, host_b, str(dir_b), [
            Route(INBOUND, f"in-{mode}.sock", host_b, published[mode]) for mode in published]))
        processes.append(_start(_relay, host_a, str(dir_a), [
            Route(OUTBOUND, f"next-{mode}.sock", host_b, published[mode]) for mode in published]))
        client_tls = _tls_context(str(tls_dir), server=False)
        rows = []
        try:
            for mode, tls_context in (("plain", None), ("mTLS", client_tls)):
                key = "plain" if tls_context is None else "tls"
                for name, unit in (("bulk throughput", "MB/s"), ("1-byte round trips", "/s")):
                    figures = {}
                    for label, address in (("direct", direct[key]), ("relayed", str(dir_a / f"next-{key}.sock"))):
                        samples = sorted(
                            bulk(address, args.megabytes, tls_context) if unit == "MB/s"
                            else round_trips(address, args.round_trips, tls_context) for _ in range(args.repeat))
                        figures[label] = samples[len(samples) // 2]
                    rows.append((f"{mode} {name}", figures["relayed"], figures["direct"], unit))
        finally:
            for process in processes:
                process.terminate()
    print(f"stage-to-stage bytes through two BM relays vs direct loopback TCP (median of {args.repeat}):")
    for name, relayed_figure, direct_figure, unit in rows:
        print(f"  {name:<25} relayed {relayed_figure:>9.1f} {unit:<5} direct {direct_figure:>9.1f} {unit:<5} "
              f"ratio {relayed_figure / direct_figure:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
