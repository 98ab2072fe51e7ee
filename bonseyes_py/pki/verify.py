"""The one certificate path validator: RFC 5280 section 6 over root -> intermediate(s) -> leaf.

Every certificate, chain or CRL this package trusts goes through here: TLS peers, licence and ID
signers (``x5c``), an intermediate installed under an offline root, a certificate handed in for
revocation, a published CRL. For each certificate of the path (6.1.3, 6.1.4): no critical extension
this validator does not process; a signature algorithm from a short list that matches the issuer's
key; issuer name equal to the issuer's subject and, when both are present, authority key identifier
equal to the issuer's subject key identifier; every issuer a CA (``basicConstraints cA=TRUE``) whose
``keyUsage`` allows ``keyCertSign``; ``pathLenConstraint`` counted down over the non-self-issued
intermediates, starting at the root's; the leaf, used as an end entity, not a CA; every validity
window, the root's included. Revocation is checked against the issuing CA's CRL, whose own signature
and freshness are checked first.

Why not ``cryptography.x509.verification`` (installed, >= 45): its policies are the Web PKI's. They
refuse Ed25519 keys and signatures, which this CA issues (``KeyAlgorithm.ED25519``), and its client
verifier requires the clientAuth EKU, which the licence signer does not carry; roles live in SAN URI
and EKU here and are checked by ``identity_of``. Path building is simple enough to own: chains are a
root, one or two intermediates and a leaf.

The time-independent part of a validation (signatures, names, key identifiers, extensions, CA flags,
path length) is memoised per path in the ``TrustStore`` that validated it, so a second store never
sees the first one's results and loading new anchors into a store forgets exactly its own memo.
Windows, roles and revocation are checked on every call.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtensionOID, SignatureAlgorithmOID

from bonseyes_py.errors import CertificateError
from bonseyes_py.pki.roles import Identity, Role, identity_of

# At most this many issuers above the leaf (root included); the SM's paths have two.
MAX_CHAIN_LENGTH = 4
_MEMO_LIMIT = 4096

# The extensions whose meaning this validator (with identity_of) enforces; a critical extension
# outside this set makes the path invalid (RFC 5280 section 6.1.4 (o)), since honouring it is the
# whole point of marking it critical (name constraints and policy constraints are not processed here).
RECOGNISED_EXTENSIONS = frozenset({
    ExtensionOID.BASIC_CONSTRAINTS,
    ExtensionOID.KEY_USAGE,
    ExtensionOID.EXTENDED_KEY_USAGE,
    ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
    ExtensionOID.SUBJECT_KEY_IDENTIFIER,
    ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
})

# Signature algorithm -> the issuer key type it needs. No SHA-1 or MD5; RSA-PSS only with SHA-2.
_SIGNATURE_KEYS: dict[x509.ObjectIdentifier, type] = {
    SignatureAlgorithmOID.ECDSA_WITH_SHA256: ec.EllipticCurvePublicKey,
    SignatureAlgorithmOID.ECDSA_WITH_SHA384: ec.EllipticCurvePublicKey,
    SignatureAlgorithmOID.ECDSA_WITH_SHA512: ec.EllipticCurvePublicKey,
    SignatureAlgorithmOID.ED25519: ed25519.Ed25519PublicKey,
    SignatureAlgorithmOID.RSA_WITH_SHA256: rsa.RSAPublicKey,
    SignatureAlgorithmOID.RSA_WITH_SHA384: rsa.RSAPublicKey,
    SignatureAlgorithmOID.RSA_WITH_SHA512: rsa.RSAPublicKey,
    SignatureAlgorithmOID.RSASSA_PSS: rsa.RSAPublicKey,
}
_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
_MIN_RSA_BITS = 2048


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _name(certificate: x509.Certificate) -> str:
    return repr(certificate.subject.rfc4514_string())


class VerificationMemo:
    """What one trust store has already validated, so a repeated peer or signer costs no signature check.

    Keys are the certificates themselves (``x509.Certificate`` hashes and compares by its DER), so a
    tampered certificate is a different key and is checked afresh. Nothing time-dependent is kept:
    windows, roles and revocation are checked on every call.
    """

    def __init__(self, limit: int = _MEMO_LIMIT) -> None:
        self.limit = limit
        self.hits = 0
        self.misses = 0
        # (end entity?, leaf, *presented intermediates) -> the path to the root that passed every check.
        self._routes: dict[tuple[object, ...], tuple[x509.Certificate, ...]] = {}
        self._links: set[tuple[x509.Certificate, x509.Certificate]] = set()
        # id(issuer) -> (issuer, the CRL set searched, its CRL once signature-checked or None): the issuers
        # of a path are the store's own objects or cached x5c ones, so identity finds them without hashing
        # their DER; the issuer is kept alive in the entry so its id stays its own, and an entry made from
        # a CRL set that has since been replaced never matches (a verification racing ``replace_crls``).
        self._issuer_crls: dict[int, tuple[x509.Certificate, object, x509.CertificateRevocationList | None]] = {}

    def __len__(self) -> int:
        return len(self._routes)

    def __contains__(self, path: object) -> bool:
        """Whether ``path`` (leaf first, root last) is memoised as a valid end-entity path (for tests and tools)."""
        return isinstance(path, Sequence) and any(
            key[0] is True and known == tuple(path) for key, known in self._routes.items())

    def clear(self) -> None:
        self._routes.clear()
        self._links.clear()
        self._issuer_crls.clear()

    def clear_crls(self) -> None:
        self._issuer_crls.clear()

    def _remember(self, store: dict[Any, Any] | set[Any], key: Any, value: Any = None) -> None:
        if len(store) >= self.limit:
            store.clear()
        if isinstance(store, set):
            store.add(key)
        else:
            store[key] = value

    def _signed(self, certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
        link = (certificate, issuer)
        if link in self._links:
            return True
        if not _signature_valid(certificate, issuer):
            return False
        self._remember(self._links, link)
        return True

    def _crl_of(self, issuer: x509.Certificate, crls: Sequence[tuple[x509.Name, x509.CertificateRevocationList]],
                ) -> x509.CertificateRevocationList | None:
        """The CRL ``issuer`` signed, among ``crls`` (with their issuer names); one in its name with a bad
        signature is an error."""
        known = self._issuer_crls.get(id(issuer))
        if known is not None and known[0] is issuer and known[1] is crls:
            return known[2]
        found = None
        for crl_issuer, crl in crls:
            if crl_issuer != issuer.subject:
                continue
            if not _crl_signature_ok(crl, issuer):
                raise CertificateError("CRL signature is invalid", check="crl")
            found = crl
            break
        self._remember(self._issuer_crls, id(issuer), (issuer, crls, found))
        return found


class TrustStore:
    """What a verifier trusts (the SM root, known intermediates, the CRLs it has fetched) and the memo of
    what it has verified against them. Callers keep one store and pass it around; ``replace_anchors``
    and ``replace_crls`` load new material into it and forget the results that depended on the old."""

    def __init__(self, root: x509.Certificate, intermediates: Iterable[x509.Certificate] = (),
                 crls: Iterable[x509.CertificateRevocationList] = (), trust_domain: str | None = None,
                 require_crl: bool = False) -> None:
        self.trust_domain = trust_domain
        self.require_crl = require_crl
        self.memo = VerificationMemo()
        _check_root(root)
        self._root = root
        self._intermediates = tuple(intermediates)
        self._crls = _with_issuers(crls)

    @property
    def root(self) -> x509.Certificate:
        return self._root

    @property
    def intermediates(self) -> list[x509.Certificate]:
        """A copy: the store changes only through ``replace_anchors``, which clears the memo."""
        return list(self._intermediates)

    @property
    def crls(self) -> list[x509.CertificateRevocationList]:
        """A copy: the store changes only through ``replace_crls``."""
        return [crl for _, crl in self._crls]

    def replace_anchors(self, root: x509.Certificate, intermediates: Iterable[x509.Certificate] = ()) -> None:
        """Trust another root or other intermediates from now on; every memoised result is forgotten.

        A new memo rather than a cleared one: a verification still running against the old anchors
        finishes into the old memo, never into this one.
        """
        _check_root(root)
        self._root, self._intermediates = root, tuple(intermediates)
        self.memo = VerificationMemo(self.memo.limit)

    def replace_crls(self, crls: Iterable[x509.CertificateRevocationList]) -> None:
        """Check revocation against these CRLs from now on; memoised paths stay (they do not depend on CRLs)."""
        self._crls = _with_issuers(crls)
        self.memo.clear_crls()

    def clear_memo(self) -> None:
        """Forget memoised results (benchmarks of the cold path)."""
        self.memo.clear()


def _with_issuers(crls: Iterable[x509.CertificateRevocationList],
                  ) -> tuple[tuple[x509.Name, x509.CertificateRevocationList], ...]:
    # A CRL builds its issuer name anew on every access (tens of microseconds): read it once per load.
    return tuple((crl.issuer, crl) for crl in crls)


@dataclass(frozen=True, slots=True)
class _Facts:
    """What path validation reads from one certificate's extensions, gathered in one pass over them."""

    constraints: x509.BasicConstraints | None
    usage: x509.KeyUsage | None
    authority_key: bytes | None
    subject_key: bytes | None
    unknown_critical: x509.ObjectIdentifier | None


