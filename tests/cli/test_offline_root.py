"""The offline-root procedure of docs/pki-and-keys.md, with the real ``bonseyes`` CLI and a real SM.

The SM is created with its root key encrypted (what the security_manager role does), the root key is
taken off the SM host with ``bonseyes ca move-root``, and the intermediate is renewed under the offline
root twice while the SM keeps running: in one step (``renew-intermediate``, the offline medium attached)
and air-gapped (``intermediate-csr`` -> ``sign-intermediate`` -> ``install-intermediate``). Certificates
issued before and after each renewal keep authenticating to the same running SM and verify against the
root with the old and with the new intermediate.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from bonseyes_py.pki.certs import load_certificate, load_certificate_chain, load_crl, read_certificate
from bonseyes_py.pki.roles import Role
from bonseyes_py.pki.verify import TrustStore, verify_certificate
from bonseyes_py.sm import SMConfig, init_sm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sm"))
from sm_testlib import Client, free_port, new_csr, start_sm, stop, wait_ready, write_identity

pytestmark = pytest.mark.integration
BONSEYES = [sys.executable, "-m", "bonseyes_py.cli.main"]
PASSPHRASE = "offline root passphrase 0600"


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BONSEYES, *map(str, args)], capture_output=True, text=True, timeout=120, check=False)


def ok(*args: str | Path) -> dict[str, object]:
    result = run(*args)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert isinstance(answer, dict)
    return answer


def secret_file(path: Path, content: str, mode: int = 0o600) -> Path:
    path.write_text(content + "\n")
    os.chmod(path, mode)
    return path


class RunningSM:
    def __init__(self, directory: Path) -> None:
        port = free_port()
        self.config = init_sm(directory, bind=f"127.0.0.1:{port}", workers=2, threads=4,
                              root_passphrase=PASSPHRASE.encode())
        self.url = f"https://127.0.0.1:{port}"
        self.log = directory / "server.log"
        self.process = start_sm(directory, self.log)
        wait_ready(self.admin(), self.process, self.log)

    def client(self, cert: Path, key: Path) -> Client:
        return Client(self.url, cert, key, self.config.ca_directory / "root.pem")

    def admin(self) -> Client:
        return self.client(self.config.admin_certificate, self.config.admin_key)

    def enrol(self, name: str, directory: Path) -> tuple[x509.Certificate, Client, list[x509.Certificate]]:
        key, csr = new_csr()
        response = self.admin().post("/v1/users", {"user_id": name, "csr": csr})
        assert response.status_code == 201, response.text
        body = response.json()
        cert, key_path = write_identity(directory, name, key, body["certificate"])
        return load_certificate(body["certificate"].encode()), self.client(cert, key_path), \
            load_certificate_chain(body["chain"].encode())


@pytest.fixture
def sm(tmp_path: Path) -> Iterator[RunningSM]:
    server = RunningSM(tmp_path / "sm")
    yield server
    stop(server.process)


def authenticates(client: Client) -> bool:
    response = client.get("/v1/ping")
    return response.status_code == 200


def verify_everywhere(certificates: list[x509.Certificate], root: x509.Certificate,
                      intermediates: list[x509.Certificate], crl: x509.CertificateRevocationList) -> None:
    """Each certificate verifies against the root with each intermediate on its own (old and new peers)."""
    for intermediate in intermediates:
        store = TrustStore(root=root, intermediates=[intermediate], crls=[crl], require_crl=True)
        for certificate in certificates:
            verify_certificate(certificate, store, roles=[Role.USER])


def test_ca_init_with_an_offline_root_keeps_the_key_out_and_encrypted(tmp_path: Path) -> None:
    loose = secret_file(tmp_path / "loose.passphrase", PASSPHRASE, 0o644)
    refused = run("ca", "init", tmp_path / "ca", "--root-dir", tmp_path / "offline", "--root-passphrase-file", loose)
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1
    assert f"chmod 600 {loose}" in refused.stderr
    assert not (tmp_path / "ca").exists()

    passphrase = secret_file(tmp_path / "root.passphrase", PASSPHRASE)
    answer = ok("ca", "init", tmp_path / "ca", "--root-dir", tmp_path / "offline", "--root-passphrase-file",
                passphrase)
    assert answer["root_key_encrypted"] is True
    assert not (tmp_path / "ca/private/root.key").exists()
    offline_key = (tmp_path / "offline/private/root.key").read_bytes()
    assert offline_key.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert (tmp_path / "offline/root.pem").read_bytes() == (tmp_path / "ca/root.pem").read_bytes()

    plain = run("ca", "init", tmp_path / "plain", "--plaintext-root")
    assert plain.returncode == 0
    assert "WARNING: the root key" in plain.stderr
    assert "NOT encrypted" in plain.stderr


def test_offline_root_renews_the_intermediate_of_a_running_sm(sm: RunningSM, tmp_path: Path) -> None:
    ca_dir = sm.config.ca_directory
    offline = tmp_path / "offline"
    ids = tmp_path / "ids"
    pid = sm.process.pid

    # Take the (encrypted) root key off the SM host.
    assert (ca_dir / "private/root.key").read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    moved = ok("ca", "move-root", "--ca", ca_dir, "--root-dir", offline)
    assert moved["root_key_encrypted"] is True
    assert moved["ca_root_key"] == "absent"
    assert not (ca_dir / "private/root.key").exists()
    assert sorted(p.name for p in (ca_dir / "private").iterdir()) == ["intermediate.key", "signer.key"]

    root = read_certificate(ca_dir / "root.pem")
    first_intermediate = read_certificate(ca_dir / "intermediate.pem")
    before, before_client, before_chain = sm.enrol("before-renewal", ids)
    assert before_chain[0] == first_intermediate
    assert authenticates(before_client)

    # The root passphrase comes from a 0600 file; anything else changes nothing.
    loose = secret_file(tmp_path / "loose.passphrase", PASSPHRASE, 0o640)
    refused = run("ca", "renew-intermediate", "--ca", ca_dir, "--root-dir", offline, "--root-passphrase-file", loose)
    assert refused.returncode == 1
    assert f"chmod 600 {loose}" in refused.stderr
    missing = run("ca", "renew-intermediate", "--ca", ca_dir, "--root-dir", offline)
    assert missing.returncode == 1
    assert "encrypted" in missing.stderr
    assert "--root-passphrase-file" in missing.stderr
    no_root = run("ca", "renew-intermediate", "--ca", ca_dir, "--root-dir", ca_dir,
                  "--root-passphrase-file", secret_file(tmp_path / "p1", PASSPHRASE))
    assert no_root.returncode == 1
    assert "root-missing" in no_root.stderr
    assert read_certificate(ca_dir / "intermediate.pem") == first_intermediate

    # One step, the offline medium attached to the SM host.
    passphrase = secret_file(tmp_path / "root.passphrase", PASSPHRASE)
    renewed = ok("ca", "renew-intermediate", "--ca", ca_dir, "--root-dir", offline, "--root-passphrase-file",
                 passphrase)
    assert renewed["security_manager"] == str(sm.config.directory.resolve())
    second_intermediate = read_certificate(ca_dir / "intermediate.pem")
    assert renewed["serial"] == format(second_intermediate.serial_number, "x")
    assert second_intermediate.serial_number != first_intermediate.serial_number
    assert second_intermediate.public_key() == first_intermediate.public_key()
    assert load_certificate_chain(sm.config.ca_bundle.read_bytes()) == [root, second_intermediate]

    assert sm.process.poll() is None
    assert sm.process.pid == pid  # the same SM, never restarted
    assert authenticates(before_client)
    assert authenticates(sm.admin())
    after, after_client, after_chain = sm.enrol("after-renewal", ids)
    assert after_chain[0] == second_intermediate  # the running workers issue with the renewed chain
    assert authenticates(after_client)

    # Air-gapped: the CSR goes to the offline machine, the certificate comes back.
    ok("ca", "intermediate-csr", "--ca", ca_dir, "--out", tmp_path / "intermediate.csr")
    ok("ca", "sign-intermediate", "--root-dir", offline, "--root-passphrase-file", passphrase,
       "--csr", tmp_path / "intermediate.csr", "--out", tmp_path / "intermediate.pem")
    installed = ok("ca", "install-intermediate", "--ca", ca_dir, tmp_path / "intermediate.pem")
    third_intermediate = read_certificate(ca_dir / "intermediate.pem")
    assert installed["previous_serial"] == format(second_intermediate.serial_number, "x")
    last, last_client, last_chain = sm.enrol("after-air-gap", ids)
    assert last_chain[0] == third_intermediate
    for client in (before_client, after_client, last_client, sm.admin()):
        assert authenticates(client)

    crl = load_crl(sm.admin().get("/v1/crl").content)
    verify_everywhere([before, after, last], root, [first_intermediate, second_intermediate, third_intermediate], crl)
    served = load_certificate_chain(sm.admin().get("/v1/ca/chain").content)
    assert served == [root, third_intermediate]
    assert sorted(p.name for p in (ca_dir / "intermediates").iterdir()) == sorted(
        f"{c.serial_number:x}.pem" for c in (first_intermediate, second_intermediate))

    # The renewals are in the SM's audit log.
    audit = sm.admin().get("/v1/audit", params={"action": "intermediate-renewed"}).json()["entries"]
    assert [e["details"]["serial"] for e in audit] == [format(c.serial_number, "x")
                                                       for c in (second_intermediate, third_intermediate)]
    assert SMConfig.load(sm.config.directory).ca_directory == ca_dir
