"""Hostile input on the real SM (gunicorn, mutual TLS): bounded JSON and gunicorn's own errors as JSON.

A body of ``[[[[...]]]]`` a few kilobytes long used to reach ``json.loads`` unbounded and come back as a
500 (``RecursionError``); a JWS with such a header did the same through the licence checks. Both must be
a 400 naming ``json-too-deep``. Errors gunicorn answers itself (a request line or a header over its
limits, a malformed request line) must carry the same JSON error body as every other refusal.

The same holds for a real Bonseyes Module (``python -m bonseyes_py.bm``, enrolled at this SM by a user,
on its own loopback address): its routes are called with the SM's identity and with a runtime
certificate. It needs the Docker engine (the BM reconciles its containers before serving). The BM
parses a licence only for a runtime it started, so licence headers are tested at the SM (same parser).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter
from sm_fixtures import Identity, Lab, SMServer, World, unique
from sm_testlib import check_error, free_port, nonce, stop

from bonseyes_py.bm.enrol import OwnerIdentity, enrol_host
from bonseyes_py.cli.main import main as cli_main
from bonseyes_py.pki.ca import CertificateAuthority
from bonseyes_py.pki.certs import certificate_pem
from bonseyes_py.pki.keys import generate_private_key, write_private_key
from bonseyes_py.pki.roles import Role

DEPTH = 10_000
DEEP_ARRAY = "[" * DEPTH + "]" * DEPTH
DEEP_OBJECT = '{"a":' * DEPTH + "1" + "}" * DEPTH


def _b64(data: str) -> str:
    return base64.urlsafe_b64encode(data.encode()).decode().rstrip("=")


def deep_header_token(depth: int = 3_000) -> str:
    """A compact JWS whose protected header nests ``depth`` levels (small enough for any header bound)."""
    header = '{"alg":"ES256","typ":"x","x5c":' + "[" * depth + "]" * depth + "}"
    return f"{_b64(header)}.{_b64(json.dumps({'iss': 'x'}))}.{_b64('sig')}"


def _send(client: object, method: str, path: str, body: str) -> requests.Response:
    return client.request(method, path, data=body.encode(),  # type: ignore[attr-defined]
                          headers={"Content-Type": "application/json"})


@pytest.fixture(scope="module")
def runtime(world: World, lab: Lab) -> Identity:
    licence = lab.host.client.post("/v1/licences/host", lab.licence_request(nonce())).json()
    return world.runtime(licence)


def _routes(world: World, lab: Lab, runtime: Identity) -> list[tuple[object, str, str]]:
    admin, user, host, marketplace = world.admin, lab.user.client, lab.host.client, lab.marketplace.client
    artefact, pipeline = lab.artefact["artefact_id"], lab.pipeline["pipeline_id"]
    return [
        (admin, "POST", "/v1/users"),
        (admin, "POST", "/v1/services"),
        (admin, "POST", "/v1/hosts"),
        (user, "POST", "/v1/hosts"),
        (host, "POST", "/v1/hosts/heartbeat"),
        (admin, "POST", "/v1/artefacts"),
        (marketplace, "POST", f"/v1/artefacts/{artefact}/images"),
        (marketplace, "PUT", f"/v1/artefacts/{artefact}/terms"),
        (admin, "PUT", "/v1/premises/deep"),
        (user, "POST", "/v1/pipelines"),
        (user, "POST", f"/v1/pipelines/{pipeline}/stop"),
        (host, "POST", "/v1/licences/host"),
        (runtime.client, "POST", "/v1/licences/artefact"),
        (admin, "POST", "/v1/revocations"),
        (marketplace, "POST", "/v1/artefact-ids"),
    ]


@pytest.mark.parametrize("body", [DEEP_ARRAY, DEEP_OBJECT], ids=["array", "object"])
def test_deeply_nested_bodies_are_400_json_too_deep_on_every_route(world: World, lab: Lab, runtime: Identity,
                                                                  body: str) -> None:
    for client, method, path in _routes(world, lab, runtime):
        response = _send(client, method, path, body)
        assert response.status_code == 400, f"{method} {path}: {response.status_code} {response.text[:300]}"
        check_error(response, 400, "json-too-deep")


def test_deep_body_under_the_size_limit_costs_little(world: World) -> None:
    """The check is linear: a quarter-megabyte of brackets is refused quickly, not parsed."""
    body = "[" * 120_000 + "]" * 120_000
    response = world.admin.request("POST", "/v1/users", data=body.encode(),
                                   headers={"Content-Type": "application/json"}, timeout=10)
    check_error(response, 400, "json-too-deep")


def test_nesting_at_the_limit_reaches_the_field_checks(world: World) -> None:
    """A document nested as deep as allowed is parsed; what is refused then is its content."""
    body = {"user_id": unique("deepish"), "organisation": json.loads("[" * 31 + "]" * 31)}
    response = world.admin.post("/v1/users", body)
    assert response.status_code in (201, 400), response.text
    assert response.status_code == 201 or response.json()["error"] != "json-too-deep", response.text


def test_deep_jws_header_in_a_licence_request_is_400_json_too_deep(lab: Lab, runtime: Identity) -> None:
    response = runtime.client.post("/v1/licences/artefact", {"host_licence": deep_header_token(),
                                                             "artefact_id": lab.artefact["artefact_id"]})
    check_error(response, 400, "json-too-deep")


def test_deep_jws_header_as_host_id_is_400_json_too_deep(lab: Lab) -> None:
    from sm_testlib import new_csr

    _, csr = new_csr()
    check_error(lab.user.client.post("/v1/hosts", {"host_id": deep_header_token(), "csr": csr}), 400,
                "json-too-deep")


def test_deep_jws_header_in_a_stored_licence_is_a_cli_error_not_a_traceback(
        sm_server: SMServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    licence = tmp_path / "deep.jwt"
    licence.write_text(deep_header_token(20_000))
    assert cli_main(["licence", "verify", str(licence), "--root", str(sm_server.root)]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "json-too" in err, err
    licence.write_text(deep_header_token())
    assert cli_main(["licence", "verify", str(licence), "--root", str(sm_server.root)]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "json-too-deep" in err, err


# -- gunicorn's own refusals --------------------------------------------------------------------------

def _raw_exchange(server: SMServer, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes over mTLS as the admin; return status, headers and body of the answer."""
    context = ssl.create_default_context(cafile=str(server.root))
    context.load_cert_chain(str(server.config.admin_certificate), str(server.config.admin_key))
    host, port = server.base_url.removeprefix("https://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(request)
        received = b""
        while True:
            try:
                chunk = tls.recv(65536)
            except (ssl.SSLError, ConnectionResetError):
                break
            if not chunk:
                break
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    if "content-length" in headers:
        body = body[:int(headers["content-length"])]
    return status, headers, body


def _json_error(answer: tuple[int, dict[str, str], bytes], status: int) -> dict[str, str]:
    got, headers, body = answer
    assert got == status, (got, body[:300])
    assert headers.get("content-type", "").startswith("application/json"), (headers, body[:300])
    error = json.loads(body)
    assert set(error) == {"error", "message"}, error
    assert all(isinstance(v, str) and v for v in error.values()), error
    return error


def test_uri_too_long_is_a_json_414(sm_server: SMServer) -> None:
    request = f"GET /v1/ping?{'a' * 10_000} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
    error = _json_error(_raw_exchange(sm_server, request), 414)
    assert error["error"] == "uri-too-long", error


def test_header_too_large_is_a_json_431(sm_server: SMServer) -> None:
    request = f"GET /v1/ping HTTP/1.1\r\nHost: localhost\r\nX-Big: {'b' * 20_000}\r\n\r\n".encode()
    error = _json_error(_raw_exchange(sm_server, request), 431)
    assert error["error"] == "headers-too-large", error


def test_too_many_headers_is_a_json_431(sm_server: SMServer) -> None:
    fields = "".join(f"X-F{i}: v\r\n" for i in range(150))
    request = f"GET /v1/ping HTTP/1.1\r\nHost: localhost\r\n{fields}\r\n".encode()
    error = _json_error(_raw_exchange(sm_server, request), 431)
    assert error["error"] == "headers-too-large", error


def test_bad_request_line_is_a_json_400(sm_server: SMServer) -> None:
    error = _json_error(_raw_exchange(sm_server, b"NOT A REQUEST LINE AT ALL\r\n\r\n"), 400)
    assert error["error"] == "bad-request-line", error


def test_bad_header_is_a_json_400(sm_server: SMServer) -> None:
    request = b"GET /v1/ping HTTP/1.1\r\nHost: localhost\r\nBad Header Name: x\r\n\r\n"
    error = _json_error(_raw_exchange(sm_server, request), 400)
    assert error["error"] == "bad-header", error


def test_requests_client_sees_the_json_error_too(sm_server: SMServer) -> None:
    response = sm_server.admin().get("/v1/ping?" + "a" * 10_000)
    check_error(response, 414, "uri-too-long")


def test_server_still_answers_after_the_refusals(sm_server: SMServer) -> None:
    assert sm_server.admin().get("/v1/ping").status_code == 200


# -- a real Bonseyes Module ---------------------------------------------------------------------------

class _PinnedName(HTTPAdapter):
    """A BM's certificate names its host ID (DNS SAN), not its loopback IP: check that name."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["assert_hostname"] = self.name
        super().init_poolmanager(*args, **kwargs)


@dataclass
class BMPeer:
    url: str
    host_id: str
    ca_bundle: Path
    process: subprocess.Popen[bytes]
    log: Path

    def request(self, identity: tuple[Path, Path], method: str, path: str, **kwargs: Any) -> requests.Response:
        session = requests.Session()
        session.mount("https://", _PinnedName(self.host_id))
        kwargs.setdefault("timeout", 30)
        return session.request(method, self.url + path, cert=(str(identity[0]), str(identity[1])),
                               verify=str(self.ca_bundle), **kwargs)


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=5).ping()
    except Exception:
        return False
    return True


@pytest.fixture(scope="module")
def bm(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BMPeer]:
    if not _docker_answers():
        # Never a skip: .ci/run starts the engine, and a missing one must not hide the BM's refusals.
        pytest.fail("no Docker engine answers: a BM reconciles its containers before it serves; "
                    "start it with scripts/ci/start_docker.sh")
    directory = tmp_path_factory.mktemp("bm-hostile")
    owner = world.enrol_user()
    ca = CertificateAuthority.load(world.sm.config.ca_directory)
    owner_chain = directory / "owner.pem"
    owner_chain.write_bytes(owner.cert.read_bytes() + certificate_pem(ca.intermediate))
    sysroot = directory / "sysroot"
    (sysroot / "etc").mkdir(parents=True)
    (sysroot / "etc" / "machine-id").write_text(secrets.token_hex(16) + "\n")
    ip = "127.0.0.9"
    port = free_port(ip)
    config = enrol_host(directory / "bm", sm_url=world.sm.base_url, ca_bundle=world.sm.config.ca_bundle,
                        owner=OwnerIdentity(owner_chain, owner.key), bind_ip=ip, port=port, sysroot=sysroot)
    log = directory / "bm.log"
    env = {k: v for k, v in os.environ.items() if k != "REQUESTS_CA_BUNDLE"}
    with log.open("ab") as handle:
        process = subprocess.Popen([sys.executable, "-m", "bonseyes_py.bm", str(config.directory)], stdout=handle,
                                   stderr=subprocess.STDOUT, env=env, start_new_session=True)
    peer = BMPeer(f"https://{ip}:{port}", config.host_id, world.sm.config.ca_bundle, process, log)
    deadline = time.monotonic() + 60
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"BM exited with {process.returncode}: {log.read_text()[-2000:]}")
            try:
                if peer.request(_sm_identity(world), "GET", "/v1/ping", timeout=3).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"BM not ready: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield peer
    finally:
        stop(process)


def _sm_identity(world: World) -> tuple[Path, Path]:
    return world.sm.config.tls_certificate, world.sm.config.tls_key


def _runtime_identity(world: World, directory: Path) -> tuple[Path, Path]:
    ca = CertificateAuthority.load(world.sm.config.ca_directory)
    key = generate_private_key()
    certificate = ca.issue(key.public_key(), ca.identity(Role.RUNTIME, unique("rt-hostile")))
    cert_path = directory / "runtime.pem"
    cert_path.write_bytes(certificate_pem(certificate) + certificate_pem(ca.intermediate))
    return cert_path, write_private_key(directory / "runtime.key", key)


def _bm_error(response: requests.Response, status: int, check: str) -> None:
    assert response.status_code == status, f"{response.url[:80]}: {response.status_code} {response.text[:300]}"
    assert response.headers["Content-Type"].startswith("application/json"), response.headers
    assert json.loads(response.content)["error"] == check, response.text[:300]


@pytest.mark.parametrize("body", [DEEP_ARRAY, DEEP_OBJECT], ids=["array", "object"])
def test_deep_bodies_on_every_bm_route_are_400_json_too_deep(bm: BMPeer, world: World, tmp_path: Path,
                                                             body: str) -> None:
    sm, runtime = _sm_identity(world), _runtime_identity(world, tmp_path)
    for identity, path in ((sm, "/v1/images/fetch"), (sm, "/v1/images/remove"), (sm, "/v1/runtimes"),
                           (sm, "/v1/runtimes/stop"), (runtime, "/v1/runtimes/licence")):
        response = bm.request(identity, "POST", path, data=body.encode(), headers={"Content-Type": "application/json"})
        _bm_error(response, 400, "json-too-deep")


def _bm_refusal(response: requests.Response, check: str) -> str:
    _bm_error(response, 400, check)
    message = str(json.loads(response.content)["message"])
    assert "\n" not in message, message
    return message


def test_bm_requests_are_checked_against_its_served_document(bm: BMPeer, world: World, tmp_path: Path) -> None:
    """Wrong type, missing field, unknown field, oversized string: each a 400 naming the field."""
    sm, runtime = _sm_identity(world), _runtime_identity(world, tmp_path)
    document = bm.request(sm, "GET", "/openapi.json").json()
    schemas = document["components"]["schemas"]
    digest = "sha256:" + "0" * 64
    assert _bm_refusal(bm.request(sm, "POST", "/v1/images/fetch", json={"digests": digest}),
                       "invalid-field") == "body.digests: expected array, got string"
    start = {"pipeline_id": unique("p"), "position": 0, "artefact_id": "a", "digest": digest}
    assert _bm_refusal(bm.request(sm, "POST", "/v1/runtimes", json=start),
                       "missing-field") == "body.user_id: required field is missing"
    assert _bm_refusal(bm.request(sm, "POST", "/v1/runtimes", json={**start, "user_id": "u", "env": {"PATH": "/"}}),
                       "invalid-field").startswith("body.env: field name PATH breaks the pattern rule")
    assert _bm_refusal(bm.request(sm, "POST", "/v1/runtimes/stop", json={"pipeline_id": "p", "colour": "red"}),
                       "unknown-field") == "body.colour: unknown field; allowed: pipeline_id, nonces, reason"
    limit = schemas["ArtefactLicence"]["properties"]["licence"]["maxLength"]
    assert _bm_refusal(bm.request(runtime, "POST", "/v1/runtimes/licence", json={"licence": "x" * (limit + 1)}),
                       "invalid-field") == f"body.licence: longer than {limit} characters"
    # The role comes first: a runtime may not stop runtimes, whatever its body says.
    _bm_error(bm.request(runtime, "POST", "/v1/runtimes/stop", json={"colour": "red"}), 403, "role")
    # A cross-field rule the schema leaves to the handler.
    _bm_error(bm.request(sm, "POST", "/v1/runtimes/stop", json={}), 400, "missing-field")


def test_valid_bm_requests_still_pass(bm: BMPeer, world: World) -> None:
    sm = _sm_identity(world)
    stopped = bm.request(sm, "POST", "/v1/runtimes/stop", json={"pipeline_id": unique("none"), "reason": "test"})
    assert stopped.status_code == 200, stopped.text
    assert stopped.json() == {"stopped": []}
    listed = bm.request(sm, "GET", "/v1/runtimes", params={"pipeline_id": unique("none")})
    assert listed.status_code == 200, listed.text
    assert listed.json() == {"runtimes": []}
    _bm_error(bm.request(sm, "GET", "/v1/runtimes", params={"pipeline_id": "bad name!"}), 400, "invalid-field")


def test_gunicorn_refusals_of_the_bm_are_json(bm: BMPeer, world: World) -> None:
    sm = _sm_identity(world)
    _bm_error(bm.request(sm, "GET", "/v1/status?x=" + "a" * 10_000), 414, "uri-too-long")
    assert bm.request(sm, "GET", "/v1/status").status_code == 200


def test_a_deeply_nested_policy_is_refused_before_cedar_parses_it(world: World) -> None:
    """Cedar's parser recurses per bracket: ~1000 levels crash the worker process (SIGSEGV, not an exception).

    The engine refuses nesting beyond MAX_POLICY_NESTING first; the SM answers 422 and keeps serving.
    """
    deep = 'permit (principal, action, resource) when { ' + "(" * 5_000 + "true" + ")" * 5_000 + " };"
    response = world.admin.put(f"/v1/premises/{unique('deep-policy')}", {"policy": deep})
    check_error(response, 422, "policy")
    assert "nests brackets deeper than 64" in response.json()["message"]
    assert world.admin.get("/v1/ping").status_code == 200
