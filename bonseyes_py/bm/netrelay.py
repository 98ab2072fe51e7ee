"""BM's byte relay: the only way in or out of a container started with ``--network none``.

An artefact container has no network of its own: the payload's plain loopback port and BL's local
ports exist only inside the container's network namespace, out of reach of every other process on
the host. BL reaches the SM, BM and the next stage, and the previous stage reaches BL, through Unix
sockets in a per-runtime directory that BM bind-mounts at ``/run/bonseyes-net``:

- *outbound* (``sm.sock``, ``bm.sock``, ``next-N.sock``): BM listens on the socket and, for each
  connection BL opens, connects over TCP to the route's address, from this host's IP (the SM checks
  that a runtime calls from the IP its licence names);
- *inbound* (``in.sock``): BM listens on the stage's published ``IP:PORT`` and hands each connection
  to the socket BL listens on.

BM moves bytes only: BL terminates and originates the mutual TLS with the runtime key, so BM never
sees a stage's plaintext. The bytes move with ``splice(2)`` through a pipe, kernel side, one thread
per direction of a connection (``bench/bench_relay.py`` measures the price against direct TCP); one
selector thread accepts on every route of every runtime. Paths are opened through
``/proc/self/fd`` of the directory, so that a deep BM state directory does not run into the
108-byte limit of a socket address.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bonseyes_py.errors import InputError

log = logging.getLogger(__name__)

SPLICE_BYTES = 1024 * 1024
# Each relayed connection holds two threads and a pipe: a flood of connections to a published port is
# refused beyond this many at once instead of exhausting BM's threads.
MAX_CONNECTIONS = 512
CONNECT_SECONDS = 10.0
BL_LISTEN_WAIT_SECONDS = 15.0
OUTBOUND, INBOUND = "outbound", "inbound"


@dataclass(frozen=True)
class Route:
    """One socket of a runtime: ``name`` inside its directory, and the TCP side (``host:port``)."""

    kind: str  # OUTBOUND: BL connects to the socket, BM dials host:port; INBOUND: BM listens on host:port
    name: str
    host: str
    port: int

    def view(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Route:
        return cls(kind=str(data["kind"]), name=str(data["name"]), host=str(data["host"]), port=int(data["port"]))


def _address(url: str, what: str) -> tuple[str, int]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InputError(f"{what} {url!r} is not https://IP:PORT: {exc}", check="env") from exc
    if parts.scheme != "https" or not parts.hostname or not port:
        raise InputError(f"{what} {url!r} is not https://IP:PORT", check="env")
    return parts.hostname, port


def plan_routes(*, sm_url: str, bind_ip: str, bm_port: int, stage_env: Mapping[str, str]) -> list[Route]:
    """The routes of one runtime: the SM, this BM, the stage's published port, the next stages."""
    routes = [Route(OUTBOUND, "sm.sock", *_address(sm_url, "SM URL")), Route(OUTBOUND, "bm.sock", bind_ip, bm_port)]
    listen = stage_env.get("BONSEYES_LISTEN", "")
    if listen:
        host, _, port = listen.rpartition(":")
        if host != bind_ip or not port.isdigit() or not 0 < int(port) < 65536:
            raise InputError(f"BONSEYES_LISTEN {listen!r} is not {bind_ip}:PORT (this host's IP)", check="env")
        routes.append(Route(INBOUND, "in.sock", host, int(port)))
    downstream = [url.strip() for url in stage_env.get("BONSEYES_NEXT", "").split(",") if url.strip()]
    for index, url in enumerate(downstream):
        routes.append(Route(OUTBOUND, f"next-{index}.sock", *_address(url, "BONSEYES_NEXT entry")))
    return routes


def relay_map(routes: list[Route]) -> dict[str, str]:
    """What BL reads in ``endpoints.json``: the socket for each address it calls, and ``listen``."""
    return {"listen" if route.kind == INBOUND else f"{route.host}:{route.port}": route.name for route in routes}


@dataclass
class _Runtime:
    """The listening sockets and the directory descriptor of one runtime."""

    directory: Path
    dirfd: int
    listeners: list[tuple[socket.socket, Route]] = field(default_factory=list)

    def path(self, name: str) -> str:
        return f"/proc/self/fd/{self.dirfd}/{name}"


def _copy(source: socket.socket, target: socket.socket, done: threading.Event) -> None:
    """One direction, kernel side, until end of stream; the other direction learns of it by a half-close."""
    read_end, write_end = os.pipe()
    try:
        while moved := os.splice(source.fileno(), write_end, SPLICE_BYTES):
            while moved:
                moved -= os.splice(read_end, target.fileno(), moved)
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)
    except OSError:  # reset or closed: end both directions
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
    finally:
        os.close(read_end)
        os.close(write_end)
        done.set()


def _splice(a: socket.socket, b: socket.socket) -> None:
    """Both directions between two connected sockets, then close them."""
    for sock in (a, b):
        sock.settimeout(None)
    finished = threading.Event()
    threading.Thread(target=_copy, args=(b, a, finished), name="bm-netrelay-copy", daemon=True).start()
    _copy(a, b, threading.Event())
    finished.wait()
    a.close()
    b.close()


