"""Signed IDs of the paper, as JWS with x5c.

- host ID: the hardware ID signed by the host owner's (user) key: who vouches for this machine;
- artefact ID: the human-readable artefact name signed by the SM;
- image ID: the OCI manifest digest of the final image signed by the SM, bound to the artefact ID;
- runtime ID: (image digest, artefact ID, user ID, host ID, nonce, host IP), the identity of one
  running instance; it is not signed on its own but carried inside licences.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any

from bonseyes_py.errors import InputError, LicenceError
from bonseyes_py.jose import Signer, timestamp, verify_jws
from bonseyes_py.pki.roles import Role, check_name
from bonseyes_py.pki.verify import TrustStore, utcnow

HOST_ID_TYPE = "bonseyes-host-id+jwt"
ARTEFACT_ID_TYPE = "bonseyes-artefact-id+jwt"
IMAGE_ID_TYPE = "bonseyes-image-id+jwt"

# \Z, not $: "$" also matches before a trailing newline, which would let "name\n" through.
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}\Z")
_HARDWARE_ID_RE = re.compile(r"^hw-[0-9a-f]{64}\Z")
_NONCE_RE = re.compile(r"^[A-Za-z0-9_-]{16,128}\Z")
_ID_CLAIMS = ("iss", "iat", "nbf", "jti", "sub")


def check_digest(digest: str) -> str:
    if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
        raise InputError(f"image digest {digest!r} is not sha256:<64 hex>", check="digest")
    return digest


def check_hardware_id(hardware_id: str) -> str:
    if not isinstance(hardware_id, str) or not _HARDWARE_ID_RE.match(hardware_id):
        raise InputError(f"hardware ID {hardware_id!r} is not hw-<64 hex>", check="hardware-id")
    return hardware_id


def check_nonce(nonce: str) -> str:
    if not isinstance(nonce, str) or not _NONCE_RE.match(nonce):
        raise InputError("nonce must be 16-128 characters of base64url", check="nonce")
    return nonce


def check_ip(address: str) -> str:
    if not isinstance(address, str):
        raise InputError(f"host IP {address!r} is not a string", check="host-ip")
    try:
        return str(ipaddress.ip_address(address))
    except ValueError as exc:
        raise InputError(f"host IP {address!r} is not an IP address", check="host-ip") from exc


def _new_id() -> str:
    """A fresh ``jti``; ``uuid`` (and the ``platform`` it loads) is imported on first issue only, so that
    verification, which BL runs at every container start, does not pay for it."""
    import uuid

    return str(uuid.uuid4())


def _claims(issuer: str, subject: str, now: dt.datetime, **extra: Any) -> dict[str, Any]:
    return {"iss": issuer, "sub": subject, "iat": timestamp(now), "nbf": timestamp(now),
            "jti": _new_id(), **extra}


def sign_host_id(owner: Signer, owner_uri: str, hardware_id: str, now: dt.datetime | None = None) -> str:
    """The host owner vouches for a machine by signing its hardware ID with their user key."""
    return owner.sign(_claims(owner_uri, check_hardware_id(hardware_id), now or utcnow()), HOST_ID_TYPE)


def sign_artefact_id(sm: Signer, sm_uri: str, artefact_name: str, owner_id: str,
                     now: dt.datetime | None = None) -> str:
    check_name(artefact_name, "artefact name")
    return sm.sign(_claims(sm_uri, artefact_name, now or utcnow(), owner=check_name(owner_id, "owner")),
                   ARTEFACT_ID_TYPE)


def sign_image_id(sm: Signer, sm_uri: str, digest: str, artefact_name: str, now: dt.datetime | None = None) -> str:
    return sm.sign(_claims(sm_uri, check_digest(digest), now or utcnow(),
                           artefact=check_name(artefact_name, "artefact name")), IMAGE_ID_TYPE)


@dataclass(frozen=True)
class HostID:
    hardware_id: str
    owner_uri: str
    token: str


def verify_host_id(token: str, trust: TrustStore, *, expect_hardware_id: str | None = None,
                   now: dt.datetime | None = None) -> HostID:
    verified = verify_jws(token, trust, typ=HOST_ID_TYPE, signer_roles=(Role.USER, Role.ADMIN), now=now,
                          required_claims=_ID_CLAIMS)
    hardware_id = verified.claims["sub"]
    check_hardware_id(hardware_id)
    if verified.claims["iss"] != verified.signer.uri:
        raise LicenceError("host ID issuer does not match its signer certificate", check="issuer")
    if expect_hardware_id is not None and hardware_id != expect_hardware_id:
        raise LicenceError(f"host ID is for hardware {hardware_id}, not {expect_hardware_id}", check="hardware-id")
    return HostID(hardware_id=hardware_id, owner_uri=verified.signer.uri, token=token)


def verify_artefact_id(token: str, trust: TrustStore, *, expect_name: str | None = None,
                       now: dt.datetime | None = None) -> dict[str, Any]:
    verified = verify_jws(token, trust, typ=ARTEFACT_ID_TYPE, signer_roles=(Role.LICENCE_SIGNER,), now=now,
                          required_claims=(*_ID_CLAIMS, "owner"))
    if expect_name is not None and verified.claims["sub"] != expect_name:
        raise LicenceError(f"artefact ID names {verified.claims['sub']!r}, not {expect_name!r}", check="artefact-id")
    return verified.claims


def verify_image_id(token: str, trust: TrustStore, *, expect_digest: str | None = None,
                    expect_artefact: str | None = None, now: dt.datetime | None = None) -> dict[str, Any]:
    verified = verify_jws(token, trust, typ=IMAGE_ID_TYPE, signer_roles=(Role.LICENCE_SIGNER,), now=now,
                          required_claims=(*_ID_CLAIMS, "artefact"))
    if expect_digest is not None and verified.claims["sub"] != expect_digest:
        raise LicenceError(f"image ID is for digest {verified.claims['sub']}, not {expect_digest}",
                           check="image-digest")
    if expect_artefact is not None and verified.claims["artefact"] != expect_artefact:
        raise LicenceError(f"image ID is for artefact {verified.claims['artefact']!r}, not {expect_artefact!r}",
                           check="artefact-id")
    return verified.claims


@dataclass(frozen=True)
class RuntimeID:
    """One running instance of an artefact, as step 4 of the paper defines it."""

    image_digest: str
    artefact_id: str
    user_id: str
    host_id: str
    nonce: str
    host_ip: str

    def __post_init__(self) -> None:
        check_digest(self.image_digest)
        check_name(self.artefact_id, "artefact ID")
        check_name(self.user_id, "user ID")
        check_name(self.host_id, "host ID")
        check_nonce(self.nonce)
        object.__setattr__(self, "host_ip", check_ip(self.host_ip))

    def as_claim(self) -> dict[str, str]:
        return {"image_digest": self.image_digest, "artefact_id": self.artefact_id, "user_id": self.user_id,
                "host_id": self.host_id, "nonce": self.nonce, "host_ip": self.host_ip}

    @classmethod
    def from_claim(cls, claim: Any) -> RuntimeID:
        if not isinstance(claim, dict) or set(claim) != set(cls.__dataclass_fields__):
            raise LicenceError("runtime claim does not hold exactly the six runtime ID fields", check="format")
        try:
            return cls(**claim)
        except InputError as exc:
            raise LicenceError(f"runtime claim: {exc.args[0]}", check="format") from exc

    @functools.cached_property
    def name(self) -> str:
        """A short stable name for the runtime certificate: ``rt-`` + 32 hex of the canonical digest."""
        canonical = json.dumps(self.as_claim(), sort_keys=True, separators=(",", ":")).encode()
        return "rt-" + hashlib.sha256(canonical).hexdigest()[:32]
