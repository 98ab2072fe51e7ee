"""Host and artefact licences: round trips, and one refusal per check with the check it names."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from bonseyes_py.errors import LicenceError
from bonseyes_py.identity.ids import RuntimeID
from bonseyes_py.jose import MAX_TOKEN_BYTES, Signer, unverified_header, verify_jws
from bonseyes_py.licences import (
    Expectations,
    HostLicence,
    LicenceIssuer,
    LicenceKind,
    certificate_thumbprint,
    verify_licence,
)
from bonseyes_py.pki.ca import CertificateAuthority
from bonseyes_py.pki.keys import KeyAlgorithm, generate_private_key
from bonseyes_py.pki.roles import Role
from bonseyes_py.pki.verify import utcnow, verify_certificate

HOST = LicenceKind.HOST
ARTEFACT = LicenceKind.ARTEFACT
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_json(value: object) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def b64url_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def split(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    header, payload, signature = token.split(".")
    return json.loads(b64url_decode(header)), json.loads(b64url_decode(payload)), signature


def flip_char(segment: str, index: int) -> str:
    """Replace one base64url character by another that changes the decoded bytes."""
    old = ALPHABET.index(segment[index])
    return segment[:index] + ALPHABET[(old + 1) % 64] + segment[index + 1:]


def check_of(token: str | bytes, ca: CertificateAuthority, kind: LicenceKind = HOST, **kwargs: Any) -> str:
    with pytest.raises(LicenceError) as exc:
        verify_licence(token, ca.trust_store(), kind=kind, **kwargs)
    return exc.value.check


@pytest.fixture(scope="module")
def artefact_licence(issuer: LicenceIssuer, host_licence: HostLicence) -> str:
    return issuer.issue_artefact_licence(host_licence.claims, artefact_id="face-detector")


# -- round trips ------------------------------------------------------------------------------------


def test_host_licence_round_trip(ca: CertificateAuthority, issuer: LicenceIssuer, host_licence: HostLicence,
                                 runtime_id: RuntimeID) -> None:
    expect = Expectations(audience=issuer.host_audience(runtime_id.host_id), host_id=runtime_id.host_id,
                          host_ip=runtime_id.host_ip, image_digest=runtime_id.image_digest, nonce=runtime_id.nonce,
                          artefact_id=runtime_id.artefact_id, user_id=runtime_id.user_id,
                          runtime_certificate=host_licence.runtime_certificate)
    claims = verify_licence(host_licence.token, ca.trust_store(require_crl=True), kind=HOST, expect=expect)
    assert claims == host_licence.claims
    assert RuntimeID.from_claim(claims["runtime"]) == runtime_id
    assert claims["sub"] == f"spiffe://bonseyes.local/runtime/{runtime_id.name}"
    assert claims["cnf"] == {"x5t#S256": certificate_thumbprint(host_licence.runtime_certificate)}
    # The runtime key is handed out beside the licence, never inside it.
    key_der = host_licence.runtime_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption())
    assert b64url(key_der)[:40] not in host_licence.token
    assert verify_licence(host_licence.token.encode(), ca.trust_store(), kind=HOST) == claims


def test_runtime_certificate_of_host_licence(ca: CertificateAuthority, host_licence: HostLicence,
                                             runtime_id: RuntimeID) -> None:
    identity = verify_certificate(host_licence.runtime_certificate, ca.trust_store(), roles=[Role.RUNTIME])
    assert identity.name == runtime_id.name
    assert host_licence.runtime_certificate.public_key() == host_licence.runtime_key.public_key()


def test_artefact_licence_round_trip(ca: CertificateAuthority, host_licence: HostLicence, artefact_licence: str,
                                     runtime_id: RuntimeID) -> None:
    expect = Expectations(artefact_id="face-detector", host_licence_id=host_licence.claims["jti"],
                          runtime_certificate=host_licence.runtime_certificate, nonce=runtime_id.nonce)
    claims = verify_licence(artefact_licence, ca.trust_store(), kind=ARTEFACT, expect=expect)
    assert claims["hlj"] == host_licence.claims["jti"]
    assert claims["cnf"] == host_licence.claims["cnf"]
    assert claims["runtime"] == runtime_id.as_claim()
    assert claims["jti"] != host_licence.claims["jti"]


@pytest.mark.parametrize("algorithm", [KeyAlgorithm.ED25519, KeyAlgorithm.RSA_3072], ids=["ed25519", "rsa-3072"])
def test_round_trip_other_algorithms(ca_for: Any, runtime_id: RuntimeID, algorithm: KeyAlgorithm) -> None:
    other_ca = ca_for(algorithm)
    licence = LicenceIssuer(other_ca).issue_host_licence(runtime_id, runtime_algorithm=algorithm)
    assert unverified_header(licence.token)["alg"] == {"ed25519": "EdDSA", "rsa-3072": "PS256"}[algorithm.value]
    claims = verify_licence(licence.token, other_ca.trust_store(), kind=HOST)
    artefact = LicenceIssuer(other_ca).issue_artefact_licence(claims, artefact_id=runtime_id.artefact_id)
    assert verify_licence(artefact, other_ca.trust_store(), kind=ARTEFACT)["hlj"] == claims["jti"]


def test_artefact_licence_for_other_artefact_refused_at_issuance(issuer: LicenceIssuer,
                                                                 host_licence: HostLicence) -> None:
    with pytest.raises(LicenceError) as exc:
        issuer.issue_artefact_licence(host_licence.claims, artefact_id="another-artefact")
    assert exc.value.check == "artefact-id"


# -- tampering --------------------------------------------------------------------------------------


def test_flipped_payload_character(ca: CertificateAuthority, host_licence: HostLicence) -> None:
    header, payload, signature = host_licence.token.split(".")
    tampered = f"{header}.{flip_char(payload, len(payload) // 2)}.{signature}"
    assert check_of(tampered, ca) == "signature"


def test_flipped_claim_re_encoded(ca: CertificateAuthority, host_licence: HostLicence) -> None:
    """A well-formed payload with one changed claim (a longer validity) fails only the signature."""
    header, _, signature = host_licence.token.split(".")
    claims = dict(host_licence.claims, exp=host_licence.claims["exp"] + 86400)
    tampered = f"{header}.{b64url(json.dumps(claims, separators=(',', ':'), sort_keys=True).encode())}.{signature}"
    assert check_of(tampered, ca) == "signature"


def test_flipped_signature_character(ca: CertificateAuthority, host_licence: HostLicence) -> None:
    header, payload, signature = host_licence.token.split(".")
    assert check_of(f"{header}.{payload}.{flip_char(signature, 10)}", ca) == "signature"
    assert check_of(f"{header}.{payload}.{flip_char(signature, 0)}", ca) == "signature"


def test_flipped_byte_breaking_base64_or_json(ca: CertificateAuthority, host_licence: HostLicence) -> None:
    header, payload, signature = host_licence.token.split(".")
    assert check_of(f"{header}.{payload[:5]}*{payload[6:]}.{signature}", ca) == "format"
    assert check_of(f"{header}.{payload}.{signature[:5]}*{signature[6:]}", ca) == "format"
    assert check_of(f"{header[:5]}*{header[6:]}.{payload}.{signature}", ca) == "format"
    # The first header character carries '{': a different letter breaks the JSON.
    assert check_of(f"{flip_char(header, 0)}.{payload}.{signature}", ca) == "format"


def test_signature_padding_bits_are_not_malleable(ca: CertificateAuthority, host_licence: HostLicence) -> None:
    """Only the canonical encoding of the signature is accepted, so one licence has one token."""
    header, payload, signature = host_licence.token.split(".")
    value = ALPHABET.index(signature[-1])
    spare_bits = (6 - (len(b64url_decode(signature)) * 8) % 6) % 6
    assert spare_bits > 0
    for variant in range(value + 1, value + (1 << spare_bits)):
        token = f"{header}.{payload}.{signature[:-1]}{ALPHABET[variant]}"
        assert check_of(token, ca) == "format"


def test_signature_from_another_licence(ca: CertificateAuthority, issuer: LicenceIssuer,
                                        host_licence: HostLicence, runtime_id: RuntimeID) -> None:
    other = issuer.issue_host_licence(runtime_id)
    header, payload, _ = host_licence.token.split(".")
    assert check_of(f"{header}.{payload}.{other.token.split('.')[2]}", ca) == "signature"


# -- signer chain and revocation ----------------------------------------------------------------------


def test_licence_from_foreign_root_refused(ca: CertificateAuthority, foreign_ca: CertificateAuthority,
                                          runtime_id: RuntimeID) -> None:
    forged = LicenceIssuer(foreign_ca).issue_host_licence(runtime_id)
    assert check_of(forged.token, ca) == "signer-chain"


def test_licence_signed_by_non_signer_role_refused(ca: CertificateAuthority, host_licence: HostLicence) -> None:
    """A valid host certificate of our own CA cannot sign licences: the signer role is required."""
    key = generate_private_key()
    cert = ca.issue(key.public_key(), ca.identity(Role.HOST, "rogue-host"))
    forged = Signer(key, [cert, ca.intermediate]).sign(
        dict(host_licence.claims, iss="spiffe://bonseyes.local/host/rogue-host"), HOST.value)
    assert check_of(forged, ca) == "signer-role"


def test_revoked_signer_refused(fresh_ca: CertificateAuthority, runtime_id: RuntimeID) -> None:
    licence = LicenceIssuer(fresh_ca).issue_host_licence(runtime_id)
    assert verify_licence(licence.token, fresh_ca.trust_store(), kind=HOST)
    fresh_ca.revoke(fresh_ca.signer.serial_number)
    assert check_of(licence.token, fresh_ca) == "signer-revoked"


def test_stale_crl_refuses_licence(fresh_ca: CertificateAuthority, runtime_id: RuntimeID) -> None:
    licence = LicenceIssuer(fresh_ca).issue_host_licence(runtime_id)
    fresh_ca.write_crl(now=utcnow() - dt.timedelta(days=30))
    assert check_of(licence.token, fresh_ca) == "signer-crl-stale"


def test_revoked_licence_id_refused(ca: CertificateAuthority, host_licence: HostLicence) -> None:
    assert check_of(host_licence.token, ca, revoked_licence_ids=[host_licence.claims["jti"]]) == "revoked"
    assert verify_licence(host_licence.token, ca.trust_store(), kind=HOST, revoked_licence_ids=["other"])


# -- time window ------------------------------------------------------------------------------------


def test_expired_licence(ca: CertificateAuthority, issuer: LicenceIssuer, runtime_id: RuntimeID) -> None:
    old = issuer.issue_host_licence(runtime_id, now=utcnow() - dt.timedelta(hours=2))
    assert check_of(old.token, ca) == "expired"


def test_expired_by_verification_time(ca: CertificateAuthority, host_licence: HostLicence) -> None:
    later = utcnow() + dt.timedelta(hours=1)
    assert check_of(host_licence.token, ca, now=later) == "expired"


def test_not_yet_valid_licence(ca: CertificateAuthority, issuer: LicenceIssuer, runtime_id: RuntimeID) -> None:
    future = issuer.issue_host_licence(runtime_id, now=utcnow() + dt.timedelta(hours=1))
    assert check_of(future.token, ca) == "not-yet-valid"


def test_leeway_tolerates_small_skew(ca: CertificateAuthority, issuer: LicenceIssuer,
                                     runtime_id: RuntimeID) -> None:
    skewed = issuer.issue_host_licence(runtime_id, now=utcnow() + dt.timedelta(seconds=10))
    assert verify_licence(skewed.token, ca.trust_store(), kind=HOST)
    assert check_of(skewed.token, ca, leeway=dt.timedelta(0)) == "not-yet-valid"


def test_expired_artefact_licence(ca: CertificateAuthority, issuer: LicenceIssuer,
                                  host_licence: HostLicence) -> None:
    old = issuer.issue_artefact_licence(host_licence.claims, artefact_id="face-detector",
                                        now=utcnow() - dt.timedelta(hours=3))
    assert check_of(old, ca, ARTEFACT) == "expired"


# -- bindings ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("field", "value", "check"), [
    ("audience", "spiffe://bonseyes.local/host/h-other", "audience"),
    ("host_id", "h-ffffffffffffffffffffffffffffffff", "host-id"),
    ("host_ip", "10.0.0.8", "host-ip"),
    ("image_digest", "sha256:" + "cd" * 32, "image-digest"),
    ("nonce", "another-nonce-0123456789", "nonce"),
    ("artefact_id", "speech-to-text", "artefact-id"),
    ("user_id", "mallory", "user-id"),
])
def test_wrong_binding_refused(ca: CertificateAuthority, host_licence: HostLicence, artefact_licence: str,
                               field: str, value: str, check: str) -> None:
    expect = Expectations(**{field: value})
    assert check_of(host_licence.token, ca, expect=expect) == check
    assert check_of(artefact_licence, ca, ARTEFACT, expect=expect) == check


def test_other_runtime_certificate_refused(ca: CertificateAuthority, issuer: LicenceIssuer,
                                           host_licence: HostLicence, artefact_licence: str,
                                           runtime_id: RuntimeID) -> None:
    other = issuer.issue_host_licence(runtime_id)  # same runtime ID, fresh key pair
    expect = Expectations(runtime_certificate=other.runtime_certificate)
    assert check_of(host_licence.token, ca, expect=expect) == "runtime-key"
    assert check_of(artefact_licence, ca, ARTEFACT, expect=expect) == "runtime-key"


def test_artefact_licence_from_other_host_licence(ca: CertificateAuthority, artefact_licence: str) -> None:
    assert check_of(artefact_licence, ca, ARTEFACT, expect=Expectations(host_licence_id="other")) == "host-licence"


def test_host_licence_as_artefact_licence(ca: CertificateAuthority, host_licence: HostLicence,
                                          artefact_licence: str) -> None:
    assert check_of(host_licence.token, ca, ARTEFACT) == "type"
    assert check_of(artefact_licence, ca, HOST) == "type"


def test_signed_claims_checked_for_consistency(ca: CertificateAuthority, host_licence: HostLicence) -> None:
    """Even a correctly signed token is refused when its claims disagree with each other."""
    signer = Signer(ca.signer_key, ca.signer_chain)
    base = host_licence.claims
    assert check_of(signer.sign(dict(base, iss="spiffe://bonseyes.local/signer/other"), HOST.value),
                    ca) == "issuer"
    assert check_of(signer.sign(dict(base, nonce="a-different-nonce-123"), HOST.value), ca) == "nonce"
    assert check_of(signer.sign(dict(base, sub="spiffe://bonseyes.local/runtime/rt-x"), HOST.value),
                    ca) == "subject"
    assert check_of(signer.sign(dict(base, cnf={}), HOST.value), ca) == "format"
    assert check_of(signer.sign({k: v for k, v in base.items() if k != "jti"}, HOST.value), ca) == "format"
    assert check_of(signer.sign(dict(base, exp=str(base["exp"])), HOST.value), ca) == "format"
    assert check_of(signer.sign(dict(base, runtime={"image_digest": "x"}), HOST.value), ca) == "format"


# -- algorithm confusion and header abuse ------------------------------------------------------------


def test_alg_none_refused(ca: CertificateAuthority, host_licence: HostLicence) -> None:
    header, claims, _ = split(host_licence.token)
    token = f"{b64url_json(dict(header, alg='none'))}.{b64url_json(claims)}."
    assert check_of(token, ca) == "algorithm"
    with pytest.raises(LicenceError) as exc:
        unverified_header(token)
    assert exc.value.check == "algorithm"


def test_hs256_with_public_key_as_secret_refused(ca: CertificateAuthority, host_licence: HostLicence) -> None:
    header, claims, _ = split(host_licence.token)
    secret = ca.signer.public_key().public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = f"{b64url_json(dict(header, alg='HS256'))}.{b64url_json(claims)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    assert check_of(f"{signing_input}.{b64url(mac)}", ca) == "algorithm"


def test_algorithm_not_matching_signer_key(ca: CertificateAuthority, host_licence: HostLicence) -> None:
    """An allowed algorithm that is not the signer key's (PS256 with an EC key) is refused."""
    header, payload, signature = host_licence.token.split(".")
    decoded = json.loads(b64url_decode(header))
    assert check_of(f"{b64url_json(dict(decoded, alg='PS256'))}.{payload}.{signature}", ca) == "algorithm"