def _facts(certificate: x509.Certificate) -> _Facts:
    constraints = usage = authority_key = subject_key = unknown_critical = None
    for extension in certificate.extensions:
        oid, value = extension.oid, extension.value
        if oid == ExtensionOID.BASIC_CONSTRAINTS:
            constraints = value
        elif oid == ExtensionOID.KEY_USAGE:
            usage = value
        elif oid == ExtensionOID.AUTHORITY_KEY_IDENTIFIER:
            authority_key = value.key_identifier
        elif oid == ExtensionOID.SUBJECT_KEY_IDENTIFIER:
            subject_key = value.digest
        elif extension.critical and oid not in RECOGNISED_EXTENSIONS and unknown_critical is None:
            unknown_critical = oid
    return _Facts(constraints, usage, authority_key, subject_key, unknown_critical)


def _check_root(root: x509.Certificate) -> None:
    facts = _facts(root)
    if not (facts.constraints is not None and facts.constraints.ca and facts.usage is not None
            and facts.usage.key_cert_sign):
        raise CertificateError("trust root is not a CA certificate", check="root")
    if root.issuer != root.subject:
        raise CertificateError("trust root is not self-issued", check="root")
    _check_extensions(root, facts, "trust root")
    _check_signature_algorithm(root, root, "trust root")
    try:
        root.verify_directly_issued_by(root)
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise CertificateError("trust root's self-signature is invalid", check="root") from exc


