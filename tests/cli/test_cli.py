"""The ``bonseyes`` command line as a user runs it: real processes, real files, exit codes and one-line errors."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

BONSEYES = [sys.executable, "-m", "bonseyes_py.cli.main"]
DIGEST = "sha256:" + "c" * 64


def run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BONSEYES, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=60,
                          check=False)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("cli")
    assert run("ca", "init", "ca", "--plaintext-root", cwd=directory).returncode == 0
    return directory


@pytest.fixture(scope="module")
def host_name(workdir: Path) -> str:
    result = run("id", "hardware", "--json", cwd=workdir)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["host_name"]


@pytest.fixture(scope="module")
def licence(workdir: Path, host_name: str) -> Path:
    result = run("licence", "issue", "--ca", "ca", "--host-id", host_name, "--host-ip", "127.0.0.2",
                 "--digest", DIGEST, "--artefact", "demo", "--user", "alice", "--out", "host.jwt",
                 "--runtime-key-out", "runtime.key", cwd=workdir)
    assert result.returncode == 0, result.stderr
    return workdir / "host.jwt"


def test_ca_init_writes_root_and_private_keys_0600(workdir: Path) -> None:
    assert (workdir / "ca/root.pem").read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    for key in (workdir / "ca/private").iterdir():
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    assert stat.S_IMODE((workdir / "ca/private").stat().st_mode) == 0o700


def test_ca_init_refuses_to_overwrite(workdir: Path) -> None:
    before = (workdir / "ca/root.pem").read_bytes()
    result = run("ca", "init", "ca", "--plaintext-root", cwd=workdir)
    assert result.returncode == 1
    assert result.stderr.strip() == "error: ca-exists: a CA already exists in ca; refusing to overwrite it"
    assert (workdir / "ca/root.pem").read_bytes() == before


ROOT_PASSPHRASE = "ca root passphrase, never printed"


def secret_file(path: Path, content: str, mode: int = 0o600) -> Path:
    path.write_text(content + "\n")
    path.chmod(mode)
    return path


def test_ca_init_refuses_without_a_root_key_choice_and_creates_nothing(tmp_path: Path) -> None:
    result = run("ca", "init", "ca", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: bonseyes ca init: ")
    for option in ("--root-passphrase-file FILE (mode 0600)", "--root-dir OFFLINE", "--plaintext-root"):
        assert option in result.stderr
    both = run("ca", "init", "ca", "--plaintext-root", "--root-passphrase-file",
               secret_file(tmp_path / "root.pass", ROOT_PASSPHRASE), cwd=tmp_path)
    assert both.returncode == 2
    assert both.stderr.count("\n") == 1
    assert "not allowed with argument" in both.stderr
    assert not (tmp_path / "ca").exists()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_ca_init_refuses_a_root_passphrase_file_others_can_read(tmp_path: Path, mode: int) -> None:
    loose = secret_file(tmp_path / "root.pass", ROOT_PASSPHRASE, mode)
    result = run("ca", "init", "ca", "--root-passphrase-file", loose, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert f"chmod 600 {loose}" in result.stderr
    assert ROOT_PASSPHRASE not in result.stderr
    assert not (tmp_path / "ca").exists()


def test_ca_init_with_a_passphrase_file_encrypts_the_root_and_prints_no_secret(tmp_path: Path) -> None:
    passphrase = secret_file(tmp_path / "root.pass", ROOT_PASSPHRASE)
    created = run("ca", "init", "ca", "--root-passphrase-file", passphrase, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    assert created.stderr == ""
    answer = json.loads(created.stdout)
    assert answer["root_key_encrypted"] is True
    assert answer["root_key"] == "ca/private/root.key"
    assert (tmp_path / "ca/private/root.key").read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")

    # Using the root: the right passphrase works, a wrong one is refused; neither is ever printed.
    wrong = secret_file(tmp_path / "wrong.pass", "not the passphrase")
    refused = run("ca", "renew-intermediate", "--ca", "ca", "--root-dir", "ca", "--root-passphrase-file", wrong,
                  cwd=tmp_path)
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1
    renewed = run("ca", "renew-intermediate", "--ca", "ca", "--root-dir", "ca", "--root-passphrase-file", passphrase,
                  cwd=tmp_path)
    assert renewed.returncode == 0, renewed.stderr
    moved = run("ca", "move-root", "--ca", "ca", "--root-dir", "offline", cwd=tmp_path)
    assert moved.returncode == 0, moved.stderr
    for result in (created, refused, renewed, moved):
        for output in (result.stdout, result.stderr):
            assert ROOT_PASSPHRASE not in output
            assert "not the passphrase" not in output
            assert "PRIVATE KEY" not in output


def test_ca_init_offline_root_without_passphrase_is_chosen_and_warned(tmp_path: Path) -> None:
    result = run("ca", "init", "ca", "--root-dir", "offline", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "WARNING: the root key offline/private/root.key is NOT encrypted" in result.stderr
    assert json.loads(result.stdout)["root_key"] == "offline/private/root.key"
    assert not (tmp_path / "ca/private/root.key").exists()


def test_hardware_id_is_stable_and_names_its_facts(workdir: Path) -> None:
    first, second = run("id", "hardware", cwd=workdir), run("id", "hardware", cwd=workdir)
    assert first.returncode == 0
    assert first.stdout == second.stdout
    for fact in ("machine_id", "product_uuid", "nic_macs", "cpu_model", "gpus"):
        assert f"  {fact}:" in first.stdout


def test_verify_valid_licence_prints_claims(workdir: Path, licence: Path, host_name: str) -> None:
    result = run("licence", "verify", "--root", "ca/root.pem", licence, "--expect-host", host_name,
                 "--expect-ip", "127.0.0.2", "--expect-digest", DIGEST, "--expect-artefact", "demo",
                 "--expect-user", "alice", "--expect-runtime-cert", "host.runtime.pem", cwd=workdir)
    assert result.returncode == 0, result.stderr
    claims = json.loads(result.stdout)
    assert claims["runtime"]["host_id"] == host_name
    assert claims["runtime"]["image_digest"] == DIGEST
    assert "PRIVATE KEY" not in result.stdout
    assert stat.S_IMODE((workdir / "runtime.key").stat().st_mode) == 0o600


@pytest.mark.parametrize(("option", "value", "check"), [
    ("--expect-host", "h-" + "9" * 32, "host-id"),
    ("--expect-ip", "127.0.0.3", "host-ip"),
    ("--expect-digest", "sha256:" + "d" * 64, "image-digest"),
    ("--expect-artefact", "other", "artefact-id"),
    ("--expect-nonce", "A" * 22, "nonce"),
    ("--kind", "artefact", "type"),
])
def test_verify_refuses_mis_bound_licence_with_one_line(workdir: Path, licence: Path, option: str, value: str,
                                                       check: str) -> None:
    result = run("licence", "verify", "--root", "ca/root.pem", licence, option, value, cwd=workdir)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: {check}: ")


def test_verify_refuses_tampered_licence(workdir: Path, licence: Path) -> None:
    token = licence.read_text().strip()
    header, payload, signature = token.split(".")
    flipped = payload[:10] + ("A" if payload[10] != "A" else "B") + payload[11:]
    tampered = workdir / "tampered.jwt"
    tampered.write_text(f"{header}.{flipped}.{signature}")
    result = run("licence", "verify", "--root", "ca/root.pem", tampered, cwd=workdir)
    assert result.returncode == 1
    assert result.stderr.startswith("error: signature: ") or result.stderr.startswith("error: format: ")
    assert "Traceback" not in result.stderr


def test_verify_against_foreign_root_fails_on_chain(workdir: Path, licence: Path) -> None:
    assert run("ca", "init", "foreign", "--plaintext-root", cwd=workdir).returncode == 0
    result = run("licence", "verify", "--root", "foreign/root.pem", licence, cwd=workdir)
    assert result.returncode == 1
    assert result.stderr.startswith("error: signer-chain: ")


def test_verify_with_revoked_signer_in_crl(tmp_path: Path) -> None:
    assert run("ca", "init", "ca", "--plaintext-root", cwd=tmp_path).returncode == 0
    assert run("licence", "issue", "--ca", "ca", "--host-id", "h-" + "1" * 32, "--host-ip", "127.0.0.2",
               "--digest", DIGEST, "--artefact", "demo", "--user", "alice", "--out", "l.jwt",
               cwd=tmp_path).returncode == 0
    assert run("ca", "revoke", "--ca", "ca", "ca/signer.pem", cwd=tmp_path).returncode == 0
    result = run("licence", "verify", "--root", "ca/root.pem", "--crl", "ca/crl.pem", "l.jwt", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("error: signer-revoked: ")


@pytest.mark.parametrize("content", [b"", b"not a token", b"a.b.c", b"\xff\xfe" * 10, b"x" * 70_000])
def test_verify_garbage_is_one_line_never_a_traceback(workdir: Path, content: bytes) -> None:
    path = workdir / "garbage.jwt"
    path.write_bytes(content)
    result = run("licence", "verify", "--root", "ca/root.pem", path, cwd=workdir)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_missing_files_are_one_line(workdir: Path) -> None:
    result = run("licence", "verify", "--root", "nope.pem", "host.jwt", cwd=workdir)
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: bonseyes licence verify: argument --root: 'nope.pem' does not exist "
                                     "(see bonseyes licence verify --help)")


def test_export_user_pkcs12_is_0600_and_opens_with_openssl(workdir: Path) -> None:
    (workdir / "pw").write_text("correct horse battery\n")
    (workdir / "pw").chmod(0o600)
    result = run("ca", "export-user", "--ca", "ca", "--name", "alice", "--out", "alice.p12",
                 "--passphrase-file", "pw", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE((workdir / "alice.p12").stat().st_mode) == 0o600
    opened = subprocess.run(["openssl", "pkcs12", "-in", "alice.p12", "-passin", "pass:correct horse battery",
                             "-nokeys"], cwd=workdir, capture_output=True, text=True, check=False,
                            env={**os.environ, "OPENSSL_CONF": "/dev/null"})
    assert opened.returncode == 0, opened.stderr
    assert "spiffe://bonseyes.local/user/alice" in subprocess.run(
        ["openssl", "x509", "-noout", "-ext", "subjectAltName"], input=opened.stdout, capture_output=True,
        text=True, check=True).stdout
    assert "correct horse battery" not in result.stdout + result.stderr
    assert "PRIVATE KEY" not in result.stdout + result.stderr


def test_export_user_refuses_a_passphrase_file_others_can_read(workdir: Path) -> None:
    loose = secret_file(workdir / "loose.pw", "loose bundle passphrase", 0o644)
    result = run("ca", "export-user", "--ca", "ca", "--name", "bob", "--out", "bob.p12", "--passphrase-file", loose,
                 cwd=workdir)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert f"chmod 600 {loose}" in result.stderr
    assert "loose bundle passphrase" not in result.stderr
    assert not (workdir / "bob.p12").exists()


def test_issue_from_csr_keeps_requester_key_local(workdir: Path) -> None:
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", "h.key", "-subj", "/CN=ignored", "-out", "h.csr"], cwd=workdir, check=True,
                   capture_output=True)
    result = run("ca", "issue", "--ca", "ca", "--role", "host", "--name", "h-1", "--csr", "h.csr", "--out", "h.pem",
                 "--ip", "127.0.0.2", cwd=workdir)
    assert result.returncode == 0, result.stderr
    text = subprocess.run(["openssl", "x509", "-in", "h.pem", "-noout", "-text"], cwd=workdir, check=True,
                          capture_output=True, text=True).stdout
    assert "URI:spiffe://bonseyes.local/host/h-1" in text
    assert "IP Address:127.0.0.2" in text
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in text


def test_issue_refuses_unknown_role(workdir: Path) -> None:
    result = run("ca", "issue", "--ca", "ca", "--role", "signer", "--name", "x", "--new-key", "x.key",
                 "--out", "x.pem", cwd=workdir)
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
