"""The bonseyes.vp modules at the bar of community.crypto (issue 13): one rule each for client keys, key
modes, drift, revocation, CA bundles, file attributes and the changelog.

Every module call goes through the module's own ``main()``; the ones that talk to the Security Manager
talk to a real one (``sm_service``: gunicorn with mutual TLS on loopback).
"""

from __future__ import annotations

import stat
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bonseyes_py.pki.ca import CertificateAuthority
from bonseyes_py.pki.certs import load_certificate_chain
from bonseyes_py.pki.keys import generate_private_key, read_private_key, write_private_key

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def unique(prefix: str) -> str:
    return f"{prefix}-b{uuid.uuid4().hex[:10]}"


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def key_and_csr(directory: Path, name: str) -> tuple[Path, Path]:
    sys.path.insert(0, str(REPO / "tests" / "sm"))
    from sm_testlib import new_csr

    key, csr = new_csr(generate_private_key())
    directory.mkdir(parents=True, exist_ok=True)
    key_path = Path(write_private_key(directory / f"{name}.key", key))
    csr_path = directory / f"{name}.csr"
    csr_path.write_text(csr)
    return key_path, csr_path


def sysroot(root: Path, machine: str) -> Path:
    (root / "etc").mkdir(parents=True)
    (root / "etc/machine-id").write_text(f"{machine}\n")
    return root


def copied_key(source: str, target: Path, mode: int, passphrase: bytes | None = None) -> Path:
    """A copy of a key file with the given mode, encrypted with ``passphrase`` when one is given."""
    key = read_private_key(source)
    encryption = (serialization.BestAvailableEncryption(passphrase) if passphrase
                  else serialization.NoEncryption())
    target.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
    target.chmod(mode)
    return target


# -- client_key_passphrase ---------------------------------------------------------------------------


def test_encrypted_client_key_works_with_its_passphrase_and_a_wrong_one_fails_in_one_line(
        run_module, sm_admin_args, tmp_path: Path) -> None:
    key = copied_key(sm_admin_args["client_key"], tmp_path / "admin.key", 0o600, b"admin key passphrase")
    _, csr = key_and_csr(tmp_path, "user")
    args = dict(sm_admin_args, client_key=str(key), user_id=unique("pw"), csr_path=str(csr),
                certificate_path=str(tmp_path / "user.pem"))

    good = run_module("bonseyes_user", dict(args, client_key_passphrase="admin key passphrase"), check_mode=True)
    assert good.rc == 0, good
    assert good["changed"] is True
    enrolled = run_module("bonseyes_user", dict(args, client_key_passphrase="admin key passphrase"))
    assert enrolled["changed"] is True, enrolled
    assert (tmp_path / "user.pem").exists()

    for passphrase in ("not the passphrase", None):
        bad = run_module("bonseyes_user", {k: v for k, v in dict(args, client_key_passphrase=passphrase).items()
                                           if v is not None})
        assert bad.failed
        assert bad["check"] == "key-file"
        assert str(key) in bad["msg"]
        assert "client_key_passphrase" in bad["msg"]
        assert "\n" not in bad["msg"]
        assert "admin key passphrase" not in str(bad)


# -- the 0600 rule, in every module that reads or writes a private key --------------------------------


