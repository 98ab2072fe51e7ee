"""Host and artefact licences (steps 4 and 6 of the paper) as JWTs signed by the SM.

A host licence binds one runtime ID to a fresh runtime key pair: the certificate's SHA-256
thumbprint is in the ``cnf`` claim (RFC 7800), so the key that BL later presents over TLS is
provably the one the SM handed out for this instance. The private key is returned beside the
licence, never inside it, so forwarding the licence (BL -> SM in step 6) leaks no key.

An artefact licence repeats the runtime ID and ``cnf`` and names the host licence it was derived
from (``hlj``), so BM can check that BL came back with a licence for the very instance BM started.

``verify_licence`` is the one way to check either: type, algorithm, signer chain to the root,
revocation, signature, time window, audience and every binding the caller expects.
"""

from __future__ import annotations

import base64
import datetime as dt
import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from bonseyes_py.errors import LicenceError
from bonseyes_py.identity.ids import RuntimeID
from bonseyes_py.jose import DEFAULT_LEEWAY, Signer, timestamp, verify_jws
from bonseyes_py.pki.keys import KeyAlgorithm, PrivateKey
from bonseyes_py.pki.roles import Identity, Role
from bonseyes_py.pki.verify import TrustStore, utcnow

if TYPE_CHECKING:  # verification (BL's start) never needs the CA's code
    from bonseyes_py.pki.ca import CertificateAuthority

DEFAULT_HOST_LICENCE_VALIDITY = dt.timedelta(minutes=15)
DEFAULT_ARTEFACT_LICENCE_VALIDITY = dt.timedelta(hours=1)
_CLAIMS = ("iss", "sub", "aud", "iat", "nbf", "exp", "jti", "runtime", "cnf", "nonce")


def _new_id() -> str:
    """A fresh ``jti``; ``uuid`` (and the ``platform`` it loads) is imported on first issue only, so that
    verification, which BL runs at every container start, does not pay for it."""
    import uuid

    return str(uuid.uuid4())


class LicenceKind(enum.StrEnum):
    HOST = "bonseyes-host-licence+jwt"
    ARTEFACT = "bonseyes-artefact-licence+jwt"


def certificate_thumbprint(certificate: x509.Certificate) -> str:
    """RFC 8705 ``x5t#S256``: base64url SHA-256 of the DER certificate."""
    digest = certificate.fingerprint(hashes.SHA256())  # SHA-256 over the DER encoding, computed in Rust
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class HostLicence:
    token: str
    claims: dict[str, Any]
    runtime_key: PrivateKey = field(repr=False)
    runtime_certificate: x509.Certificate


@dataclass(frozen=True)
class Expectations:
    """Bindings a verifier insists on; ``None`` means "not checked by this caller"."""

    audience: str | None = None
    host_id: str | None = None
    host_ip: str | None = None
    image_digest: str | None = None
    nonce: str | None = None
    artefact_id: str | None = None
    user_id: str | None = None
    runtime_certificate: x509.Certificate | None = None
    host_licence_id: str | None = None


