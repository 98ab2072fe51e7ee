"""Bad input over the real API: every refusal is a TLS handshake failure or a 4xx naming its check."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from sm_fixtures import Lab, SMServer, World
from sm_testlib import check_error, check_response, digest_of, fake_hardware_id, new_csr, nonce, write_certificate

from bonseyes_py.pki.ca import CertificateAuthority
from bonseyes_py.pki.keys import generate_private_key
from bonseyes_py.pki.roles import Role


def _handshake_refused(server: SMServer, cert: Path | None, key: Path | None) -> None:
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(server.base_url + "/v1/ping", cert=(str(cert), str(key)) if cert else None,
                     verify=str(server.root), timeout=10)


def test_no_client_certificate_is_refused_in_the_handshake(sm_server: SMServer) -> None:
    _handshake_refused(sm_server, None, None)


def test_foreign_ca_certificate_is_refused_in_the_handshake(sm_server: SMServer, tmp_path: Path) -> None:
    foreign = CertificateAuthority.init(tmp_path / "foreign")
    key = generate_private_key()
    certificate = foreign.issue(key.public_key(), foreign.identity(Role.ADMIN, "admin"))
    _handshake_refused(sm_server, *write_certificate(tmp_path, "foreign", key, certificate))


def test_expired_certificate_is_refused_in_the_handshake(sm_server: SMServer, tmp_path: Path) -> None:
    ca = CertificateAuthority.load(sm_server.config.ca_directory)
    key = generate_private_key()
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    certificate = ca.issue(key.public_key(), ca.identity(Role.ADMIN, "old-admin"), validity=dt.timedelta(days=1),
                           now=past)
    _handshake_refused(sm_server, *write_certificate(tmp_path, "old", key, certificate))


def test_tls_1_3_is_negotiated(sm_server: SMServer) -> None:
    import socket
    import ssl

    context = ssl.create_default_context(cafile=str(sm_server.root))
    context.load_cert_chain(str(sm_server.config.admin_certificate), str(sm_server.config.admin_key))
    host, port = sm_server.base_url.removeprefix("https://").split(":")
    with socket.create_connection((host, int(port))) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.version() == "TLSv1.3"


def test_tls_1_1_is_refused(sm_server: SMServer) -> None:
    import socket
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(str(sm_server.root))
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    try:
        context.maximum_version = ssl.TLSVersion.TLSv1_1
        context.set_ciphers("ALL:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot even offer TLS 1.1")
    host, port = sm_server.base_url.removeprefix("https://").split(":")
    with socket.create_connection((host, int(port))) as raw, pytest.raises(ssl.SSLError):
        context.wrap_socket(raw, server_hostname="localhost")


def test_role_mismatches_are_refused_with_role(world: World, lab: Lab) -> None:
    licence = lab.host.client.post("/v1/licences/host", lab.licence_request(nonce())).json()
    runtime = world.runtime(licence)
    admin = world.admin
    cases = [
        (lab.host.client, "POST", "/v1/users", {"user_id": "x", "passphrase": "12345678"}),
        (lab.user.client, "POST", "/v1/users", {"user_id": "x", "passphrase": "12345678"}),
        (lab.user.client, "POST", "/v1/revocations", {"kind": "user", "id": "x"}),
        (lab.user.client, "GET", "/v1/audit", None),
        (lab.user.client, "PUT", "/v1/premises/p", {}),
        (lab.marketplace.client, "POST", "/v1/users", {"user_id": "x", "passphrase": "12345678"}),
        (lab.host.client, "POST", "/v1/pipelines", {"premise": "p", "stages": []}),
        (runtime.client, "POST", "/v1/licences/host", lab.licence_request(nonce())),
        (admin, "POST", "/v1/licences/host", lab.licence_request(nonce())),
        (lab.user.client, "POST", "/v1/licences/host", lab.licence_request(nonce())),
        (lab.host.client, "POST", "/v1/licences/artefact", {"host_licence": "a.b.c", "artefact_id": "x"}),
        (lab.user.client, "POST", "/v1/artefacts", {"artefact_id": "x", "owner": "y", "digest": digest_of("x")}),
        (runtime.client, "POST", "/v1/hosts/heartbeat", {}),
        (lab.user.client, "POST", "/v1/hosts/heartbeat", {}),
    ]
    for client, method, path, body in cases:
        response = client.request(method, path, json=body)
        check_error(response, 403, "role")


def test_revoked_user_certificate_gets_403_revoked_and_is_in_the_crl(world: World) -> None:
    from cryptography import x509

    user = world.enrol_user()
    assert user.client.get("/v1/ping").status_code == 200
    revoked = check_response(world.admin.post("/v1/revocations", {"kind": "user", "id": user.name}),
                             "POST", "/v1/revocations", 200)
    check_error(user.client.get("/v1/ping"), 403, "revoked")
    crl = x509.load_pem_x509_crl(world.admin.get("/v1/crl").content)
    assert all(crl.get_revoked_certificate_by_serial_number(int(s, 16)) for s in revoked["serials"])


def test_revoked_licence_is_refused_for_an_artefact_licence_and_published(world: World, lab: Lab) -> None:
    licence = lab.host.client.post("/v1/licences/host", lab.licence_request(nonce())).json()
    runtime = world.runtime(licence)
    check_response(world.admin.post("/v1/revocations", {"kind": "licence", "id": licence["licence_id"]}),
                   "POST", "/v1/revocations", 200)
    assert licence["licence_id"] in world.admin.get("/v1/licences/revoked").json()["licence_ids"]
    # The runtime certificate was revoked with its licence.
    check_error(runtime.client.post("/v1/licences/artefact", {
        "host_licence": licence["licence"], "artefact_id": lab.artefact["artefact_id"]}), 403, "revoked")


def test_revoked_host_cannot_heartbeat(world: World) -> None:
    owner = world.enrol_user()
    host = world.register_host(owner, ip="127.0.0.5")
    world.heartbeat(host)
    world.admin.post("/v1/revocations", {"kind": "host", "id": host.name})
    check_error(host.client.post("/v1/hosts/heartbeat", {}), 403, "revoked")


def test_host_with_changed_hardware_is_refused_under_its_old_name(world: World) -> None:
    owner = world.enrol_user()
    host = world.register_host(owner)
    _, csr = new_csr()
    token = world.host_id_token(owner, fake_hardware_id("replaced motherboard"))
    check_error(owner.client.post("/v1/hosts", {"host_id": token, "csr": csr, "name": host.name}), 409,
                "hardware-changed")


def test_host_id_signed_by_someone_else_is_refused(world: World) -> None:
    owner, intruder = world.enrol_user(), world.enrol_user()
    _, csr = new_csr()
    token = world.host_id_token(owner, fake_hardware_id("someone's machine"))
    check_error(intruder.client.post("/v1/hosts", {"host_id": token, "csr": csr}), 403, "host-owner")


def test_unknown_ids_are_404(world: World, lab: Lab) -> None:
    admin = world.admin
    for path in ("/v1/users/nobody", "/v1/hosts/h-none", "/v1/artefacts/none", "/v1/pipelines/pl-none",
                 "/v1/premises/none"):
        check_error(admin.get(path), 404, "not-found")
    check_error(admin.post("/v1/revocations", {"kind": "licence", "id": "no-such-licence"}), 404, "not-found")
    check_error(lab.host.client.post("/v1/licences/host", {**lab.licence_request(nonce()),
                                                            "artefact_id": "no-such-artefact"}), 404, "not-found")
    check_error(admin.get("/v1/nowhere"), 404, "not-found")


def test_malformed_and_oversized_bodies(world: World) -> None:
    admin = world.admin
    check_error(admin.request("POST", "/v1/users", data=b"{not json"), 400, "json")
    check_error(admin.request("POST", "/v1/users", data=b"[1, 2]"), 400, "json")
    check_error(admin.request("POST", "/v1/users", data=b"\xff\xfe"), 400, "json")
    check_error(admin.post("/v1/users", {"user_id": "u", "passphrase": "12345678", "is_admin": True}), 400,
                "unknown-field")
    check_error(admin.post("/v1/users", {"passphrase": "12345678"}), 400, "missing-field")
    error = check_error(admin.post("/v1/users", {"user_id": "bad name!", "passphrase": "12345678"}), 400,
                        "invalid-field")
    assert error["message"].startswith("body.user_id: does not match the pattern "), error
    check_error(admin.request("POST", "/v1/users", data=json.dumps({"user_id": "x" * 400_000}).encode()), 413,
                "body-too-large")
    check_error(admin.put("/v1/premises/p1", {"policy": "permit(principal, action, resource) when { nonsense };"}),
                422, "policy")


def test_nonce_and_digest_formats_are_checked(lab: Lab) -> None:
    error = check_error(lab.host.client.post("/v1/licences/host", {**lab.licence_request("short")}), 400,
                        "invalid-field")
    assert error["message"].startswith("body.nonce: does not match the pattern"), error
    bad_digest = {**lab.licence_request(nonce()), "image_digest": "sha256:xyz"}
    error = check_error(lab.host.client.post("/v1/licences/host", bad_digest), 400, "invalid-field")
    assert error["message"].startswith("body.image_digest: does not match the pattern"), error


def test_runtime_key_is_a_loadable_private_key(lab: Lab) -> None:
    licence = lab.host.client.post("/v1/licences/host", lab.licence_request(nonce())).json()
    assert load_pem_private_key(licence["runtime_key"].encode(), None) is not None
