"""User identities as PKCS#12 bundles that browsers import (PBES2/AES-256, SHA-256 MAC)."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import PrivateFormat, pkcs12

from bonseyes_py.errors import InputError, KeyFileError
from bonseyes_py.pki.keys import PrivateKey

MIN_PASSPHRASE_BYTES = 8
MAX_PKCS12_BYTES = 256 * 1024


def export_pkcs12(name: str, key: PrivateKey, certificate: x509.Certificate, chain: list[x509.Certificate],
                  passphrase: bytes) -> bytes:
    if len(passphrase) < MIN_PASSPHRASE_BYTES:
        raise InputError(f"PKCS#12 passphrase must be at least {MIN_PASSPHRASE_BYTES} bytes", check="passphrase")
    encryption = (
        PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(100_000)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(passphrase)
    )
    return pkcs12.serialize_key_and_certificates(name.encode(), key, certificate, chain, encryption)


def import_pkcs12(data: bytes, passphrase: bytes) -> tuple[PrivateKey, x509.Certificate, list[x509.Certificate]]:
    if len(data) > MAX_PKCS12_BYTES:
        raise InputError(f"PKCS#12 bundle of {len(data)} bytes exceeds the {MAX_PKCS12_BYTES}-byte limit")
    try:
        key, certificate, additional = pkcs12.load_key_and_certificates(data, passphrase)
    except ValueError as exc:
        raise KeyFileError(f"cannot open PKCS#12 bundle (wrong passphrase or corrupt file): {exc}") from exc
    if key is None or certificate is None:
        raise KeyFileError("PKCS#12 bundle lacks a key or a certificate")
    return key, certificate, list(additional)  # type: ignore[return-value]