@pytest.mark.parametrize("alg", [["ES256"], {"alg": "ES256"}, None, 256, "es256"], ids=str)
def test_non_string_or_unknown_alg_refused(ca: CertificateAuthority, host_licence: HostLicence, alg: Any) -> None:
    header, payload, signature = host_licence.token.split(".")
    decoded = json.loads(b64url_decode(header))
    assert check_of(f"{b64url_json(dict(decoded, alg=alg))}.{payload}.{signature}", ca) == "algorithm"


@pytest.mark.parametrize("extra", [{"kid": "signer"}, {"jku": "https://evil.example/jwks"}, {"crit": ["b64"]},
                                   {"b64": False}, {"x5u": "https://evil.example/c.pem"}], ids=str)
def test_unexpected_header_field_refused(ca: CertificateAuthority, host_licence: HostLicence,
                                         extra: dict[str, Any]) -> None:
    header, payload, signature = host_licence.token.split(".")
    decoded = json.loads(b64url_decode(header))
    assert check_of(f"{b64url_json({**decoded, **extra})}.{payload}.{signature}", ca) == "format"


@pytest.mark.parametrize("x5c", [None, [], "MIIB", [1], ["!!!"], ["AAAA"], ["A"] * 4], ids=str)
def test_bad_x5c_refused(ca: CertificateAuthority, host_licence: HostLicence, x5c: Any) -> None:
    header, payload, signature = host_licence.token.split(".")
    decoded = json.loads(b64url_decode(header))
    assert check_of(f"{b64url_json(dict(decoded, x5c=x5c))}.{payload}.{signature}", ca) == "format"


