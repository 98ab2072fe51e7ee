"""Revocation of users, hosts, artefacts, licences and single certificates, and the CRL.

The database is the one revocation store of the SM's CA: revoking marks the records and the
certificates' serials, and the CRL is rebuilt from every revoked, unexpired serial in the same
transaction (so two workers that revoke at once cannot lose each other's entries). Revoking a host
or an artefact also revokes its unexpired licences; revoked licence IDs are published for verifiers
beside the CRL.

Every path that revokes comes here: the HTTPS route, ``bonseyes sm revoke``, and ``bonseyes ca
revoke`` on the SM's CA directory (``service.revocation_store``), which passes the certificate
itself so that a serial the SM never recorded (a leaf made with ``bonseyes ca issue``, the server's
own certificate) is recorded and revoked all the same. A serial already on the published CRL but
absent from the database (written there by an older ``bonseyes ca revoke``) is adopted by the next
publication, never dropped: a published revocation is never withdrawn.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from cryptography import x509
from sqlalchemy import select, update

from bonseyes_py.errors import BonseyesError, InputError
from bonseyes_py.licences import LicenceIssuer
from bonseyes_py.pki.ca import crl_number_of
from bonseyes_py.pki.certs import load_crl
from bonseyes_py.pki.roles import Identity, Role, identity_of
from bonseyes_py.pki.verify import TrustStore, check_crl_signed_by
from bonseyes_py.sm import audit
from bonseyes_py.sm.core import SMCore, found
from bonseyes_py.sm.models import Artefact, Certificate, Host, Licence, User
from bonseyes_py.web.errors import NotFoundError

REVOCABLE = ("user", "host", "artefact", "licence", "certificate")
# Certificates the SM learns of only when they are revoked (issued outside its API, or adopted from the CRL).
UNKNOWN_ROLE = "unknown"
_IN_CHUNK = 500


class RevocationOperations(SMCore):
    def revoke(self, actor: Identity | str, kind: str, subject: str, *, reason: str = "",
               certificate: x509.Certificate | None = None, via: str = "") -> dict[str, Any]:
        """Revoke and publish the CRL, in one transaction; the one function every revocation path calls.

        ``certificate`` (kind ``certificate`` only, ``subject`` its hex serial) lets a caller that holds
        the certificate revoke one the SM has no record of; it must have been issued by this SM's CA.
        """
        if kind not in REVOCABLE:
            raise InputError(f"cannot revoke a {kind!r}; choose one of {', '.join(REVOCABLE)}", check="kind")
        if not isinstance(subject, str) or not subject or len(subject) > 128:
            raise InputError("id must be a non-empty string of at most 128 characters", check="id")
        if not isinstance(reason, str) or len(reason) > 1000:
            raise InputError("reason must be a string of at most 1000 characters", check="reason")
        if certificate is not None:
            if kind != "certificate" or format(certificate.serial_number, "x") != subject.lower():
                raise InputError("a certificate is given only to revoke that certificate by its serial",
                                 check="certificate")
            self.ca.check_issued_here(certificate)
        now = self.now()
        with self.transaction() as session:
            audit.lock_chain(session)  # Serialises CRL rebuilds across workers and SMs.
            serials: list[str] = []
            licences: list[str] = []
            already = False  # the subject was revoked before this call (a re-run of a teardown)
            if kind == "user":
                user = found(session.get(User, subject), "user", subject)
                already = bool(user.revoked)
                user.revoked = True
                serials = self._revoke_certificates(session, (Role.USER.value, Role.ADMIN.value), subject, now)
            elif kind == "host":
                host = found(session.get(Host, subject), "host", subject)
                already = bool(host.revoked)
                host.revoked = True
                serials = self._revoke_certificates(session, (Role.HOST.value,), subject, now)
                licences = self._revoke_licences(session, Licence.host_id == subject, now)
            elif kind == "artefact":
                artefact = found(session.get(Artefact, subject), "artefact", subject)
                already = bool(artefact.revoked)
                artefact.revoked = True
                licences = self._revoke_licences(session, Licence.artefact_id == subject, now)
            elif kind == "licence":
                licence = found(session.get(Licence, subject), "licence", subject)
                licences = self._revoke_licences(session, Licence.jti == subject, now)
                if licence.kind == "host":
                    # The runtime certificate dies with the licence that delivered it.
                    serials = self._revoke_certificates(session, (Role.RUNTIME.value,), licence.runtime_name, now)
            else:
                row = session.get(Certificate, subject.lower())
                if row is None and certificate is not None:
                    row = self._record_foreign_certificate(session, certificate)
                if row is None:
                    raise NotFoundError(f"certificate serial {subject!r} is not in the SM's records; revoke it"
                                        f" from its certificate file: bonseyes ca revoke --ca"
                                        f" {self.ca.paths.directory} CERT")
                already = row.revoked_at is not None
                if not already:
                    row.revoked_at = now
                serials = [row.serial]
            crl_number = self._publish_crl(session, now)
            extra = {"via": via} if via else {}
            self.audit(session, actor, "revoked", f"{kind}:{subject}", reason=reason, serials=serials,
                       licences=licences, crl_number=crl_number, **extra)
        return {"kind": kind, "id": subject, "serials": serials, "licences": licences, "crl_number": crl_number,
                "already_revoked": already}

    @staticmethod
    def _record_foreign_certificate(session: Any, certificate: x509.Certificate) -> Certificate:
        """Record a certificate of this CA that the SM did not issue through its API, to revoke it."""
        try:
            identity = identity_of(certificate)
            role, name = identity.role.value, identity.name
        except BonseyesError:
            role, name = UNKNOWN_ROLE, ""
        row = Certificate(serial=format(certificate.serial_number, "x"), role=role, name=name[:128],
                          not_after=certificate.not_valid_after_utc.timestamp(),
                          created_at=certificate.not_valid_before_utc.timestamp())
        session.add(row)
        return row

    @staticmethod
    def _revoke_certificates(session: Any, roles: tuple[str, ...], name: str, now: float) -> list[str]:
        rows = list(session.execute(select(Certificate).where(Certificate.name == name,
                                                              Certificate.role.in_(roles))).scalars())
        for row in rows:
            if row.revoked_at is None:
                row.revoked_at = now
        return sorted(row.serial for row in rows)

    @staticmethod
    def _revoke_licences(session: Any, condition: Any, now: float) -> list[str]:
        ids = list(session.execute(select(Licence.jti).where(condition, Licence.revoked_at.is_(None),
                                                             Licence.expires_at > now)).scalars())
        if ids:
            session.execute(update(Licence).where(Licence.jti.in_(ids)).values(revoked_at=now))
        return sorted(ids)

    def _publish_crl(self, session: Any, now: float) -> int:
        """Rebuild the CRL from the database; runs inside the revoking transaction."""
        adopted = self._adopt_published_revocations(session, now)
        session.flush()
        rows = session.execute(select(Certificate).where(Certificate.revoked_at.is_not(None),
                                                         Certificate.not_after > now)).scalars()
        entries = [x509.RevokedCertificateBuilder().serial_number(int(row.serial, 16))
                   .revocation_date(dt.datetime.fromtimestamp(row.revoked_at, dt.UTC)).build() for row in rows]
        crl = self.ca.write_crl(entries, now=dt.datetime.fromtimestamp(now, dt.UTC))
        number = crl_number_of(crl)
        if adopted:
            self.audit(session, self.identity(Role.SECURITY_MANAGER, "sm"), "crl-entries-adopted", "crl",
                       serials=adopted, crl_number=number)
        return number

    def _adopt_published_revocations(self, session: Any, now: float) -> list[str]:
        """Serials on the published CRL that the database does not hold as revoked: recorded as revoked.

        Only a CRL signed by this CA's intermediate counts. A serial the SM never recorded keeps its CRL
        entry until the intermediate expires (its certificate's own expiry is unknown here).
        """
        path = self.ca.paths.crl
        try:
            crl = load_crl(path.read_bytes())
            check_crl_signed_by(crl, self.ca.intermediate)
        except (OSError, BonseyesError):
            return []
        published = {format(entry.serial_number, "x"): entry.revocation_date_utc.timestamp() for entry in crl}
        if not published:
            return []
        serials = sorted(published)
        known: dict[str, Certificate] = {}
        for start in range(0, len(serials), _IN_CHUNK):
            chunk = serials[start:start + _IN_CHUNK]
            known.update((row.serial, row) for row in session.execute(
                select(Certificate).where(Certificate.serial.in_(chunk))).scalars())
        adopted = []
        for serial in serials:
            row = known.get(serial)
            if row is None:
                session.add(Certificate(serial=serial, role=UNKNOWN_ROLE, name="",
                                        not_after=self.ca.intermediate.not_valid_after_utc.timestamp(),
                                        revoked_at=published[serial], created_at=now))
            elif row.revoked_at is None:
                row.revoked_at = published[serial]
            else:
                continue
            adopted.append(serial)
        return adopted

    def refresh_crl(self) -> int:
        """Re-sign the CRL (before it goes stale); safe to call at any time."""
        with self.transaction() as session:
            audit.lock_chain(session)
            return self._publish_crl(session, self.now())

    def _crl_is_stale(self, crl: x509.CertificateRevocationList) -> bool:
        """Past half of its validity (by the SM clock), or already expired."""
        issued = crl.last_update_utc.timestamp()
        next_update = crl.next_update_utc
        if next_update is None:
            return True
        expires = next_update.timestamp()
        return self.now() >= issued + (expires - issued) / 2

    def refresh_stale_crl(self, store: TrustStore) -> bool:
        """Re-sign the CRL when it is past half of its validity; one worker does it, the others reload.

        Checked on every use of the trust store (each request), so nothing has to be scheduled: an SM
        that serves anything keeps its CRL fresh, and the first request after a long idle period
        re-signs it before it verifies the caller (an expired CRL would make every peer fail).

        The same check picks up an intermediate renewed on disk (``bonseyes ca renew-intermediate``):
        the worker then issues with the new certificate and chain, without a restart.
        """
        if self.ca.reload_if_renewed():
            self._intermediate_renewed()
            return True
        if not store.crls or not self._crl_is_stale(store.crls[0]):
            return False
        with self.transaction() as session:
            audit.lock_chain(session)
            # Another worker may have refreshed it while this one waited for the lock.
            if not self._crl_is_stale(self.ca.current_crl()):
                return True
            crl_number = self._publish_crl(session, self.now())
            self.audit(session, self.identity(Role.SECURITY_MANAGER, "sm"), "crl-refreshed", "crl",
                       crl_number=crl_number)
        return True

    def _intermediate_renewed(self) -> None:
        """Drop what this worker derived from the previous intermediate certificate."""
        self.issuer = LicenceIssuer(self.ca)
        self.__dict__.pop("_intermediate_pem_text", None)  # licensing.py's cached chain text
        self._trust = None  # core.py reloads the trust store with the new intermediate

    def record_intermediate_renewal(self, previous: x509.Certificate, *, via: str = "") -> int:
        """Audit a renewal done on disk and publish the CRL again, so every worker reloads its trust store."""
        with self.transaction() as session:
            audit.lock_chain(session)
            crl_number = self._publish_crl(session, self.now())
            self.audit(session, self.identity(Role.SECURITY_MANAGER, "sm"), "intermediate-renewed", "ca",
                       previous_serial=format(previous.serial_number, "x"),
                       serial=format(self.ca.intermediate.serial_number, "x"),
                       not_after=self.ca.intermediate.not_valid_after_utc.isoformat(), crl_number=crl_number,
                       **({"via": via} if via else {}))
        return crl_number

    def crl_pem(self) -> bytes:
        return self.ca.paths.crl.read_bytes()