def _check_extensions(certificate: x509.Certificate, facts: _Facts, what: str) -> None:
    oid = facts.unknown_critical
    if oid is not None:
        known = getattr(oid, "_name", "Unknown OID")
        label = oid.dotted_string + ("" if known == "Unknown OID" else f" ({known})")
        raise CertificateError(f"{what} {_name(certificate)} carries the unrecognised critical extension {label};"
                               " it cannot be honoured, so the issuing CA must reissue it without that extension"
                               " or with it non-critical", check="critical-extension")


def _check_signature_algorithm(certificate: x509.Certificate, issuer: x509.Certificate, what: str) -> None:
    oid = certificate.signature_algorithm_oid
    needed = _SIGNATURE_KEYS.get(oid)
    key = issuer.public_key()
    label = getattr(oid, "_name", oid.dotted_string)
    if needed is None:
        raise CertificateError(f"{what} {_name(certificate)} is signed with {label} ({oid.dotted_string}), which is"
                               " refused (ECDSA, Ed25519 or RSA with SHA-2 only)", check="signature-algorithm")
    if not isinstance(key, needed):
        raise CertificateError(f"{what} {_name(certificate)} is signed with {label}, which does not match its"
                               f" issuer's {type(key).__name__.removesuffix('PublicKey') or 'key'} key",
                               check="signature-algorithm")
    if oid == SignatureAlgorithmOID.RSASSA_PSS and not isinstance(
            certificate.signature_hash_algorithm, hashes.SHA256 | hashes.SHA384 | hashes.SHA512):
        raise CertificateError(f"{what} {_name(certificate)} is signed with RSA-PSS over a hash other than SHA-2",
                               check="signature-algorithm")
    if isinstance(key, ec.EllipticCurvePublicKey) and not isinstance(key.curve, _CURVES):
        raise CertificateError(f"{what} {_name(certificate)} is signed with an ECDSA key on curve {key.curve.name};"
                               " only P-256, P-384 and P-521 are accepted", check="signature-algorithm")
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < _MIN_RSA_BITS:
        raise CertificateError(f"{what} {_name(certificate)} is signed with a {key.key_size}-bit RSA key; at least"
                               f" {_MIN_RSA_BITS} bits are required", check="signature-algorithm")