def test_x5c_without_intermediate_still_chains_via_trust_store(ca: CertificateAuthority,
                                                               host_licence: HostLicence) -> None:
    """The verifier's own intermediates complete a chain; x5c adds nothing it must trust."""
    header, payload, signature = host_licence.token.split(".")
    decoded = json.loads(b64url_decode(header))
    token = f"{b64url_json(dict(decoded, x5c=decoded['x5c'][:1]))}.{payload}.{signature}"
    assert check_of(token, ca) == "signature"  # header changed, so the signature no longer matches


# -- malformed tokens -------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [
    "",
    "abc",
    "a.b",
    "a.b.c.d",
    "!!!.abc.def",
    "e30.e30",
    b64url(b"{not json") + ".e30.AAAA",
    b64url(b"[1,2]") + ".e30.AAAA",
    b64url(b"\xff\xfe") + ".e30.AAAA",
    "A.e30.AAAA",
    "é30.e30.AAAA",
], ids=["empty", "one-part", "two-parts", "four-parts", "bad-base64", "two-parts-json", "bad-json", "json-array",
        "not-utf8", "short-segment", "non-ascii-header"])
def test_malformed_token_refused(ca: CertificateAuthority, token: str) -> None:
    assert check_of(token, ca) == "format"


def test_two_part_valid_token_refused(ca: CertificateAuthority, host_licence: HostLicence) -> None:
    header, payload, _ = host_licence.token.split(".")
    assert check_of(f"{header}.{payload}", ca) == "format"


