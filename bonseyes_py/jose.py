"""JWS (RFC 7515) signed with an SM-issued key whose chain travels in ``x5c``.

Signing and signature checks go through PyJWT; this module adds what PyJWT leaves to its caller:
the ``typ`` that separates a host licence from an artefact licence or a signed ID, an algorithm
allow-list tied to the signer's key type (so "none" and HS256-with-the-public-key never reach a
verifier), the x5c chain checked against the verifier's own root, and a time window checked
against an explicit clock.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bonseyes_py.errors import CertificateError, LicenceError
from bonseyes_py.pki.certs import load_der_certificate
from bonseyes_py.pki.keys import KeyAlgorithm, PrivateKey, PublicKey, algorithm_of
from bonseyes_py.pki.roles import Identity, Role
from bonseyes_py.pki.verify import TrustStore, utcnow, verify_certificate

MAX_TOKEN_BYTES = 64 * 1024
MAX_X5C_CERTS = 3
DEFAULT_LEEWAY = dt.timedelta(seconds=30)

JWS_ALGORITHM: dict[KeyAlgorithm, str] = {
    KeyAlgorithm.EC_P256: "ES256",
    KeyAlgorithm.ED25519: "EdDSA",
    KeyAlgorithm.RSA_3072: "PS256",
}
ALLOWED_ALGORITHMS = frozenset(JWS_ALGORITHM.values())

_jws = jwt.PyJWS()


def _b64_der(certificate: x509.Certificate) -> str:
    # x5c uses standard base64 of DER, not base64url (RFC 7515 section 4.1.6).
    return base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode("ascii")


def timestamp(moment: dt.datetime) -> int:
    return int(moment.timestamp())


@dataclass(frozen=True)
class Signer:
    """A signing key and its chain (leaf first, root excluded)."""

    key: PrivateKey
    chain: Sequence[x509.Certificate]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_x5c", [_b64_der(c) for c in self.chain])
        object.__setattr__(self, "_algorithm", JWS_ALGORITHM[algorithm_of(self.key)])

    @property
    def algorithm(self) -> str:
        return self._algorithm  # type: ignore[attr-defined,no-any-return]

    def sign(self, claims: dict[str, Any], typ: str) -> str:
        payload = json.dumps(claims, separators=(",", ":"), sort_keys=True).encode()
        headers = {"typ": typ, "x5c": self._x5c}  # type: ignore[attr-defined]
        return _jws.encode(payload, self.key, algorithm=self.algorithm, headers=headers)


@dataclass(frozen=True)
class VerifiedJWS:
    claims: dict[str, Any]
    signer: Identity
    signer_certificate: x509.Certificate


def _parse_x5c(header: dict[str, Any]) -> list[x509.Certificate]:
    x5c = header.get("x5c")
    if not isinstance(x5c, list) or not 1 <= len(x5c) <= MAX_X5C_CERTS:
        raise LicenceError(f"header x5c must be a list of 1 to {MAX_X5C_CERTS} certificates", check="format")
    certificates = []
    for entry in x5c:
        if not isinstance(entry, str):
            raise LicenceError("header x5c holds a non-string entry", check="format")
        try:
            der = base64.b64decode(entry, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise LicenceError("header x5c entry is not valid base64", check="format") from exc
        try:
            certificates.append(load_der_certificate(der))
        except Exception as exc:  # InputError or a parser error: both mean a malformed chain
            raise LicenceError(f"header x5c entry is not a DER certificate: {exc}", check="format") from exc
    return certificates


def unverified_header(token: str | bytes) -> dict[str, Any]:
    if isinstance(token, bytes):
        try:
            token = token.decode("ascii")
        except UnicodeDecodeError as exc:
            raise LicenceError("token is not ASCII", check="format") from exc
    if not isinstance(token, str):
        raise LicenceError("token must be a string", check="format")
    if len(token) > MAX_TOKEN_BYTES:
        raise LicenceError(f"token of {len(token)} bytes exceeds the {MAX_TOKEN_BYTES}-byte limit", check="size")
    if token.count(".") != 2:
        raise LicenceError("token is not a compact JWS (three dot-separated parts)", check="format")
    try:
        header = _jws.get_unverified_header(token)
    except jwt.exceptions.PyJWTError as exc:
        raise LicenceError(f"token header cannot be decoded: {exc}", check="format") from exc
    return header


def verify_jws(token: str | bytes, trust: TrustStore, *, typ: str, signer_roles: Iterable[Role],
               now: dt.datetime | None = None, leeway: dt.timedelta = DEFAULT_LEEWAY,
               required_claims: Iterable[str] = ("iss", "iat", "nbf", "exp", "jti")) -> VerifiedJWS:
    """Check type, algorithm, signer chain and signature, then the time window; return the claims."""
    now = now or utcnow()
    header = unverified_header(token)
    if header.get("typ") != typ:
        raise LicenceError(f"token type {header.get('typ')!r} is not {typ!r}", check="type")
    algorithm = header.get("alg")
    if not isinstance(algorithm, str) or algorithm not in ALLOWED_ALGORITHMS:  # a list or object is unhashable
        raise LicenceError(f"algorithm {algorithm!r} is not allowed (only {', '.join(sorted(ALLOWED_ALGORITHMS))})",
                           check="algorithm")
    if set(header) - {"alg", "typ", "x5c"}:
        raise LicenceError(f"unexpected header fields {sorted(set(header) - {'alg', 'typ', 'x5c'})}", check="format")
    chain = _parse_x5c(header)
    try:
        signer = verify_certificate(chain[0], trust, roles=signer_roles, extra_intermediates=chain[1:], now=now)
    except CertificateError as exc:
        raise LicenceError(f"signer certificate: {exc.args[0]}", check=f"signer-{exc.check}") from exc
    public_key: PublicKey = chain[0].public_key()  # type: ignore[assignment]
    if JWS_ALGORITHM[algorithm_of(public_key)] != algorithm:
        raise LicenceError(f"algorithm {algorithm} does not match the signer's key", check="algorithm")
    if isinstance(token, bytes):
        token = token.decode("ascii")
    try:
        decoded = _jws.decode_complete(token, public_key, algorithms=[algorithm])  # type: ignore[arg-type]
    except jwt.exceptions.InvalidSignatureError as exc:
        raise LicenceError("signature does not verify", check="signature") from exc
    except jwt.exceptions.PyJWTError as exc:
        raise LicenceError(f"token cannot be decoded: {exc}", check="format") from exc
    try:
        claims = json.loads(decoded["payload"])
    except (ValueError, UnicodeDecodeError) as exc:
        raise LicenceError("payload is not JSON", check="format") from exc
    if not isinstance(claims, dict):
        raise LicenceError("payload is not a JSON object", check="format")
    missing = [name for name in required_claims if name not in claims]
    if missing:
        raise LicenceError(f"missing claims {missing}", check="format")
    _check_times(claims, now, leeway)
    return VerifiedJWS(claims=claims, signer=signer, signer_certificate=chain[0])


def _check_times(claims: dict[str, Any], now: dt.datetime, leeway: dt.timedelta) -> None:
    for name in ("iat", "nbf", "exp"):
        if name in claims and (not isinstance(claims[name], int) or isinstance(claims[name], bool)):
            raise LicenceError(f"claim {name} must be an integer timestamp", check="format")
    current = now.timestamp()
    slack = leeway.total_seconds()
    if "nbf" in claims and current + slack < claims["nbf"]:
        raise LicenceError(f"not valid before {dt.datetime.fromtimestamp(claims['nbf'], dt.UTC).isoformat()}",
                           check="not-yet-valid")
    if "exp" in claims and current - slack >= claims["exp"]:
        raise LicenceError(f"expired at {dt.datetime.fromtimestamp(claims['exp'], dt.UTC).isoformat()}",
                           check="expired")
    if "iat" in claims and claims["iat"] > current + slack:
        raise LicenceError("issued in the future", check="not-yet-valid")
