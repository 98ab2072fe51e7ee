"""User enrolment (step 1): a unique user ID and a certificate, as PKCS#12 or from a CSR.

When the SM generates the key it returns it exactly once, inside a PKCS#12 bundle encrypted with
the passphrase the admin chose; the key is never stored. With a CSR the key never leaves the user.
"""

from __future__ import annotations

import base64
from typing import Any

from sqlalchemy import select

from bonseyes_py.errors import InputError
from bonseyes_py.pki.certs import certificate_pem, chain_pem, load_csr
from bonseyes_py.pki.keys import generate_private_key
from bonseyes_py.pki.pkcs12 import export_pkcs12
from bonseyes_py.pki.roles import Identity, Role, check_name
from bonseyes_py.sm.core import SMCore, found
from bonseyes_py.sm.models import Certificate, User
from bonseyes_py.web.errors import ConflictError

ENROLLABLE_ROLES = {Role.USER.value, Role.ADMIN.value}


def record_certificate(core: SMCore, session: Any, certificate: Any, role: Role, name: str) -> None:
    session.add(Certificate(serial=format(certificate.serial_number, "x"), role=role.value, name=name,
                            not_after=certificate.not_valid_after_utc.timestamp(), created_at=core.now()))


class UserOperations(SMCore):
    def enrol_user(self, actor: Identity, user_id: str, *, organisation: str = "", role: str = "user",
                   passphrase: str | None = None, csr_pem: str | None = None) -> dict[str, Any]:
        check_name(user_id, "user ID")
        if role not in ENROLLABLE_ROLES:
            raise InputError(f"role {role!r} cannot be enrolled; use user or admin", check="role")
        if not isinstance(organisation, str) or len(organisation) > 256:
            raise InputError("organisation must be a string of at most 256 characters", check="organisation")
        if (passphrase is None) == (csr_pem is None):
            raise InputError("give exactly one of passphrase (SM generates the key) or csr", check="enrolment")
        csr = load_csr(csr_pem.encode()) if isinstance(csr_pem, str) else None
        if csr_pem is not None and csr is None:
            raise InputError("csr must be a PEM string", check="csr")
        if passphrase is not None and not isinstance(passphrase, str):
            raise InputError("passphrase must be a string", check="passphrase")
        identity = self.identity(Role(role), user_id)
        key = None
        if csr is not None:
            certificate = self.ca.issue_from_csr(csr, identity.role, user_id)
        else:
            key = generate_private_key()
            certificate = self.ca.issue(key.public_key(), identity)
        with self.transaction() as session:
            if session.get(User, user_id) is not None:
                raise ConflictError(f"user {user_id!r} is already enrolled", check="user-exists")
            session.add(User(user_id=user_id, organisation=organisation, role=role, revoked=False,
                             created_at=self.now()))
            record_certificate(self, session, certificate, identity.role, user_id)
            self.audit(session, actor, "user-enrolled", identity.uri, role=role,
                       serial=format(certificate.serial_number, "x"), key_source="csr" if csr else "sm")
        answer: dict[str, Any] = {
            "user_id": user_id, "role": role, "uri": identity.uri,
            "serial": format(certificate.serial_number, "x"),
            "certificate": certificate_pem(certificate).decode(),
            "chain": chain_pem(self.ca.chain).decode(),
        }
        if key is not None:
            assert passphrase is not None
            bundle = export_pkcs12(user_id, key, certificate, self.ca.chain, passphrase.encode())
            answer["pkcs12"] = base64.b64encode(bundle).decode()
        return answer

    def enrol_service(self, actor: Identity, role: str, name: str, csr_pem: str, *,
                      dns_names: tuple[str, ...] = (), ip_addresses: tuple[str, ...] = ()) -> dict[str, Any]:
        """Issue a certificate for a service peer (the Marketplace) from its CSR."""
        if role != Role.MARKETPLACE.value:
            raise InputError(f"role {role!r} cannot be enrolled as a service; use marketplace", check="role")
        check_name(name, "service name")
        if not isinstance(csr_pem, str):
            raise InputError("csr must be a PEM string", check="csr")
        csr = load_csr(csr_pem.encode())
        certificate = self.ca.issue_from_csr(csr, Role(role), name, dns_names=dns_names, ip_addresses=ip_addresses)
        identity = self.identity(Role(role), name)
        with self.transaction() as session:
            record_certificate(self, session, certificate, Role(role), name)
            self.audit(session, actor, "service-enrolled", identity.uri, serial=format(certificate.serial_number, "x"))
        return {"role": role, "name": name, "uri": identity.uri, "serial": format(certificate.serial_number, "x"),
                "certificate": certificate_pem(certificate).decode(), "chain": chain_pem(self.ca.chain).decode()}

    def get_user(self, user_id: str) -> dict[str, Any]:
        with self.transaction() as session:
            user = found(session.get(User, user_id), "user", user_id)
            serials = session.execute(select(Certificate.serial).where(
                Certificate.name == user_id, Certificate.role == user.role)).scalars().all()
            return {"user_id": user.user_id, "organisation": user.organisation, "role": user.role,
                    "revoked": user.revoked, "serials": list(serials)}
