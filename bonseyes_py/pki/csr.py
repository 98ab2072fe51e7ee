"""Certificate signing requests made by a requester (host, SM or MP server) for its own key.

The CA decides role and name when it issues (``CertificateAuthority.issue_from_csr``), so the subject
of a CSR is only a label for humans; what matters is that the CSR's signature proves possession of the
key, which ``load_csr`` checks. ``csr_matches_key`` lets a caller keep an existing CSR instead of
making a new one on every run (CSRs from ECDSA keys differ each time they are signed).
"""

from __future__ import annotations

import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from bonseyes_py.errors import InputError
from bonseyes_py.pki.keys import PrivateKey, PublicKey, signature_hash

MAX_COMMON_NAME = 64  # RFC 5280 ub-common-name; longer labels are cut to this


def check_common_name(common_name: str | None) -> str | None:
    """A CSR label: printable text without surrounding spaces; a control character (a newline that would
    forge a second line in logs and diffs, an escape sequence) never enters a certificate request."""
    if common_name is None or common_name == "":
        return None
    if not isinstance(common_name, str):
        raise InputError(f"common name must be a string, not {type(common_name).__name__}", check="common-name")
    if not common_name.isprintable() or common_name != common_name.strip():
        raise InputError(f"common name {common_name!r} holds control characters or surrounding spaces",
                         check="common-name")
    return common_name[:MAX_COMMON_NAME]


def build_csr(key: PrivateKey, common_name: str | None = None) -> x509.CertificateSigningRequest:
    """A CSR over ``key``'s public key, signed by ``key``; ``common_name`` is an optional label."""
    label = check_common_name(common_name)
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, label)] if label else []
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attributes))
    return builder.sign(key, signature_hash(key))  # type: ignore[arg-type]


def csr_pem(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_bytes(serialization.Encoding.PEM)


def public_key_sha256(key: PublicKey) -> str:
    """SHA-256 over the DER SubjectPublicKeyInfo, in hex: names a key without revealing anything."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def csr_common_name(csr: x509.CertificateSigningRequest) -> str | None:
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


def csr_matches_key(csr: x509.CertificateSigningRequest, key: PrivateKey, common_name: str | None = None) -> bool:
    """Whether ``csr`` requests a certificate for ``key`` with the given label (signature checked by the loader)."""
    return (public_key_sha256(csr.public_key()) == public_key_sha256(key.public_key())  # type: ignore[arg-type]
            and csr_common_name(csr) == check_common_name(common_name))
