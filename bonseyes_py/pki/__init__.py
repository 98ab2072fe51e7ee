"""PKI of the Security Manager: keys, CA, role-carrying leaves, CRLs, PKCS#12 and verification."""

from __future__ import annotations

from bonseyes_py.pki.ca import CertificateAuthority
from bonseyes_py.pki.keys import KeyAlgorithm, generate_private_key, read_private_key, write_private_key
from bonseyes_py.pki.roles import Identity, Role
from bonseyes_py.pki.verify import TrustStore, verify_certificate

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
