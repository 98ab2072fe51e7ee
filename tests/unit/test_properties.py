"""Property-based tests: parsers and verifiers raise only the core's typed errors, whatever the input.

An attacker controls every byte of a token, certificate, CSR or CRL that reaches a verifier; a stray
``TypeError`` or ``KeyError`` there would surface as a 500 or a crash instead of a named refusal.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bonseyes_py.errors import BonseyesError, LicenceError
from bonseyes_py.identity.ids import RuntimeID
from bonseyes_py.jose import unverified_header
from bonseyes_py.licences import Expectations, HostLicence, LicenceIssuer, LicenceKind, verify_licence
from bonseyes_py.pki.ca import CertificateAuthority
from bonseyes_py.pki.certs import load_certificate, load_certificate_chain, load_crl, load_csr

# Moderate by default so the suite stays fast; raise it locally for a deeper search.
MAX_EXAMPLES = int(os.environ.get("BONSEYES_HYPOTHESIS_EXAMPLES", "200"))
SETTINGS = settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
token_like = st.one_of(
    st.binary(max_size=400),
    st.text(max_size=400),
    st.lists(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/", max_size=60),
             min_size=1, max_size=5).map(".".join),
)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _only_typed(call: Any, *args: Any, **kwargs: Any) -> None:
    with contextlib.suppress(BonseyesError):
        call(*args, **kwargs)


@pytest.fixture(scope="module")
def artefact_licence(issuer: LicenceIssuer, host_licence: HostLicence) -> str:
    return issuer.issue_artefact_licence(host_licence.claims, artefact_id="face-detector")


@SETTINGS
@given(token=token_like)
def test_verify_licence_raises_only_typed_errors(ca: CertificateAuthority, token: str | bytes) -> None:
    for kind in LicenceKind:
        with pytest.raises(LicenceError):
            verify_licence(token, ca.trust_store(), kind=kind)


@SETTINGS
@given(token=token_like)
def test_unverified_header_raises_only_typed_errors(token: str | bytes) -> None:
    _only_typed(unverified_header, token)


@SETTINGS
@given(header=st.dictionaries(st.sampled_from(["alg", "typ", "x5c", "kid", "crit"]), json_values, max_size=4),
       payload=json_values, signature=st.binary(max_size=80), keep_typ=st.booleans(), keep_alg=st.booleans(),
       keep_x5c=st.booleans())
def test_structured_tokens_raise_only_licence_errors(ca: CertificateAuthority, host_licence: HostLicence,
                                                     header: dict[str, Any], payload: Any, signature: bytes,
                                                     keep_typ: bool, keep_alg: bool, keep_x5c: bool) -> None:
    """Well-formed JSON in every segment, with any header values: parsing gets past base64 and JSON."""
    real = json.loads(base64.urlsafe_b64decode(host_licence.token.split(".")[0] + "=="))
    header = dict(header)
    for keep, name in ((keep_typ, "typ"), (keep_alg, "alg"), (keep_x5c, "x5c")):
        if keep:
            header[name] = real[name]
    token = ".".join([b64url(json.dumps(header).encode()), b64url(json.dumps(payload).encode()), b64url(signature)])
    with pytest.raises(LicenceError):
        verify_licence(token, ca.trust_store(), kind=LicenceKind.HOST)
    _only_typed(unverified_header, token)


@SETTINGS
@given(data=st.binary(max_size=600) | st.text(max_size=300),
       label=st.sampled_from(["CERTIFICATE", "CERTIFICATE REQUEST", "X509 CRL", "PRIVATE KEY"]), wrap=st.booleans())
def test_loaders_raise_only_typed_errors(data: bytes | str, label: str, wrap: bool) -> None:
    if wrap and isinstance(data, bytes):
        body = base64.encodebytes(data).decode("ascii")
        data = f"-----BEGIN {label}-----\n{body}-----END {label}-----\n".encode()
    for loader in (load_certificate, load_certificate_chain, load_csr, load_crl):
        _only_typed(loader, data)


@SETTINGS
@given(claim=json_values)
def test_runtime_claim_arbitrary_json(claim: Any) -> None:
    _only_typed(RuntimeID.from_claim, claim)


@SETTINGS
@given(values=st.fixed_dictionaries({name: json_values | st.text(max_size=40) for name in
                                     ("image_digest", "artefact_id", "user_id", "host_id", "nonce", "host_ip")}))
def test_runtime_claim_right_keys_any_values(values: dict[str, Any]) -> None:
    """The six expected keys with arbitrary values: every field's checker meets foreign types."""
    error: LicenceError | None = None
    try:
        runtime = RuntimeID.from_claim(values)
    except LicenceError as exc:
        error = exc
    if error is not None:
        assert error.check == "format"
    else:
        assert RuntimeID.from_claim(runtime.as_claim()) == runtime