class NetRelay:
    """Relays the sockets of every runtime of this BM: one selector thread accepts, a thread per connection."""

    def __init__(self, source_ip: str, max_connections: int = MAX_CONNECTIONS) -> None:
        self.source_ip = source_ip
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        self.refused = 0
        self._selector = selectors.DefaultSelector()
        self._wake_read, self._wake_write = socket.socketpair()
        self._selector.register(self._wake_read, selectors.EVENT_READ, None)
        self._runtimes: dict[str, _Runtime] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def open(self, key: str, directory: Path, routes: list[Route]) -> None:
        """Listen on every route of one runtime (its outbound sockets exist before the container starts)."""
        self.close(key)
        runtime = _Runtime(directory, os.open(directory, os.O_RDONLY | os.O_DIRECTORY))
        try:
            for route in routes:
                runtime.listeners.append((self._listen(runtime, route), route))
                log.info("relay %s %s <-> %s:%s", route.kind, route.name, route.host, route.port)
        except BaseException:
            self._close_runtime(runtime)
            raise
        with self._lock:
            self._runtimes[key] = runtime
            for listener, route in runtime.listeners:
                self._selector.register(listener, selectors.EVENT_READ, (runtime, route))
            if self._thread is None:
                self._thread = threading.Thread(target=self._accept_loop, name="bm-netrelay", daemon=True)
                self._thread.start()
        self._wake_write.send(b"\0")

    def close(self, key: str) -> None:
        with self._lock:
            runtime = self._runtimes.pop(key, None)
            if runtime is None:
                return
            for listener, _ in runtime.listeners:
                with contextlib.suppress(KeyError, ValueError):
                    self._selector.unregister(listener)
        self._close_runtime(runtime)

    def close_all(self) -> None:
        for key in list(self._runtimes):
            self.close(key)

    def routes_open(self, key: str) -> int:
        runtime = self._runtimes.get(key)
        return len(runtime.listeners) if runtime is not None else 0

    @staticmethod
    def _listen(runtime: _Runtime, route: Route) -> socket.socket:
        if route.kind not in (OUTBOUND, INBOUND):
            raise ValueError(f"unknown route kind {route.kind!r}")
        family = socket.AF_UNIX if route.kind == OUTBOUND else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            if route.kind == OUTBOUND:
                path = runtime.path(route.name)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)  # a socket file left by a BM that stopped
                listener.bind(path)
                # 0600 root: inside the container only BL (root with CAP_DAC_OVERRIDE) passes the 0000 directory.
                os.chmod(path, 0o600)
            else:
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind((route.host, route.port))
            listener.listen(128)
            listener.setblocking(False)
        except BaseException:
            listener.close()
            raise
        return listener

    @staticmethod
    def _close_runtime(runtime: _Runtime) -> None:
        for listener, _ in runtime.listeners:
            listener.close()
        runtime.listeners.clear()
        with contextlib.suppress(OSError):
            os.close(runtime.dirfd)

    def _accept_loop(self) -> None:
        while True:
            for selected, _ in self._selector.select():
                if selected.data is None:
                    with contextlib.suppress(BlockingIOError):
                        self._wake_read.recv(512)
                    continue
                runtime, route = selected.data
                try:
                    connection, _ = selected.fileobj.accept()  # type: ignore[union-attr]
                except (BlockingIOError, OSError):
                    continue  # already taken, or the route closed meanwhile
                if not self._slots.acquire(blocking=False):
                    self.refused += 1
                    log.warning("relay %s: %d connections already relayed, refusing one more", route.name,
                                self.max_connections)
                    connection.close()
                    continue
                threading.Thread(target=self._relay_one, args=(runtime, route, connection), name="bm-netrelay-conn",
                                 daemon=True).start()

    def _relay_one(self, runtime: _Runtime, route: Route, connection: socket.socket) -> None:
        try:
            connection.setblocking(True)
            (self._outbound if route.kind == OUTBOUND else self._inbound)(runtime, route, connection)
        finally:
            self._slots.release()

    def _outbound(self, _runtime: _Runtime, route: Route, connection: socket.socket) -> None:
        try:
            remote = socket.create_connection((route.host, route.port), timeout=CONNECT_SECONDS,
                                              source_address=(self.source_ip, 0))
        except OSError as exc:
            log.warning("relay %s: cannot reach %s:%s: %s", route.name, route.host, route.port, exc)
            connection.close()
            return
        remote.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _splice(connection, remote)

    def _inbound(self, runtime: _Runtime, route: Route, connection: socket.socket) -> None:
        # BL binds its socket just before its payload starts: a peer that dials early waits for it.
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        deadline = time.monotonic() + BL_LISTEN_WAIT_SECONDS
        while True:
            local = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                local.connect(runtime.path(route.name))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                local.close()
                if time.monotonic() > deadline:
                    log.warning("relay %s: BL is not listening in %s", route.name, runtime.directory)
                    connection.close()
                    return
                time.sleep(0.05)
            except OSError as exc:
                local.close()
                log.warning("relay %s: %s", route.name, exc)
                connection.close()
                return
        _splice(connection, local)
