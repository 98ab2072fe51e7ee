"""Parsing of PEM certificates, CSRs and CRLs with size limits and one-line errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bonseyes_py.errors import InputError

MAX_CERT_PEM_BYTES = 64 * 1024
MAX_CHAIN_PEM_BYTES = 256 * 1024
MAX_CRL_PEM_BYTES = 8 * 1024 * 1024


def _limit(data: bytes, limit: int, what: str) -> bytes:
    if not isinstance(data, (bytes, bytearray)):
        raise InputError(f"{what} must be bytes")
    if len(data) > limit:
        raise InputError(f"{what} of {len(data)} bytes exceeds the {limit}-byte limit")
    return bytes(data)


def load_certificate(pem: bytes) -> x509.Certificate:
    pem = _limit(pem, MAX_CERT_PEM_BYTES, "certificate")
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise InputError(f"malformed certificate PEM: {exc}") from exc


def load_certificate_chain(pem: bytes) -> list[x509.Certificate]:
    pem = _limit(pem, MAX_CHAIN_PEM_BYTES, "certificate chain")
    try:
        chain = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise InputError(f"malformed certificate chain PEM: {exc}") from exc
    return chain


def load_der_certificate(der: bytes) -> x509.Certificate:
    der = _limit(der, MAX_CERT_PEM_BYTES, "certificate")
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise InputError(f"malformed DER certificate: {exc}") from exc


def load_csr(pem: bytes) -> x509.CertificateSigningRequest:
    pem = _limit(pem, MAX_CERT_PEM_BYTES, "CSR")
    try:
        csr = x509.load_pem_x509_csr(pem)
    except ValueError as exc:
        raise InputError(f"malformed CSR PEM: {exc}") from exc
    if not csr.is_signature_valid:
        raise InputError("CSR signature is invalid: the requester does not hold the key", check="csr")
    return csr


def load_crl(pem: bytes) -> x509.CertificateRevocationList:
    pem = _limit(pem, MAX_CRL_PEM_BYTES, "CRL")
    try:
        return x509.load_pem_x509_crl(pem)
    except ValueError as exc:
        raise InputError(f"malformed CRL PEM: {exc}") from exc


def read_certificate(path: Path | str) -> x509.Certificate:
    return load_certificate(Path(path).read_bytes())


def certificate_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def chain_pem(chain: list[x509.Certificate]) -> bytes:
    return b"".join(certificate_pem(c) for c in chain)


def fingerprint_sha256(certificate: x509.Certificate) -> str:
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()
