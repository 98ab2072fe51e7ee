"""Roles carried in certificates.

A role lives in two places of a leaf certificate, and both must agree: the SAN URI
``spiffe://<trust-domain>/<role>/<name>`` (SPIFFE-style identity) and the Extended Key Usage.
A host certificate is therefore never mistaken for a user certificate, and a runtime certificate
never for a host's.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from bonseyes_py.errors import CertificateError, InputError

DEFAULT_TRUST_DOMAIN = "bonseyes.local"

# Licence signing has no registered EKU; 2.25.<uuid> is the unregistered OID arc of ITU-T X.667.
LICENCE_SIGNING_EKU = ObjectIdentifier("2.25.178236911542237935262880925532386911371")

# \Z, not $: "$" also matches before a trailing newline, which would let "name\n" through.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}\Z")
_TRUST_DOMAIN_RE = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?\Z")


class Role(enum.StrEnum):
    """Who a certificate speaks for."""

    SECURITY_MANAGER = "sm"  # the SM's TLS server identity
    LICENCE_SIGNER = "signer"  # the SM key that signs licences and IDs
    MARKETPLACE = "marketplace"
    HOST = "host"  # a BM: client to SM, server for SM and BL
    USER = "user"
    ADMIN = "admin"
    RUNTIME = "runtime"  # one running artefact instance (BL)


_EKUS: dict[Role, tuple[ObjectIdentifier, ...]] = {
    Role.SECURITY_MANAGER: (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
    Role.LICENCE_SIGNER: (LICENCE_SIGNING_EKU,),
    Role.MARKETPLACE: (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
    Role.HOST: (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
    Role.USER: (ExtendedKeyUsageOID.CLIENT_AUTH,),
    Role.ADMIN: (ExtendedKeyUsageOID.CLIENT_AUTH,),
    Role.RUNTIME: (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
}


def ekus_for(role: Role) -> tuple[ObjectIdentifier, ...]:
    return _EKUS[role]


def check_name(name: str, what: str = "name") -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InputError(f"{what} {name!r} must be 1-128 characters of A-Z a-z 0-9 . _ : @ + - "
                         "and start with a letter or digit", check=what.replace(" ", "-"))
    return name


def check_trust_domain(trust_domain: str) -> str:
    if not isinstance(trust_domain, str) or not _TRUST_DOMAIN_RE.match(trust_domain):
        raise InputError(f"trust domain {trust_domain!r} must be a lower-case DNS name", check="trust-domain")
    return trust_domain


@dataclass(frozen=True)
class Identity:
    """The identity a verified certificate speaks for."""

    trust_domain: str
    role: Role
    name: str

    @property
    def uri(self) -> str:
        return f"spiffe://{self.trust_domain}/{self.role.value}/{self.name}"

    @classmethod
    def parse_uri(cls, uri: str) -> Identity:
        prefix = "spiffe://"
        if not uri.startswith(prefix):
            raise CertificateError(f"SAN URI {uri!r} is not a spiffe:// identity", check="role")
        parts = uri[len(prefix):].split("/")
        if len(parts) != 3:
            raise CertificateError(f"SAN URI {uri!r} is not spiffe://DOMAIN/ROLE/NAME", check="role")
        domain, role_text, name = parts
        try:
            role = Role(role_text)
        except ValueError as exc:
            raise CertificateError(f"SAN URI {uri!r} names unknown role {role_text!r}", check="role") from exc
        try:
            return cls(check_trust_domain(domain), role, check_name(name))
        except InputError as exc:  # a certificate's bad identity is a certificate error, not bad user input
            raise CertificateError(f"SAN URI {uri!r}: {exc.args[0]}", check="role") from exc


def identity_of(certificate: x509.Certificate) -> Identity:
    """Read the one SPIFFE identity of a leaf and check that its EKU matches the role it claims."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as exc:
        raise CertificateError("certificate has no subjectAltName; no role can be read", check="role") from exc
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise CertificateError(f"certificate carries {len(uris)} SAN URIs; exactly one is required", check="role")
    identity = Identity.parse_uri(uris[0])
    try:
        eku = set(certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound as exc:
        raise CertificateError("certificate has no extendedKeyUsage", check="role") from exc
    if eku != set(ekus_for(identity.role)):
        raise CertificateError(f"extendedKeyUsage does not match role {identity.role.value}", check="role")
    return identity
