"""BL's mutual-TLS relay: the stages of a pipeline talk to each other only as licensed runtimes.

The runtime key never reaches the payload. BL holds it and:

- *inbound*: listens on the stage's published address (``BONSEYES_LISTEN``, the host IP and the port
  the SM chose) with the runtime certificate, demands a client certificate that chains to the SM
  root baked into the image with role ``runtime``, and then a host licence from the peer that binds
  that very certificate (``cnf``) and names the same pipeline and user as this runtime's licence.
  Only then are bytes forwarded, as plain TCP, to the payload, which listens on ``127.0.0.1`` at a
  port BL chose (the payload's ``BONSEYES_LISTEN``);
- *outbound*: for each downstream stage in ``BONSEYES_NEXT`` (``https://IP:PORT``, comma separated)
  BL listens on ``127.0.0.1`` and gives the payload ``http://127.0.0.1:PORT`` instead; each local
  connection becomes a mutual-TLS connection to the next stage's BL with the runtime certificate,
  whose server must be a runtime (role, chain) with a host licence for the same pipeline and user,
  at the IP BL dialled.

BM starts the container with ``--network none``: then the published port is BM's (``bm/netrelay.py``),
which hands each connection to BL's Unix socket ``listen`` in ``/run/bonseyes-net``, and BL reaches the
next stage through the socket BM relays to that stage's address. BM moves TLS bytes only; the payload's
plain port is reachable from inside its own container alone.

After the TLS handshake each side sends one frame (4-byte length, JSON ``{"host_licence": ...}``)
and checks the other's; the payload's bytes follow unchanged. Contexts are rebuilt whenever BM
renews the host licence and runtime certificate, and swapped only when key, certificate and licence
agree, so a half-written renewal never breaks a handshake.

Standard library only (asyncio + ssl), one event-loop thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import ssl
import struct
import sys
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from bonseyes_py import safejson
from bonseyes_py.bl import layout, protocol
from bonseyes_py.errors import InputError

MAX_FRAME = 64 * 1024
HANDSHAKE_SECONDS = 15.0
CHUNK = 64 * 1024
RELOAD_SECONDS = 1.0


def log(message: str) -> None:
    print(f"bonseyes-layer: {message}", file=sys.stderr, flush=True)


class RelayRefused(Exception):
    pass


@dataclass
class Listener:
    kind: str  # "inbound" | "outbound"
    sock: socket.socket
    target_host: str
    target_port: int

    @property
    def local(self) -> str:
        address = self.sock.getsockname()
        if isinstance(address, str):  # BM's relay socket
            return address
        return f"{address[0]}:{address[1]}"


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _bind_unix(path: str) -> socket.socket:
    """BL's end of BM's inbound relay (the container has no network): BM hands it the stage's connections."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # left by an earlier BL of this runtime
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    os.chmod(path, 0o600)
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def plan(env: dict[str, str]) -> tuple[list[Listener], dict[str, str]]:
    """Bind BL's sockets (before the payload starts) and return the payload's view of the endpoints."""
    listeners: list[Listener] = []
    overrides: dict[str, str] = {}
    public = env.get("BONSEYES_LISTEN", "")
    if public:
        host, _, port = public.rpartition(":")
        if not host or not port.isdigit():
            raise protocol.ProtocolError("endpoint", f"BONSEYES_LISTEN {public!r} is not IP:PORT")
        local_port = _free_loopback_port()
        relayed = protocol.relay_sockets().get("listen")
        sock = _bind_unix(relayed) if relayed else _bind(host, int(port))
        listeners.append(Listener("inbound", sock, "127.0.0.1", local_port))
        overrides["BONSEYES_LISTEN"] = f"127.0.0.1:{local_port}"
        overrides["BONSEYES_PUBLIC_LISTEN"] = public
    downstream = [item.strip() for item in env.get("BONSEYES_NEXT", "").split(",") if item.strip()]
    local_urls = []
    for url in downstream:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname or not parts.port:
            raise protocol.ProtocolError("endpoint", f"BONSEYES_NEXT entry {url!r} is not https://IP:PORT")
        listener = Listener("outbound", _bind("127.0.0.1", 0), parts.hostname, parts.port)
        listeners.append(listener)
        local_urls.append(f"http://{listener.local}")
    if downstream:
        overrides["BONSEYES_NEXT"] = ",".join(local_urls)
        overrides["BONSEYES_PUBLIC_NEXT"] = ",".join(downstream)
    return listeners, overrides


@dataclass(frozen=True)
class Snapshot:
    """One consistent set: contexts with one runtime certificate and the host licence that binds it."""

    server: ssl.SSLContext
    client: ssl.SSLContext
    host_licence: str

    def frame(self) -> bytes:
        body = json.dumps({"host_licence": self.host_licence}).encode()
        return struct.pack("!I", len(body)) + body


