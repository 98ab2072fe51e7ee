"""``bonseyes sm`` and ``bonseyes audit`` as an operator runs them: real processes, real files, a served SM.

Every command goes through ``python -m bonseyes_py.cli.main``; errors must be one line on stderr with
a non-zero exit and never a traceback. The served SM is checked with an admin identity the CLI
itself enrolled (PKCS#12 bundle -> PEM files) answering ``/v1/ping`` over mutual TLS, with the root key
passphrase-protected as ``sm init`` requires (or chosen explicitly with ``--plaintext-root``).
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

BONSEYES = [sys.executable, "-m", "bonseyes_py.cli.main"]
ENV = {k: v for k, v in os.environ.items() if k != "REQUESTS_CA_BUNDLE"}
ROOT_PASSPHRASE = "sm root passphrase, never printed"


def run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BONSEYES, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120,
                          check=False, env=ENV)


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, fragment: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    assert fragment in lines[0], lines[0]


def secret_file(path: Path, content: str, mode: int = 0o600) -> Path:
    """A one-line passphrase file; the CLI refuses one that group or others may read."""
    path.write_text(content + "\n")
    path.chmod(mode)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("smcli")
    result = run("sm", "init", "sm", "--bind", f"127.0.0.1:{free_port()}", "--plaintext-root", cwd=directory)
    assert result.returncode == 0, result.stderr
    assert "Security Manager created" in result.stdout
    secret_file(directory / "pass.txt", "correct horse battery")
    return directory


HELP_COMMANDS = [
    ("sm",), ("sm", "init"), ("sm", "serve"), ("sm", "premise"), ("sm", "premise", "create"),
    ("sm", "premise", "set-policy"), ("sm", "premise", "show"), ("sm", "policy"), ("sm", "policy", "validate"),
    ("sm", "policy", "default"), ("sm", "host"), ("sm", "host", "list"), ("sm", "host", "show"), ("sm", "user"),
    ("sm", "user", "enrol"), ("sm", "user", "show"), ("sm", "revoke"), ("audit",), ("audit", "verify"),
    ("audit", "list"),
]


@pytest.mark.parametrize("command", HELP_COMMANDS, ids=" ".join)
def test_help(command: tuple[str, ...], tmp_path: Path) -> None:
    result = run(*command, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: bonseyes " + " ".join(command))


def test_init_refuses_an_existing_sm(workdir: Path) -> None:
    assert_one_line_error(run("sm", "init", "sm", "--plaintext-root", cwd=workdir), 1, "sm-exists")


def test_init_refuses_without_a_root_key_choice_and_creates_nothing(tmp_path: Path) -> None:
    result = run("sm", "init", "sm", cwd=tmp_path)
    assert_one_line_error(result, 2, "--root-passphrase-file FILE (mode 0600)")
    for option in ("--root-dir OFFLINE", "--plaintext-root"):
        assert option in result.stderr
    assert result.stdout == ""
    both = run("sm", "init", "sm", "--plaintext-root", "--root-passphrase-file",
               secret_file(tmp_path / "root.pass", ROOT_PASSPHRASE), cwd=tmp_path)
    assert_one_line_error(both, 2, "not allowed with argument")
    assert not (tmp_path / "sm").exists()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_init_refuses_a_root_passphrase_file_others_can_read(tmp_path: Path, mode: int) -> None:
    loose = secret_file(tmp_path / "root.pass", ROOT_PASSPHRASE, mode)
    result = run("sm", "init", "sm", "--root-passphrase-file", loose, cwd=tmp_path)
    assert_one_line_error(result, 1, f"chmod 600 {loose}")
    assert ROOT_PASSPHRASE not in result.stderr
    assert not (tmp_path / "sm").exists()
    empty = secret_file(tmp_path / "empty.pass", "")
    assert_one_line_error(run("sm", "init", "sm", "--root-passphrase-file", empty, cwd=tmp_path), 1, "empty")
    assert not (tmp_path / "sm").exists()


def test_init_with_plaintext_root_warns(tmp_path: Path) -> None:
    result = run("sm", "init", "sm", "--plaintext-root", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "WARNING: the root key sm/ca/private/root.key is NOT encrypted" in result.stderr
    assert "root key: sm/ca/private/root.key (NOT encrypted" in result.stdout
    assert (tmp_path / "sm/ca/private/root.key").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


def test_user_enrol_refuses_a_passphrase_file_others_can_read(workdir: Path) -> None:
    loose = secret_file(workdir / "loose.txt", "bundle passphrase", 0o644)
    result = run("sm", "user", "enrol", "sm", "loose", "--out", "loose.p12", "--passphrase-file", loose, cwd=workdir)
    assert_one_line_error(result, 1, f"chmod 600 {loose}")
    assert "bundle passphrase" not in result.stderr
    assert not (workdir / "loose.p12").exists()
    assert_one_line_error(run("sm", "user", "show", "sm", "loose", cwd=workdir), 1, "not-found")


def test_commands_on_a_missing_sm_fail_in_one_line(tmp_path: Path) -> None:
    assert_one_line_error(run("sm", "host", "list", "nowhere", cwd=tmp_path), 1, "sm-missing")
    assert_one_line_error(run("audit", "verify", "nowhere", cwd=tmp_path), 1, "sm-missing")


def test_policies_and_premises(workdir: Path) -> None:
    default = run("sm", "policy", "default", cwd=workdir)
    assert default.returncode == 0
    assert "host-not-allowed" in default.stdout
    (workdir / "lab.cedar").write_text(default.stdout)
    assert run("sm", "policy", "validate", "lab.cedar", cwd=workdir).returncode == 0
    (workdir / "typo.cedar").write_text(default.stdout.replace("allowed_hosts", "alowed_hosts"))
    assert_one_line_error(run("sm", "policy", "validate", "typo.cedar", cwd=workdir), 1, "policy")
    assert_one_line_error(run("sm", "policy", "validate", "missing.cedar", cwd=workdir), 2, "missing.cedar")

    created = run("sm", "premise", "create", "sm", "lab", "--policy", "lab.cedar", cwd=workdir)
    assert created.returncode == 0, created.stderr
    assert "premise lab: revision 1" in created.stdout
    (workdir / "strict.cedar").write_text(default.stdout + '\n@id("no-one")\nforbid (principal, action, resource);\n')
    changed = run("sm", "premise", "set-policy", "sm", "lab", "strict.cedar", cwd=workdir)
    assert "revision 2" in changed.stdout, changed.stderr
    shown = run("sm", "premise", "show", "sm", "lab", "--revision", "1", cwd=workdir)
    assert shown.returncode == 0
    assert '"revision": 1' in shown.stdout
    assert "no-one" not in shown.stdout
    assert_one_line_error(run("sm", "premise", "set-policy", "sm", "lab", "typo.cedar", cwd=workdir), 1, "policy")
    assert_one_line_error(run("sm", "premise", "show", "sm", "nolab", cwd=workdir), 1, "not-found")
    assert_one_line_error(run("sm", "premise", "create", "sm", "lab2", "--user", "ghost", cwd=workdir), 1,
                          "not-found")


def test_user_enrol_writes_a_0600_bundle_once(workdir: Path) -> None:
    result = run("sm", "user", "enrol", "sm", "carol", "--out", "carol.p12", "--passphrase-file", "pass.txt",
                 "--organisation", "lab", cwd=workdir)
    assert result.returncode == 0, result.stderr
    bundle = workdir / "carol.p12"
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
    key, certificate, _chain = pkcs12.load_key_and_certificates(bundle.read_bytes(), b"correct horse battery")
    assert key is not None
    assert certificate is not None
    assert_one_line_error(run("sm", "user", "enrol", "sm", "carol", "--out", "carol2.p12", "--passphrase-file",
                              "pass.txt", cwd=workdir), 1, "user-exists")
    assert_one_line_error(run("sm", "user", "enrol", "sm", "dave", "--out", "carol.p12", "--passphrase-file",
                              "pass.txt", cwd=workdir), 1, "output-exists")
    assert_one_line_error(run("sm", "user", "enrol", "sm", "dave", "--out", "dave.p12", "--passphrase-file",
                              "nofile.txt", cwd=workdir), 2, "nofile.txt")
    shown = run("sm", "user", "show", "sm", "carol", cwd=workdir)
    assert shown.returncode == 0
    assert '"organisation": "lab"' in shown.stdout


def test_hosts_revocations_and_audit(workdir: Path) -> None:
    listed = run("sm", "host", "list", "sm", cwd=workdir)
    assert listed.returncode == 0, listed.stderr
    assert_one_line_error(run("sm", "host", "show", "sm", "h-nothere", cwd=workdir), 1, "not-found")
    assert run("sm", "user", "enrol", "sm", "erin", "--out", "erin.p12", "--passphrase-file", "pass.txt",
               cwd=workdir).returncode == 0
    revoked = run("sm", "revoke", "sm", "user", "erin", "--reason", "left the lab", cwd=workdir)
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked user erin: 1 certificates" in revoked.stdout
    again = run("sm", "revoke", "sm", "user", "erin", "--reason", "left the lab", cwd=workdir)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("already revoked user erin: nothing new to revoke"), again.stdout
    assert_one_line_error(run("sm", "revoke", "sm", "host", "h-nothere", cwd=workdir), 1, "not-found")
    bad_kind = run("sm", "revoke", "sm", "planet", "x", cwd=workdir)
    assert bad_kind.returncode == 2
    assert "invalid choice" in bad_kind.stderr

    listing = run("audit", "list", "sm", "--action", "revoked", cwd=workdir)
    assert listing.returncode == 0
    assert "user:erin" in listing.stdout
    verified = run("audit", "verify", "sm", cwd=workdir)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith("audit chain intact: ")
    assert verified.stdout.strip().endswith(" entries")


def test_audit_verify_names_the_first_tampered_entry(tmp_path: Path) -> None:
    assert run("sm", "init", "sm", "--plaintext-root", cwd=tmp_path).returncode == 0
    secret_file(tmp_path / "pass.txt", "passphrase-1")
    for name in ("u1", "u2", "u3"):
        assert run("sm", "user", "enrol", "sm", name, "--out", f"{name}.p12", "--passphrase-file", "pass.txt",
                   cwd=tmp_path).returncode == 0
    assert run("audit", "verify", "sm", cwd=tmp_path).stdout.strip() == "audit chain intact: 4 entries"
    with sqlite3.connect(tmp_path / "sm" / "sm.db") as connection:
        connection.execute("UPDATE audit_log SET subject = 'someone-else' WHERE seq = 3")
    result = run("audit", "verify", "sm", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.startswith("audit chain broken at entry 3:"), result.stdout


def _pem_identity_from_bundle(bundle: Path, passphrase: bytes, directory: Path) -> tuple[str, str]:
    key, certificate, chain = pkcs12.load_key_and_certificates(bundle.read_bytes(), passphrase)
    assert key is not None
    assert certificate is not None
    cert_path, key_path = directory / "admin2.pem", directory / "admin2.key"
    cert_path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in [certificate, *chain]))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return str(cert_path), str(key_path)


@pytest.mark.parametrize("offline", [False, True], ids=["encrypted-root", "offline-encrypted-root"])
def test_served_sm_answers_ping_over_mtls_with_a_cli_enrolled_admin(tmp_path: Path, offline: bool) -> None:
    """An SM whose root key is passphrase-protected (what ``sm init`` asks for), in its CA directory or
    offline, is served without the passphrase: the SM signs with the intermediate, never the root."""
    port = free_port()
    root_pass = secret_file(tmp_path / "root.pass", ROOT_PASSPHRASE)
    offline_args = ("--root-dir", "offline") if offline else ()
    created = run("sm", "init", "sm", "--bind", f"127.0.0.1:{port}", "--root-passphrase-file", root_pass,
                  *offline_args, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    assert created.stderr == ""  # no plaintext warning
    root_key = tmp_path / ("offline" if offline else "sm/ca") / "private/root.key"
    assert f"root key: {root_key.relative_to(tmp_path)} (encrypted" in created.stdout
    assert root_key.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert stat.S_IMODE(root_key.stat().st_mode) == 0o600
    assert (tmp_path / "sm/ca/private/root.key").exists() is not offline
    for output in (created.stdout, created.stderr):
        assert ROOT_PASSPHRASE not in output
        assert "PRIVATE KEY" not in output

    secret_file(tmp_path / "pass.txt", "admin passphrase")
    enrolled = run("sm", "user", "enrol", "sm", "ops", "--role", "admin", "--out", "ops.p12", "--passphrase-file",
                   "pass.txt", cwd=tmp_path)
    assert enrolled.returncode == 0, enrolled.stderr
    for output in (enrolled.stdout, enrolled.stderr):
        assert "admin passphrase" not in output
        assert "PRIVATE KEY" not in output
    identity = _pem_identity_from_bundle(tmp_path / "ops.p12", b"admin passphrase", tmp_path)
    root = str(tmp_path / "sm" / "ca" / "root.pem")
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen([*BONSEYES, "sm", "serve", "sm", "--workers", "1", "--threads", "2"], cwd=tmp_path,
                              stdout=log, stderr=subprocess.STDOUT, env=ENV, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        answer = None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                answer = requests.get(f"https://127.0.0.1:{port}/v1/ping", cert=identity, verify=root, timeout=2)
                break
            except requests.RequestException:
                time.sleep(0.2)
        assert answer is not None, (tmp_path / "serve.log").read_text()
        assert answer.status_code == 200
        assert answer.json() == {"ok": True, "role": "admin", "name": "ops"}
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"https://127.0.0.1:{port}/v1/ping", verify=root, timeout=5)  # No client certificate.
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()
    served_log = (tmp_path / "serve.log").read_text()
    assert ROOT_PASSPHRASE not in served_log
    assert "PRIVATE KEY" not in served_log
    assert root_key.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