def check_issued_by(certificate: x509.Certificate, issuer: x509.Certificate, what: str = "certificate") -> None:
    """The one link check: names chain, key identifiers agree, a sane algorithm, the signature verifies.

    Used alone where only provenance matters (is this certificate ours to revoke?); a full path goes
    through ``verify_certificate``.
    """
    if certificate.issuer != issuer.subject:
        raise CertificateError(f"{what} {_name(certificate)} is issued by"
                               f" {certificate.issuer.rfc4514_string()!r}, not by {_name(issuer)}", check="chain")
    _check_link(certificate, _facts(certificate), issuer, _facts(issuer), what, None)


def _check_link(certificate: x509.Certificate, facts: _Facts, issuer: x509.Certificate, issuer_facts: _Facts,
                what: str, memo: VerificationMemo | None) -> None:
    """One link whose names are known to chain: algorithm, signature, then key identifiers (RFC 5280 4.2.1.1:
    when both are present, the AKI names the issuer's key by its SKI)."""
    _check_signature_algorithm(certificate, issuer, what)
    signed = memo._signed(certificate, issuer) if memo is not None else _signature_valid(certificate, issuer)
    if not signed:
        target = "the trusted root" if issuer.issuer == issuer.subject else _name(issuer)
        raise CertificateError(f"signature of {what} {_name(certificate)} does not verify with the key of {target}"
                               " (foreign CA or tampered certificate)", check="chain")
    if (facts.authority_key is not None and issuer_facts.subject_key is not None
            and facts.authority_key != issuer_facts.subject_key):
        raise CertificateError(f"{what} {_name(certificate)} names authority key {facts.authority_key.hex()}, not"
                               f" the key {issuer_facts.subject_key.hex()} of its issuer {_name(issuer)}",
                               check="key-identifier")