@SETTINGS
@given(position=st.integers(min_value=0), replacement=st.integers(min_value=0, max_value=255),
       which=st.sampled_from(["host", "artefact"]), as_bytes=st.booleans())
def test_single_byte_mutations_never_verify(ca: CertificateAuthority, host_licence: HostLicence,
                                            artefact_licence: str, position: int, replacement: int, which: str,
                                            as_bytes: bool) -> None:
    token = host_licence.token if which == "host" else artefact_licence
    kind = LicenceKind.HOST if which == "host" else LicenceKind.ARTEFACT
    raw = bytearray(token.encode("ascii"))
    index = position % len(raw)
    assume(raw[index] != replacement)
    raw[index] = replacement
    mutated: str | bytes = bytes(raw) if as_bytes else bytes(raw).decode("latin-1")
    with pytest.raises(LicenceError):
        verify_licence(mutated, ca.trust_store(), kind=kind)


@SETTINGS
@given(host_id=st.text(max_size=40), nonce=st.text(max_size=40), audience=st.text(max_size=40))
def test_arbitrary_expectations_raise_only_licence_errors(ca: CertificateAuthority, host_licence: HostLicence,
                                                          host_id: str, nonce: str, audience: str) -> None:
    expect = Expectations(host_id=host_id, nonce=nonce, audience=audience)
    with pytest.raises(LicenceError):
        verify_licence(host_licence.token, ca.trust_store(), kind=LicenceKind.HOST, expect=expect)


def _mutate(der: bytes, position: int, replacement: int) -> bytes:
    raw = bytearray(der)
    raw[position % len(raw)] = replacement
    return bytes(raw)


def _pem(der: bytes, label: str) -> bytes:
    return f"-----BEGIN {label}-----\n{base64.encodebytes(der).decode('ascii')}-----END {label}-----\n".encode()


@SETTINGS
@given(position=st.integers(min_value=0), replacement=st.integers(min_value=0, max_value=255),
       what=st.sampled_from(["certificate", "csr", "crl"]))
def test_mutated_pki_objects_raise_only_typed_errors(ca: CertificateAuthority, host_licence: HostLicence,
                                                     position: int, replacement: int, what: str) -> None:
    """One changed byte in a real certificate, CSR or CRL: loading and then using it fails cleanly."""
    from cryptography.hazmat.primitives import serialization

    from bonseyes_py.pki.roles import Role
    from bonseyes_py.pki.verify import TrustStore, verify_certificate

    encoding = serialization.Encoding.DER
    if what == "certificate":
        pem = _pem(_mutate(host_licence.runtime_certificate.public_bytes(encoding), position, replacement),
                   "CERTIFICATE")
        with contextlib.suppress(BonseyesError):
            verify_certificate(load_certificate(pem), ca.trust_store(), roles=[Role.RUNTIME])
    elif what == "csr":
        from cryptography import x509

        from bonseyes_py.pki.keys import generate_private_key, signature_hash

        key = generate_private_key()
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "requester")]))
               .sign(key, signature_hash(key)))  # type: ignore[arg-type]
        pem = _pem(_mutate(csr.public_bytes(encoding), position, replacement), "CERTIFICATE REQUEST")
        with contextlib.suppress(BonseyesError):
            ca.issue_from_csr(load_csr(pem), Role.USER, "requester")
    else:
        pem = _pem(_mutate(ca.current_crl().public_bytes(encoding), position, replacement), "X509 CRL")
        with contextlib.suppress(BonseyesError):
            trust = TrustStore(root=ca.root, intermediates=[ca.intermediate], crls=[load_crl(pem)])
            verify_certificate(host_licence.runtime_certificate, trust, roles=[Role.RUNTIME])