class Credentials:
    """The runtime certificate, key and host licence BM mounted, as TLS contexts; reloaded on renewal.

    A connection takes one ``current`` snapshot and keeps it, so the licence it sends always binds
    the certificate its handshake used, even when BM renews both in the middle.
    """

    def __init__(self, host_claims: dict[str, Any], verified_token: str = "") -> None:
        terms = host_claims.get("terms") or {}
        self._verified = (verified_token, str((host_claims.get("cnf") or {}).get("x5t#S256", "")))
        self.pipeline_id = str(terms.get("pipeline_id", ""))
        self.user_id = str(host_claims["runtime"]["user_id"])
        self.host_ip = str(host_claims["runtime"]["host_ip"])
        self.runtime_name = ""
        self._stamp: tuple[int, ...] = ()
        self.current: Snapshot
        if not self.reload():
            raise protocol.ProtocolError("runtime-material", "runtime certificate, key and host licence disagree")

    @staticmethod
    def _current_stamp() -> tuple[int, ...]:
        stamp: list[int] = []
        for path in (protocol.RUNTIME_CHAIN, protocol.RUNTIME_KEY, layout.HOST_LICENCE):
            info = os.stat(path)
            stamp += [info.st_ino, info.st_mtime_ns, info.st_size]
        return tuple(stamp)

    def reload(self) -> bool:
        """Rebuild both contexts if BM replaced the files; keep the old ones unless all three agree."""
        from bonseyes_py.errors import BonseyesError
        from bonseyes_py.licences import Expectations, LicenceKind, certificate_thumbprint, verify_licence
        from bonseyes_py.pki.certs import load_certificate_chain
        from bonseyes_py.pki.roles import identity_of

        try:
            stamp = self._current_stamp()
            if stamp == self._stamp:
                return True
            with open(protocol.RUNTIME_CHAIN, "rb") as handle:
                chain = load_certificate_chain(handle.read())
            token = protocol.read_host_licence()
            if token == self._verified[0]:  # the licence step 5 verified: only its binding to this certificate
                if certificate_thumbprint(chain[0]) != self._verified[1]:
                    raise protocol.ProtocolError("runtime-key", "runtime certificate is not the licence's")
            else:
                verify_licence(token, protocol.trust(), kind=LicenceKind.HOST,
                               expect=Expectations(runtime_certificate=chain[0]))
            server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            server.minimum_version = ssl.TLSVersion.TLSv1_2
            server.load_verify_locations(cadata=protocol.ca_pem())
            server.verify_mode = ssl.CERT_REQUIRED
            # Key and certificate are loaded together: a pair that does not match raises here.
            server.load_cert_chain(certfile=protocol.RUNTIME_CHAIN, keyfile=protocol.RUNTIME_KEY)
            client = protocol.client_context()
            if self._current_stamp() != stamp:
                return False  # BM is replacing the files right now: try again at the next tick
        except (OSError, ValueError, ssl.SSLError, BonseyesError, protocol.ProtocolError) as exc:
            log(f"runtime credentials not (re)loaded yet: {exc}")
            return False
        self.current, self._stamp = Snapshot(server, client, token), stamp
        self.runtime_name = identity_of(chain[0]).name
        return True

    def check_peer(self, der: bytes | None, frame: dict[str, Any], expected_ip: str | None) -> tuple[str, str]:
        """The peer is a licensed runtime of this pipeline and user; returns its runtime name and host IP."""
        from bonseyes_py.errors import BonseyesError
        from bonseyes_py.identity.ids import RuntimeID
        from bonseyes_py.licences import Expectations, LicenceKind, verify_licence
        from bonseyes_py.pki.roles import Role

        try:
            identity, certificate = protocol.verify_peer(der, Role.RUNTIME, "peer")
        except protocol.ProtocolError as exc:
            raise RelayRefused(exc.message) from exc
        try:
            claims = verify_licence(str(frame.get("host_licence", "")), protocol.trust(), kind=LicenceKind.HOST,
                                    expect=Expectations(runtime_certificate=certificate, user_id=self.user_id))
            runtime = RuntimeID.from_claim(claims["runtime"])
        except (BonseyesError, KeyError) as exc:
            raise RelayRefused(f"{identity.uri} has no host licence for its certificate and this user: {exc}") from exc
        peer_pipeline = str((claims.get("terms") or {}).get("pipeline_id", ""))
        if peer_pipeline != self.pipeline_id:
            raise RelayRefused(f"{identity.uri} belongs to pipeline {peer_pipeline!r}, not {self.pipeline_id!r}")
        if runtime.name != identity.name:
            raise RelayRefused(f"{identity.uri} presented the licence of {runtime.name}")
        if expected_ip is not None and runtime.host_ip != expected_ip:
            raise RelayRefused(f"{identity.uri} runs on {runtime.host_ip}, not on {expected_ip}")
        return identity.name, runtime.host_ip


