"""The security_manager role's root key: encrypted by default, from Ansible Vault or a 0600 file.

Real ``ansible-playbook`` runs of the role's bootstrap (``--tags bootstrap``: the instance, no service) on
localhost with the project's Python: no source fails before anything is created and says what to set; a
passphrase file readable by others is refused with the ``chmod`` that fixes it; a 0600 file or a vaulted
variable gives an encrypted root key (never logged); the plaintext opt-out works and is warned about; a
second run changes nothing and no longer needs the passphrase.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_playbooks import recap

from bonseyes_py.pki.ca import RootAuthority, root_key_state

pytestmark = pytest.mark.integration
PLAYBOOK = Path(__file__).parent / "playbooks_sm" / "security_manager_role.yml"
PASSPHRASE = "role root passphrase from a 0600 file"
VAULTED = "role root passphrase from ansible vault"


def play(ansible_playbook, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    variables = {"security_manager_dir": tmp_path / "sm", "supervisor_dir": tmp_path / "supervisor",
                 "supervisor_bin_dir": Path(sys.executable).parent, "ansible_python_interpreter": sys.executable}
    args = [arg for key, value in variables.items() for arg in ("-e", f"{key}={value}")]
    return ansible_playbook("-i", "localhost,", "-c", "local", "--tags", "bootstrap", *args, *extra, str(PLAYBOOK))


def secret(path: Path, content: str, mode: int = 0o600) -> Path:
    path.write_text(content + "\n")
    os.chmod(path, mode)
    return path


def test_no_passphrase_source_fails_before_creating_anything(ansible_playbook, tmp_path: Path) -> None:
    run = play(ansible_playbook, tmp_path)
    assert run.returncode != 0
    assert "security_manager_root_passphrase" in run.stdout
    assert "security_manager_root_key_plaintext: true" in run.stdout
    assert not (tmp_path / "sm").exists()


def test_passphrase_file_readable_by_others_is_refused(ansible_playbook, tmp_path: Path) -> None:
    loose = secret(tmp_path / "loose.passphrase", PASSPHRASE, 0o644)
    run = play(ansible_playbook, tmp_path, "-e", f"security_manager_root_passphrase_file={loose}")
    assert run.returncode != 0
    assert f"chmod 600 {loose}" in run.stdout
    assert not (tmp_path / "sm").exists()
    missing = play(ansible_playbook, tmp_path, "-e", f"security_manager_root_passphrase_file={tmp_path / 'nope'}")
    assert missing.returncode != 0
    assert "does not exist" in missing.stdout


def test_passphrase_file_encrypts_the_root_key_and_is_needed_only_once(ansible_playbook, tmp_path: Path) -> None:
    source = secret(tmp_path / "root.passphrase", PASSPHRASE)
    first = play(ansible_playbook, tmp_path, "-e", f"security_manager_root_passphrase_file={source}")
    assert first.returncode == 0, first.stdout + first.stderr
    assert recap(first.stdout)["changed"] == 1
    ca_dir = tmp_path / "sm" / "ca"
    assert root_key_state(ca_dir) == "encrypted"
    assert RootAuthority.load(ca_dir, passphrase=PASSPHRASE.encode()).trust_domain == "bonseyes.local"
    assert PASSPHRASE not in first.stdout
    assert "NOT encrypted" not in first.stdout

    source.unlink()  # an existing instance does not need it (it is needed again only to renew the intermediate)
    second = play(ansible_playbook, tmp_path, "-e", f"security_manager_root_passphrase_file={source}")
    assert second.returncode == 0, second.stdout + second.stderr
    assert recap(second.stdout)["changed"] == 0


def test_vaulted_passphrase_encrypts_the_root_key_and_is_never_logged(ansible_playbook, tmp_path: Path) -> None:
    vault_password = secret(tmp_path / "vault.password", "vault password of this test")
    plain = tmp_path / "secrets.yml"
    plain.write_text(f"security_manager_root_passphrase: {VAULTED}\n")
    encrypted = subprocess.run([str(Path(sys.executable).parent / "ansible-vault"), "encrypt", str(plain),
                                "--vault-password-file", str(vault_password)], capture_output=True, text=True,
                               check=False)
    assert encrypted.returncode == 0, encrypted.stderr
    assert VAULTED not in plain.read_text()
    run = play(ansible_playbook, tmp_path, "-vvv", "--vault-password-file", str(vault_password), "-e", f"@{plain}")
    assert run.returncode == 0, run.stdout + run.stderr
    assert root_key_state(tmp_path / "sm" / "ca") == "encrypted"
    RootAuthority.load(tmp_path / "sm" / "ca", passphrase=VAULTED.encode())
    assert VAULTED not in run.stdout + run.stderr


def test_both_sources_at_once_are_refused(ansible_playbook, tmp_path: Path) -> None:
    source = secret(tmp_path / "root.passphrase", PASSPHRASE)
    run = play(ansible_playbook, tmp_path, "-e", f"security_manager_root_passphrase_file={source}",
               "-e", f"security_manager_root_passphrase={VAULTED}")
    assert run.returncode != 0
    assert "not both" in run.stdout
    assert not (tmp_path / "sm").exists()


def test_plaintext_opt_out_is_explicit_and_loud(ansible_playbook, tmp_path: Path) -> None:
    run = play(ansible_playbook, tmp_path, "-e", "security_manager_root_key_plaintext=true")
    assert run.returncode == 0, run.stdout + run.stderr
    assert root_key_state(tmp_path / "sm" / "ca") == "plaintext"
    assert "[WARNING]: SECURITY: the root private key" in run.stdout + run.stderr
    again = play(ansible_playbook, tmp_path, "-e", "security_manager_root_key_plaintext=true")
    assert recap(again.stdout)["changed"] == 0
    assert "NOT encrypted" in again.stdout + again.stderr  # said on every run, not only the first


# -- the module itself (in-process) ---------------------------------------------------------------------


def test_module_refuses_a_new_instance_without_a_passphrase_source(run_module, tmp_path: Path) -> None:
    for check_mode in (True, False):
        result = run_module("bonseyes_security_manager", {"path": str(tmp_path / "sm")}, check_mode=check_mode)
        assert result.failed
        assert result["check"] == "root-passphrase"
        assert "root_key_plaintext=true" in result["msg"]
    assert not (tmp_path / "sm").exists()


def test_module_reads_a_0600_passphrase_file_on_the_host(run_module, tmp_path: Path) -> None:
    loose = secret(tmp_path / "loose", PASSPHRASE, 0o604)
    sm = str(tmp_path / "sm")
    refused = run_module("bonseyes_security_manager", {"path": sm, "root_passphrase_file": str(loose)})
    assert refused.failed
    assert f"chmod 600 {loose}" in refused["msg"]
    assert not (tmp_path / "sm").exists()
    source = secret(tmp_path / "root.passphrase", PASSPHRASE)
    created = run_module("bonseyes_security_manager", {"path": sm, "root_passphrase_file": str(source)})
    assert created["root_key"] == "encrypted", created
    RootAuthority.load(tmp_path / "sm" / "ca", passphrase=PASSPHRASE.encode())
    assert PASSPHRASE not in str(created)


def test_module_refuses_a_passphrase_together_with_the_plaintext_opt_out(run_module, tmp_path: Path) -> None:
    result = run_module("bonseyes_security_manager", {"path": str(tmp_path / "sm"), "root_passphrase": "x" * 20,
                                                      "root_key_plaintext": True})
    assert result.failed
    assert "contradicts" in result["msg"]
    assert not (tmp_path / "sm").exists()


def test_module_warns_about_a_plaintext_root_and_reports_it_offline(run_module, tmp_path: Path) -> None:
    """(That the warning comes on every run is checked by the playbook test above: in-process runs share
    Ansible's warning list.)"""
    args = {"path": str(tmp_path / "sm"), "root_key_plaintext": True}
    result = run_module("bonseyes_security_manager", args)
    assert result["root_key"] == "plaintext"
    assert any("NOT encrypted" in str(warning) for warning in result["warnings"])
    from bonseyes_py.pki.ca import CertificateAuthority

    CertificateAuthority.load(tmp_path / "sm" / "ca").move_root(tmp_path / "offline")
    assert run_module("bonseyes_security_manager", args)["root_key"] == "absent"
