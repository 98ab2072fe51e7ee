"""One revocation store, against the real SM (gunicorn, two workers, mutual TLS).

The scenario an adversarial review found: a certificate revoked with ``bonseyes ca revoke`` on the SM's
CA was refused until the SM's next revocation, whose CRL (rebuilt from the SM's database) dropped it.
Here ``bonseyes ca revoke`` runs as a real process on the running SM's CA directory; the certificate must
be refused at once, still be refused after a later revocation through the SM's API, and both serials
must be on the CRL the SM serves.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from sm_fixtures import SMServer, World, unique
from sm_testlib import Client, check_error, check_response, write_certificate

from bonseyes_py.pki.ca import CertificateAuthority
from bonseyes_py.pki.certs import load_crl
from bonseyes_py.pki.keys import generate_private_key
from bonseyes_py.pki.roles import Role

pytestmark = pytest.mark.integration
BONSEYES = [sys.executable, "-m", "bonseyes_py.cli.main"]


def bonseyes(*args: str | Path) -> dict[str, object]:
    run = subprocess.run([*BONSEYES, *map(str, args)], capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout)
    assert isinstance(answer, dict)
    return answer


def served_crl(sm: SMServer) -> set[int]:
    response = sm.admin().get("/v1/crl")
    assert response.status_code == 200, response.text
    return {entry.serial_number for entry in load_crl(response.content)}


def refused(client: Client, timeout: float = 5.0) -> bool:
    """Whether the SM refuses ``client`` as revoked; polls briefly (the workers reload on their next request)."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get("/v1/ping")
        if response.status_code == 403 and response.json().get("error") == "revoked":
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def outside_identity(sm: SMServer, directory: Path) -> tuple[x509.Certificate, Path, Client]:
    """A user certificate made on the CA directory (as ``bonseyes ca issue`` does): the SM has no record of it."""
    ca = CertificateAuthority.load(sm.config.ca_directory)
    key = generate_private_key()
    name = unique("outsider")
    certificate = ca.issue(key.public_key(), ca.identity(Role.USER, name))
    cert, key_path = write_certificate(directory, name, key, certificate)
    return certificate, cert, sm.client(cert, key_path)


def test_cli_revocation_is_refused_at_once_and_survives_a_later_api_revocation(
        sm_server: SMServer, world: World, tmp_path: Path) -> None:
    ca_dir = sm_server.config.ca_directory
    known = world.enrol_user()  # recorded in the SM's database
    outsider, outsider_cert, outsider_client = outside_identity(sm_server, tmp_path)
    for client in (known.client, outsider_client):
        assert client.get("/v1/ping").status_code == 200

    for cert_file in (known.cert, outsider_cert):
        answer = bonseyes("ca", "revoke", "--ca", ca_dir, cert_file, "--reason", "test")
        assert str(answer["store"]).startswith("security-manager:"), answer
    known_serial = int(check_response(world.admin.get(f"/v1/users/{known.name}"), "GET", "/v1/users/{user_id}",
                                      200)["serials"][0], 16)
    assert refused(known.client), "a certificate revoked with bonseyes ca revoke is still accepted"
    assert refused(outsider_client), "a CLI-issued certificate revoked with bonseyes ca revoke is still accepted"

    # A later revocation through the SM's API publishes a CRL rebuilt from its database.
    later = world.enrol_user()
    assert later.client.get("/v1/ping").status_code == 200
    check_response(world.admin.post("/v1/revocations", {"kind": "user", "id": later.name}), "POST",
                   "/v1/revocations", 200)
    assert refused(later.client)
    for client in (known.client, outsider_client):
        check_error(client.get("/v1/ping"), 403, "revoked")

    crl = served_crl(sm_server)
    later_serial = int(check_response(world.admin.get(f"/v1/users/{later.name}"), "GET", "/v1/users/{user_id}",
                                      200)["serials"][0], 16)
    assert {known_serial, outsider.serial_number, later_serial} <= crl


def test_sm_revoke_command_and_ca_revoke_share_the_store(sm_server: SMServer, world: World) -> None:
    """``bonseyes ca revoke`` then ``bonseyes sm revoke`` (the in-process admin API): one CRL holds both."""
    first = world.enrol_user()
    second = world.enrol_user()
    bonseyes("ca", "revoke", "--ca", sm_server.config.ca_directory, first.cert)
    assert refused(first.client)
    serial = check_response(world.admin.get(f"/v1/users/{second.name}"), "GET", "/v1/users/{user_id}",
                            200)["serials"][0]
    run = subprocess.run([*BONSEYES, "sm", "revoke", str(sm_server.config.directory), "certificate", serial],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    assert refused(second.client)
    check_error(first.client.get("/v1/ping"), 403, "revoked")
    first_serial = check_response(world.admin.get(f"/v1/users/{first.name}"), "GET", "/v1/users/{user_id}",
                                  200)["serials"][0]
    assert {int(first_serial, 16), int(serial, 16)} <= served_crl(sm_server)