def test_non_ascii_bytes_refused(ca: CertificateAuthority, host_licence: HostLicence) -> None:
    assert check_of(host_licence.token.encode() + "é".encode(), ca) == "format"
    header, payload, signature = host_licence.token.split(".")
    assert check_of(f"{header}.{payload[:10]}é{payload[10:]}.{signature}", ca) == "format"
    assert check_of(f"{header}.{payload}.{signature}\u200b", ca) == "format"


def test_non_json_payload_with_valid_signature(ca: CertificateAuthority) -> None:
    """A correctly signed payload that is not a JSON object is a format error, after the signature."""
    signer = Signer(ca.signer_key, ca.signer_chain)
    header, _, _ = split(Signer(ca.signer_key, ca.signer_chain).sign({}, HOST.value))
    for payload in (b"not json", b"[1,2,3]"):
        token = jwt.PyJWS().encode(payload, ca.signer_key, algorithm=signer.algorithm,
                                   headers={"typ": HOST.value, "x5c": header["x5c"]})
        assert check_of(token, ca) == "format"


def test_oversized_token_refused(ca: CertificateAuthority, host_licence: HostLicence) -> None:
    header, payload, signature = host_licence.token.split(".")
    padded = f"{header}.{payload}{'A' * (MAX_TOKEN_BYTES - len(host_licence.token) + 4)}.{signature}"
    assert len(padded) > MAX_TOKEN_BYTES
    assert check_of(padded, ca) == "size"
    assert check_of(padded.encode(), ca) == "size"
    with pytest.raises(LicenceError) as exc:
        unverified_header(padded)
    assert exc.value.check == "size"


