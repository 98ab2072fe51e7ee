"""Parsing of PEM certificates, CSRs and CRLs with size limits and one-line errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from bonseyes_py.errors import InputError

MAX_CERT_PEM_BYTES = 64 * 1024
MAX_CHAIN_PEM_BYTES = 256 * 1024
MAX_CRL_PEM_BYTES = 8 * 1024 * 1024
# What cryptography raises on malformed input: InvalidVersion and UnsupportedAlgorithm are not ValueErrors.
_PARSE_ERRORS = (ValueError, x509.InvalidVersion, UnsupportedAlgorithm)


def _limit(data: bytes, limit: int, what: str) -> bytes:
    if not isinstance(data, (bytes, bytearray)):
        raise InputError(f"{what} must be bytes")
    if len(data) > limit:
        raise InputError(f"{what} of {len(data)} bytes exceeds the {limit}-byte limit")
    return bytes(data)


def _parsed(certificate: x509.Certificate) -> x509.Certificate:
    """Parse now what cryptography parses lazily (names, extensions, key, signature algorithm).

    Otherwise a malformed field of an attacker-supplied certificate (an x5c entry) surfaces later
    as a bare ``ValueError`` inside a verifier instead of an ``InputError`` here.
    """
    try:
        _ = (certificate.issuer, certificate.subject, certificate.extensions, certificate.public_key(),
             certificate.signature_hash_algorithm, certificate.not_valid_before_utc, certificate.not_valid_after_utc)
    except _PARSE_ERRORS as exc:
        raise InputError(f"malformed certificate: {exc}") from exc
    return certificate


def load_certificate(pem: bytes) -> x509.Certificate:
    pem = _limit(pem, MAX_CERT_PEM_BYTES, "certificate")
    try:
        certificate = x509.load_pem_x509_certificate(pem)
    except _PARSE_ERRORS as exc:
        raise InputError(f"malformed certificate PEM: {exc}") from exc
    return _parsed(certificate)


def load_certificate_chain(pem: bytes) -> list[x509.Certificate]:
    pem = _limit(pem, MAX_CHAIN_PEM_BYTES, "certificate chain")
    try:
        chain = x509.load_pem_x509_certificates(pem)
    except _PARSE_ERRORS as exc:
        raise InputError(f"malformed certificate chain PEM: {exc}") from exc
    return [_parsed(c) for c in chain]


def load_der_certificate(der: bytes) -> x509.Certificate:
    der = _limit(der, MAX_CERT_PEM_BYTES, "certificate")
    try:
        certificate = x509.load_der_x509_certificate(der)
    except _PARSE_ERRORS as exc:
        raise InputError(f"malformed DER certificate: {exc}") from exc
    return _parsed(certificate)


def load_csr(pem: bytes) -> x509.CertificateSigningRequest:
    pem = _limit(pem, MAX_CERT_PEM_BYTES, "CSR")
    try:
        csr = x509.load_pem_x509_csr(pem)
    except _PARSE_ERRORS as exc:
        raise InputError(f"malformed CSR PEM: {exc}") from exc
    try:
        valid = csr.is_signature_valid
        _ = (csr.subject, csr.extensions, csr.public_key())
    except _PARSE_ERRORS as exc:
        raise InputError(f"malformed CSR: {exc}") from exc
    if not valid:
        raise InputError("CSR signature is invalid: the requester does not hold the key", check="csr")
    return csr


def load_crl(pem: bytes) -> x509.CertificateRevocationList:
    pem = _limit(pem, MAX_CRL_PEM_BYTES, "CRL")
    try:
        crl = x509.load_pem_x509_crl(pem)
        _ = (crl.issuer, crl.last_update_utc, crl.next_update_utc, crl.extensions,
             [(entry.serial_number, entry.extensions) for entry in crl])
    except _PARSE_ERRORS as exc:
        raise InputError(f"malformed CRL PEM: {exc}") from exc
    return crl


def read_certificate(path: Path | str) -> x509.Certificate:
    return load_certificate(Path(path).read_bytes())


def certificate_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def chain_pem(chain: list[x509.Certificate]) -> bytes:
    return b"".join(certificate_pem(c) for c in chain)


def fingerprint_sha256(certificate: x509.Certificate) -> str:
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()
