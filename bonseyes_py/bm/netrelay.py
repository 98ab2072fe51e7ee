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
sees a stage's plaintext. Paths are opened through ``/proc/self/fd`` of the directory, so that a
deep BM state directory does not run into the 108-byte limit of a socket address.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
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


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()
            else:
                writer.close()


async def _splice(a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                  b: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
    try:
        await asyncio.gather(_pump(a[0], b[1]), _pump(b[0], a[1]))
    finally:
        for writer in (a[1], b[1]):
            writer.close()


class _Runtime:
    """The open servers and the directory descriptor of one runtime."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.dirfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        self.servers: list[asyncio.AbstractServer] = []

    def path(self, name: str) -> str:
        return f"/proc/self/fd/{self.dirfd}/{name}"


class NetRelay:
    """One event-loop thread relays the sockets of every runtime of this BM."""

    def __init__(self, source_ip: str) -> None:
        self.source_ip = source_ip
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runtimes: dict[str, _Runtime] = {}
        self._lock = threading.Lock()

    def _run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="bm-netrelay", daemon=True).start()
                self._loop = loop
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    def open(self, key: str, directory: Path, routes: list[Route]) -> None:
        """Listen on every route of one runtime (its outbound sockets exist before the container starts)."""
        self.close(key)
        runtime = _Runtime(directory)
        try:
            self._run(self._open(runtime, routes))
        except BaseException:
            self._run(self._close(runtime))
            raise
        self._runtimes[key] = runtime

    def close(self, key: str) -> None:
        runtime = self._runtimes.pop(key, None)
        if runtime is not None:
            self._run(self._close(runtime))

    def close_all(self) -> None:
        for key in list(self._runtimes):
            self.close(key)

    def routes_open(self, key: str) -> int:
        runtime = self._runtimes.get(key)
        return len(runtime.servers) if runtime is not None else 0

    async def _open(self, runtime: _Runtime, routes: list[Route]) -> None:
        for route in routes:
            if route.kind == OUTBOUND:
                path = runtime.path(route.name)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)  # a socket file left by a BM that stopped
                server = await asyncio.start_unix_server(self._handler(self._outbound, runtime, route), path=path)
                # 0600 root: inside the container only BL (root with CAP_DAC_OVERRIDE) passes the 0000 directory.
                os.chmod(path, 0o600)
            elif route.kind == INBOUND:
                server = await asyncio.start_server(self._handler(self._inbound, runtime, route), route.host,
                                                    route.port, reuse_address=True)
            else:
                raise ValueError(f"unknown route kind {route.kind!r}")
            runtime.servers.append(server)
            log.info("relay %s %s <-> %s:%s", route.kind, route.name, route.host, route.port)

    @staticmethod
    async def _close(runtime: _Runtime) -> None:
        for server in runtime.servers:
            server.close()
        for server in runtime.servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        runtime.servers.clear()
        with contextlib.suppress(OSError):
            os.close(runtime.dirfd)

    @staticmethod
    def _handler(method: Callable[..., Coroutine[Any, Any, None]], runtime: _Runtime,
                 route: Route) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await method(runtime, route, reader, writer)
        return handle

    async def _outbound(self, _runtime: _Runtime, route: Route, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
        try:
            remote = await asyncio.wait_for(asyncio.open_connection(
                route.host, route.port, local_addr=(self.source_ip, 0)), CONNECT_SECONDS)
        except (OSError, TimeoutError) as exc:
            log.warning("relay %s: cannot reach %s:%s: %s", route.name, route.host, route.port, exc)
            writer.close()
            return
        await _splice((reader, writer), remote)

    async def _inbound(self, runtime: _Runtime, route: Route, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        # BL binds its socket just before its payload starts: a peer that dials early waits for it.
        deadline = asyncio.get_running_loop().time() + BL_LISTEN_WAIT_SECONDS
        while True:
            try:
                local = await asyncio.open_unix_connection(runtime.path(route.name))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if asyncio.get_running_loop().time() > deadline:
                    log.warning("relay %s: BL is not listening on %s", route.name, runtime.directory)
                    writer.close()
                    return
                await asyncio.sleep(0.05)
            except OSError as exc:
                log.warning("relay %s: %s", route.name, exc)
                writer.close()
                return
        await _splice((reader, writer), local)

