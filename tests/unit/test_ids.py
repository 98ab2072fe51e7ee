"""Signed IDs: host ID (owner's user key), artefact ID and image ID (SM signer), runtime ID."""

from __future__ import annotations

import pytest

from bonseyes_py.errors import InputError, LicenceError
from bonseyes_py.identity.ids import (
    HOST_ID_TYPE,
    RuntimeID,
    check_hardware_id,
    check_nonce,
    sign_artefact_id,
    sign_host_id,
    sign_image_id,
    verify_artefact_id,
    verify_host_id,
    verify_image_id,
)
from bonseyes_py.jose import Signer, unverified_header
from bonseyes_py.pki.ca import CertificateAuthority
from bonseyes_py.pki.keys import generate_private_key
from bonseyes_py.pki.roles import Role

HARDWARE_ID = "hw-" + "0f" * 32
DIGEST = "sha256:" + "12" * 32


def _signer(ca: CertificateAuthority, role: Role, name: str) -> tuple[Signer, str]:
    key = generate_private_key()
    identity = ca.identity(role, name)
    return Signer(key, [ca.issue(key.public_key(), identity), ca.intermediate]), identity.uri


@pytest.fixture(scope="module")
def sm(ca: CertificateAuthority) -> tuple[Signer, str]:
    return Signer(ca.signer_key, ca.signer_chain), ca.identity(Role.LICENCE_SIGNER, "sm").uri


# -- host ID ----------------------------------------------------------------------------------------


def test_host_id_signed_by_owner(ca: CertificateAuthority) -> None:
    owner, owner_uri = _signer(ca, Role.USER, "alice")
    token = sign_host_id(owner, owner_uri, HARDWARE_ID)
    assert unverified_header(token)["typ"] == HOST_ID_TYPE
    host_id = verify_host_id(token, ca.trust_store(), expect_hardware_id=HARDWARE_ID)
    assert host_id.hardware_id == HARDWARE_ID
    assert host_id.owner_uri == "spiffe://bonseyes.local/user/alice"
    assert host_id.token == token


def test_host_id_signed_by_admin_accepted(ca: CertificateAuthority) -> None:
    admin, admin_uri = _signer(ca, Role.ADMIN, "ops")
    assert verify_host_id(sign_host_id(admin, admin_uri, HARDWARE_ID), ca.trust_store()).owner_uri == admin_uri


@pytest.mark.parametrize("role", [Role.HOST, Role.RUNTIME, Role.MARKETPLACE], ids=lambda r: r.value)
def test_host_id_signed_by_wrong_role_refused(ca: CertificateAuthority, role: Role) -> None:
    signer, uri = _signer(ca, role, "self-vouching")
    with pytest.raises(LicenceError) as exc:
        verify_host_id(sign_host_id(signer, uri, HARDWARE_ID), ca.trust_store())
    assert exc.value.check == "signer-role"


def test_host_id_for_other_hardware_refused(ca: CertificateAuthority) -> None:
    owner, owner_uri = _signer(ca, Role.USER, "alice")
    token = sign_host_id(owner, owner_uri, HARDWARE_ID)
    with pytest.raises(LicenceError) as exc:
        verify_host_id(token, ca.trust_store(), expect_hardware_id="hw-" + "ee" * 32)
    assert exc.value.check == "hardware-id"


def test_host_id_issuer_must_be_signer(ca: CertificateAuthority) -> None:
    """Alice's key cannot vouch in Bob's name."""
    owner, _ = _signer(ca, Role.USER, "alice")
    token = sign_host_id(owner, "spiffe://bonseyes.local/user/bob", HARDWARE_ID)
    with pytest.raises(LicenceError) as exc:
        verify_host_id(token, ca.trust_store())
    assert exc.value.check == "issuer"


def test_host_id_from_foreign_ca_refused(ca: CertificateAuthority, foreign_ca: CertificateAuthority) -> None:
    owner, owner_uri = _signer(foreign_ca, Role.USER, "alice")
    with pytest.raises(LicenceError) as exc:
        verify_host_id(sign_host_id(owner, owner_uri, HARDWARE_ID), ca.trust_store())
    assert exc.value.check == "signer-chain"


@pytest.mark.parametrize("bad", ["hw-" + "0F" * 32, "hw-" + "0f" * 31, "0f" * 32, "", "hw-" + "0f" * 32 + "\n"])
def test_bad_hardware_id_refused_at_signing(ca: CertificateAuthority, bad: str) -> None:
    owner, owner_uri = _signer(ca, Role.USER, "alice")
    with pytest.raises(InputError) as exc:
        sign_host_id(owner, owner_uri, bad)
    assert exc.value.check == "hardware-id"


# -- artefact ID and image ID -----------------------------------------------------------------------


def test_artefact_id_round_trip(ca: CertificateAuthority, sm: tuple[Signer, str]) -> None:
    token = sign_artefact_id(*sm, "face-detector", "alice")
    claims = verify_artefact_id(token, ca.trust_store(), expect_name="face-detector")
    assert claims["sub"] == "face-detector"
    assert claims["owner"] == "alice"
    with pytest.raises(LicenceError) as exc:
        verify_artefact_id(token, ca.trust_store(), expect_name="speech-to-text")
    assert exc.value.check == "artefact-id"


def test_image_id_round_trip(ca: CertificateAuthority, sm: tuple[Signer, str]) -> None:
    token = sign_image_id(*sm, DIGEST, "face-detector")
    claims = verify_image_id(token, ca.trust_store(), expect_digest=DIGEST, expect_artefact="face-detector")
    assert claims["sub"] == DIGEST
    assert claims["artefact"] == "face-detector"
    with pytest.raises(LicenceError) as exc:
        verify_image_id(token, ca.trust_store(), expect_digest="sha256:" + "34" * 32)
    assert exc.value.check == "image-digest"
    with pytest.raises(LicenceError) as exc:
        verify_image_id(token, ca.trust_store(), expect_artefact="speech-to-text")
    assert exc.value.check == "artefact-id"


