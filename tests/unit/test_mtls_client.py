"""``MTLSClient`` against a real HTTPS server on loopback that requires client certificates.

The server is a small ``ThreadingHTTPServer`` whose accepted sockets are wrapped in a server context
from ``bonseyes_py.web.tls`` (client certificates required, chained to the test CA). It counts the
TCP connections it accepted and the requests it received per path, so the tests can see connection
reuse, retries and how much of a large answer was actually sent.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bonseyes_py.bm.config import BMConfig
from bonseyes_py.bm.sm_client import SMClient, SMRefused, SMUnavailable
from bonseyes_py.cli.pipeline_commands import PipelineError, SMSession
from bonseyes_py.errors import InputError
from bonseyes_py.pki.ca import CertificateAuthority
from bonseyes_py.pki.certs import chain_pem
from bonseyes_py.pki.keys import generate_private_key, write_private_key
from bonseyes_py.pki.roles import Role
from bonseyes_py.sm.bm_client import BonseyesModuleEndpoint, BonseyesModuleError, HttpsBonseyesModuleClient
from bonseyes_py.web.client import (
    BadResponse,
    ClientError,
    MTLSClient,
    ResponseTooLarge,
    ServerRefused,
    TLSFailure,
    Unreachable,
    iter_lines,
)

BIG_ANSWER_BYTES = 256 * 1024 * 1024
BM_HOST_ID = "h-0123456789abcdef0123456789abcdef"


class CountingServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.context = context
        self.connections = 0
        self.requests: Counter[tuple[str, str]] = Counter()
        self.big_bytes_sent = 0
        self.first_event_seen = threading.Event()
        self.lock = threading.Lock()

    def get_request(self) -> tuple[socket.socket, Any]:
        raw, address = super().get_request()
        with self.lock:
            self.connections += 1
        return raw, address

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The handshake runs in the request's thread, so a failing client cannot stall the accept loop.
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # headers and body go in two writes
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        super().finish_request(tls, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that go away (the size cap, timeouts) are expected here; stay quiet."""


class Handler(BaseHTTPRequestHandler):
    server: CountingServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _count(self) -> int:
        with self.server.lock:
            self.server.requests[(self.command, self.path)] += 1
            return self.server.requests[(self.command, self.path)]

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self) -> None:
        self._route()

    def do_POST(self) -> None:
        self._route()

    def do_HEAD(self) -> None:
        """The size a GET of /declared-big would get, and no body (a registry's HEAD of a layer blob)."""
        self._count()
        self.send_response(200)
        self.send_header("Content-Length", str(BIG_ANSWER_BYTES))
        self.end_headers()

    def _route(self) -> None:
        seen = self._count()
        sent = self._body()
        if self.path.startswith("/echo"):
            self._send(200, json.dumps({"path": self.path, "body": json.loads(sent or b"null")}).encode())
        elif self.path == "/v1/images/fetch":
            digests = json.loads(sent)["digests"]
            self._send(200, json.dumps({"digests": {d: d for d in digests}}).encode())
        elif self.path == "/refuse":
            self._send(403, json.dumps({"error": "role", "message": "caller is not an admin"}).encode())
        elif self.path == "/html":
            self._send(200, b"<html>a proxy's login page</html>", "text/html")
        elif self.path == "/declared-big":
            self.send_response(200)
            self.send_header("Content-Length", str(BIG_ANSWER_BYTES))
            self.end_headers()
            self.wfile.write(b" " * 1024)
        elif self.path == "/big":
            # No Content-Length: the client can only find out by reading.
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            chunk = b" " * (64 * 1024)
            try:
                while self.server.big_bytes_sent < BIG_ANSWER_BYTES:
                    self.wfile.write(chunk)
                    self.server.big_bytes_sent += len(chunk)
            except OSError:
                pass
        elif self.path == "/drop-first" and seen == 1:
            # Read the request, then drop the connection without a word: what a restarting server does.
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif self.path == "/drop-first":
            self._send(200, b'{"second": true}')
        elif self.path == "/events":
            # Chunked, like gunicorn's streamed answers: the second event only after the client saw the first.
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for line in (b'{"event": "progress"}\n', b'{"event": "result"}\n'):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.server.first_event_seen.wait(5)
            self.wfile.write(b"0\r\n\r\n")
        elif self.path == "/slow":
            time.sleep(1.5)
            self._send(200, b"{}")
        else:
            self._send(404, b'{"error": "not-found", "message": "no such path"}')


