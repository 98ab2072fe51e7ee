"""The service layer in-process: audit chain tamper detection, heartbeat TTL, policy revisions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sm_testlib import fake_hardware_id, new_csr
from sqlalchemy import text

from bonseyes_py.errors import PolicyError
from bonseyes_py.identity.ids import sign_host_id
from bonseyes_py.jose import Signer
from bonseyes_py.pki.certs import load_certificate
from bonseyes_py.pki.roles import identity_of
from bonseyes_py.sm import SecurityManager, init_sm, verify_audit_chain
from bonseyes_py.sm.service import admin_identity


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    import time

    return Clock(time.time())


@pytest.fixture
def sm(tmp_path: Path, clock: Clock) -> Iterator[SecurityManager]:
    config = init_sm(tmp_path / "sm", heartbeat_ttl_seconds=60)
    service = SecurityManager.open(config, clock=clock)
    yield service
    service.close()


def _populate(sm: SecurityManager) -> None:
    admin = admin_identity(sm.config)
    for name in ("u1", "u2", "u3"):
        sm.enrol_user(admin, name, passphrase="passphrase-1")
    sm.put_premise(admin, "lab", users=["u1", "u2"])


def _tamper(sm: SecurityManager, statement: str, **params: object) -> None:
    with sm.engine.begin() as connection:
        connection.execute(text(statement), params)


def _report(sm: SecurityManager) -> tuple[bool, int | None]:
    with sm.transaction() as session:
        report = verify_audit_chain(session)
    return report.ok, report.first_bad_seq


def test_intact_chain_verifies(sm: SecurityManager) -> None:
    _populate(sm)
    assert _report(sm) == (True, None)


def test_edited_entry_is_named(sm: SecurityManager) -> None:
    _populate(sm)
    _tamper(sm, "UPDATE audit_log SET subject = 'someone-else' WHERE seq = 3")
    assert _report(sm) == (False, 3)


def test_deleted_entry_is_named(sm: SecurityManager) -> None:
    _populate(sm)
    _tamper(sm, "DELETE FROM audit_log WHERE seq = 2")
    assert _report(sm) == (False, 3)


def test_deleted_last_entry_is_detected_by_the_head(sm: SecurityManager) -> None:
    _populate(sm)
    _tamper(sm, "DELETE FROM audit_log WHERE seq = (SELECT MAX(seq) FROM audit_log)")
    ok, _ = _report(sm)
    assert not ok


def test_reordered_entries_are_named(sm: SecurityManager) -> None:
    _populate(sm)
    _tamper(sm, "UPDATE audit_log SET seq = -1 WHERE seq = 2")
    _tamper(sm, "UPDATE audit_log SET seq = 2 WHERE seq = 3")
    _tamper(sm, "UPDATE audit_log SET seq = 3 WHERE seq = -1")
    assert _report(sm) == (False, 2)


def test_rehashed_edit_is_caught_at_the_next_link(sm: SecurityManager) -> None:
    """An attacker who recomputes the edited entry's own hash still breaks the next entry's link."""
    from bonseyes_py.sm import audit

    _populate(sm)
    with sm.transaction() as session:
        entry = audit.as_dict(session.get(audit.AuditEntry, 2))
    entry["subject"] = "forged"
    forged_hash = audit.entry_digest(entry)
    _tamper(sm, "UPDATE audit_log SET subject = 'forged', entry_hash = :digest WHERE seq = 2", digest=forged_hash)
    assert _report(sm) == (False, 3)


def test_policy_is_validated_and_revisioned(sm: SecurityManager) -> None:
    admin = admin_identity(sm.config)
    first = sm.put_premise(admin, "lab")
    with pytest.raises(PolicyError):
        sm.put_premise(admin, "lab", policy="permit(principal, action, resource) when { resource.nope };")
    second = sm.put_premise(admin, "lab", policy=first["policy"] + "\n// tightened later\n")
    assert (first["revision"], second["revision"]) == (1, 2)
    assert sm.get_premise("lab", revision=1)["policy"] == first["policy"]
    decisions = sm.audit_log(action="premise-updated")
    assert [d["policy_revision"] for d in decisions] == [first["policy_revision"], second["policy_revision"]]


def test_host_goes_unavailable_after_the_heartbeat_ttl(sm: SecurityManager, clock: Clock) -> None:
    admin = admin_identity(sm.config)
    key, csr = new_csr()
    owner = sm.enrol_user(admin, "owner", csr_pem=csr)
    owner_cert = load_certificate(owner["certificate"].encode())
    token = sign_host_id(Signer(key, [owner_cert, sm.ca.intermediate]), identity_of(owner_cert).uri,
                         fake_hardware_id("ttl"))
    _, host_csr = new_csr()
    host = sm.register_host(identity_of(owner_cert), token, host_csr)
    host_identity = sm.identity(identity_of(load_certificate(host["certificate"].encode())).role, host["host_id"])
    assert not sm.get_host(admin, host["host_id"])["available"]
    sm.heartbeat(host_identity, "127.0.0.9")
    assert sm.get_host(admin, host["host_id"])["available"]
    clock.now += 61
    assert not sm.get_host(admin, host["host_id"])["available"]
    sm.heartbeat(host_identity, "127.0.0.9")
    assert sm.get_host(admin, host["host_id"])["ip"] == "127.0.0.9"
    online = sm.audit_log(action="host-online")
    assert len(online) == 2
