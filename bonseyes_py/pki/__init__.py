"""PKI of the Security Manager: keys, CA, role-carrying leaves, CRLs, PKCS#12 and verification."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bonseyes_py.pki.keys import KeyAlgorithm, generate_private_key, read_private_key, write_private_key
from bonseyes_py.pki.roles import Identity, Role
from bonseyes_py.pki.verify import TrustStore, verify_certificate

if TYPE_CHECKING:
    from bonseyes_py.pki.ca import CertificateAuthority


def __getattr__(name: str) -> Any:
    """``CertificateAuthority`` on first use: verification (BL's start) never loads the CA's code."""
    if name == "CertificateAuthority":
        from bonseyes_py.pki.ca import CertificateAuthority

        return CertificateAuthority
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "CertificateAuthority",
    "Identity",
    "KeyAlgorithm",
    "Role",
    "TrustStore",
    "generate_private_key",
    "read_private_key",
    "verify_certificate",
    "write_private_key",
]
