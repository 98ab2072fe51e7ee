"""Unit tests of the six newer bonseyes.vp modules, each call through the module's own ``main()``.

The modules that talk to the Security Manager talk to a real one (``sm_service``: init_sm + gunicorn with
mTLS on loopback, the SM tests' own launcher). Every test checks what the task reports (``changed``,
failure ``check`` and a message naming the option, path or host at fault) against what really happened
on disk and at the SM.
"""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from bonseyes_py.identity.hardware import collect_hardware_facts, host_name_for
from bonseyes_py.pki.certs import load_certificate_chain, load_csr
from bonseyes_py.pki.keys import generate_private_key, write_private_key
from bonseyes_py.pki.roles import identity_of

pytestmark = pytest.mark.integration
_serial = iter(range(1, 1_000_000))


def unique(prefix: str) -> str:
    return f"{prefix}-u{next(_serial)}"


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def sysroot(root: Path, machine: str) -> Path:
    """A minimal fake machine: its hardware ID follows ``machine``."""
    (root / "etc").mkdir(parents=True)
    (root / "etc/machine-id").write_text(f"{machine}\n")
    (root / "proc").mkdir()
    (root / "proc/cpuinfo").write_text("processor\t: 0\nmodel name\t: Test CPU 9000\n")
    nic = root / "sys/class/net/eth0"
    nic.mkdir(parents=True)
    (nic / "device").mkdir()
    (nic / "address").write_text("52:54:00:aa:bb:cc\n")
    return root


