"""The one certificate verification function: chain to the root, validity window, role, revocation.

Chains here are short and fixed (root -> intermediate -> leaf), so the path is built by issuer
name and each link checked with ``verify_directly_issued_by``; every CA link must carry
``basicConstraints CA:TRUE`` and ``keyCertSign``. Revocation is checked against the issuing CA's
CRL, whose own signature and freshness are checked first.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from bonseyes_py.errors import CertificateError
from bonseyes_py.pki.roles import Identity, Role, identity_of

MAX_CHAIN_LENGTH = 4
_MEMO_LIMIT = 4096
# Signature checks are memoised on the full certificates (x509.Certificate hashes and compares by its
# DER), so a tampered certificate is a different key and is checked afresh. Time windows, roles
# and revocation are never memoised: they are checked on every call.
_VERIFIED_LINKS: set[tuple[x509.Certificate, x509.Certificate]] = set()
# CRL objects are not hashable: memoise by identity and keep the object alive so the id stays its own.
_VALID_CRLS: dict[int, tuple[x509.CertificateRevocationList, x509.Certificate]] = {}


def clear_verification_memos() -> None:
    """Forget memoised signature checks (for benchmarks of the cold path, and after a CA rotation)."""
    from bonseyes_py import jose

    _VERIFIED_LINKS.clear()
    _VALID_CRLS.clear()
    jose.clear_header_cache()


def _issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    link = (certificate, issuer)
    if link in _VERIFIED_LINKS:
        return True
    try:
        certificate.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError):
        return False
    if len(_VERIFIED_LINKS) >= _MEMO_LIMIT:
        _VERIFIED_LINKS.clear()
    _VERIFIED_LINKS.add(link)
    return True


def _crl_signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    known = _VALID_CRLS.get(id(crl))
    if known is not None and known[0] is crl and known[1] == issuer:
        return True
    if not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
        return False
    if len(_VALID_CRLS) >= _MEMO_LIMIT:
        _VALID_CRLS.clear()
    _VALID_CRLS[id(crl)] = (crl, issuer)
    return True


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class TrustStore:
    """What a verifier trusts: the SM root, known intermediates, and the CRLs it has fetched."""

    root: x509.Certificate
    intermediates: list[x509.Certificate] = field(default_factory=list)
    crls: list[x509.CertificateRevocationList] = field(default_factory=list)
    trust_domain: str | None = None
    require_crl: bool = False

    def __post_init__(self) -> None:
        if not _is_ca(self.root):
            raise CertificateError("trust root is not a CA certificate", check="root")
        if self.root.issuer != self.root.subject:
            raise CertificateError("trust root is not self-issued", check="root")
        try:
            self.root.verify_directly_issued_by(self.root)
        except (InvalidSignature, ValueError, TypeError) as exc:
            raise CertificateError("trust root's self-signature is invalid", check="root") from exc


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return bool(constraints.ca and usage.key_cert_sign)


def _check_window(certificate: x509.Certificate, now: dt.datetime, what: str) -> None:
    if now < certificate.not_valid_before_utc:
        raise CertificateError(f"{what} is not valid before {certificate.not_valid_before_utc.isoformat()}",
                               check="not-yet-valid")
    if now > certificate.not_valid_after_utc:
        raise CertificateError(f"{what} expired at {certificate.not_valid_after_utc.isoformat()}",
                               check="expired")


def _find_issuer(certificate: x509.Certificate, candidates: Sequence[x509.Certificate]) -> x509.Certificate:
    for candidate in candidates:
        if candidate.subject == certificate.issuer and _issued_by(certificate, candidate):
            return candidate
    raise CertificateError(f"no trusted issuer signed the certificate of {certificate.subject.rfc4514_string()!r}"
                           " (foreign CA or tampered certificate)", check="chain")


def _check_revocation(certificate: x509.Certificate, issuer: x509.Certificate,
                      crls: Iterable[x509.CertificateRevocationList], now: dt.datetime, required: bool) -> None:
    for crl in crls:
        if crl.issuer != issuer.subject:
            continue
        if not _crl_signed_by(crl, issuer):
            raise CertificateError("CRL signature is invalid", check="crl")
        if crl.next_update_utc is not None and now > crl.next_update_utc:
            raise CertificateError(f"CRL is stale since {crl.next_update_utc.isoformat()}; fetch a fresh one",
                                   check="crl-stale")
        if crl.get_revoked_certificate_by_serial_number(certificate.serial_number) is not None:
            raise CertificateError(f"certificate serial {certificate.serial_number:x} is revoked", check="revoked")
        return
    if required:
        raise CertificateError(f"no CRL from {issuer.subject.rfc4514_string()!r} is available", check="crl")


def verify_certificate(
    certificate: x509.Certificate,
    trust: TrustStore,
    *,
    roles: Iterable[Role] | None,
    extra_intermediates: Sequence[x509.Certificate] = (),
    now: dt.datetime | None = None,
) -> Identity:
    """Verify a leaf and return the identity it speaks for, or raise ``CertificateError``.

    ``roles`` lists the roles the caller accepts; ``None`` means any role (only for inspection tools).
    """
    now = now or utcnow()
    identity = identity_of(certificate)
    if roles is not None:
        allowed = set(roles)
        if identity.role not in allowed:
            names = ", ".join(sorted(r.value for r in allowed))
            raise CertificateError(f"certificate role {identity.role.value} is not accepted here (needs {names})",
                                   check="role")
    if trust.trust_domain is not None and identity.trust_domain != trust.trust_domain:
        raise CertificateError(f"trust domain {identity.trust_domain} is not {trust.trust_domain}", check="role")
    _check_window(certificate, now, "certificate")
    candidates = [*extra_intermediates, *trust.intermediates]
    current = certificate
    links: list[tuple[x509.Certificate, x509.Certificate]] = []
    for _ in range(MAX_CHAIN_LENGTH):
        if current.issuer == trust.root.subject:
            if not _issued_by(current, trust.root):
                raise CertificateError("signature does not chain to the trusted root", check="chain")
            issuer = trust.root
        else:
            issuer = _find_issuer(current, candidates)
            if not _is_ca(issuer):
                raise CertificateError("issuer in chain is not a CA", check="chain")
            _check_window(issuer, now, "issuing CA certificate")
        links.append((current, issuer))
        if issuer is trust.root:
            # Revocation is checked once the chain is known to end at our root, so a foreign chain
            # whose CA names collide with ours is reported as "chain", not as a CRL that fails to verify.
            for subject, subject_issuer in links:
                _check_revocation(subject, subject_issuer, trust.crls, now,
                                  trust.require_crl and subject is certificate)
            return identity
        current = issuer
    raise CertificateError("certificate chain is too long", check="chain")
