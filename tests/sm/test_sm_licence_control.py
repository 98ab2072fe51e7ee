"""Licence control in-process: the allowed-hosts term at issue and renewal, CRL refresh, batched heartbeats.

The SM runs on a real SQLite database with an injected clock; step 3's BM calls are answered by
an in-test BM client that reports each requested digest, so a pipeline becomes ready without a
network peer.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sm_testlib import fake_hardware_id, new_csr

from bonseyes_py.errors import InputError, PolicyDenied
from bonseyes_py.identity.ids import sign_host_id
from bonseyes_py.jose import Signer
from bonseyes_py.pki.certs import load_certificate
from bonseyes_py.pki.roles import Identity, Role, identity_of
from bonseyes_py.sm import SecurityManager, init_sm
from bonseyes_py.sm.bm_client import BonseyesModuleEndpoint
from bonseyes_py.sm.service import admin_identity


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class EchoBonseyesModule:
    def fetch_images(self, endpoint: BonseyesModuleEndpoint, digests: list[str]) -> dict[str, str]:
        return {digest: digest for digest in digests}

    def remove_images(self, endpoint: BonseyesModuleEndpoint, digests: list[str]) -> None:
        return None


@dataclass
class Setup:
    sm: SecurityManager
    clock: Clock
    admin: Identity
    owner: Identity
    hosts: list[Identity]
    digest: str


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    clock = Clock(time.time())
    config = init_sm(tmp_path / "sm", heartbeat_ttl_seconds=60)
    sm = SecurityManager.open(config, clock=clock, bm_client=EchoBonseyesModule())
    admin = admin_identity(config)
    key, csr = new_csr()
    owner_cert = load_certificate(sm.enrol_user(admin, "owner", csr_pem=csr)["certificate"].encode())
    owner = identity_of(owner_cert)
    signer = Signer(key, [owner_cert, sm.ca.intermediate])
    hosts = []
    for label in ("allowed", "other"):
        token = sign_host_id(signer, owner.uri, fake_hardware_id(f"{label}-{tmp_path}"))
        host = sm.register_host(owner, token, new_csr()[1])
        identity = sm.identity(Role.HOST, host["host_id"])
        sm.heartbeat(identity, "127.0.0.2")
        hosts.append(identity)
    sm.put_premise(admin, "lab", users=["owner"], hosts=[h.name for h in hosts])
    digest = "sha256:" + hashlib.sha256(b"model").hexdigest()
    sm.register_artefact(admin, "model", "owner", digest, {"allowed_hosts": [hosts[0].name]})
    for host in hosts:
        pipeline = sm.request_pipeline(owner, "lab", [{"artefact_id": "model", "host_id": host.name}])
        assert pipeline["status"] == "ready"
    yield Setup(sm, clock, admin, owner, hosts, digest)
    sm.close()


def _licence(setup: Setup, host: Identity, nonce: str, renews: str | None = None) -> dict[str, object]:
    return setup.sm.issue_host_licence(host, "127.0.0.2", image_digest=setup.digest, artefact_id="model",
                                       user_id="owner", nonce=nonce, renews=renews)


def test_allowed_host_gets_a_licence_and_another_host_is_denied(setup: Setup) -> None:
    assert _licence(setup, setup.hosts[0], secrets.token_urlsafe(18))["licence_id"]
    with pytest.raises(PolicyDenied, match="host-not-allowed"):
        _licence(setup, setup.hosts[1], secrets.token_urlsafe(18))
    denials = setup.sm.audit_log(action="host-licence-denied")
    assert denials[-1]["details"]["policies"] == ["host-not-allowed"]


def test_renewal_is_refused_once_the_host_is_no_longer_allowed(setup: Setup) -> None:
    nonce = secrets.token_urlsafe(18)
    first = _licence(setup, setup.hosts[0], nonce)
    setup.sm.set_artefact_terms(setup.admin, "model", {"allowed_hosts": [setup.hosts[1].name]})
    with pytest.raises(PolicyDenied, match="host-not-allowed"):
        _licence(setup, setup.hosts[0], nonce, renews=str(first["licence_id"]))
    setup.sm.set_artefact_terms(setup.admin, "model", {"allowed_hosts": []})  # Empty: any host.
    renewed = _licence(setup, setup.hosts[0], nonce, renews=str(first["licence_id"]))
    assert renewed["renews"] == first["licence_id"]


def test_allowed_hosts_term_is_checked(setup: Setup) -> None:
    with pytest.raises(InputError) as bad:
        setup.sm.set_artefact_terms(setup.admin, "model", {"allowed_hosts": "h-1"})
    assert bad.value.check == "allowed-hosts"
    with pytest.raises(InputError) as bad_name:
        setup.sm.set_artefact_terms(setup.admin, "model", {"allowed_hosts": ["not a name!"]})
    assert bad_name.value.check == "host-ID"
    view = setup.sm.get_artefact(setup.admin, "model")
    assert view["terms"]["allowed_hosts"] == [setup.hosts[0].name]


def _crl(setup: Setup) -> tuple[int, float]:
    from cryptography import x509

    crl = setup.sm.ca.current_crl()
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert crl.next_update_utc is not None
    return number, crl.next_update_utc.timestamp()


def test_crl_is_re_signed_past_half_its_validity(setup: Setup) -> None:
    number, next_update = _crl(setup)
    setup.sm.trust_store()
    assert _crl(setup)[0] == number  # Fresh: untouched.
    issued = setup.sm.ca.current_crl().last_update_utc.timestamp()
    setup.clock.now = issued + (next_update - issued) / 2 + 60
    setup.sm.trust_store()  # Every request passes here.
    new_number, new_next_update = _crl(setup)
    assert new_number == number + 1
    assert new_next_update > next_update
    assert setup.sm.audit_log(action="crl-refreshed")
    setup.sm.trust_store()
    assert _crl(setup)[0] == new_number  # Refreshed once, not on every call.


def test_crl_expired_during_idle_is_re_signed_before_use(setup: Setup) -> None:
    number, next_update = _crl(setup)
    setup.clock.now = next_update + 3600
    store = setup.sm.trust_store()
    assert _crl(setup)[0] == number + 1
    assert store.crls[0].next_update_utc is not None
    assert store.crls[0].next_update_utc.timestamp() > setup.clock.now


def test_heartbeats_of_an_available_host_are_batched_and_revocation_still_applies(setup: Setup) -> None:
    host = setup.hosts[0]
    before = setup.sm.get_host(setup.admin, host.name)["last_seen"]
    setup.clock.now += 5
    answer = setup.sm.heartbeat(host, "127.0.0.2")
    assert answer["available"] is True
    assert setup.sm.get_host(setup.admin, host.name)["last_seen"] == before  # Queued, not yet written.
    assert setup.sm.flush_heartbeats() == 1
    assert setup.sm.get_host(setup.admin, host.name)["last_seen"] == setup.clock.now
    setup.sm.revoke(setup.admin, "host", host.name)
    from bonseyes_py.sm.core import Forbidden

    with pytest.raises(Forbidden):
        setup.sm.heartbeat(host, "127.0.0.2")


def test_first_heartbeat_after_the_ttl_is_written_synchronously(setup: Setup) -> None:
    host = setup.hosts[1]
    setup.clock.now += 120  # Past the 60 s TTL: offline.
    assert setup.sm.get_host(setup.admin, host.name)["available"] is False
    setup.sm.heartbeat(host, "127.0.0.2")
    record = setup.sm.get_host(setup.admin, host.name)
    assert record["available"] is True
    assert record["last_seen"] == setup.clock.now


def _running_both_ways(sm: SecurityManager, host: Identity, nonce: str) -> tuple[int, int]:
    """(InstanceTracker's count, the database's DISTINCT count) of "model", in one licence-style transaction."""
    from bonseyes_py.sm.licensing import _PREAMBLE, _RUNNING

    now = sm.now()
    with sm.fast_sql.transaction() as conn:
        head = conn.execute(_PREAMBLE, {"request_key": "none"}).one()
        tracked = sm.instances.running(conn, generation=int(head.generation), head_seq=int(head.seq),
                                       artefact_id="model", exclude=(host.name, nonce), now=now)
        counted = int(conn.execute(_RUNNING, {"artefact_id": "model", "now": now, "exclude_host": host.name,
                                              "exclude_nonce": nonce}).scalar_one())
    return tracked, counted


def test_running_instances_tracked_in_memory_equal_the_database_count(setup: Setup) -> None:
    """Issued here and by a second SM process on the same database, renewed, revoked, expired: always equal."""
    sm, host = setup.sm, setup.hosts[0]
    other_worker = SecurityManager.open(sm.config, clock=setup.clock, bm_client=EchoBonseyesModule())
    try:
        nonces = [secrets.token_urlsafe(18) for _ in range(6)]
        issued = []
        for index, nonce in enumerate(nonces):
            issuer = sm if index % 2 == 0 else other_worker  # the other worker's licences arrive by the feed
            issued.append(issuer.issue_host_licence(host, "127.0.0.2", image_digest=setup.digest,
                                                    artefact_id="model", user_id="owner", nonce=nonce))
            assert _running_both_ways(sm, host, "unused-nonce-0000") == (index + 1, index + 1)
        # A renewal is the same runtime: no new instance.
        setup.clock.now += 10
        other_worker.issue_host_licence(host, "127.0.0.2", image_digest=setup.digest, artefact_id="model",
                                        user_id="owner", nonce=nonces[0], renews=issued[0]["licence_id"])
        assert _running_both_ways(sm, host, "unused-nonce-0000") == (6, 6)
        assert _running_both_ways(sm, host, nonces[0]) == (5, 5)
        # Revoking a licence (a write transaction: a new generation) drops its runtime.
        sm.revoke(setup.admin, "licence", str(issued[1]["licence_id"]))
        assert _running_both_ways(sm, host, "unused-nonce-0000") == (5, 5)
        # Past the first licences' expiry only the renewed runtime is left.
        setup.clock.now += sm.config.host_licence_seconds - 5
        assert _running_both_ways(sm, host, "unused-nonce-0000") == (1, 1)
        # A clock that goes back brings the expired ones back, as the database count does.
        setup.clock.now -= 20
        assert _running_both_ways(sm, host, "unused-nonce-0000") == (5, 5)
    finally:
        other_worker.close()
