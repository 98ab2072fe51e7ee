"""One revocation store per CA: a standalone CA's CRL file, or the database of the SM that owns the CA.

The failure these tests pin down: ``bonseyes ca revoke`` on the SM's CA wrote the CRL file only, and the
SM's next revocation rebuilt the CRL from its database and dropped that entry. Now the CA directory
records its SM, ``revocation_store`` routes every certificate revocation into the SM's database through
``SecurityManager.revoke`` (the function the HTTPS route calls), and the CRL is published from there.
Also here: the root kept encrypted or offline, and renewal of the intermediate under that root.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from sqlalchemy import select

from bonseyes_py.errors import InputError, KeyFileError
from bonseyes_py.pki.ca import CertificateAuthority, CRLFileStore, RootAuthority, root_key_state
from bonseyes_py.pki.certs import certificate_pem, load_certificate_chain
from bonseyes_py.pki.keys import generate_private_key, read_passphrase_file
from bonseyes_py.pki.roles import Role
from bonseyes_py.pki.verify import TrustStore, verify_certificate
from bonseyes_py.sm import SecurityManager, init_sm
from bonseyes_py.sm.models import AuditEntry, Certificate
from bonseyes_py.sm.service import SecurityManagerStore, admin_identity, install_intermediate, revocation_store
from bonseyes_py.web.errors import NotFoundError

PASSPHRASE = b"correct horse battery staple"


def serials(crl: x509.CertificateRevocationList) -> set[int]:
    return {entry.serial_number for entry in crl}


def leaf(ca: CertificateAuthority, name: str, role: Role = Role.USER) -> x509.Certificate:
    return ca.issue(generate_private_key().public_key(), ca.identity(role, name))


@pytest.fixture
def sm_dir(tmp_path: Path) -> Path:
    init_sm(tmp_path / "sm", root_passphrase=PASSPHRASE)
    return tmp_path / "sm"


@pytest.fixture
def sm(sm_dir: Path) -> Iterator[SecurityManager]:
    from bonseyes_py.sm.config import SMConfig

    service = SecurityManager.open(SMConfig.load(sm_dir))
    yield service
    service.close()


# -- which store ------------------------------------------------------------------------------------


def test_standalone_ca_keeps_its_crl_file_as_store(fresh_ca: CertificateAuthority) -> None:
    store = revocation_store(fresh_ca.paths.directory)
    assert isinstance(store, CRLFileStore)
    certificate = leaf(fresh_ca, "alice")
    result = store.revoke(certificate)
    assert result.serial == format(certificate.serial_number, "x")
    assert certificate.serial_number in serials(fresh_ca.current_crl())


def test_standalone_store_refuses_a_foreign_certificate(fresh_ca: CertificateAuthority,
                                                        foreign_ca: CertificateAuthority) -> None:
    with pytest.raises(InputError) as raised:
        revocation_store(fresh_ca.paths.directory).revoke(leaf(foreign_ca, "mallory"))
    assert raised.value.check == "issuer"


def test_sm_ca_records_its_owner_and_routes_to_the_database(sm_dir: Path) -> None:
    config = json.loads((sm_dir / "ca" / "ca.json").read_text())
    assert config["security_manager"] == ".."
    store = revocation_store(sm_dir / "ca")
    assert isinstance(store, SecurityManagerStore)
    assert store.config.directory == sm_dir.resolve()


def test_sm_ca_created_before_the_owner_record_is_recognised_by_its_layout(sm_dir: Path) -> None:
    path = sm_dir / "ca" / "ca.json"
    config = json.loads(path.read_text())
    del config["security_manager"]
    path.write_text(json.dumps(config))
    assert CertificateAuthority.load(sm_dir / "ca").security_manager == sm_dir.resolve()
    assert isinstance(revocation_store(sm_dir / "ca"), SecurityManagerStore)


def test_the_crl_file_of_an_sm_ca_cannot_be_written_around_the_sm(sm_dir: Path) -> None:
    ca = CertificateAuthority.load(sm_dir / "ca")
    before = ca.paths.crl.read_bytes()
    with pytest.raises(InputError) as raised:
        ca.revoke(leaf(ca, "bob").serial_number)
    assert raised.value.check == "revocation-store"
    assert "bonseyes ca revoke" in str(raised.value)
    assert ca.paths.crl.read_bytes() == before


# -- the failing scenario, in-process ---------------------------------------------------------------


def test_cli_revocation_survives_a_later_sm_revocation(sm_dir: Path, sm: SecurityManager) -> None:
    ca = CertificateAuthority.load(sm_dir / "ca")
    outside = leaf(ca, "made-by-ca-issue")  # never recorded by the SM (bonseyes ca issue)
    result = revocation_store(sm_dir / "ca").revoke(outside, reason="key lost")
    assert result.store.startswith("security-manager:")
    assert outside.serial_number in serials(ca.current_crl())

    admin = admin_identity(sm.config)
    enrolled = sm.enrol_user(admin, "carol", passphrase="passphrase-1")
    sm.revoke(admin, "user", "carol")
    published = serials(ca.current_crl())
    assert outside.serial_number in published
    assert int(enrolled["serial"], 16) in published

    with sm.reading() as session:
        row = session.get(Certificate, format(outside.serial_number, "x"))
        assert row is not None
        assert row.revoked_at is not None
        assert (row.role, row.name) == ("user", "made-by-ca-issue")
        entry = session.execute(select(AuditEntry).where(AuditEntry.action == "revoked")
                                .order_by(AuditEntry.seq)).scalars().first()
        assert entry is not None
        assert entry.subject == f"certificate:{format(outside.serial_number, 'x')}"
        assert entry.details["reason"] == "key lost"
        assert entry.details["via"].startswith("bonseyes ca revoke")


def test_revoking_twice_is_idempotent(sm_dir: Path) -> None:
    ca = CertificateAuthority.load(sm_dir / "ca")
    certificate = leaf(ca, "twice")
    store = revocation_store(sm_dir / "ca")
    first, second = store.revoke(certificate), store.revoke(certificate)
    assert first.serial == second.serial
    assert first.crl_entries == second.crl_entries
    assert second.crl_number == first.crl_number + 1


def test_a_certificate_of_another_ca_is_refused_by_the_sm_store(sm_dir: Path,
                                                                foreign_ca: CertificateAuthority) -> None:
    with pytest.raises(InputError) as raised:
        revocation_store(sm_dir / "ca").revoke(leaf(foreign_ca, "foreign"))
    assert raised.value.check == "issuer"


def test_unknown_serial_without_its_certificate_names_the_cli(sm: SecurityManager) -> None:
    with pytest.raises(NotFoundError) as raised:
        sm.revoke(admin_identity(sm.config), "certificate", "abc123")
    assert "bonseyes ca revoke --ca" in str(raised.value)


def test_entries_already_on_the_published_crl_are_adopted_not_dropped(sm_dir: Path, sm: SecurityManager) -> None:
    """An SM upgraded after an old ``bonseyes ca revoke`` wrote crl.pem directly keeps that revocation."""
    ca = CertificateAuthority.load(sm_dir / "ca")
    stray = leaf(ca, "revoked-the-old-way")
    entry = (x509.RevokedCertificateBuilder().serial_number(stray.serial_number)
             .revocation_date(dt.datetime.now(dt.UTC)).build())
    ca.write_crl([*ca.current_crl(), entry])  # what the old CLI did

    admin = admin_identity(sm.config)
    sm.enrol_user(admin, "dave", passphrase="passphrase-1")
    sm.revoke(admin, "user", "dave")
    assert stray.serial_number in serials(ca.current_crl())
    with sm.reading() as session:
        row = session.get(Certificate, format(stray.serial_number, "x"))
        assert row is not None
        assert row.revoked_at is not None
        adopted = session.execute(select(AuditEntry).where(AuditEntry.action == "crl-entries-adopted")).scalars()
        assert [e.details["serials"] for e in adopted] == [[format(stray.serial_number, "x")]]
    # Adopted once: the next publication finds it in the database.
    sm.refresh_crl()
    with sm.reading() as session:
        count = len(session.execute(select(AuditEntry).where(AuditEntry.action == "crl-entries-adopted")).all())
    assert count == 1


# -- the root: encrypted, offline, and the intermediate renewed under it ------------------------------


def test_init_sm_encrypts_the_root_key(sm_dir: Path) -> None:
    assert root_key_state(sm_dir / "ca") == "encrypted"
    with pytest.raises(KeyFileError):
        RootAuthority.load(sm_dir / "ca")
    assert RootAuthority.load(sm_dir / "ca", passphrase=PASSPHRASE).trust_domain == "bonseyes.local"


def test_offline_root_directory_keeps_the_root_key_out_of_the_sm(tmp_path: Path) -> None:
    init_sm(tmp_path / "sm", root_passphrase=PASSPHRASE, root_directory=tmp_path / "offline")
    assert root_key_state(tmp_path / "sm" / "ca") == "absent"
    assert not (tmp_path / "sm" / "ca" / "private" / "root.key").exists()
    assert root_key_state(tmp_path / "offline") == "encrypted"
    root = RootAuthority.load(tmp_path / "offline", passphrase=PASSPHRASE)
    assert root.certificate == CertificateAuthority.load(tmp_path / "sm" / "ca").root


def test_move_root_takes_the_key_off(tmp_path: Path, sm_dir: Path) -> None:
    ca = CertificateAuthority.load(sm_dir / "ca")
    moved = ca.move_root(tmp_path / "offline")
    assert root_key_state(sm_dir / "ca") == "absent"
    assert oct(moved.stat().st_mode & 0o777) == oct(0o600)
    assert oct((tmp_path / "offline" / "private").stat().st_mode & 0o777) == oct(0o700)
    with pytest.raises(InputError) as raised:
        ca.move_root(tmp_path / "elsewhere")
    assert raised.value.check == "root-missing"


def test_renewal_keeps_every_earlier_certificate_and_crl_valid(fresh_ca: CertificateAuthority) -> None:
    before = leaf(fresh_ca, "before")
    revoked = leaf(fresh_ca, "revoked")
    fresh_ca.revoke(revoked.serial_number)
    old_store = fresh_ca.trust_store()
    old = fresh_ca.intermediate

    root = RootAuthority.load(fresh_ca.paths.directory)
    renewed = root.issue_intermediate(fresh_ca.intermediate_csr())
    answer = install_intermediate(fresh_ca, renewed)
    assert answer["previous_serial"] == format(old.serial_number, "x")
    assert (fresh_ca.paths.intermediate_archive / f"{old.serial_number:x}.pem").exists()
    assert fresh_ca.intermediate == renewed
    assert renewed.serial_number != old.serial_number
    assert renewed.not_valid_after_utc >= old.not_valid_after_utc
    after = leaf(fresh_ca, "after")

    for store in (old_store, fresh_ca.trust_store(), CertificateAuthority.load(fresh_ca.paths.directory).trust_store()):
        for certificate in (before, after):
            assert verify_certificate(certificate, store, roles=[Role.USER]).name in ("before", "after")
        with pytest.raises(Exception, match="revoked"):
            verify_certificate(revoked, store, roles=[Role.USER])
    # A peer that still holds only the old intermediate verifies the new leaf by the chain it presents.
    old_only = TrustStore(root=fresh_ca.root, intermediates=[old], crls=[fresh_ca.current_crl()])
    assert verify_certificate(after, old_only, roles=[Role.USER], extra_intermediates=[renewed]).name == "after"


def test_install_refuses_another_key_an_older_certificate_or_another_root(fresh_ca: CertificateAuthority,
                                                                          foreign_ca: CertificateAuthority) -> None:
    root = RootAuthority.load(fresh_ca.paths.directory)
    other_key = root.issue_intermediate(generate_private_key().public_key())
    with pytest.raises(InputError, match="not for this CA's intermediate key"):
        fresh_ca.install_intermediate(other_key)
    older = root.issue_intermediate(fresh_ca.intermediate_csr(), now=dt.datetime.now(dt.UTC) - dt.timedelta(days=9))
    with pytest.raises(InputError, match="before the current one"):
        fresh_ca.install_intermediate(older)
    foreign = RootAuthority.load(foreign_ca.paths.directory).issue_intermediate(fresh_ca.intermediate_csr())
    with pytest.raises(InputError, match="not signed by the root"):
        fresh_ca.install_intermediate(foreign)


def test_a_running_worker_picks_up_a_renewal_from_disk(sm_dir: Path, sm: SecurityManager, tmp_path: Path) -> None:
    old = sm.ca.intermediate
    other = CertificateAuthority.load(sm_dir / "ca")  # another process: the CLI
    root = RootAuthority.load(sm_dir / "ca", passphrase=PASSPHRASE)
    renewed = root.issue_intermediate(other.intermediate_csr())
    answer = install_intermediate(other, renewed)
    assert answer["security_manager"] == str(sm_dir.resolve())
    store = sm.trust_store()  # what every request does first
    assert sm.ca.intermediate == renewed != old
    assert store.intermediates == [renewed]
    assert list(sm.issuer.signer.chain) == [sm.ca.signer, renewed]  # licences carry the new chain in x5c
    bundle = (sm_dir / "tls" / "ca-bundle.pem").read_bytes()
    assert certificate_pem(renewed) in bundle
    assert load_certificate_chain((sm_dir / "tls" / "server.pem").read_bytes())[1] == renewed
    enrolled = sm.enrol_user(admin_identity(sm.config), "erin", passphrase="passphrase-1")
    assert certificate_pem(renewed).decode() in enrolled["chain"]
    with sm.reading() as session:
        assert session.execute(select(AuditEntry).where(AuditEntry.action == "intermediate-renewed")).first()


# -- passphrase files ---------------------------------------------------------------------------------


def test_passphrase_file_readable_by_others_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "root.passphrase"
    path.write_bytes(PASSPHRASE + b"\n")
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError) as raised:
        read_passphrase_file(path)
    assert f"chmod 600 {path}" in str(raised.value)
    os.chmod(path, 0o600)
    assert read_passphrase_file(path) == PASSPHRASE


def test_empty_passphrase_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_bytes(b"\n")
    os.chmod(path, 0o600)
    with pytest.raises(KeyFileError, match="empty"):
        read_passphrase_file(path)