def test_ids_must_be_signed_by_sm(ca: CertificateAuthority) -> None:
    user, user_uri = _signer(ca, Role.USER, "alice")
    with pytest.raises(LicenceError) as exc:
        verify_artefact_id(sign_artefact_id(user, user_uri, "face-detector", "alice"), ca.trust_store())
    assert exc.value.check == "signer-role"
    with pytest.raises(LicenceError) as exc:
        verify_image_id(sign_image_id(user, user_uri, DIGEST, "face-detector"), ca.trust_store())
    assert exc.value.check == "signer-role"


def test_id_types_do_not_cross(ca: CertificateAuthority, sm: tuple[Signer, str]) -> None:
    artefact = sign_artefact_id(*sm, "face-detector", "alice")
    image = sign_image_id(*sm, DIGEST, "face-detector")
    with pytest.raises(LicenceError) as exc:
        verify_image_id(artefact, ca.trust_store())
    assert exc.value.check == "type"
    with pytest.raises(LicenceError) as exc:
        verify_artefact_id(image, ca.trust_store())
    assert exc.value.check == "type"
    with pytest.raises(LicenceError) as exc:
        verify_host_id(image, ca.trust_store())
    assert exc.value.check == "type"


@pytest.mark.parametrize("bad", [
    "sha256:" + "AB" * 32,
    "sha256:" + "ab" * 31,
    "sha256:" + "ab" * 33,
    "sha512:" + "ab" * 64,
    "ab" * 32,
    "sha256:" + "zz" * 32,
    "sha256:" + "ab" * 32 + "\n",
    "",
], ids=["upper", "short", "long", "sha512", "no-prefix", "not-hex", "newline", "empty"])
def test_bad_digest_refused_at_signing(sm: tuple[Signer, str], bad: str) -> None:
    with pytest.raises(InputError) as exc:
        sign_image_id(*sm, bad, "face-detector")
    assert exc.value.check == "digest"


def test_bad_artefact_name_refused_at_signing(sm: tuple[Signer, str]) -> None:
    with pytest.raises(InputError) as exc:
        sign_artefact_id(*sm, "face detector", "alice")
    assert exc.value.check == "artefact-name"
    with pytest.raises(InputError) as exc:
        sign_image_id(*sm, DIGEST, "../x")
    assert exc.value.check == "artefact-name"
    with pytest.raises(InputError) as exc:
        sign_artefact_id(*sm, "face-detector", "alice smith")
    assert exc.value.check == "owner"


# -- runtime ID -------------------------------------------------------------------------------------


def test_runtime_id_claim_round_trip(runtime_id: RuntimeID) -> None:
    assert RuntimeID.from_claim(runtime_id.as_claim()) == runtime_id
    assert runtime_id.name.startswith("rt-")
    assert len(runtime_id.name) == 35
    other = RuntimeID.from_claim(dict(runtime_id.as_claim(), nonce="another-nonce-0123456789"))
    assert other.name != runtime_id.name


def test_runtime_id_normalises_ip(runtime_id: RuntimeID) -> None:
    v6 = RuntimeID.from_claim(dict(runtime_id.as_claim(), host_ip="2001:DB8:0:0::1"))
    assert v6.host_ip == "2001:db8::1"


@pytest.mark.parametrize(("field", "value", "check"), [
    ("image_digest", "sha256:xyz", "digest"),
    ("artefact_id", "bad name", "artefact-ID"),
    ("user_id", "", "user-ID"),
    ("host_id", "h/1", "host-ID"),
    ("nonce", "short", "nonce"),
    ("host_ip", "10.0.0.256", "host-ip"),
])
def test_runtime_id_fields_checked(runtime_id: RuntimeID, field: str, value: str, check: str) -> None:
    with pytest.raises(InputError) as exc:
        RuntimeID(**dict(runtime_id.as_claim(), **{field: value}))
    assert exc.value.check == check
    with pytest.raises(LicenceError) as claim_exc:
        RuntimeID.from_claim(dict(runtime_id.as_claim(), **{field: value}))
    assert claim_exc.value.check == "format"


@pytest.mark.parametrize("claim", [None, [], "x", {}, {"image_digest": DIGEST}], ids=str)
def test_runtime_claim_shape_checked(runtime_id: RuntimeID, claim: object) -> None:
    with pytest.raises(LicenceError) as exc:
        RuntimeID.from_claim(claim)
    assert exc.value.check == "format"
    with pytest.raises(LicenceError) as exc:
        RuntimeID.from_claim(dict(runtime_id.as_claim(), extra="x"))
    assert exc.value.check == "format"


def test_checkers() -> None:
    assert check_hardware_id(HARDWARE_ID) == HARDWARE_ID
    assert check_nonce("A" * 16) == "A" * 16
    with pytest.raises(InputError) as exc:
        check_nonce("A" * 129)
    assert exc.value.check == "nonce"


@pytest.mark.parametrize(("checker", "value", "check"), [
    (check_nonce, "A" * 16 + "\n", "nonce"),
    (check_hardware_id, HARDWARE_ID + "\n", "hardware-id"),
], ids=["nonce", "hardware-id"])
def test_trailing_newline_refused(checker: object, value: str, check: str) -> None:
    """Python's "$" matches before a final newline; the checks must not let one through."""
    with pytest.raises(InputError) as exc:
        checker(value)  # type: ignore[operator]
    assert exc.value.check == check