def test_non_string_token_refused(ca: CertificateAuthority) -> None:
    assert check_of(12345, ca) == "format"  # type: ignore[arg-type]


def test_signed_id_types_do_not_cross(ca: CertificateAuthority, host_licence: HostLicence) -> None:
    with pytest.raises(LicenceError) as exc:
        verify_jws(host_licence.token, ca.trust_store(), typ="bonseyes-image-id+jwt",
                   signer_roles=[Role.LICENCE_SIGNER])
    assert exc.value.check == "type"


def test_licence_verifies_from_loaded_ca(ca: CertificateAuthority, host_licence: HostLicence) -> None:
    """A verifier that only has the published root, intermediate and CRL files accepts the licence."""
    loaded = CertificateAuthority.load(ca.paths.directory)
    assert verify_licence(host_licence.token, loaded.trust_store(require_crl=True), kind=HOST)


def test_x5c_with_unparseable_certificate_refused(ca: CertificateAuthority, host_licence: HostLicence) -> None:
    """An x5c entry whose DER is well framed but invalid inside is a format error, not a crash."""
    header, payload, signature = host_licence.token.split(".")
    decoded = json.loads(b64url_decode(header))
    der = bytearray(base64.b64decode(decoded["x5c"][0]))
    marker = bytes.fromhex("a003020102")
    at = bytes(der).index(marker)
    der[at:at + 5] = bytes.fromhex("a003020107")
    x5c = [base64.b64encode(bytes(der)).decode("ascii"), *decoded["x5c"][1:]]
    assert check_of(f"{b64url_json(dict(decoded, x5c=x5c))}.{payload}.{signature}", ca) == "format"