def key_and_csr(directory: Path, name: str) -> tuple[Path, Path]:
    """A private key (0600) and its CSR, the way community.crypto would leave them on the host."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sm"))
    from sm_testlib import new_csr

    key, csr = new_csr(generate_private_key())
    directory.mkdir(parents=True, exist_ok=True)
    key_path = write_private_key(directory / f"{name}.key", key)
    csr_path = directory / f"{name}.csr"
    csr_path.write_text(csr)
    return Path(key_path), csr_path


def unreachable(args: dict[str, Any]) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sm"))
    from sm_testlib import free_port

    return dict(args, sm_url=f"https://127.0.0.1:{free_port()}", timeout=3)


# -- bonseyes_security_manager ----------------------------------------------------------------------


def test_security_manager_check_then_real_then_nothing_changes(run_module, tmp_path: Path) -> None:
    path = tmp_path / "sm"
    args = {"path": str(path), "trust_domain": "unit.test", "root_passphrase": "unit test root passphrase"}
    checked = run_module("bonseyes_security_manager", args, check_mode=True, diff=True)
    assert checked.rc == 0, checked
    assert checked["changed"] is True
    assert checked["created"] is True
    assert checked["diff"]["before"] == {"state": "absent"}
    assert not (path / "sm.json").exists()

    real = run_module("bonseyes_security_manager", args)
    assert real["changed"] is True
    assert real["created"] is True
    assert (path / "sm.json").exists()
    chain = load_certificate_chain(Path(real["admin_cert"]).read_bytes())
    assert len(chain) == 2
    assert identity_of(chain[0]).uri.startswith("spiffe://unit.test/admin/")
    assert mode_of(Path(real["admin_key"])) == 0o600
    assert len(real["root_sha256"]) == 64

    for check_mode in (True, False):
        again = run_module("bonseyes_security_manager", args, check_mode=check_mode)
        assert again["changed"] is False, again
        assert again["root_sha256"] == real["root_sha256"]

    # A lost admin chain file is the only thing an existing instance gets back; the CA stays.
    Path(real["admin_cert"]).unlink()
    checked = run_module("bonseyes_security_manager", args, check_mode=True)
    assert checked["changed"] is True
    assert checked["created"] is False
    assert not Path(real["admin_cert"]).exists()
    restored = run_module("bonseyes_security_manager", args)
    assert restored["changed"] is True
    assert restored["created"] is False
    assert restored["root_sha256"] == real["root_sha256"]
    assert Path(real["admin_cert"]).exists()


@pytest.mark.parametrize(("args", "named"), [
    ({}, "path"),
    ({"path": "/tmp/x", "algorithm": "dsa"}, "algorithm"),
    ({"path": "/tmp/x", "server_names": "a", "bogus": 1}, "bogus"),
], ids=["path-missing", "algorithm-bad", "unknown-option"])
def test_security_manager_bad_arguments_name_the_option(run_module, args: dict[str, Any], named: str) -> None:
    result = run_module("bonseyes_security_manager", args)
    assert result.failed
    assert named in result["msg"]


def test_security_manager_refuses_an_unwritable_path(run_module, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = run_module("bonseyes_security_manager", {"path": str(blocker / "sm"), "root_key_plaintext": True})
    assert result.failed
    assert str(blocker) in result["msg"]


# -- bonseyes_registry_credentials ------------------------------------------------------------------


def test_registry_credentials_made_once_then_kept(run_module, tmp_path: Path) -> None:
    path = tmp_path / "registry"
    checked = run_module("bonseyes_registry_credentials", {"path": str(path)}, check_mode=True)
    assert checked["changed"] is True
    assert not path.exists()

    real = run_module("bonseyes_registry_credentials", {"path": str(path)})
    assert real["changed"] is True
    password_file = Path(real["password_path"])
    htpasswd = Path(real["htpasswd"])
    password = password_file.read_text()
    assert mode_of(password_file) == 0o600
    assert mode_of(htpasswd) == 0o600
    assert mode_of(password_file.parent) == 0o700
    user, hashed = htpasswd.read_text().strip().split(":", 1)
    assert user == "marketplace"
    assert bcrypt.checkpw(password.encode(), hashed.encode())
    assert password not in json.dumps(real)

    for check_mode in (True, False):
        again = run_module("bonseyes_registry_credentials", {"path": str(path)}, check_mode=check_mode)
        assert again["changed"] is False
    assert password_file.read_text() == password


def test_registry_credentials_rewrite_only_a_stale_htpasswd(run_module, tmp_path: Path) -> None:
    path = tmp_path / "registry"
    real = run_module("bonseyes_registry_credentials", {"path": str(path)})
    password = Path(real["password_path"]).read_text()
    htpasswd = Path(real["htpasswd"])
    stale = "marketplace:" + bcrypt.hashpw(b"not-the-password", bcrypt.gensalt(rounds=4)).decode() + "\n"
    htpasswd.write_text(stale)

    checked = run_module("bonseyes_registry_credentials", {"path": str(path)}, check_mode=True)
    assert checked["changed"] is True
    assert htpasswd.read_text() == stale

    fixed = run_module("bonseyes_registry_credentials", {"path": str(path)})
    assert fixed["changed"] is True
    assert Path(real["password_path"]).read_text() == password
    assert bcrypt.checkpw(password.encode(), htpasswd.read_text().strip().split(":", 1)[1].encode())

    renamed = run_module("bonseyes_registry_credentials", {"path": str(path), "username": "pusher"})
    assert renamed["changed"] is True
    assert htpasswd.read_text().startswith("pusher:")


def test_registry_credentials_missing_path_names_it(run_module) -> None:
    result = run_module("bonseyes_registry_credentials", {"username": "x"})
    assert result.failed
    assert "path" in result["msg"]


# -- bonseyes_user ----------------------------------------------------------------------------------


def admin_get(sm_service: Any, path: str) -> int:
    return int(sm_service.admin().get(path).status_code)


def test_user_check_then_real_then_nothing_changes(run_module, sm_service, sm_admin_args, tmp_path: Path) -> None:
    user_id = unique("alice")
    _key, csr = key_and_csr(tmp_path, "user")
    cert = tmp_path / "out" / "user.pem"
    args = dict(sm_admin_args, user_id=user_id, csr_path=str(csr), certificate_path=str(cert), organisation="lab")

    checked = run_module("bonseyes_user", args, check_mode=True, diff=True)
    assert checked.rc == 0, checked
    assert checked["changed"] is True
    assert checked["diff"] == {"before": {"user": "absent"},
                               "after": {"user": "present", "role": "user", "organisation": "lab"}}
    assert not cert.exists()
    assert admin_get(sm_service, f"/v1/users/{user_id}") == 404

    real = run_module("bonseyes_user", args)
    assert real["changed"] is True
    assert real["uri"].endswith(f"/user/{user_id}")
    chain = load_certificate_chain(cert.read_bytes())
    assert len(chain) == 2
    assert chain[0].public_key() == load_csr(csr.read_bytes()).public_key()
    assert admin_get(sm_service, f"/v1/users/{user_id}") == 200

    for check_mode in (True, False):
        again = run_module("bonseyes_user", args, check_mode=check_mode)
        assert again["changed"] is False, again
        assert again["uri"] == real["uri"]


def test_user_known_at_the_sm_without_local_certificate_is_refused(run_module, sm_admin_args, tmp_path: Path) -> None:
    user_id = unique("bob")
    _, csr = key_and_csr(tmp_path, "user")
    args = dict(sm_admin_args, user_id=user_id, csr_path=str(csr), certificate_path=str(tmp_path / "user.pem"))
    assert run_module("bonseyes_user", args)["changed"] is True
    (tmp_path / "user.pem").unlink()
    for check_mode in (True, False):
        result = run_module("bonseyes_user", args, check_mode=check_mode)
        assert result.failed
        assert result["check"] == "user-exists"
        assert user_id in result["msg"]
        assert str(tmp_path / "user.pem") in result["msg"]
    assert not (tmp_path / "user.pem").exists()


def test_user_unreachable_sm_fails_naming_it_and_writes_nothing(run_module, sm_admin_args, tmp_path: Path) -> None:
    _, csr = key_and_csr(tmp_path, "user")
    args = unreachable(dict(sm_admin_args, user_id=unique("carol"), csr_path=str(csr),
                            certificate_path=str(tmp_path / "out/user.pem")))
    result = run_module("bonseyes_user", args)
    assert result.failed
    assert result["check"] == "sm-unreachable"
    assert args["sm_url"] in result["msg"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("change", "check", "named"), [
    ({"sm_url": "http://127.0.0.1:1"}, "input", "sm_url"),
    ({"csr_path": "/nonexistent/user.csr"}, "os", "/nonexistent/user.csr"),
    ({"role": "root"}, None, "role"),
    ({"user_id": None}, None, "user_id"),
], ids=["plain-http", "csr-missing", "role-bad", "user-id-missing"])
def test_user_bad_input_names_the_option(run_module, sm_admin_args, tmp_path: Path, change: dict[str, Any],
                                         check: str | None, named: str) -> None:
    _, csr = key_and_csr(tmp_path, "user")
    args = dict(sm_admin_args, user_id=unique("dave"), csr_path=str(csr), certificate_path=str(tmp_path / "u.pem"))
    args.update(change)
    args = {k: v for k, v in args.items() if v is not None}
    result = run_module("bonseyes_user", args)
    assert result.failed
    if check is not None:
        assert result["check"] == check
    assert named in result["msg"]


# -- bonseyes_host_enrol ----------------------------------------------------------------------------


@pytest.fixture
def owner(run_module, sm_admin_args, tmp_path: Path) -> dict[str, str]:
    """An owner enrolled through bonseyes_user (certificate + intermediate, as host_enrol needs)."""
    key, csr = key_and_csr(tmp_path / "owner", "owner")
    cert = tmp_path / "owner" / "owner.pem"
    user_id = unique("owner")
    result = run_module("bonseyes_user", dict(sm_admin_args, user_id=user_id, csr_path=str(csr),
                                              certificate_path=str(cert)))
    assert result["changed"] is True, result
    return {"user_id": user_id, "client_cert": str(cert), "client_key": str(key)}


def host_args(sm_admin_args: dict[str, Any], owner: dict[str, str], directory: Path, machine: str) -> dict[str, Any]:
    _, csr = key_and_csr(directory, "host")
    return dict(sm_admin_args, client_cert=owner["client_cert"], client_key=owner["client_key"], csr_path=str(csr),
                certificate_path=str(directory / "tls/host.pem"),
                sysroot=str(sysroot(directory / "root", machine)))


def test_host_enrol_check_then_real_then_nothing_changes(run_module, sm_service, sm_admin_args, owner,
                                                        tmp_path: Path) -> None:
    args = host_args(sm_admin_args, owner, tmp_path / "host", unique("machine"))
    expected = host_name_for(collect_hardware_facts(args["sysroot"]).hardware_id)
    cert = Path(args["certificate_path"])

    checked = run_module("bonseyes_host_enrol", args, check_mode=True, diff=True)
    assert checked.rc == 0, checked
    assert checked["changed"] is True
    assert checked["host_id"] == expected
    assert checked["diff"]["before"]["host"] == "absent"
    assert not cert.exists()
    assert admin_get(sm_service, f"/v1/hosts/{expected}") == 404

    real = run_module("bonseyes_host_enrol", args)
    assert real["changed"] is True, real
    assert real["host_id"] == expected
    leaf = load_certificate_chain(cert.read_bytes())[0]
    assert identity_of(leaf).name == expected
    assert leaf.public_key() == load_csr(Path(args["csr_path"]).read_bytes()).public_key()
    assert admin_get(sm_service, f"/v1/hosts/{expected}") == 200

    for check_mode in (True, False):
        again = run_module("bonseyes_host_enrol", args, check_mode=check_mode)
        assert again["changed"] is False, again
        assert again["host_id"] == expected


def test_host_enrol_refuses_changed_hardware_as_the_old_host(run_module, sm_admin_args, owner,
                                                            tmp_path: Path) -> None:
    args = host_args(sm_admin_args, owner, tmp_path / "host", unique("machine"))
    first = run_module("bonseyes_host_enrol", args)
    assert first["changed"] is True, first
    cert = Path(args["certificate_path"])
    issued = cert.read_bytes()

    # The machine gets new hardware (another machine-id): same key, same certificate, other hardware ID.
    args["sysroot"] = str(sysroot(tmp_path / "changed", unique("machine")))
    new_name = host_name_for(collect_hardware_facts(args["sysroot"]).hardware_id)
    for check_mode in (True, False):
        refused = run_module("bonseyes_host_enrol", args, check_mode=check_mode)
        assert refused.failed, refused
        assert refused["check"] == "hardware-changed"
        assert first["host_id"] in refused["msg"]
        assert cert.read_bytes() == issued

    replaced = run_module("bonseyes_host_enrol", dict(args, replace_identity=True), check_mode=True)
    assert replaced["changed"] is True
    assert replaced["host_id"] == new_name
    assert cert.read_bytes() == issued


def test_host_enrol_unreachable_sm_leaves_the_host_as_it_was(run_module, sm_admin_args, owner,
                                                            tmp_path: Path) -> None:
    args = unreachable(host_args(sm_admin_args, owner, tmp_path / "host", unique("machine")))
    result = run_module("bonseyes_host_enrol", args)
    assert result.failed
    assert result["check"] == "sm-unreachable"
    assert args["sm_url"] in result["msg"]
    assert not (tmp_path / "host/tls").exists()


def test_host_enrol_unknown_premise_is_refused_by_the_sm(run_module, sm_admin_args, owner, tmp_path: Path) -> None:
    args = host_args(sm_admin_args, owner, tmp_path / "host", unique("machine"))
    premise = unique("nowhere")
    result = run_module("bonseyes_host_enrol", dict(args, premises=[premise]))
    assert result.failed, result
    assert "/v1/hosts" in result["msg"]
    assert not Path(args["certificate_path"]).exists()


def test_host_enrol_missing_csr_path_names_it(run_module, sm_admin_args) -> None:
    result = run_module("bonseyes_host_enrol", dict(sm_admin_args, certificate_path="/tmp/h.pem"))
    assert result.failed
    assert "csr_path" in result["msg"]


# -- bonseyes_artefact ------------------------------------------------------------------------------


def artefact_args(sm_admin_args: dict[str, Any], tmp_path: Path, name: str, owner: str) -> dict[str, Any]:
    return dict(sm_admin_args, name=name, owner=owner, image="bonseyes/base-python:bookworm",
                marketplace_dir=str(tmp_path / "mp"), registry_dir=str(tmp_path / "registry"),
                registry_address="127.0.0.1:1", ca_dir=str(tmp_path / "ca"))


def test_artefact_check_mode_predicts_both_records_and_writes_nothing(run_module, sm_world, sm_admin_args,
                                                                     tmp_path: Path) -> None:
    user = sm_world.enrol_user()
    args = artefact_args(sm_admin_args, tmp_path, unique("art"), user.name)
    result = run_module("bonseyes_artefact", args, check_mode=True, diff=True)
    assert result.rc == 0, result
    assert result["changed"] is True
    assert result["registered"] is True
    assert result["recorded"] is True
    assert result["diff"]["before"] == {"catalogue": "absent", "sm": "absent"}
    assert not (tmp_path / "mp").exists()


def test_artefact_recorded_for_another_owner_is_refused(run_module, sm_world, sm_admin_args, tmp_path: Path) -> None:
    holder, other = sm_world.enrol_user(), sm_world.enrol_user()
    name = unique("art")
    sm_world.artefact(sm_world.marketplace(), holder.name, name=name)
    for check_mode in (True, False):
        result = run_module("bonseyes_artefact", artefact_args(sm_admin_args, tmp_path, name, other.name),
                            check_mode=check_mode)
        assert result.failed
        assert result["check"] == "artefact-owner"
        assert name in result["msg"]
        assert holder.name in result["msg"]
        assert other.name in result["msg"]
    assert not (tmp_path / "mp").exists()


def test_artefact_known_everywhere_is_left_alone(run_module, sm_world, sm_admin_args, tmp_path: Path) -> None:
    """Catalogue and SM both hold it: nothing to do, even with an unreachable registry."""
    from bonseyes_py.mp.catalogue import Catalogue

    user = sm_world.enrol_user()
    name = unique("art")
    recorded = sm_world.artefact(sm_world.marketplace(), user.name, name=name)
    (tmp_path / "mp").mkdir()
    catalogue = Catalogue.sqlite(tmp_path / "mp" / "catalogue.db")
    _seed_catalogue(catalogue, name, user.name, recorded["images"][0]["digest"])
    result = run_module("bonseyes_artefact", artefact_args(sm_admin_args, tmp_path, name, user.name))
    assert result.rc == 0, result
    assert result["changed"] is False
    assert result["artefact"]["digest"] == recorded["images"][0]["digest"]


def _seed_catalogue(catalogue: Any, name: str, owner: str, digest: str) -> None:
    """A catalogue row as the MP pipeline would have left it (the image itself is not needed here)."""
    import datetime as dt

    from bonseyes_py.mp.catalogue import Artefact

    catalogue.add(Artefact(name=name, owner=owner, artefact_id="signed-artefact-id", image_id="signed-image-id",
                           digest=digest, repository=name, registry="127.0.0.1:1", policies={}, original={},
                           size=1, created_at=dt.datetime.now(dt.UTC)))


def test_artefact_missing_registry_address_names_it(run_module, sm_admin_args, tmp_path: Path) -> None:
    args = artefact_args(sm_admin_args, tmp_path, "x", "y")
    del args["registry_address"]
    result = run_module("bonseyes_artefact", args)
    assert result.failed
    assert "registry_address" in result["msg"]


# -- bonseyes_pipeline ------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "named"), [
    ({}, "premise"),
    ({"premise": "p", "stages": [{"artefact_id": "a"}]}, "host_id"),
    ({"state": "stopped"}, "pipeline_id"),
    ({"state": "running", "pipeline_id": "x"}, "state"),
], ids=["started-without-premise", "stage-without-host", "stopped-without-id", "state-bad"])
def test_pipeline_bad_arguments_name_the_option(run_module, sm_admin_args, args: dict[str, Any], named: str) -> None:
    result = run_module("bonseyes_pipeline", dict(sm_admin_args, **args))
    assert result.failed
    assert named in result["msg"]


def test_pipeline_check_mode_starts_nothing(run_module, sm_admin_args) -> None:
    result = run_module("bonseyes_pipeline", dict(sm_admin_args, premise="p", stages=[
        {"artefact_id": "a", "host_id": "h"}]), check_mode=True)
    assert result.rc == 0, result
    assert result["changed"] is True
    assert result["pipeline_id"] is None
    assert result["status"] == "would start"


def test_pipeline_stage_that_does_not_start_fails_naming_it_then_stop_is_idempotent(
        run_module, sm_world, sm_admin_args) -> None:
    """Real SM, real BM test peer (steps 3 fetch/verify answer; it starts no container), so the start fails
    at step 4 and the task names the stage and host; stopping is then a no-op reported as such."""
    user = sm_world.enrol_user()
    host = sm_world.register_host(user)
    premise = sm_world.premise(users=[user.name], hosts=[host.name])
    artefact = sm_world.artefact(sm_world.marketplace(), user.name)
    sm_world.start_bm(host)
    as_user = dict(sm_admin_args, client_cert=str(user.cert), client_key=str(user.key))
    stages = [{"artefact_id": artefact["artefact_id"], "host_id": host.name}]

    started = run_module("bonseyes_pipeline", dict(as_user, premise=premise["name"], stages=stages))
    assert started.failed, started
    assert started["check"] == "pipeline-start"
    assert "stage 0" in started["msg"]
    assert host.name in started["msg"]
    assert artefact["artefact_id"] in started["msg"]
    pipeline_id = started["pipeline_id"]

    for check_mode in (True, False):
        stopped = run_module("bonseyes_pipeline", dict(as_user, state="stopped", pipeline_id=pipeline_id),
                             check_mode=check_mode)
        assert stopped.rc == 0, stopped
        assert stopped["changed"] is False, stopped
        assert stopped["status"] == "stopped"


def test_pipeline_unknown_premise_is_refused_naming_it(run_module, sm_world, sm_admin_args) -> None:
    user = sm_world.enrol_user()
    as_user = dict(sm_admin_args, client_cert=str(user.cert), client_key=str(user.key))
    premise = unique("nopremise")
    result = run_module("bonseyes_pipeline", dict(as_user, premise=premise, stages=[
        {"artefact_id": "a", "host_id": "h"}]))
    assert result.failed
    assert "/v1/pipelines" in result["msg"]
    assert result["status"] in (403, 404, 409, 422)


def test_pipeline_stop_of_an_unknown_pipeline_fails_naming_it(run_module, sm_world, sm_admin_args) -> None:
    user = sm_world.enrol_user()
    as_user = dict(sm_admin_args, client_cert=str(user.cert), client_key=str(user.key))
    result = run_module("bonseyes_pipeline", dict(as_user, state="stopped", pipeline_id="pl-nonexistent"))
    assert result.failed
    assert "pl-nonexistent" in result["msg"]


@pytest.mark.parametrize(("args", "named"), [
    ({"name": "p1"}, "record_dir"),
    ({"name": "p1", "record_dir": "/tmp", "pipeline_id": "x", "state": "stopped"}, "mutually exclusive"),
    ({"name": "../escape", "record_dir": "/tmp", "state": "stopped"}, "name"),
], ids=["name-without-record-dir", "name-and-id", "name-with-slash"])
def test_pipeline_bad_name_arguments_name_the_option(run_module, sm_admin_args, args: dict[str, Any],
                                                     named: str) -> None:
    result = run_module("bonseyes_pipeline", dict(sm_admin_args, **args))
    assert result.failed
    assert named in result["msg"]


def test_pipeline_stopped_by_a_name_never_started_changes_nothing(run_module, sm_admin_args, tmp_path: Path) -> None:
    for check_mode in (True, False):
        result = run_module("bonseyes_pipeline", dict(sm_admin_args, state="stopped", name="never",
                                                      record_dir=str(tmp_path / "records")),
                            check_mode=check_mode, diff=True)
        assert result.rc == 0, result
        assert result["changed"] is False
        assert result["pipeline_id"] is None
        assert result["diff"]["before"] == {"pipeline_id": None, "status": "absent"}
    assert not (tmp_path / "records").exists()


def test_pipeline_unreadable_record_is_named(run_module, sm_admin_args, tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{not json")
    result = run_module("bonseyes_pipeline", dict(sm_admin_args, state="stopped", name="broken",
                                                  record_dir=str(tmp_path)))
    assert result.failed
    assert result["check"] == "pipeline-record"
    assert str(tmp_path / "broken.json") in result["msg"]


def test_pipeline_named_start_that_fails_is_recorded_then_stopped_by_name(run_module, sm_world, sm_admin_args,
                                                                         tmp_path: Path) -> None:
    """The record is written before the start, so a pipeline whose stage fails can be stopped by its name."""
    user = sm_world.enrol_user()
    host = sm_world.register_host(user)
    premise = sm_world.premise(users=[user.name], hosts=[host.name])
    artefact = sm_world.artefact(sm_world.marketplace(), user.name)
    sm_world.start_bm(host)
    named = dict(sm_admin_args, client_cert=str(user.cert), client_key=str(user.key), name="failing",
                 record_dir=str(tmp_path / "records"))
    stages = [{"artefact_id": artefact["artefact_id"], "host_id": host.name}]

    checked = run_module("bonseyes_pipeline", dict(named, premise=premise["name"], stages=stages), check_mode=True)
    assert checked["changed"] is True
    assert not (tmp_path / "records").exists()
    started = run_module("bonseyes_pipeline", dict(named, premise=premise["name"], stages=stages))
    assert started["check"] == "pipeline-start"
    record = json.loads((tmp_path / "records" / "failing.json").read_text())
    assert record["pipeline_id"] == started["pipeline_id"]
    assert mode_of(tmp_path / "records" / "failing.json") == 0o600
    # The recorded pipeline is not running: the next start predicts a new one.
    again = run_module("bonseyes_pipeline", dict(named, premise=premise["name"], stages=stages), check_mode=True)
    assert again["changed"] is True
    stopped = run_module("bonseyes_pipeline", dict(named, state="stopped"))
    assert stopped.rc == 0, stopped
    assert stopped["changed"] is False
    assert stopped["pipeline_id"] == started["pipeline_id"]