async def _read_frame(reader: asyncio.StreamReader) -> dict[str, Any]:
    size = struct.unpack("!I", await reader.readexactly(4))[0]
    if size > MAX_FRAME:
        raise RelayRefused(f"licence frame of {size} bytes exceeds {MAX_FRAME}")
    data = await reader.readexactly(size)
    try:
        value = safejson.loads(data, what="licence frame", max_bytes=MAX_FRAME)
    except InputError as exc:
        raise RelayRefused(exc.args[0]) from exc
    if not isinstance(value, dict):
        raise RelayRefused("licence frame is not a JSON object")
    return value


async def _connect_local(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """The payload's loopback port; a payload still starting gets a moment, so the peer need not redial."""
    while True:
        try:
            return await asyncio.open_connection(host, port)
        except ConnectionRefusedError:
            await asyncio.sleep(0.1)  # bounded by the caller's HANDSHAKE_SECONDS


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
        pass
    finally:
        try:
            if writer.can_write_eof():
                writer.write_eof()
            else:
                writer.close()
        except (OSError, RuntimeError):
            pass


async def _splice(a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                  b: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
    try:
        await asyncio.gather(_pump(a[0], b[1]), _pump(b[0], a[1]))
    finally:
        for writer in (a[1], b[1]):
            writer.close()


class Relay:
    def __init__(self, credentials: Credentials, listeners: list[Listener]) -> None:
        self.credentials = credentials
        self.listeners = listeners
        self.loop = asyncio.new_event_loop()
        self.accepted = 0
        self.refused = 0

    def start(self) -> None:
        ready = threading.Event()
        thread = threading.Thread(target=self._run, args=(ready,), name="bl-relay", daemon=True)
        thread.start()
        ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.set_exception_handler(lambda _loop, context: log(f"relay: {context.get('message')}: "
                                                                    f"{context.get('exception')}"))

        async def main() -> None:
            for listener in self.listeners:
                handler = self._inbound if listener.kind == "inbound" else self._outbound

                def bound(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener: Listener = listener,
                          handler: Any = handler) -> Any:
                    return handler(listener, reader, writer)

                await asyncio.start_server(bound, sock=listener.sock)
                log(f"relay {listener.kind} {listener.local} -> {listener.target_host}:{listener.target_port}")
            self.loop.create_task(self._reload_loop())
            ready.set()

        self.loop.run_until_complete(main())
        self.loop.run_forever()

    async def _reload_loop(self) -> None:
        while True:
            await asyncio.sleep(RELOAD_SECONDS)
            self.credentials.reload()

    async def _inbound(self, listener: Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A stage's published port: TLS with the runtime certificate, a runtime peer of this pipeline only."""
        peer = writer.get_extra_info("peername")
        peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "BM's relay"
        snapshot = self.credentials.current
        try:
            async with asyncio.timeout(HANDSHAKE_SECONDS):
                await writer.start_tls(snapshot.server)
                der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
                frame = await _read_frame(reader)
                name, peer_host = self.credentials.check_peer(der, frame, expected_ip=None)
                writer.write(snapshot.frame())
                await writer.drain()
                local = await _connect_local(listener.target_host, listener.target_port)
        except (RelayRefused, ssl.SSLError, OSError, ValueError, TimeoutError, asyncio.IncompleteReadError,
                protocol.ProtocolError) as exc:
            self.refused += 1
            log(f"refused {peer} on {listener.local}: {type(exc).__name__}: {exc}")
            writer.close()
            return
        self.accepted += 1
        # Through BM's relay the socket names no source: the host is the one the peer's licence names.
        log(f"accepted runtime {name} from {peer_host} over {peer} on {listener.local}")
        await _splice((reader, writer), local)

    async def _outbound(self, listener: Listener, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
        """The payload's local port for one downstream stage: mTLS to that stage's BL as this runtime."""
        target = f"{listener.target_host}:{listener.target_port}"
        snapshot = self.credentials.current
        try:
            async with asyncio.timeout(HANDSHAKE_SECONDS):
                relayed = protocol.relay_socket(listener.target_host, listener.target_port)
                if relayed:  # BM dials the next stage from this host's IP and relays the TLS bytes
                    remote_reader, remote_writer = await asyncio.open_unix_connection(
                        relayed, ssl=snapshot.client, server_hostname=listener.target_host)
                else:  # from the runtime's own host IP (the one its licence names), as BM does with the SM
                    remote_reader, remote_writer = await asyncio.open_connection(
                        listener.target_host, listener.target_port, ssl=snapshot.client,
                        server_hostname=listener.target_host, local_addr=(self.credentials.host_ip, 0))
                der = remote_writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
                remote_writer.write(snapshot.frame())
                await remote_writer.drain()
                frame = await _read_frame(remote_reader)
                name, _ = self.credentials.check_peer(der, frame, expected_ip=listener.target_host)
        except (RelayRefused, ssl.SSLError, OSError, ValueError, TimeoutError, asyncio.IncompleteReadError) as exc:
            log(f"connection to {target} refused: {type(exc).__name__}: {exc}")
            writer.close()
            return
        log(f"connected to runtime {name} at {target}")
        await _splice((reader, writer), (remote_reader, remote_writer))

