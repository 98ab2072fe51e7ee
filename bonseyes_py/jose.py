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
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from jwt.utils import base64url_encode

from bonseyes_py import safejson
from bonseyes_py.errors import CertificateError, InputError, LicenceError
from bonseyes_py.pki.certs import load_der_certificate
from bonseyes_py.pki.keys import KeyAlgorithm, PrivateKey, PublicKey, algorithm_of
from bonseyes_py.pki.roles import Identity, Role
from bonseyes_py.pki.verify import TrustStore, utcnow, verify_certificate

MAX_TOKEN_BYTES = 64 * 1024
# Decoded bounds, checked before parsing. A header is alg, typ and at most three x5c certificates: about
# 2.5 KB for ECDSA/Ed25519 chains, 5 KB for three RSA-3072 certificates. The payload is bounded by the
# token anyway; licences (claims, runtime ID, cnf key) are a few KB.
MAX_HEADER_BYTES = 16 * 1024
MAX_PAYLOAD_BYTES = MAX_TOKEN_BYTES
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
        object.__setattr__(self, "_jwa", jwt.get_algorithm_by_name(self._algorithm))  # type: ignore[attr-defined]
        object.__setattr__(self, "_headers", {})

    @property
    def algorithm(self) -> str:
        return self._algorithm  # type: ignore[attr-defined,no-any-return]

    def _header_segment(self, typ: str) -> bytes:
        # The x5c chain makes the header ~2 KB and it never changes for a (signer, typ): encode it once,
        # with the same JSON rules PyJWT's encoder uses (compact separators, sorted keys).
        segment: bytes | None = self._headers.get(typ)  # type: ignore[attr-defined]
        if segment is None:
            header = {"alg": self.algorithm, "typ": typ, "x5c": self._x5c}  # type: ignore[attr-defined]
            segment = base64url_encode(json.dumps(header, separators=(",", ":"), sort_keys=True).encode())
            self._headers[typ] = segment  # type: ignore[attr-defined]
        return segment

    def sign(self, claims: dict[str, Any], typ: str) -> str:
        """Compact JWS (RFC 7515 section 7.1); the signature itself is PyJWT's JWA implementation."""
        payload = json.dumps(claims, separators=(",", ":"), sort_keys=True).encode()
        signing_input = self._header_segment(typ) + b"." + base64url_encode(payload)
        signature = self._jwa.sign(signing_input, self.key)  # type: ignore[attr-defined]
        return (signing_input + b"." + base64url_encode(signature)).decode("ascii")


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


_SEGMENT_RE = re.compile(r"[A-Za-z0-9_-]*")
_HEADER_CACHE: dict[str, tuple[dict[str, Any], list[x509.Certificate]]] = {}
_HEADER_CACHE_LIMIT = 1024


def clear_header_cache() -> None:
    """Forget parsed headers (benchmarks of the cold path).

    This cache only saves re-parsing the same x5c bytes; it holds no trust decision, so it is shared by
    every trust store. What a store has verified lives in its own memo (``TrustStore.memo``).
    """
    _HEADER_CACHE.clear()


def _b64url_decode(segment: str, what: str) -> bytes:
    if len(segment) % 4 == 1 or not _SEGMENT_RE.fullmatch(segment):
        raise LicenceError(f"token {what} is not base64url", check="format")
    decoded = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    # Non-zero spare bits in the last character decode to the same bytes: refuse them so that a token
    # has exactly one encoding (a mutated token must never verify).
    if base64.urlsafe_b64encode(decoded).rstrip(b"=") != segment.encode("ascii"):
        raise LicenceError(f"token {what} is not canonical base64url", check="format")
    return decoded


def _parse_json(data: bytes, what: str, max_bytes: int) -> Any:
    """Bounded parse of a decoded segment. Oversized or too deeply nested JSON is an ``InputError``
    (``json-too-large``/``json-too-deep``, a 400 over HTTP); anything else unparsable stays a licence
    ``format`` failure."""
    try:
        return safejson.loads(data, what=f"token {what}", max_bytes=max_bytes)
    except InputError as exc:
        if exc.check in ("json-too-large", "json-too-deep"):
            raise
        raise LicenceError(f"token {what} is not JSON", check="format") from exc


