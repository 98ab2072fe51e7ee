"""Unit tests of the bonseyes.vp modules, each call through the module's own ``main()``."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from bonseyes_py.identity.hardware import collect_hardware_facts
from bonseyes_py.identity.ids import RuntimeID
from bonseyes_py.licences import LicenceIssuer
from bonseyes_py.pki.ca import CertificateAuthority
from bonseyes_py.pki.certs import fingerprint_sha256, load_csr
from bonseyes_py.pki.csr import public_key_sha256
from bonseyes_py.pki.keys import read_private_key

DIGEST = "sha256:" + "ab" * 32


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- bonseyes_hardware_id ---------------------------------------------------------------------------


def fake_sysroot(root: Path) -> Path:
    (root / "etc").mkdir(parents=True)
    (root / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (root / "proc").mkdir()
    (root / "proc/cpuinfo").write_text("processor\t: 0\nmodel name\t: Test CPU 9000\n")
    nic = root / "sys/class/net/eth0"
    nic.mkdir(parents=True)
    (nic / "device").mkdir()
    (nic / "address").write_text("52:54:00:AA:BB:CC\n")
    gpu = root / "sys/bus/pci/devices/0000:01:00.0"
    gpu.mkdir(parents=True)
    (gpu / "class").write_text("0x030000\n")
    (gpu / "vendor").write_text("0x10de\n")
    (gpu / "device").write_text("0x1eb8\n")
    return root


def test_hardware_id_reports_the_core_id_and_sets_facts(run_module, tmp_path: Path) -> None:
    sysroot = fake_sysroot(tmp_path / "root")
    result = run_module("bonseyes_hardware_id", {"sysroot": str(sysroot)})
    expected = collect_hardware_facts(sysroot)
    assert result.rc == 0
    assert result["changed"] is False
    assert result["hardware_id"] == expected.hardware_id
    assert result["host_name"] == "h-" + expected.hardware_id[3:35]
    assert result["facts"]["nic_macs"] == ["52:54:00:aa:bb:cc"]
    assert result["facts"]["gpus"] == ["10de:1eb8"]
    assert result["facts"]["gpu_count"] == 1
    assert result["ansible_facts"]["bonseyes_hardware"]["hardware_id"] == expected.hardware_id


def test_hardware_id_is_the_same_in_check_mode(run_module, tmp_path: Path) -> None:
    sysroot = fake_sysroot(tmp_path / "root")
    real = run_module("bonseyes_hardware_id", {"sysroot": str(sysroot)})
    checked = run_module("bonseyes_hardware_id", {"sysroot": str(sysroot)}, check_mode=True)
    assert checked["hardware_id"] == real["hardware_id"]
    assert checked["changed"] is False


def test_hardware_id_refuses_a_missing_sysroot(run_module, tmp_path: Path) -> None:
    result = run_module("bonseyes_hardware_id", {"sysroot": str(tmp_path / "nowhere")})
    assert result.failed
    assert result["check"] == "input"
    assert str(tmp_path / "nowhere") in result["msg"]


# -- bonseyes_ca ------------------------------------------------------------------------------------


def test_ca_is_created_once_and_then_only_reported(run_module, tmp_path: Path) -> None:
    path = tmp_path / "ca"
    created = run_module("bonseyes_ca", {"path": str(path), "trust_domain": "lab.example.org"})
    assert created.rc == 0
    assert created["changed"] is True
    assert created["created"] is True
    authority = CertificateAuthority.load(path)
    assert created["root_fingerprint"] == fingerprint_sha256(authority.root)
    assert created["root_cert"] == str(path / "root.pem")
    for key in ("root.key", "intermediate.key", "signer.key"):
        assert mode_of(path / "private" / key) == 0o600
    root_before = (path / "root.pem").read_bytes()

    again = run_module("bonseyes_ca", {"path": str(path), "trust_domain": "lab.example.org"})
    assert again["changed"] is False
    assert again["created"] is False
    assert again["root_fingerprint"] == created["root_fingerprint"]
    assert (path / "root.pem").read_bytes() == root_before


def test_ca_check_mode_writes_nothing_and_shows_a_diff(run_module, tmp_path: Path) -> None:
    path = tmp_path / "ca"
    result = run_module("bonseyes_ca", {"path": str(path)}, check_mode=True, diff=True)
    assert result["changed"] is True
    assert result["root_fingerprint"] is None
    assert result["diff"] == {"before": {"state": "absent"},
                              "after": {"state": "present", "trust_domain": "bonseyes.local", "algorithm": "ec-p256"}}
    assert not path.exists()


@pytest.mark.parametrize(("option", "value"), [("trust_domain", "other.example.org"), ("algorithm", "ed25519")])
def test_ca_never_regenerates_an_existing_ca_that_differs(run_module, tmp_path: Path, option: str, value: str) -> None:
    path = tmp_path / "ca"
    CertificateAuthority.init(path)
    root_before = (path / "root.pem").read_bytes()
    result = run_module("bonseyes_ca", {"path": str(path), option: value})
    assert result.failed
    assert result["check"] == "ca-mismatch"
    assert option in result["msg"]
    assert value in result["msg"]
    assert "never regenerated" in result["msg"]
    assert (path / "root.pem").read_bytes() == root_before


def test_ca_refuses_a_partial_ca(run_module, tmp_path: Path) -> None:
    path = tmp_path / "ca"
    CertificateAuthority.init(path)
    (path / "ca.json").unlink()
    result = run_module("bonseyes_ca", {"path": str(path)})
    assert result.failed
    assert result["check"] == "ca-incomplete"
    assert str(path) in result["msg"]


def test_ca_root_passphrase_encrypts_the_root_key_and_is_never_echoed(run_module, tmp_path: Path) -> None:
    path = tmp_path / "ca"
    secret = "correct horse battery staple"
    result = run_module("bonseyes_ca", {"path": str(path), "root_passphrase": secret})
    assert result["changed"] is True
    assert secret not in json.dumps(result)
    assert b"ENCRYPTED" in (path / "private/root.key").read_bytes()
    assert read_private_key(path / "private/root.key", secret.encode())


def test_ca_with_a_loose_key_mode_fails_naming_the_file(run_module, tmp_path: Path) -> None:
    path = tmp_path / "ca"
    CertificateAuthority.init(path)
    (path / "private/intermediate.key").chmod(0o644)
    result = run_module("bonseyes_ca", {"path": str(path)})
    assert result.failed
    assert result["check"] == "key-file"
    assert "intermediate.key" in result["msg"]


# -- bonseyes_host_key ------------------------------------------------------------------------------


def host_key_args(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"path": str(tmp_path / "host/host.key"), "csr_path": str(tmp_path / "host/host.csr"),
            "common_name": "h-0123", **extra}


def test_host_key_creates_a_private_key_and_a_matching_csr(run_module, tmp_path: Path) -> None:
    result = run_module("bonseyes_host_key", host_key_args(tmp_path))
    assert result.rc == 0
    assert result["changed"]
    assert result["key_changed"]
    assert result["csr_changed"]
    key_path, csr_path = tmp_path / "host/host.key", tmp_path / "host/host.csr"
    assert mode_of(key_path) == 0o600
    assert mode_of(csr_path) == 0o644
    assert mode_of(key_path.parent) == 0o700
    key = read_private_key(key_path)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    csr = load_csr(csr_path.read_bytes())
    assert public_key_sha256(csr.public_key()) == public_key_sha256(key.public_key()) == result["public_key_sha256"]
    assert result["csr"] == csr_path.read_text()
    assert "PRIVATE KEY" not in json.dumps(result)


def test_host_key_second_run_changes_nothing(run_module, tmp_path: Path) -> None:
    first = run_module("bonseyes_host_key", host_key_args(tmp_path))
    key_bytes = (tmp_path / "host/host.key").read_bytes()
    second = run_module("bonseyes_host_key", host_key_args(tmp_path))
    assert second["changed"] is False
    assert second["key_changed"] is False
    assert second["csr_changed"] is False
    assert second["csr"] == first["csr"]
    assert (tmp_path / "host/host.key").read_bytes() == key_bytes


def test_host_key_check_mode_writes_nothing(run_module, tmp_path: Path) -> None:
    result = run_module("bonseyes_host_key", host_key_args(tmp_path), check_mode=True, diff=True)
    assert result["changed"] is True
    assert result["csr"] is None
    assert result["public_key_sha256"] is None
    assert result["diff"]["before"] == {"key": "absent", "csr": "absent"}
    assert not (tmp_path / "host").exists()


def test_host_key_new_label_rewrites_only_the_csr(run_module, tmp_path: Path) -> None:
    run_module("bonseyes_host_key", host_key_args(tmp_path))
    key_bytes = (tmp_path / "host/host.key").read_bytes()
    checked = run_module("bonseyes_host_key", host_key_args(tmp_path, common_name="h-4567"), check_mode=True)
    assert checked["key_changed"] is False
    assert checked["csr_changed"] is True
    result = run_module("bonseyes_host_key", host_key_args(tmp_path, common_name="h-4567"))
    assert result["key_changed"] is False
    assert result["csr_changed"] is True
    assert (tmp_path / "host/host.key").read_bytes() == key_bytes
    assert "h-4567" in str(load_csr((tmp_path / "host/host.csr").read_bytes()).subject)


def test_host_key_replaces_a_forged_csr(run_module, tmp_path: Path) -> None:
    run_module("bonseyes_host_key", host_key_args(tmp_path))
    forged = "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
    (tmp_path / "host/host.csr").write_text(forged)
    result = run_module("bonseyes_host_key", host_key_args(tmp_path))
    assert result["csr_changed"] is True
    assert result["key_changed"] is False
    assert load_csr((tmp_path / "host/host.csr").read_bytes())


def test_host_key_regenerate_always_makes_a_new_key(run_module, tmp_path: Path) -> None:
    first = run_module("bonseyes_host_key", host_key_args(tmp_path))
    again = run_module("bonseyes_host_key", host_key_args(tmp_path, regenerate="always"))
    assert again["key_changed"] is True
    assert again["public_key_sha256"] != first["public_key_sha256"]
    assert mode_of(tmp_path / "host/host.key") == 0o600


def test_host_key_algorithm_mismatch_fails_unless_never(run_module, tmp_path: Path) -> None:
    run_module("bonseyes_host_key", host_key_args(tmp_path))
    key_bytes = (tmp_path / "host/host.key").read_bytes()
    refused = run_module("bonseyes_host_key", host_key_args(tmp_path, algorithm="ed25519"))
    assert refused.failed
    assert refused["check"] == "key-algorithm"
    assert "regenerate=always" in refused["msg"]
    assert str(tmp_path / "host/host.key") in refused["msg"]
    kept = run_module("bonseyes_host_key", host_key_args(tmp_path, algorithm="ed25519", regenerate="never"))
    assert kept["changed"] is False
    assert kept["algorithm"] == "ec-p256"
    assert (tmp_path / "host/host.key").read_bytes() == key_bytes
    replaced = run_module("bonseyes_host_key", host_key_args(tmp_path, algorithm="ed25519", regenerate="always"))
    assert replaced["key_changed"] is True
    assert isinstance(read_private_key(tmp_path / "host/host.key"), ed25519.Ed25519PrivateKey)


def test_host_key_refuses_a_key_readable_by_others(run_module, tmp_path: Path) -> None:
    run_module("bonseyes_host_key", host_key_args(tmp_path))
    (tmp_path / "host/host.key").chmod(0o644)
    result = run_module("bonseyes_host_key", host_key_args(tmp_path))
    assert result.failed
    assert result["check"] == "key-file"
    assert "chmod 600" in result["msg"]


def test_host_key_refuses_the_same_path_for_key_and_csr(run_module, tmp_path: Path) -> None:
    result = run_module("bonseyes_host_key", {"path": str(tmp_path / "k"), "csr_path": str(tmp_path / "k")})
    assert result.failed
    assert result["check"] == "input"
    assert "overwrite the key" in result["msg"]
    assert not (tmp_path / "k").exists()


# -- bonseyes_licence_info --------------------------------------------------------------------------


@pytest.fixture
def licence_setup(tmp_path: Path) -> dict[str, object]:
    authority = CertificateAuthority.init(tmp_path / "ca")
    runtime = RuntimeID(image_digest=DIGEST, artefact_id="face-detector", user_id="alice", host_id="h-0123",
                        nonce="n0nce-0123456789abcdef", host_ip="127.0.0.1")
    licence = LicenceIssuer(authority).issue_host_licence(runtime)
    path = tmp_path / "licence.jwt"
    path.write_text(licence.token + "\n")
    return {"path": path, "root": authority.paths.root_cert, "claims": licence.claims, "token": licence.token}


def test_licence_info_returns_the_verified_claims(run_module, licence_setup: dict) -> None:
    result = run_module("bonseyes_licence_info", {
        "path": str(licence_setup["path"]), "root_cert": str(licence_setup["root"]),
        "expect": {"host_id": "h-0123", "host_ip": "127.0.0.1", "image_digest": DIGEST, "artefact_id": "face-detector",
                   "user_id": "alice", "nonce": "n0nce-0123456789abcdef"}})
    assert result.rc == 0
    assert result["changed"] is False
    assert result["claims"] == licence_setup["claims"]
    assert result["runtime"]["user_id"] == "alice"
    assert result["licence_id"] == licence_setup["claims"]["jti"]
    assert result["kind"] == "host"
    assert result["expires_at"].endswith("+00:00")


@pytest.mark.parametrize(("expect", "check"), [
    ({"host_id": "h-9999"}, "host-id"),
    ({"host_ip": "127.0.0.2"}, "host-ip"),
    ({"image_digest": "sha256:" + "cd" * 32}, "image-digest"),
    ({"artefact_id": "other"}, "artefact-id"),
    ({"user_id": "mallory"}, "user-id"),
])
def test_licence_info_fails_on_a_binding_mismatch(run_module, licence_setup: dict, expect: dict, check: str) -> None:
    result = run_module("bonseyes_licence_info", {"path": str(licence_setup["path"]),
                                                  "root_cert": str(licence_setup["root"]), "expect": expect})
    assert result.failed
    assert result["check"] == check
    assert result["msg"].startswith(f"{check}: ")
    assert "claims" not in result


def test_licence_info_refuses_a_tampered_signature(run_module, licence_setup: dict, tmp_path: Path) -> None:
    header, payload, signature = licence_setup["token"].split(".")
    middle = len(signature) // 2
    changed = "B" if signature[middle] == "A" else "A"
    tampered = tmp_path / "tampered.jwt"
    tampered.write_text(f"{header}.{payload}.{signature[:middle]}{changed}{signature[middle + 1:]}")
    result = run_module("bonseyes_licence_info", {"path": str(tampered), "root_cert": str(licence_setup["root"])})
    assert result.failed
    assert result["check"] == "signature"
    assert result["msg"] == "signature: signature does not verify"


def test_licence_info_refuses_a_licence_from_another_root(run_module, licence_setup: dict, tmp_path: Path) -> None:
    other = CertificateAuthority.init(tmp_path / "other-ca")
    result = run_module("bonseyes_licence_info", {"path": str(licence_setup["path"]),
                                                  "root_cert": str(other.paths.root_cert)})
    assert result.failed
    assert result["check"].startswith("signer-")


def test_licence_info_refuses_a_host_licence_as_artefact_licence(run_module, licence_setup: dict) -> None:
    result = run_module("bonseyes_licence_info", {"path": str(licence_setup["path"]),
                                                  "root_cert": str(licence_setup["root"]), "kind": "artefact"})
    assert result.failed
    assert result["check"] == "type"


def test_licence_info_names_a_missing_file(run_module, licence_setup: dict, tmp_path: Path) -> None:
    result = run_module("bonseyes_licence_info", {"path": str(tmp_path / "absent.jwt"),
                                                  "root_cert": str(licence_setup["root"])})
    assert result.failed
    assert result["check"] == "os"
    assert str(tmp_path / "absent.jwt") in result["msg"]


# -- the base class ---------------------------------------------------------------------------------


def test_missing_bonseyes_py_is_reported_as_a_missing_library(run_module, monkeypatch: pytest.MonkeyPatch,
                                                              collections_root: Path) -> None:
    import ansible_collections.bonseyes.vp.plugins.module_utils.bonseyes_module as base

    monkeypatch.setattr(base, "HAS_BONSEYES_PY", False)
    monkeypatch.setattr(base, "BONSEYES_PY_IMPORT_ERROR", "ModuleNotFoundError: No module named 'bonseyes_py'")
    result = run_module("bonseyes_hardware_id", {})
    assert result.failed
    assert "bonseyes_py" in result["msg"]
    assert "Failed to import the required Python library" \
        in result["msg"]


def test_sm_connection_options_are_added_only_when_asked(collections_root: Path) -> None:
    import ansible_collections.bonseyes.vp.plugins.module_utils.bonseyes_module as base

    spec = base.sm_connection_argument_spec()
    assert set(spec) == {"sm_url", "client_cert", "client_key", "client_key_passphrase", "ca_cert",
                         "validate_certs", "timeout"}
    assert spec["client_key_passphrase"]["no_log"] is True
    assert base.BonseyesAnsibleModule.sm_connection is False