def _client_key_case(name: str, sm_admin_args: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    _, csr = key_and_csr(tmp_path / "csr", "x")
    args = {
        "bonseyes_user": dict(user_id=unique("loose"), csr_path=str(csr), certificate_path=str(tmp_path / "u.pem")),
        "bonseyes_host_enrol": dict(csr_path=str(csr), certificate_path=str(tmp_path / "h.pem"),
                                    sysroot=str(sysroot(tmp_path / "root", unique("m")))),
        "bonseyes_pipeline": dict(state="stopped", pipeline_id="pl-loose"),
        "bonseyes_artefact": dict(name=unique("art"), owner="nobody", image="none",
                                  marketplace_dir=str(tmp_path / "mp"), registry_dir=str(tmp_path / "reg"),
                                  registry_address="127.0.0.1:1",
                                  ca_dir=str(tmp_path / "ca")),
        "bonseyes_revocation": dict(kind="host", id="h-loose", missing_ok=True),
    }[name]
    return dict(sm_admin_args, **args)


@pytest.mark.parametrize("name", ["bonseyes_user", "bonseyes_host_enrol", "bonseyes_pipeline", "bonseyes_artefact",
                                  "bonseyes_revocation"])
def test_a_client_key_readable_by_others_is_refused_before_any_call(run_module, sm_admin_args, tmp_path: Path,
                                                                   name: str) -> None:
    loose = copied_key(sm_admin_args["client_key"], tmp_path / "loose.key", 0o644)
    args = _client_key_case(name, sm_admin_args, tmp_path)
    result = run_module(name, dict(args, client_key=str(loose)))
    assert result.failed
    assert result["check"] == "key-file"
    assert str(loose) in result["msg"]
    assert "client_key" in result["msg"]
    assert "chmod 600" in result["msg"]
    assert not (tmp_path / "u.pem").exists()
    assert not (tmp_path / "h.pem").exists()


def test_ca_refuses_a_root_key_readable_by_others(run_module, tmp_path: Path) -> None:
    CertificateAuthority.init(tmp_path / "ca")
    (tmp_path / "ca/private/root.key").chmod(0o644)
    result = run_module("bonseyes_ca", {"path": str(tmp_path / "ca")})
    assert result.failed
    assert result["check"] == "key-file"
    assert "root.key" in result["msg"]


@pytest.mark.parametrize("key", ["admin/admin.key", "tls/server.key"])
def test_security_manager_refuses_key_files_readable_by_others(run_module, tmp_path: Path, key: str) -> None:
    args = {"path": str(tmp_path / "sm"), "root_key_plaintext": True}
    assert run_module("bonseyes_security_manager", args).rc == 0
    loose = next((tmp_path / "sm").rglob(Path(key).name))
    loose.chmod(0o644)
    for check_mode in (True, False):
        result = run_module("bonseyes_security_manager", args, check_mode=check_mode)
        assert result.failed, result
        assert result["check"] == "key-file"
        assert str(loose) in result["msg"]


def test_registry_credentials_refuse_a_password_file_readable_by_others(run_module, tmp_path: Path) -> None:
    real = run_module("bonseyes_registry_credentials", {"path": str(tmp_path / "registry")})
    Path(real["password_path"]).chmod(0o644)
    result = run_module("bonseyes_registry_credentials", {"path": str(tmp_path / "registry")})
    assert result.failed
    assert result["check"] == "key-file"
    assert real["password_path"] in result["msg"]


# -- drift: converge what can change, refuse naming the field what cannot -----------------------------


def _enrolled_user(run_module, sm_admin_args, tmp_path: Path, **extra: str) -> dict[str, Any]:
    _, csr = key_and_csr(tmp_path, "user")
    args = dict(sm_admin_args, user_id=unique("drift"), csr_path=str(csr), certificate_path=str(tmp_path / "u.pem"),
                organisation="lab", **extra)
    assert run_module("bonseyes_user", args)["changed"] is True
    return args


@pytest.mark.parametrize(("field", "value"), [("role", "admin"), ("organisation", "elsewhere")])
def test_user_known_with_another_role_or_organisation_is_refused_naming_it(run_module, sm_admin_args,
                                                                           tmp_path: Path, field: str,
                                                                           value: str) -> None:
    args = _enrolled_user(run_module, sm_admin_args, tmp_path)
    for check_mode in (True, False):
        result = run_module("bonseyes_user", dict(args, **{field: value}), check_mode=check_mode)
        assert result.failed, result
        assert result["check"] == "user-drift"
        assert field in result["msg"]
        assert value in result["msg"]


def test_user_revoked_at_the_sm_is_refused(run_module, sm_admin_args, tmp_path: Path) -> None:
    args = _enrolled_user(run_module, sm_admin_args, tmp_path)
    revoked = run_module("bonseyes_revocation", dict(sm_admin_args, kind="user", id=args["user_id"]))
    assert revoked["changed"] is True, revoked
    result = run_module("bonseyes_user", args)
    assert result.failed
    assert result["check"] == "revoked"
    assert args["user_id"] in result["msg"]


def test_security_manager_refuses_another_trust_domain_and_reissues_for_new_server_names(run_module,
                                                                                        tmp_path: Path) -> None:
    args = {"path": str(tmp_path / "sm"), "root_key_plaintext": True, "trust_domain": "drift.test"}
    assert run_module("bonseyes_security_manager", args)["changed"] is True
    refused = run_module("bonseyes_security_manager", dict(args, trust_domain="other.test"))
    assert refused.failed
    assert refused["check"] == "sm-mismatch"
    assert "trust_domain" in refused["msg"]
    assert "drift.test" in refused["msg"]

    server = tmp_path / "sm/tls/server.pem"
    before = server.read_bytes()
    moved = dict(args, server_names=["localhost", "sm.drift.test"], server_ips=["127.0.0.1", "192.0.2.7"])
    checked = run_module("bonseyes_security_manager", moved, check_mode=True, diff=True)
    assert checked["changed"] is True
    assert checked["server_certificate_changed"] is True
    assert checked["diff"]["before"]["server_names"] == ["localhost"]
    assert checked["diff"]["after"]["server_ips"] == ["127.0.0.1", "192.0.2.7"]
    assert server.read_bytes() == before
    real = run_module("bonseyes_security_manager", moved)
    assert real["changed"] is True
    leaf = load_certificate_chain(server.read_bytes())[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "sm.drift.test" in san.get_values_for_type(x509.DNSName)
    assert leaf.public_key() == read_private_key(tmp_path / "sm/tls/server.key").public_key()
    for check_mode in (True, False):
        again = run_module("bonseyes_security_manager", moved, check_mode=check_mode)
        assert again["changed"] is False, again


# -- revocation is idempotent ---------------------------------------------------------------------------


def test_revoking_a_host_twice_reports_the_second_unchanged_in_check_mode_too(run_module, sm_world,
                                                                             sm_admin_args) -> None:
    host = sm_world.register_host(sm_world.enrol_user())
    args = dict(sm_admin_args, kind="host", id=host.name, reason="test")
    checked = run_module("bonseyes_revocation", args, check_mode=True, diff=True)
    assert checked["changed"] is True, checked
    assert checked["diff"] == {"before": {"revoked": False}, "after": {"revoked": True}}
    assert sm_world.admin.get(f"/v1/hosts/{host.name}").json()["revoked"] is False
    real = run_module("bonseyes_revocation", args)
    assert real["changed"] is True
    assert real["serials"]
    assert sm_world.admin.get(f"/v1/hosts/{host.name}").json()["revoked"] is True
    for check_mode in (True, False):
        again = run_module("bonseyes_revocation", args, check_mode=check_mode)
        assert again.rc == 0, again
        assert again["changed"] is False
        assert again["revoked"] is True


def test_revoking_an_unknown_host_fails_unless_missing_ok(run_module, sm_admin_args) -> None:
    args = dict(sm_admin_args, kind="host", id=unique("h-unknown"))
    refused = run_module("bonseyes_revocation", args)
    assert refused.failed
    assert refused["check"] == "not-found"
    assert args["id"] in refused["msg"]
    accepted = run_module("bonseyes_revocation", dict(args, missing_ok=True))
    assert accepted["changed"] is False
    assert accepted["found"] is False


# -- a CA bundle without a root ------------------------------------------------------------------------


def test_host_enrol_with_a_ca_bundle_without_root_fails_with_a_message(run_module, sm_admin_args,
                                                                      tmp_path: Path) -> None:
    owner_key, owner_csr = key_and_csr(tmp_path / "owner", "owner")
    owner_cert = tmp_path / "owner/owner.pem"
    enrolled = run_module("bonseyes_user", dict(sm_admin_args, user_id=unique("owner"), csr_path=str(owner_csr),
                                                certificate_path=str(owner_cert)))
    assert enrolled["changed"] is True, enrolled
    _, csr = key_and_csr(tmp_path / "host", "host")
    args = dict(sm_admin_args, client_cert=str(owner_cert), client_key=str(owner_key), csr_path=str(csr),
                certificate_path=str(tmp_path / "host/host.pem"), sysroot=str(sysroot(tmp_path / "root", unique("m"))))
    assert run_module("bonseyes_host_enrol", args)["changed"] is True
    bundle = load_certificate_chain(Path(sm_admin_args["ca_cert"]).read_bytes())
    intermediate_only = tmp_path / "intermediate.pem"
    intermediate_only.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM)
                                           for c in bundle if c.issuer != c.subject))
    result = run_module("bonseyes_host_enrol", dict(args, ca_cert=str(intermediate_only)))
    assert result.failed
    assert result["check"] == "ca-bundle"
    assert "ca_cert" in result["msg"]
    assert "no root" in result["msg"]
    assert "exception" not in result