def _split(token: str | bytes) -> tuple[str, str, str]:
    if isinstance(token, bytes):
        try:
            token = token.decode("ascii")
        except UnicodeDecodeError as exc:
            raise LicenceError("token is not ASCII", check="format") from exc
    if not isinstance(token, str):
        raise LicenceError("token must be a string", check="format")
    if len(token) > MAX_TOKEN_BYTES:
        raise LicenceError(f"token of {len(token)} bytes exceeds the {MAX_TOKEN_BYTES}-byte limit", check="size")
    parts = token.split(".")
    if len(parts) != 3:
        raise LicenceError("token is not a compact JWS (three dot-separated parts)", check="format")
    return parts[0], parts[1], parts[2]


def _parse_header(segment: str) -> tuple[dict[str, Any], list[x509.Certificate]]:
    """Decode and check the protected header; x5c parsing is memoised per header (one per signer)."""
    cached = _HEADER_CACHE.get(segment)
    if cached is not None:
        return cached
    header = _parse_json(_b64url_decode(segment, "header"), "header", MAX_HEADER_BYTES)
    if not isinstance(header, dict):
        raise LicenceError("token header is not a JSON object", check="format")
    algorithm = header.get("alg")
    if not isinstance(algorithm, str) or algorithm not in ALLOWED_ALGORITHMS:  # a list or object is unhashable
        raise LicenceError(f"algorithm {algorithm!r} is not allowed (only {', '.join(sorted(ALLOWED_ALGORITHMS))})",
                           check="algorithm")
    if set(header) - {"alg", "typ", "x5c"}:
        raise LicenceError(f"unexpected header fields {sorted(set(header) - {'alg', 'typ', 'x5c'})}", check="format")
    parsed = (header, _parse_x5c(header))
    if len(_HEADER_CACHE) >= _HEADER_CACHE_LIMIT:
        _HEADER_CACHE.clear()
    _HEADER_CACHE[segment] = parsed
    return parsed


def unverified_header(token: str | bytes) -> dict[str, Any]:
    """The checked header of a token, before any signature check (for routing, never for trust)."""
    return dict(_parse_header(_split(token)[0])[0])


def verify_jws(token: str | bytes, trust: TrustStore, *, typ: str, signer_roles: Iterable[Role],
               now: dt.datetime | None = None, leeway: dt.timedelta = DEFAULT_LEEWAY,
               required_claims: Iterable[str] = ("iss", "iat", "nbf", "exp", "jti")) -> VerifiedJWS:
    """Check type, algorithm, signer chain and signature, then the time window; return the claims."""
    now = now or utcnow()
    header_segment, payload_segment, signature_segment = _split(token)
    header, chain = _parse_header(header_segment)
    if header.get("typ") != typ:
        raise LicenceError(f"token type {header.get('typ')!r} is not {typ!r}", check="type")
    algorithm = header["alg"]
    try:
        signer = verify_certificate(chain[0], trust, roles=signer_roles, extra_intermediates=chain[1:], now=now)
    except CertificateError as exc:
        raise LicenceError(f"signer certificate: {exc.args[0]}", check=f"signer-{exc.check}") from exc
    public_key: PublicKey = chain[0].public_key()  # type: ignore[assignment]
    if JWS_ALGORITHM[algorithm_of(public_key)] != algorithm:
        raise LicenceError(f"algorithm {algorithm} does not match the signer's key", check="algorithm")
    signature = _b64url_decode(signature_segment, "signature")
    payload = _b64url_decode(payload_segment, "payload")
    # The signature check itself is PyJWT's algorithm implementation (raw r||s to DER for ES256, etc.).
    signing_input = f"{header_segment}.{payload_segment}".encode("ascii")
    if not _jws.get_algorithm_by_name(algorithm).verify(signing_input, public_key, signature):
        raise LicenceError("signature does not verify", check="signature")
    claims = _parse_json(payload, "payload", MAX_PAYLOAD_BYTES)
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