class LicenceIssuer:
    """Signs licences with the SM's licence-signer key; the CA supplies runtime identities."""

    def __init__(self, ca: CertificateAuthority) -> None:
        self.ca = ca
        self.signer = Signer(ca.signer_key, ca.signer_chain)
        self.issuer_uri = ca.identity(Role.LICENCE_SIGNER, "sm").uri

    def host_audience(self, host_id: str) -> str:
        return self.ca.identity(Role.HOST, host_id).uri

    def _runtime_uris(self, runtime: RuntimeID) -> tuple[str, str]:
        # RuntimeID validated host_id and derived its name, so the name checks of ca.identity are skipped.
        domain = self.ca.trust_domain
        return Identity(domain, Role.RUNTIME, runtime.name).uri, Identity(domain, Role.HOST, runtime.host_id).uri

    def issue_host_licence(self, runtime: RuntimeID, *, validity: dt.timedelta = DEFAULT_HOST_LICENCE_VALIDITY,
                           terms: dict[str, Any] | None = None, runtime_algorithm: KeyAlgorithm = KeyAlgorithm.EC_P256,
                           now: dt.datetime | None = None) -> HostLicence:
        now = now or utcnow()
        key, certificate = self.ca.issue_runtime_identity(
            runtime.name, algorithm=runtime_algorithm, validity=validity, ip_addresses=(runtime.host_ip,), now=now)
        claims = self._claims(runtime, certificate, validity, now, terms)
        return HostLicence(self.signer.sign(claims, LicenceKind.HOST.value), claims, key, certificate)

    def issue_artefact_licence(self, host_licence_claims: dict[str, Any], *, artefact_id: str,
                               validity: dt.timedelta = DEFAULT_ARTEFACT_LICENCE_VALIDITY,
                               terms: dict[str, Any] | None = None, now: dt.datetime | None = None) -> str:
        """Step 6: issue from a host licence the caller has already verified with ``verify_licence``."""
        now = now or utcnow()
        runtime = RuntimeID.from_claim(host_licence_claims["runtime"])
        if runtime.artefact_id != artefact_id:
            raise LicenceError(f"host licence is for artefact {runtime.artefact_id!r}, not {artefact_id!r}",
                               check="artefact-id")
        claims = {
            "iss": self.issuer_uri,
            "sub": host_licence_claims["sub"],
            "aud": host_licence_claims["aud"],
            "iat": timestamp(now),
            "nbf": timestamp(now),
            "exp": timestamp(now + validity),
            "jti": _new_id(),
            "nonce": runtime.nonce,
            "runtime": runtime.as_claim(),
            "cnf": host_licence_claims["cnf"],
            "hlj": host_licence_claims["jti"],
            "terms": terms or {},
        }
        return self.signer.sign(claims, LicenceKind.ARTEFACT.value)

    def _claims(self, runtime: RuntimeID, certificate: x509.Certificate, validity: dt.timedelta,
                now: dt.datetime, terms: dict[str, Any] | None) -> dict[str, Any]:
        subject, audience = self._runtime_uris(runtime)
        return {
            "iss": self.issuer_uri,
            "sub": subject,
            "aud": audience,
            "iat": timestamp(now),
            "nbf": timestamp(now),
            "exp": timestamp(now + validity),
            "jti": _new_id(),
            "nonce": runtime.nonce,
            "runtime": runtime.as_claim(),
            "cnf": {"x5t#S256": certificate_thumbprint(certificate)},
            "terms": terms or {},
        }


def _require(actual: object, expected: object, check: str, label: str) -> None:
    if expected is not None and actual != expected:
        raise LicenceError(f"licence is for {label} {actual!r}, not {expected!r}", check=check)


def verify_licence(token: str | bytes, trust: TrustStore, *, kind: LicenceKind, expect: Expectations = Expectations(),
                   now: dt.datetime | None = None, leeway: dt.timedelta = DEFAULT_LEEWAY,
                   revoked_licence_ids: Iterable[str] = ()) -> dict[str, Any]:
    """Return the claims of a valid licence or raise ``LicenceError`` naming the failed check."""
    verified = verify_jws(token, trust, typ=kind.value, signer_roles=(Role.LICENCE_SIGNER,), now=now,
                          leeway=leeway, required_claims=_CLAIMS + (("hlj",) if kind is LicenceKind.ARTEFACT else ()))
    claims = verified.claims
    if claims["iss"] != verified.signer.uri:
        raise LicenceError("issuer claim does not match the signer certificate", check="issuer")
    runtime = RuntimeID.from_claim(claims["runtime"])
    if claims["nonce"] != runtime.nonce:
        raise LicenceError("nonce claim differs from the runtime ID's nonce", check="nonce")
    if claims["sub"] != f"spiffe://{verified.signer.trust_domain}/runtime/{runtime.name}":
        raise LicenceError("subject does not name this runtime ID", check="subject")
    if claims["jti"] in set(revoked_licence_ids):
        raise LicenceError(f"licence {claims['jti']} is revoked", check="revoked")
    _require(claims["aud"], expect.audience, "audience", "audience")
    _require(runtime.host_id, expect.host_id, "host-id", "host ID")
    _require(runtime.host_ip, expect.host_ip, "host-ip", "host IP")
    _require(runtime.image_digest, expect.image_digest, "image-digest", "image digest")
    _require(runtime.nonce, expect.nonce, "nonce", "nonce")
    _require(runtime.artefact_id, expect.artefact_id, "artefact-id", "artefact ID")
    _require(runtime.user_id, expect.user_id, "user-id", "user ID")
    if kind is LicenceKind.ARTEFACT:
        _require(claims["hlj"], expect.host_licence_id, "host-licence", "host licence")
    cnf = claims["cnf"]
    if not isinstance(cnf, dict) or not isinstance(cnf.get("x5t#S256"), str):
        raise LicenceError("cnf claim lacks x5t#S256", check="format")
    if expect.runtime_certificate is not None:
        _require(cnf["x5t#S256"], certificate_thumbprint(expect.runtime_certificate), "runtime-key",
                 "runtime certificate")
    return claims