@pytest.mark.parametrize("algorithm", list(KeyAlgorithm))
def test_signer_output_is_a_standard_jws_pyjwt_decodes(ca: CertificateAuthority, algorithm: KeyAlgorithm) -> None:
    """Signer builds the compact form itself (cached header); PyJWT alone must accept it and see our header."""
    key = generate_private_key(algorithm)
    certificate = ca.issue(key.public_key(), ca.identity(Role.LICENCE_SIGNER, f"s-{algorithm.value}"))
    signer = Signer(key, [certificate, ca.intermediate])
    claims = {"sub": "x", "n": 1, "nested": {"b": [1, 2], "a": "é"}}
    for typ in ("host-licence", "artefact-licence", "host-licence"):  # the second host-licence uses the cache
        token = signer.sign(claims, typ)
        header = jwt.get_unverified_header(token)
        assert header == {"alg": signer.algorithm, "typ": typ, "x5c": header["x5c"]}
        assert base64.b64decode(header["x5c"][0]) == certificate.public_bytes(serialization.Encoding.DER)
        decoded = jwt.decode(token, key.public_key(), algorithms=[signer.algorithm],  # type: ignore[arg-type]
                             options={"verify_aud": False})
        assert decoded == claims
        tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        with pytest.raises(jwt.InvalidSignatureError):
            jwt.decode(tampered, key.public_key(), algorithms=[signer.algorithm],  # type: ignore[arg-type]
                       options={"verify_aud": False})