def _signature_valid(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _crl_signature_ok(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    try:
        return crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return False


def check_crl_signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> None:
    """Raise unless ``crl`` names ``issuer`` and carries its valid signature."""
    if crl.issuer != issuer.subject or not _crl_signature_ok(crl, issuer):
        raise CertificateError(f"CRL of {crl.issuer.rfc4514_string()!r} is not signed by {_name(issuer)}",
                               check="crl")


def _check_issuer(issuer: x509.Certificate, facts: _Facts, what: str) -> None:
    """6.1.4 (k) and (n): an issuer is a CA and its key may sign certificates."""
    if facts.constraints is None:
        raise CertificateError(f"{what} {_name(issuer)} has no basicConstraints, so it is not a CA", check="chain")
    if not facts.constraints.ca:
        raise CertificateError(f"{what} {_name(issuer)} is not a CA (basicConstraints cA=FALSE)", check="chain")
    if facts.usage is None or not facts.usage.key_cert_sign:
        raise CertificateError(f"{what} {_name(issuer)} has no keyUsage keyCertSign; its key may not sign"
                               " certificates", check="key-usage")


def _check_end_entity(certificate: x509.Certificate, facts: _Facts) -> None:
    if facts.constraints is not None and facts.constraints.ca:
        raise CertificateError(f"certificate {_name(certificate)} is a CA (basicConstraints cA=TRUE) and cannot"
                               " be used as an end entity; present a leaf certificate", check="leaf-is-ca")
    if facts.usage is not None and facts.usage.key_cert_sign:
        raise CertificateError(f"certificate {_name(certificate)} may sign certificates (keyUsage keyCertSign) and"
                               " cannot be used as an end entity; present a leaf certificate", check="leaf-is-ca")


def _check_path_length(path: tuple[x509.Certificate, ...], facts: list[_Facts]) -> None:
    """6.1.4 (l), (m), starting from the root's own pathLenConstraint (as OpenSSL does)."""
    remaining: int | None = None
    setter = path[-1]
    for index in range(len(path) - 1, 0, -1):  # root first, the leaf (index 0) never counts
        certificate = path[index]
        if index < len(path) - 1 and certificate.issuer != certificate.subject:
            if remaining is not None and remaining <= 0:
                raise CertificateError(f"intermediate {_name(certificate)} exceeds the pathLenConstraint of"
                                       f" {_name(setter)}: no further CA may sit below it", check="path-length")
            if remaining is not None:
                remaining -= 1
        constraints = facts[index].constraints
        if constraints is not None and constraints.path_length is not None and (
                remaining is None or constraints.path_length <= remaining):
            remaining, setter = constraints.path_length, certificate


def _validate_structure(path: tuple[x509.Certificate, ...], end_entity: bool, memo: VerificationMemo) -> None:
    """Every time-independent check of one path (leaf first, root last, names chaining); the caller memoises it."""
    facts = [_facts(certificate) for certificate in path]
    last = len(path) - 1
    for index in range(last):
        what = "certificate" if index == 0 else "intermediate"
        _check_extensions(path[index], facts[index], what)
        _check_link(path[index], facts[index], path[index + 1], facts[index + 1], what, memo)
        _check_issuer(path[index + 1], facts[index + 1], "trust root" if index + 1 == last else "intermediate")
    if end_entity:
        _check_end_entity(path[0], facts[0])
    else:
        _check_issuer(path[0], facts[0], "certificate")
    _check_path_length(path, facts)


def _check_window(certificate: x509.Certificate, now: dt.datetime, what: str) -> None:
    if now < certificate.not_valid_before_utc:
        raise CertificateError(f"{what} is not valid before {certificate.not_valid_before_utc.isoformat()}",
                               check="not-yet-valid")
    if now > certificate.not_valid_after_utc:
        raise CertificateError(f"{what} expired at {certificate.not_valid_after_utc.isoformat()}",
                               check="expired")


def _candidate_paths(certificate: x509.Certificate, trust: TrustStore,
                     extra_intermediates: Sequence[x509.Certificate]) -> Iterator[tuple[x509.Certificate, ...]]:
    """Paths from ``certificate`` to the root by issuer name, those whose key identifiers agree first.

    Renewed intermediates share a subject (and key), so more than one path may exist: the caller
    takes the first that validates.
    """
    pool = (*extra_intermediates, *trust._intermediates)
    root = trust.root

    def extend(path: tuple[x509.Certificate, ...]) -> Iterator[tuple[x509.Certificate, ...]]:
        current = path[-1]
        if current.issuer == root.subject:
            yield (*path, root)
            return
        if len(path) >= MAX_CHAIN_LENGTH:
            raise CertificateError("certificate chain is too long", check="chain")
        issuers: list[x509.Certificate] = []
        for candidate in pool:
            if candidate.subject == current.issuer and candidate not in path and candidate not in issuers:
                issuers.append(candidate)
        if len(issuers) > 1:
            wanted = _facts(current).authority_key
            issuers.sort(key=lambda c: _facts(c).subject_key != wanted)
        for issuer in issuers:
            yield from extend((*path, issuer))

    return extend((certificate,))


def _check_issuer_windows(path: tuple[x509.Certificate, ...], now: dt.datetime) -> None:
    for index in range(1, len(path)):
        _check_window(path[index], now, "trust root" if index == len(path) - 1 else "issuing CA certificate")


def _validated_path(certificate: x509.Certificate, trust: TrustStore, extra_intermediates: Sequence[x509.Certificate],
                    now: dt.datetime, end_entity: bool) -> tuple[x509.Certificate, ...]:
    memo = trust.memo
    route = (end_entity, certificate, *extra_intermediates)
    known = memo._routes.get(route)
    if known is not None:
        try:
            _check_issuer_windows(known, now)
        except CertificateError:
            pass  # another path may be valid at this time (through a renewed intermediate): search again
        else:
            memo.hits += 1
            return known
    memo.misses += 1
    first_error: CertificateError | None = None
    for path in _candidate_paths(certificate, trust, extra_intermediates):
        try:
            _validate_structure(path, end_entity, memo)
            _check_issuer_windows(path, now)
        except CertificateError as exc:
            first_error = first_error or exc
            continue
        memo._remember(memo._routes, route, path)
        return path
    if first_error is not None:
        raise first_error
    raise CertificateError(f"no trusted issuer signed the certificate of {certificate.subject.rfc4514_string()!r}"
                           " (foreign CA or tampered certificate)", check="chain")


def _check_revocation(certificate: x509.Certificate, issuer: x509.Certificate, trust: TrustStore,
                      now: dt.datetime, required: bool) -> None:
    crl = trust.memo._crl_of(issuer, trust._crls)
    if crl is None:
        if required:
            raise CertificateError(f"no CRL from {issuer.subject.rfc4514_string()!r} is available", check="crl")
        return
    if crl.next_update_utc is not None and now > crl.next_update_utc:
        raise CertificateError(f"CRL is stale since {crl.next_update_utc.isoformat()}; fetch a fresh one",
                               check="crl-stale")
    if crl.get_revoked_certificate_by_serial_number(certificate.serial_number) is not None:
        raise CertificateError(f"certificate serial {certificate.serial_number:x} is revoked", check="revoked")


def verify_certificate(
    certificate: x509.Certificate,
    trust: TrustStore,
    *,
    roles: Iterable[Role] | None,
    extra_intermediates: Sequence[x509.Certificate] = (),
    now: dt.datetime | None = None,
) -> Identity:
    """Verify a leaf used as an end entity and return the identity it speaks for, or raise ``CertificateError``.

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
    path = _validated_path(certificate, trust, extra_intermediates, now, end_entity=True)
    # Revocation is checked once the chain is known to end at our root, so a foreign chain whose CA
    # names collide with ours is reported as "chain", not as a CRL that fails to verify.
    for index in range(len(path) - 1):
        _check_revocation(path[index], path[index + 1], trust, now, trust.require_crl and index == 0)
    return identity


def verify_ca_certificate(certificate: x509.Certificate, trust: TrustStore, *,
                          now: dt.datetime | None = None) -> None:
    """Verify a CA certificate (an intermediate to install) up to the trust root, or raise ``CertificateError``.

    The same path checks as for a leaf, except that ``certificate`` must itself be a CA whose key may
    sign certificates, and its own pathLenConstraint is left to the certificates it will issue.
    """
    now = now or utcnow()
    _check_window(certificate, now, "CA certificate")
    path = _validated_path(certificate, trust, (), now, end_entity=False)
    for index in range(len(path) - 1):
        _check_revocation(path[index], path[index + 1], trust, now, False)