def _leaf(ca: CertificateAuthority, directory: Path, role: Role, name: str, *, passphrase: bytes | None = None,
          ip: str | None = None) -> tuple[Path, Path]:
    key = generate_private_key()
    certificate = ca.issue(key.public_key(), ca.identity(role, name), dns_names=("localhost", BM_HOST_ID) if ip else (),
                           ip_addresses=(ip,) if ip else ())
    chain = directory / f"{name}.pem"
    chain.write_bytes(chain_pem([certificate, ca.intermediate]))
    return chain, write_private_key(directory / f"{name}.key", key, passphrase)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("mtls-client")
    ca = CertificateAuthority.init(directory / "ca")
    foreign = CertificateAuthority.init(directory / "foreign")
    server_cert, server_key = _leaf(ca, directory, Role.SECURITY_MANAGER, "sm", ip="127.0.0.1")
    client_cert, client_key = _leaf(ca, directory, Role.USER, "alice")
    locked_cert, locked_key = _leaf(ca, directory, Role.USER, "bob", passphrase=b"open sesame")
    return {"ca": ca.paths.root_cert, "foreign_ca": foreign.paths.root_cert, "server_cert": server_cert,
            "server_key": server_key, "client_cert": client_cert, "client_key": client_key,
            "locked_cert": locked_cert, "locked_key": locked_key}


@pytest.fixture
def server(pki: dict[str, Path]) -> Iterator[CountingServer]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki["server_cert"], pki["server_key"])
    context.load_verify_locations(cafile=str(pki["ca"]))
    context.verify_mode = ssl.CERT_REQUIRED
    httpd = CountingServer(context)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def client_for(pki: dict[str, Path], server: CountingServer) -> Iterator[Callable[..., MTLSClient]]:
    made: list[MTLSClient] = []

    def make(**settings: Any) -> MTLSClient:
        options: dict[str, Any] = {"ca_file": pki["ca"], "cert_file": pki["client_cert"],
                                   "key_file": pki["client_key"]}
        options.update(settings)
        client = MTLSClient(f"https://127.0.0.1:{server.server_address[1]}", **options)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def test_calls_reuse_one_connection(client_for: Callable[..., MTLSClient], server: CountingServer) -> None:
    client = client_for()
    for number in range(20):
        assert client.request("POST", "/echo", json={"n": number}, params={"q": "a b"}) == {
            "path": "/echo?q=a+b", "body": {"n": number}}
    assert server.connections == 1


