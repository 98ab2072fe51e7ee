"""What BM's byte relay costs a pipeline's stage-to-stage traffic, against direct loopback TCP in the same run.

    .venv/bin/python bench/bench_relay.py [--megabytes 256] [--round-trips 2000]

Artefact containers run with ``--network none``: the bytes of stage 1's BL reach stage 2's BL through
two relays, as on two hosts (stage 1's BM: Unix socket ``next-0.sock`` -> TCP; stage 2's BM: the
published TCP port -> Unix socket ``in.sock``). Each relay runs in its own process, as each BM does,
and so do the sender and the receiver. The baseline is what host networking gave: the sender's TCP
connection straight to the receiver. TLS is left out of both (BL's cost, the same with or without
the relay), so the ratio shows the relay's own price at its worst.

Rows: bulk throughput (MB/s, one connection, 64 KiB writes) and 1-byte request/answer round trips per
second on one connection.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bonseyes_py.bm.netrelay import INBOUND, OUTBOUND, NetRelay, Route

CHUNK = 64 * 1024


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _serve(listener: socket.socket) -> None:
    """The receiving stage: bulk connections are drained and answered with the byte count, others echo."""
    while True:
        connection, _ = listener.accept()
        with connection:
            mode = connection.recv(1)
            if mode == b"B":
                total = 0
                while chunk := connection.recv(CHUNK):
                    total += len(chunk)
                connection.sendall(total.to_bytes(8, "big"))
            else:
                while data := connection.recv(1):
                    connection.sendall(data)


def _receiver(kind: str, address: str | tuple[str, int], ready: multiprocessing.synchronize.Event) -> None:
    family = socket.AF_UNIX if kind == "unix" else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    if family == socket.AF_INET:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(address)
    listener.listen(8)
    ready.set()
    _serve(listener)


def _relay(source_ip: str, directory: str, route: Route, ready: multiprocessing.synchronize.Event) -> None:
    relay = NetRelay(source_ip)
    relay.open("bench", Path(directory), [route])
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


def _connect(address: str | tuple[str, int]) -> socket.socket:
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.connect(address)
    if family == socket.AF_INET:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def bulk(address: str | tuple[str, int], megabytes: int) -> float:
    payload = os.urandom(CHUNK)
    total = megabytes * 1024 * 1024
    with _connect(address) as sock:
        start = time.perf_counter()
        sock.sendall(b"B")
        sent = 0
        while sent < total:
            sock.sendall(payload)
            sent += len(payload)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while len(answer) < 8 and (chunk := sock.recv(8)):
            answer += chunk
        elapsed = time.perf_counter() - start
    if int.from_bytes(answer, "big") != sent:
        raise SystemExit(f"the receiver got {int.from_bytes(answer, 'big')} of {sent} bytes")
    return sent / elapsed / 1e6


def round_trips(address: str | tuple[str, int], count: int) -> float:
    with _connect(address) as sock:
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
        dir_a, dir_b = Path(work, "a"), Path(work, "b")
        dir_a.mkdir()
        dir_b.mkdir()
        published = _free_port(host_b)
        direct = (host_b, _free_port(host_b))
        processes = [
            _start(_receiver, "unix", str(dir_b / "in.sock")),  # stage 2's BL behind its BM's relay
            _start(_receiver, "tcp", direct),  # stage 2's BL on the host's network
            _start(_relay, host_b, str(dir_b), Route(INBOUND, "in.sock", host_b, published)),
            _start(_relay, host_a, str(dir_a), Route(OUTBOUND, "next-0.sock", host_b, published)),
        ]
        relayed = str(dir_a / "next-0.sock")
        try:
            rows = []
            for name, run, unit in (("bulk throughput", lambda a: bulk(a, args.megabytes), "MB/s"),
                                    ("1-byte round trips", lambda a: round_trips(a, args.round_trips), "/s")):
                figures = {}
                for label, address in (("direct", direct), ("relayed", relayed)):
                    samples = sorted(run(address) for _ in range(args.repeat))
                    figures[label] = samples[len(samples) // 2]
                rows.append((name, figures["relayed"], figures["direct"], unit))
        finally:
            for process in processes:
                process.terminate()
    print(f"stage-to-stage bytes through two BM relays vs direct loopback TCP (median of {args.repeat}):")
    for name, relayed_figure, direct_figure, unit in rows:
        print(f"  {name:<20} relayed {relayed_figure:>10.1f} {unit:<5} direct {direct_figure:>10.1f} {unit:<5} "
              f"ratio {relayed_figure / direct_figure:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
