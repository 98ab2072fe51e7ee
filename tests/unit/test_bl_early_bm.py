"""BL's early mTLS connection to BM: handshake during start-up, nothing sent before the server is verified.

Real TLS on loopback: a CA, a runtime certificate for BL, and an HTTPS server with a ``host``
certificate standing in for BM. The early thread opens the connection while BL would still be
importing; ``_exchange`` then checks role and host ID on that very connection before the first byte.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bonseyes_py.bl import layout, protocol
from bonseyes_py.bm.netrelay import OUTBOUND, NetRelay, Route
from bonseyes_py.pki.ca import CertificateAuthority
from bonseyes_py.pki.certs import certificate_pem
from bonseyes_py.pki.keys import generate_private_key, write_private_key
from bonseyes_py.pki.roles import Role

ARTEFACT = "relay"


class FakeBM(ThreadingHTTPServer):
    """HTTPS with client certificates required; records handshakes and requests."""

    daemon_threads = True

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self.handshakes = 0
        self.handshaken = threading.Event()  # the server thread may count after the client finished
        self.requests: list[tuple[str, Any]] = []

    def get_request(self) -> Any:
        request = super().get_request()
        self.handshakes += 1
        self.handshaken.set()
        return request


class Handler(BaseHTTPRequestHandler):
    server: FakeBM

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append((self.path, json.loads(body)))
        answer = json.dumps({"status": "licensed"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *_args: Any) -> None:
        pass


def _write_leaf(ca: CertificateAuthority, directory: Path, role: Role, name: str) -> tuple[Path, Path]:
    key = generate_private_key()
    certificate = ca.issue(key.public_key(), ca.identity(role, name), ip_addresses=("127.0.0.1",))
    chain = directory / f"{role.value}-{name}.pem"
    chain.write_bytes(certificate_pem(certificate) + certificate_pem(ca.intermediate))
    return chain, write_private_key(directory / f"{role.value}-{name}.key", key)


def _start_bm(ca: CertificateAuthority, directory: Path, host_id: str) -> FakeBM:
    chain, key = _write_leaf(ca, directory, Role.HOST, host_id)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain, key)
    context.load_verify_locations(cadata=certificate_pem(ca.root).decode())
    context.verify_mode = ssl.CERT_REQUIRED
    server = FakeBM(context)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[CertificateAuthority, Path]]:
    """What BM mounts at /run/bonseyes and the MP bakes into the image, in ``tmp_path``."""
    ca = CertificateAuthority.init(tmp_path / "ca")
    monkeypatch.setattr(layout, "SM_ROOT", str(ca.paths.root_cert))
    monkeypatch.setattr(layout, "SM_INTERMEDIATE", str(ca.paths.intermediate_cert))
    chain, key = _write_leaf(ca, tmp_path, Role.RUNTIME, "runtime-1")
    monkeypatch.setattr(protocol, "RUNTIME_CHAIN", str(chain))
    monkeypatch.setattr(protocol, "RUNTIME_KEY", str(key))
    # Only decoded (never trusted) by the early thread: the precheck that BM's URL is at the host IP.
    claims = base64.urlsafe_b64encode(json.dumps({"runtime": {"host_ip": "127.0.0.1"}}).encode()).decode()
    licence = tmp_path / "host-licence.jwt"
    licence.write_text(f"e30.{claims.rstrip('=')}.c2ln\n")
    monkeypatch.setattr(layout, "HOST_LICENCE", str(licence))
    protocol.ca_pem.cache_clear()
    protocol.trust.cache_clear()
    protocol.relay_sockets.cache_clear()
    yield ca, tmp_path
    protocol.ca_pem.cache_clear()
    protocol.trust.cache_clear()
    protocol.relay_sockets.cache_clear()


def _endpoints(directory: Path, monkeypatch: pytest.MonkeyPatch, bm_url: str) -> None:
    with socket.socket() as closed:  # an SM that refuses: the early SM call fails at once
        closed.bind(("127.0.0.1", 0))
        sm_port = closed.getsockname()[1]
    path = directory / "endpoints.json"
    path.write_text(json.dumps({"bm_url": bm_url, "sm_url": f"https://127.0.0.1:{sm_port}"}))
    monkeypatch.setattr(protocol, "ENDPOINTS", str(path))


@contextlib.contextmanager
def _serving_bm(runtime: tuple[CertificateAuthority, Path], monkeypatch: pytest.MonkeyPatch,
                host: str) -> Iterator[tuple[Any, str]]:
    """A BM for ``host`` on loopback, named in the runtime's endpoints; shut down afterwards."""
    ca, directory = runtime
    bm = _start_bm(ca, directory, host)
    try:
        bm_url = f"https://127.0.0.1:{bm.server_address[1]}"
        _endpoints(directory, monkeypatch, bm_url)
        yield bm, bm_url
    finally:
        bm.shutdown()
        bm.server_close()