def test_connections_of_concurrent_callers_are_pooled(client_for: Callable[..., MTLSClient],
                                                      server: CountingServer) -> None:
    client = client_for()
    threads = [threading.Thread(target=lambda: [client.request("GET", "/echo") for _ in range(10)])
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert server.requests[("GET", "/echo")] == 40
    assert server.connections <= 4


def test_an_answer_over_the_cap_is_refused_without_reading_it_all(client_for: Callable[..., MTLSClient],
                                                                 server: CountingServer) -> None:
    client = client_for(max_response_bytes=1024 * 1024)
    with pytest.raises(ResponseTooLarge, match="1048576-byte limit"):
        client.request("GET", "/big")
    time.sleep(0.2)  # let the server's writer meet the closed connection
    # Socket buffers hold a few MB; reading it all would have taken the full 256 MB.
    assert server.big_bytes_sent < 64 * 1024 * 1024
    with pytest.raises(ResponseTooLarge, match=f"{BIG_ANSWER_BYTES} bytes"):
        client.raw("GET", "/declared-big")
    # The client is still usable: the cut-off connection was not put back half-read.
    assert client.request("GET", "/echo")["path"] == "/echo"


def test_a_head_of_something_over_the_cap_is_no_answer_over_the_cap(client_for: Callable[..., MTLSClient]) -> None:
    """HEAD's Content-Length is what a GET would get; the answer itself has no body to cap."""
    client = client_for(max_response_bytes=1024)
    answer = client.raw("HEAD", "/declared-big")
    assert (answer.status, answer.body) == (200, b"")
    assert answer.headers["Content-Length"] == str(BIG_ANSWER_BYTES)
    assert client.request("GET", "/echo")["path"] == "/echo"


def test_a_non_json_answer_is_a_bad_response(client_for: Callable[..., MTLSClient]) -> None:
    client = client_for()
    with pytest.raises(BadResponse, match="not JSON") as caught:
        client.request("GET", "/html")
    assert "/html" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert client.raw("GET", "/html").body.startswith(b"<html>")


def test_a_refusal_carries_the_servers_error(client_for: Callable[..., MTLSClient]) -> None:
    client = client_for()
    with pytest.raises(ServerRefused) as caught:
        client.request("GET", "/refuse")
    assert caught.value.status == 403
    assert caught.value.error == "role"
    assert caught.value.message == "caller is not an admin"
    assert caught.value.check == "role"
    assert "/refuse answered 403" in str(caught.value)
    answer = client.raw("GET", "/refuse", expected=None)
    assert answer.status == 403
    assert b"caller is not an admin" in answer.body
    assert client.request("GET", "/refuse", expected=(403,)) == {"error": "role", "message": "caller is not an admin"}


def test_an_untrusted_server_certificate_is_a_tls_failure(client_for: Callable[..., MTLSClient],
                                                          pki: dict[str, Path]) -> None:
    client = client_for(ca_file=pki["foreign_ca"])
    with pytest.raises(TLSFailure, match="certificate verify failed"):
        client.request("GET", "/echo")


def test_a_server_certificate_for_another_name_is_a_tls_failure(client_for: Callable[..., MTLSClient]) -> None:
    client = client_for(assert_hostname="h-another-host")
    with pytest.raises(TLSFailure):
        client.request("GET", "/echo")
    assert client_for(assert_hostname="localhost").request("GET", "/echo")["path"] == "/echo"


def test_without_a_client_certificate_the_server_refuses_the_handshake(
        client_for: Callable[..., MTLSClient], server: CountingServer) -> None:
    client = client_for(cert_file=None, key_file=None, retries=0)
    with pytest.raises(TLSFailure):
        client.request("POST", "/echo", json={})
    assert server.requests[("POST", "/echo")] == 0


def test_a_refused_port_is_unreachable(pki: dict[str, Path]) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    client = MTLSClient(f"https://127.0.0.1:{port}", ca_file=pki["ca"], cert_file=pki["client_cert"],
                        key_file=pki["client_key"])
    with pytest.raises(Unreachable, match=f"cannot connect to https://127.0.0.1:{port}/v1/ping"):
        client.request("GET", "/v1/ping")


def test_a_get_is_retried_after_a_dropped_connection(client_for: Callable[..., MTLSClient],
                                                     server: CountingServer) -> None:
    client = client_for()
    assert client.request("GET", "/drop-first") == {"second": True}
    assert server.requests[("GET", "/drop-first")] == 2


def test_a_post_is_not_retried_after_a_dropped_connection(client_for: Callable[..., MTLSClient],
                                                          server: CountingServer) -> None:
    client = client_for()
    with pytest.raises(Unreachable):
        client.request("POST", "/drop-first", json={"once": True})
    assert server.requests[("POST", "/drop-first")] == 1


def test_a_read_timeout_fires_and_is_not_retried(client_for: Callable[..., MTLSClient],
                                                 server: CountingServer) -> None:
    client = client_for(timeout=0.3)
    began = time.monotonic()
    with pytest.raises(Unreachable, match="no answer in time") as caught:
        client.request("GET", "/slow")
    assert time.monotonic() - began < 1.2
    assert caught.value.check == "timeout"
    assert server.requests[("GET", "/slow")] == 1


def test_a_per_call_timeout_overrides_the_clients(client_for: Callable[..., MTLSClient]) -> None:
    client = client_for(timeout=0.3)
    assert client.request("GET", "/slow", timeout=5.0) == {}


def test_a_connect_timeout_fires(pki: dict[str, Path]) -> None:
    # A listening socket whose backlog is full never completes new handshakes: connecting stalls.
    with socket.socket() as stalled:
        stalled.bind(("127.0.0.1", 0))
        stalled.listen(0)
        port = stalled.getsockname()[1]
        fillers = []
        for _ in range(8):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        client = MTLSClient(f"https://127.0.0.1:{port}", ca_file=pki["ca"], cert_file=pki["client_cert"],
                            key_file=pki["client_key"], timeout=0.3, retries=0)
        began = time.monotonic()
        with pytest.raises(Unreachable):
            client.request("POST", "/echo", json={})
        assert time.monotonic() - began < 3
        for filler in fillers:
            filler.close()


def test_an_encrypted_client_key_works_with_its_passphrase(client_for: Callable[..., MTLSClient],
                                                           pki: dict[str, Path]) -> None:
    client = client_for(cert_file=pki["locked_cert"], key_file=pki["locked_key"], key_passphrase=b"open sesame")
    assert client.request("GET", "/echo")["path"] == "/echo"
    with pytest.raises(TLSFailure, match="key passphrase") as caught:
        client_for(cert_file=pki["locked_cert"], key_file=pki["locked_key"], key_passphrase=b"wrong")
    assert caught.value.check == "client-identity"


def test_streamed_lines_arrive_as_they_are_sent(client_for: Callable[..., MTLSClient],
                                                server: CountingServer) -> None:
    client = client_for(timeout=3)
    seen = []
    with client.stream("POST", "/events") as response:
        for line in iter_lines(response, max_line_bytes=1024):
            seen.append(json.loads(line)["event"])
            server.first_event_seen.set()  # the server sends the next event only now
    assert seen == ["progress", "result"]
    assert client.request("GET", "/echo")["path"] == "/echo"
    assert server.connections == 1


def test_a_closed_client_reconnects(client_for: Callable[..., MTLSClient], server: CountingServer) -> None:
    client = client_for()
    assert client.request("GET", "/echo")["path"] == "/echo"
    client.close()
    assert client.request("GET", "/echo")["path"] == "/echo"
    assert server.connections == 2


def test_every_failure_is_one_client_error_line(client_for: Callable[..., MTLSClient]) -> None:
    client = client_for()
    for path in ("/refuse", "/html", "/nowhere"):
        with pytest.raises(ClientError) as caught:
            client.request("GET", path)
        assert "\n" not in str(caught.value)
        assert path in str(caught.value)


def test_a_url_that_is_not_https_is_refused(pki: dict[str, Path]) -> None:
    with pytest.raises(InputError, match="must be https://"):
        MTLSClient("http://127.0.0.1:1", ca_file=pki["ca"])


def test_the_sm_keeps_one_connection_per_bm(pki: dict[str, Path], server: CountingServer) -> None:
    """The SM's BM client (step 3) used to open a new pool, so a new TLS handshake, for every call."""
    bms = HttpsBonseyesModuleClient(pki["client_cert"], pki["client_key"], pki["ca"], timeout_seconds=5)
    endpoint = BonseyesModuleEndpoint(BM_HOST_ID, "127.0.0.1", server.server_address[1])
    digest = "sha256:" + "ab" * 32
    for _ in range(5):
        assert bms.fetch_images(endpoint, [digest]) == {digest: digest}
    assert server.connections == 1
    # The BM's certificate must name the host the SM expects there.
    impostor = BonseyesModuleEndpoint("h-" + "cd" * 16, "127.0.0.1", server.server_address[1])
    with pytest.raises(BonseyesModuleError, match="did not answer"):
        bms.fetch_images(impostor, [digest])


def test_the_bm_and_the_cli_keep_their_error_contracts_and_the_caps(pki: dict[str, Path], server: CountingServer,
                                                                      tmp_path: Path) -> None:
    """Migrated callers map the client's errors to the ones their callers catch; the BM's SM client used
    to read a whole answer before checking its size."""
    url = f"https://127.0.0.1:{server.server_address[1]}"
    config = BMConfig(directory=tmp_path, host_id=BM_HOST_ID, sm_url=url, bind_ip="127.0.0.1")
    config.certificate.parent.mkdir(parents=True)
    config.certificate.write_bytes(pki["client_cert"].read_bytes())
    config.key.write_bytes(pki["client_key"].read_bytes())
    config.ca_bundle.write_bytes(pki["ca"].read_bytes())
    sm = SMClient(config, timeout=5)
    with pytest.raises(SMRefused) as refused:
        sm._request("GET", "/refuse")
    assert (refused.value.check, refused.value.status) == ("role", 403)
    assert sm._request("GET", "/html") == b"<html>a proxy's login page</html>"
    with pytest.raises(SMUnavailable, match="1048576"):
        sm._request("GET", "/big")
    time.sleep(0.2)
    assert server.big_bytes_sent < 64 * 1024 * 1024

    session = SMSession(url, str(pki["client_cert"]), str(pki["client_key"]), str(pki["ca"]))
    assert session.call("POST", "/echo", {"stage": 1})["body"] == {"stage": 1}
    with pytest.raises(PipelineError) as failed:
        session.call("GET", "/refuse")
    assert (failed.value.check, failed.value.args[0]) == ("role", "caller is not an admin")
    with pytest.raises(PipelineError) as failed:
        session.call("GET", "/html")
    assert failed.value.check == "sm-answer"
