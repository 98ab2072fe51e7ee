"""Revocation of users, hosts, artefacts, licences and single certificates, and the CRL.

The database is the source of truth: revoking marks the records and the certificates' serials, and
the CRL is rebuilt from every revoked, unexpired serial in the same transaction (so two workers that
revoke at once cannot lose each other's entries). Revoking a host or an artefact also revokes its
unexpired licences; revoked licence IDs are published for verifiers beside the CRL.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from cryptography import x509
from sqlalchemy import select, update

from bonseyes_py.errors import InputError
from bonseyes_py.pki.roles import Identity, Role
from bonseyes_py.pki.verify import TrustStore
from bonseyes_py.sm import audit
from bonseyes_py.sm.core import SMCore, found
from bonseyes_py.sm.models import Artefact, Certificate, Host, Licence, User

REVOCABLE = ("user", "host", "artefact", "licence", "certificate")


class RevocationOperations(SMCore):
    def revoke(self, actor: Identity, kind: str, subject: str, *, reason: str = "") -> dict[str, Any]:
        if kind not in REVOCABLE:
            raise InputError(f"cannot revoke a {kind!r}; choose one of {', '.join(REVOCABLE)}", check="kind")
        if not isinstance(subject, str) or not subject or len(subject) > 128:
            raise InputError("id must be a non-empty string of at most 128 characters", check="id")
        if not isinstance(reason, str) or len(reason) > 1000:
            raise InputError("reason must be a string of at most 1000 characters", check="reason")
        now = self.now()
        with self.transaction() as session:
            audit.lock_chain(session)  # Serialises CRL rebuilds across workers and SMs.
            serials: list[str] = []
            licences: list[str] = []
            if kind == "user":
                user = found(session.get(User, subject), "user", subject)
                user.revoked = True
                serials = self._revoke_certificates(session, (Role.USER.value, Role.ADMIN.value), subject, now)
            elif kind == "host":
                host = found(session.get(Host, subject), "host", subject)
                host.revoked = True
                serials = self._revoke_certificates(session, (Role.HOST.value,), subject, now)
                licences = self._revoke_licences(session, Licence.host_id == subject, now)
            elif kind == "artefact":
                artefact = found(session.get(Artefact, subject), "artefact", subject)
                artefact.revoked = True
                licences = self._revoke_licences(session, Licence.artefact_id == subject, now)
            elif kind == "licence":
                licence = found(session.get(Licence, subject), "licence", subject)
                licences = self._revoke_licences(session, Licence.jti == subject, now)
                if licence.kind == "host":
                    # The runtime certificate dies with the licence that delivered it.
                    serials = self._revoke_certificates(session, (Role.RUNTIME.value,), licence.runtime_name, now)
            else:
                certificate = found(session.get(Certificate, subject.lower()), "certificate serial", subject)
                if certificate.revoked_at is None:
                    certificate.revoked_at = now
                serials = [certificate.serial]
            crl_number = self._publish_crl(session, now)
            self.audit(session, actor, "revoked", f"{kind}:{subject}", reason=reason, serials=serials,
                       licences=licences, crl_number=crl_number)
        return {"kind": kind, "id": subject, "serials": serials, "licences": licences, "crl_number": crl_number}

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
        session.flush()
        rows = session.execute(select(Certificate).where(Certificate.revoked_at.is_not(None),
                                                         Certificate.not_after > now)).scalars()
        entries = [x509.RevokedCertificateBuilder().serial_number(int(row.serial, 16))
                   .revocation_date(dt.datetime.fromtimestamp(row.revoked_at, dt.UTC)).build() for row in rows]
        crl = self.ca.write_crl(entries, now=dt.datetime.fromtimestamp(now, dt.UTC))
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number

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
        """
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

    def crl_pem(self) -> bytes:
        return self.ca.paths.crl.read_bytes()