def test_early_connection_is_opened_before_and_used_only_after_the_peer_check(
        runtime: tuple[CertificateAuthority, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    with _serving_bm(runtime, monkeypatch, "host-a") as (bm, bm_url):
        early = protocol.EarlySMRequest(ARTEFACT)
        connection = early.bm_connection_for(bm_url)
        assert early.answer_for("any") is None  # the SM refused the connection: authorize() calls again
        assert connection is not None, early.bm_error
        assert bm.handshaken.wait(10)
        assert (bm.handshakes, bm.requests) == (1, [])  # handshake done early, nothing sent
        assert early.bm_connection_for(bm_url) is None  # handed out once
        answer = protocol._exchange(connection, bm_url, "/v1/runtimes/licence", {"licence": "L"},
                                    role=Role.HOST, name="host-a", what="BM")
        connection.close()
        assert answer == {"status": "licensed"}
        assert bm.requests == [("/v1/runtimes/licence", {"licence": "L"})]
        assert bm.handshakes == 1  # the request went over the early connection


def test_early_connection_to_another_host_or_role_sends_nothing(
        runtime: tuple[CertificateAuthority, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    with _serving_bm(runtime, monkeypatch, "host-b") as (bm, bm_url):
        early = protocol.EarlySMRequest(ARTEFACT)
        connection = early.bm_connection_for(bm_url)
        assert connection is not None, early.bm_error
        with pytest.raises(protocol.ProtocolError) as refused:  # the licence names host-a
            protocol._exchange(connection, bm_url, "/v1/runtimes/licence", {"licence": "L"}, role=Role.HOST,
                               name="host-a", what="BM")
        assert refused.value.check == "peer"
        with pytest.raises(protocol.ProtocolError) as refused:  # a host certificate is no SM's
            protocol._exchange(connection, bm_url, "/v1/licences/artefact", {"licence": "L"},
                               role=Role.SECURITY_MANAGER, name=None, what="SM")
        assert refused.value.check == "peer"
        connection.close()
        assert bm.requests == []


def test_early_connection_is_not_handed_out_for_another_url(
        runtime: tuple[CertificateAuthority, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    with _serving_bm(runtime, monkeypatch, "host-a") as (bm, bm_url):
        early = protocol.EarlySMRequest(ARTEFACT)
        assert early.bm_connection_for(f"https://127.0.0.1:{bm.server_address[1] + 1}") is None
        assert early.bm_connection_for(bm_url) is None  # dropped, not kept for a later caller
        assert bm.requests == []


def test_without_a_network_bl_reaches_bm_through_the_relay_socket(
        runtime: tuple[CertificateAuthority, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """``--network none``: the early connection goes over BM's relay socket; TLS and the peer check end to end."""
    _, directory = runtime
    with _serving_bm(runtime, monkeypatch, "host-a") as (bm, bm_url):
        port = bm.server_address[1]
        net = directory / "net"
        net.mkdir()
        monkeypatch.setattr(layout, "NET_DIR", str(net))
        endpoints = json.loads(Path(protocol.ENDPOINTS).read_text())
        endpoints["relay"] = {f"127.0.0.1:{port}": "bm.sock"}
        Path(protocol.ENDPOINTS).write_text(json.dumps(endpoints))
        relay = NetRelay("127.0.0.1")
        relay.open("rt", net, [Route(OUTBOUND, "bm.sock", "127.0.0.1", port)])
        try:
            early = protocol.EarlySMRequest(ARTEFACT)
            connection = early.bm_connection_for(bm_url)
            assert isinstance(connection, protocol.RelayedHTTPSConnection), early.bm_error
            assert connection.sock.family == socket.AF_UNIX  # type: ignore[union-attr]
            answer = protocol._exchange(connection, bm_url, "/v1/runtimes/licence", {"licence": "L"},
                                        role=Role.HOST, name="host-a", what="BM")
            connection.close()
        finally:
            relay.close_all()
        assert answer == {"status": "licensed"}
        assert bm.requests == [("/v1/runtimes/licence", {"licence": "L"})]
        # With the relay gone, BL has no way to BM: no silent fallback to the host's network.
        with pytest.raises(OSError):
            protocol.https_connection("127.0.0.1", port, protocol.client_context()).connect()