# -- file attributes, backup and state=absent -------------------------------------------------------------


def host_key_args(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {"path": str(tmp_path / "host/host.key"), "csr_path": str(tmp_path / "host/host.csr"),
            "common_name": "h-0123", **extra}


def test_host_key_applies_mode_and_group_and_predicts_them_in_check_mode(run_module, tmp_path: Path) -> None:
    key, csr = tmp_path / "host/host.key", tmp_path / "host/host.csr"
    run_module("bonseyes_host_key", host_key_args(tmp_path))
    wanted = host_key_args(tmp_path, mode="0400", group="daemon")
    checked = run_module("bonseyes_host_key", wanted, check_mode=True)
    assert checked["changed"] is True
    assert mode_of(key) == 0o600
    assert key.stat().st_gid == 0
    real = run_module("bonseyes_host_key", wanted)
    assert real["changed"] is True
    assert real["key_changed"] is False
    assert mode_of(key) == 0o400
    assert key.stat().st_gid == 1
    assert csr.stat().st_gid == 1
    assert mode_of(csr) == 0o644
    for check_mode in (True, False):
        assert run_module("bonseyes_host_key", wanted, check_mode=check_mode)["changed"] is False


@pytest.mark.parametrize("mode", ["0640", "u=rw,g=r"])
def test_host_key_refuses_a_mode_that_exposes_the_key(run_module, tmp_path: Path, mode: str) -> None:
    for check_mode in (True, False):
        result = run_module("bonseyes_host_key", host_key_args(tmp_path, mode=mode), check_mode=check_mode)
        assert result.failed
        assert result["check"] == "key-file"
        assert mode in result["msg"]
    assert not (tmp_path / "host/host.key").exists()


def test_host_key_backup_keeps_the_replaced_key(run_module, tmp_path: Path) -> None:
    run_module("bonseyes_host_key", host_key_args(tmp_path))
    old = (tmp_path / "host/host.key").read_bytes()
    rotated = run_module("bonseyes_host_key", host_key_args(tmp_path, regenerate="always", backup=True))
    assert rotated["key_changed"] is True
    backup = Path(rotated["backup_file"])
    assert backup.read_bytes() == old
    assert mode_of(backup) == 0o600
    assert Path(rotated["csr_backup_file"]).exists()
    assert (tmp_path / "host/host.key").read_bytes() != old


def test_host_key_state_absent_removes_both_files_and_reports_it_once(run_module, tmp_path: Path) -> None:
    run_module("bonseyes_host_key", host_key_args(tmp_path))
    absent = host_key_args(tmp_path, state="absent")
    checked = run_module("bonseyes_host_key", absent, check_mode=True)
    assert checked["changed"] is True
    assert (tmp_path / "host/host.key").exists()
    removed = run_module("bonseyes_host_key", dict(absent, backup=True))
    assert removed["changed"] is True
    assert not (tmp_path / "host/host.key").exists()
    assert not (tmp_path / "host/host.csr").exists()
    assert Path(removed["backup_file"]).exists()
    for check_mode in (True, False):
        assert run_module("bonseyes_host_key", absent, check_mode=check_mode)["changed"] is False


def test_user_certificate_gets_the_asked_mode(run_module, sm_admin_args, tmp_path: Path) -> None:
    args = _enrolled_user(run_module, sm_admin_args, tmp_path, mode="0640")
    assert mode_of(Path(args["certificate_path"])) == 0o640
    assert run_module("bonseyes_user", args)["changed"] is False


# -- the changelog -----------------------------------------------------------------------------------------


def test_changelog_lists_every_module() -> None:
    changelog = yaml.safe_load((REPO / "changelogs/changelog.yaml").read_text())
    listed = {m["name"] for release in changelog["releases"].values() for m in release.get("modules", [])}
    modules = {p.stem for p in (REPO / "plugins/modules").glob("bonseyes_*.py")}
    assert listed == modules


def test_no_module_uses_the_agents_class_name() -> None:
    for path in (REPO / "plugins").rglob("*.py"):
        text = path.read_text()
        assert "BonseyesModule(" not in text, path
        assert "BonseyesModule," not in text, path


# -- bonseyes_pipeline: one meaning of "running" -----------------------------------------------------------


def test_pipeline_partly_up_is_stopped_by_both_states(run_module, sm_world, sm_service, sm_admin_args,
                                                      tmp_path: Path) -> None:
    """A recorded pipeline of which one stage runs and one is still starting: state=stopped stops it, and
    state=started stops it before starting anew instead of leaving it up beside the new one."""
    import json

    from sm_testlib import check_response
    from sqlalchemy import insert

    from bonseyes_py.sm.db import make_engine
    from bonseyes_py.sm.pipeline_runtime import runtimes_table, stage_port

    user = sm_world.enrol_user()
    host = sm_world.register_host(user)
    premise = sm_world.premise(users=[user.name], hosts=[host.name])["name"]
    artefact = sm_world.artefact(sm_world.marketplace(), user.name)
    sm_world.start_bm(host)
    stages = [{"artefact_id": artefact["artefact_id"], "host_id": host.name}] * 2
    client = sm_service.client(user.cert, user.key)
    answer = client.post("/v1/pipelines", {"premise": premise, "stages": stages})
    pipeline_id = check_response(answer, "POST", "/v1/pipelines", 201)["pipeline_id"]
    # A start in progress, as the SM's own start writes it: stage 0 runs, stage 1 is still starting.
    engine = make_engine(sm_service.config.database_url)
    try:
        with engine.begin() as connection:
            connection.execute(insert(runtimes_table), [
                {"pipeline_id": pipeline_id, "position": position, "host_id": host.name, "status": status,
                 "port": stage_port(pipeline_id, position), "runtime_name": "", "nonce": "", "detail": "",
                 "seconds": 0.0, "timings": "{}", "updated_at": 0.0}
                for position, status in enumerate(("running", "starting"))])
    finally:
        engine.dispose()
    records = tmp_path / "records"
    records.mkdir(mode=0o700)
    record = records / "partial.json"
    record.write_text(json.dumps({"name": "partial", "pipeline_id": pipeline_id, "premise": premise,
                                  "stages": stages}))
    record.chmod(0o600)
    named = dict(sm_admin_args, client_cert=str(user.cert), client_key=str(user.key), name="partial",
                 record_dir=str(records))

    started = run_module("bonseyes_pipeline", dict(named, premise=premise, stages=stages), check_mode=True, diff=True)
    assert started.rc == 0, started
    assert started["changed"] is True
    assert started["diff"]["before"] == {"pipeline_id": pipeline_id, "status": "partial"}
    assert started["replaced"] == pipeline_id

    checked = run_module("bonseyes_pipeline", dict(named, state="stopped"), check_mode=True, diff=True)
    assert checked["changed"] is True
    assert checked["diff"]["before"] == {"pipeline_id": pipeline_id, "status": "partial"}
    stopped = run_module("bonseyes_pipeline", dict(named, state="stopped"))
    assert stopped["changed"] is True, stopped
    assert {s["status"] for s in stopped["stages"]} == {"stopped"}
    for check_mode in (True, False):
        again = run_module("bonseyes_pipeline", dict(named, state="stopped"), check_mode=check_mode)
        assert again["changed"] is False, again


# -- bonseyes_artefact drift --------------------------------------------------------------------------------


def _artefact_args(sm_admin_args: dict[str, Any], tmp_path: Path, name: str, owner: str) -> dict[str, Any]:
    return dict(sm_admin_args, name=name, owner=owner, image="bonseyes/base-python:bookworm",
                marketplace_dir=str(tmp_path / "mp"), registry_dir=str(tmp_path / "registry"),
                registry_address="127.0.0.1:1", ca_dir=str(tmp_path / "ca"))


def test_artefact_image_missing_at_the_sm_is_added_and_other_policies_are_refused(run_module, sm_world,
                                                                                  sm_admin_args,
                                                                                  tmp_path: Path) -> None:
    from test_modules_sm_unit import _seed_catalogue

    from bonseyes_py.mp.catalogue import Catalogue

    user = sm_world.enrol_user()
    name = unique("art")
    sm_world.artefact(sm_world.marketplace(), user.name, name=name)
    (tmp_path / "mp").mkdir()
    rebuilt = "sha256:" + uuid.uuid4().hex * 2  # the catalogue's image is not the one the SM knows
    _seed_catalogue(Catalogue.sqlite(tmp_path / "mp" / "catalogue.db"), name, user.name, rebuilt)
    args = _artefact_args(sm_admin_args, tmp_path, name, user.name)

    def digests() -> list[str]:
        return [i["digest"] for i in sm_world.admin.get(f"/v1/artefacts/{name}").json()["images"]]

    checked = run_module("bonseyes_artefact", args, check_mode=True, diff=True)
    assert checked.rc == 0, checked
    assert checked["changed"] is True
    assert checked["image_added"] is True
    assert rebuilt not in digests()
    real = run_module("bonseyes_artefact", args)
    assert real["changed"] is True, real
    assert real["registered"] is False
    assert rebuilt in digests()
    for check_mode in (True, False):
        again = run_module("bonseyes_artefact", args, check_mode=check_mode)
        assert again["changed"] is False, again

    refused = run_module("bonseyes_artefact", dict(args, policies={"max_runs": 1}))
    assert refused.failed
    assert refused["check"] == "artefact-drift"
    assert "policies" in refused["msg"]


def test_validate_certs_false_skips_only_the_server_check(run_module, sm_admin_args, tmp_path: Path) -> None:
    """Another CA's root fails the TLS check, naming the SM; validate_certs=false still presents the client
    certificate (the SM answers the admin) without checking the server."""
    other = CertificateAuthority.init(tmp_path / "other")
    args = dict(sm_admin_args, ca_cert=str(other.paths.root_cert), kind="host", id=unique("h-none"), missing_ok=True)
    refused = run_module("bonseyes_revocation", args)
    assert refused.failed
    assert refused["check"] == "sm-tls"
    assert sm_admin_args["sm_url"] in refused["msg"]
    accepted = run_module("bonseyes_revocation", dict(args, validate_certs=False))
    assert accepted.rc == 0, accepted
    assert accepted["found"] is False
