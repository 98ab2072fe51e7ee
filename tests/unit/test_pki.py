"""CA, role-carrying leaves, chain, validity window, CRLs and PKCS#12, with real keys throughout."""

from __future__ import annotations

import base64
import datetime as dt
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bonseyes_py.errors import CertificateError, InputError, KeyFileError
from bonseyes_py.pki.ca import CertificateAuthority
from bonseyes_py.pki.certs import (
    certificate_pem,
    chain_pem,
    load_certificate,
    load_certificate_chain,
    load_crl,
    load_csr,
)
from bonseyes_py.pki.keys import KeyAlgorithm, PrivateKey, algorithm_of, read_private_key, signature_hash
from bonseyes_py.pki.pkcs12 import export_pkcs12, import_pkcs12
from bonseyes_py.pki.roles import Identity, Role, identity_of
from bonseyes_py.pki.verify import TrustStore, utcnow, verify_certificate

MakeCSR = Callable[..., tuple[PrivateKey, x509.CertificateSigningRequest]]
LEAF_ROLES = (Role.SECURITY_MANAGER, Role.MARKETPLACE, Role.HOST, Role.USER, Role.ADMIN, Role.RUNTIME)


def _public_der(key: object) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined]
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def _issue(ca: CertificateAuthority, make_csr: MakeCSR, role: Role, name: str = "leaf",
           **kwargs: object) -> tuple[PrivateKey, x509.Certificate]:
    key, csr = make_csr(KeyAlgorithm.EC_P256)
    return key, ca.issue_from_csr(csr, role, name, **kwargs)


# -- CA structure -----------------------------------------------------------------------------------


def test_root_and_intermediate_per_algorithm(any_ca: CertificateAuthority) -> None:
    """Root is self-signed with pathlen 1, the intermediate is signed by it with pathlen 0."""
    root, intermediate = any_ca.root, any_ca.intermediate
    root.verify_directly_issued_by(root)
    intermediate.verify_directly_issued_by(root)
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 1
    assert intermediate.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    expected = KeyAlgorithm(any_ca.paths.config.read_text().split('"algorithm": "')[1].split('"')[0])
    assert algorithm_of(root.public_key()) is expected  # type: ignore[arg-type]
    assert algorithm_of(intermediate.public_key()) is expected  # type: ignore[arg-type]
    assert verify_certificate(any_ca.signer, any_ca.trust_store(), roles=[Role.LICENCE_SIGNER]).name == "sm"


def test_default_algorithm_is_p256(ca: CertificateAuthority) -> None:
    assert algorithm_of(ca.root.public_key()) is KeyAlgorithm.EC_P256  # type: ignore[arg-type]


def test_ca_private_keys_are_0600(any_ca: CertificateAuthority) -> None:
    for path in (any_ca.paths.root_key, any_ca.paths.intermediate_key, any_ca.paths.signer_key):
        assert path.stat().st_mode & 0o777 == 0o600
    assert (any_ca.paths.directory / "private").stat().st_mode & 0o777 == 0o700


def test_init_refuses_to_overwrite(ca: CertificateAuthority) -> None:
    before = ca.paths.root_cert.read_bytes()
    with pytest.raises(InputError) as exc:
        CertificateAuthority.init(ca.paths.directory)
    assert exc.value.check == "ca-exists"
    assert ca.paths.root_cert.read_bytes() == before


def test_load_round_trip(ca: CertificateAuthority, make_csr: MakeCSR) -> None:
    loaded = CertificateAuthority.load(ca.paths.directory)
    assert loaded.root == ca.root
    assert loaded.intermediate == ca.intermediate
    assert loaded.signer == ca.signer
    _, cert = _issue(loaded, make_csr, Role.USER, "bob")
    assert verify_certificate(cert, ca.trust_store(), roles=[Role.USER]).name == "bob"


def test_load_missing_ca(tmp_path: Path) -> None:
    with pytest.raises(InputError) as exc:
        CertificateAuthority.load(tmp_path / "nothing")
    assert exc.value.check == "ca-missing"


def test_passphrase_protected_intermediate(tmp_path: Path) -> None:
    CertificateAuthority.init(tmp_path / "ca", root_passphrase=b"root secret 1", intermediate_passphrase=b"inter 12")
    assert CertificateAuthority.load(tmp_path / "ca", intermediate_passphrase=b"inter 12").intermediate
    with pytest.raises(KeyFileError) as exc:
        CertificateAuthority.load(tmp_path / "ca")
    assert exc.value.check == "key-file"
    with pytest.raises(KeyFileError) as exc:
        CertificateAuthority.load(tmp_path / "ca", intermediate_passphrase=b"wrong pass")
    assert exc.value.check == "key-file"


def test_bad_trust_domain_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError) as exc:
        CertificateAuthority.init(tmp_path / "ca", trust_domain="Not A Domain")
    assert exc.value.check == "trust-domain"


# -- leaves from CSRs -------------------------------------------------------------------------------


@pytest.mark.parametrize("role", LEAF_ROLES, ids=[r.value for r in LEAF_ROLES])
def test_leaf_from_csr_for_every_role(any_ca: CertificateAuthority, make_csr: MakeCSR, role: Role) -> None:
    """The CA signs the requester's public key; the role shows in SAN URI and EKU and verifies."""
    key, csr = make_csr(algorithm_of(any_ca.root.public_key()))  # type: ignore[arg-type]
    cert = any_ca.issue_from_csr(csr, role, "node-1")
    assert _public_der(cert.public_key()) == _public_der(key.public_key())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [f"spiffe://bonseyes.local/{role.value}/node-1"]
    eku = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
    identity = verify_certificate(cert, any_ca.trust_store(require_crl=True), roles=[role])
    assert identity == Identity("bonseyes.local", role, "node-1")


def test_csr_key_algorithms_independent_of_ca(ca: CertificateAuthority, make_csr: MakeCSR) -> None:
    for algorithm in (KeyAlgorithm.ED25519, KeyAlgorithm.RSA_3072):
        _, csr = make_csr(algorithm)
        cert = ca.issue_from_csr(csr, Role.HOST, "h1", dns_names=("h1.example",), ip_addresses=("10.1.2.3",))
        assert verify_certificate(cert, ca.trust_store(), roles=[Role.HOST]).name == "h1"


def test_csr_with_bad_signature_refused(ca: CertificateAuthority, make_csr: MakeCSR) -> None:
    """A CSR whose signature does not verify proves no key possession: refused by loader and CA."""
    _, csr = make_csr(KeyAlgorithm.ED25519)
    raw = bytearray(csr.public_bytes(serialization.Encoding.DER))
    raw[-1] ^= 0x01  # last byte of the Ed25519 signature
    tampered = x509.load_der_x509_csr(bytes(raw))
    assert not tampered.is_signature_valid
    with pytest.raises(InputError) as exc:
        ca.issue_from_csr(tampered, Role.USER, "mallory")
    assert exc.value.check == "csr"
    with pytest.raises(InputError) as exc:
        load_csr(tampered.public_bytes(serialization.Encoding.PEM))
    assert exc.value.check == "csr"


def test_csr_pem_round_trip(make_csr: MakeCSR) -> None:
    _, csr = make_csr()
    assert load_csr(csr.public_bytes(serialization.Encoding.PEM)) == csr


def test_bad_name_refused_at_issuance(ca: CertificateAuthority, make_csr: MakeCSR) -> None:
    _, csr = make_csr()
    with pytest.raises(InputError) as exc:
        ca.issue_from_csr(csr, Role.USER, "../etc/passwd")
    assert exc.value.check == "name"
    with pytest.raises(InputError) as exc:
        ca.issue_from_csr(csr, Role.USER, "alice\n")  # "$" in a regex would accept the newline
    assert exc.value.check == "name"
    with pytest.raises(InputError) as exc:
        CertificateAuthority.init(ca.paths.directory.parent / "nl-ca", trust_domain="bonseyes.local\n")
    assert exc.value.check == "trust-domain"
    with pytest.raises(InputError) as exc:
        ca.issue_from_csr(csr, Role.HOST, "h1", ip_addresses=("not-an-ip",))
    assert exc.value.check == "input"


def test_small_rsa_key_refused(ca: CertificateAuthority) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    small = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(InputError) as exc:
        ca.issue(small.public_key(), ca.identity(Role.USER, "weak"))
    assert exc.value.check == "key-algorithm"


# -- roles ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("issued", "required"), [
    (Role.HOST, Role.USER),
    (Role.USER, Role.HOST),
    (Role.USER, Role.ADMIN),
    (Role.RUNTIME, Role.HOST),
    (Role.HOST, Role.RUNTIME),
    (Role.MARKETPLACE, Role.SECURITY_MANAGER),
    (Role.HOST, Role.LICENCE_SIGNER),
])
def test_wrong_role_refused(ca: CertificateAuthority, make_csr: MakeCSR, issued: Role, required: Role) -> None:
    _, cert = _issue(ca, make_csr, issued)
    with pytest.raises(CertificateError) as exc:
        verify_certificate(cert, ca.trust_store(), roles=[required])
    assert exc.value.check == "role"


def test_any_of_several_roles_accepted(ca: CertificateAuthority, make_csr: MakeCSR) -> None:
    _, cert = _issue(ca, make_csr, Role.ADMIN, "root-admin")
    assert verify_certificate(cert, ca.trust_store(), roles=[Role.USER, Role.ADMIN]).role is Role.ADMIN
    assert verify_certificate(cert, ca.trust_store(), roles=None).role is Role.ADMIN


def _hand_signed_leaf(ca: CertificateAuthority, uris: list[str], ekus: list[x509.ObjectIdentifier] | None,
                      *, signing_key: PrivateKey | None = None) -> x509.Certificate:
    """A leaf signed with the real intermediate key, but with extensions the CA would never write."""
    signing_key = signing_key or read_private_key(ca.paths.intermediate_key)
    from bonseyes_py.pki.keys import generate_private_key

    subject_key = generate_private_key()
    now = utcnow()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hand-made")]))
        .issuer_name(ca.intermediate.subject)
        .public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]), critical=False)
    if ekus is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
    return builder.sign(signing_key, signature_hash(signing_key))  # type: ignore[arg-type]


def test_eku_not_matching_san_role_refused(ca: CertificateAuthority) -> None:
    """A 'user' SAN with the host EKU set (serverAuth + clientAuth) is refused even for role user."""
    cert = _hand_signed_leaf(ca, ["spiffe://bonseyes.local/user/eve"],
                             [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
    with pytest.raises(CertificateError) as exc:
        verify_certificate(cert, ca.trust_store(), roles=[Role.USER])
    assert exc.value.check == "role"
    # The same certificate with the right EKU verifies: the refusal is the EKU and nothing else.
    good = _hand_signed_leaf(ca, ["spiffe://bonseyes.local/user/eve"], [ExtendedKeyUsageOID.CLIENT_AUTH])
    assert verify_certificate(good, ca.trust_store(), roles=[Role.USER]).name == "eve"


@pytest.mark.parametrize(("uris", "ekus"), [
    ([], [ExtendedKeyUsageOID.CLIENT_AUTH]),
    (["spiffe://bonseyes.local/user/a", "spiffe://bonseyes.local/user/b"], [ExtendedKeyUsageOID.CLIENT_AUTH]),
    (["https://bonseyes.local/user/a"], [ExtendedKeyUsageOID.CLIENT_AUTH]),
    (["spiffe://bonseyes.local/user"], [ExtendedKeyUsageOID.CLIENT_AUTH]),
    (["spiffe://bonseyes.local/wizard/a"], [ExtendedKeyUsageOID.CLIENT_AUTH]),
    (["spiffe://bonseyes.local/user/bad name"], [ExtendedKeyUsageOID.CLIENT_AUTH]),
    (["spiffe://Bad_Domain/user/a"], [ExtendedKeyUsageOID.CLIENT_AUTH]),
    (["spiffe://bonseyes.local/user/a"], None),
], ids=["no-san", "two-uris", "not-spiffe", "no-name", "unknown-role", "bad-name", "bad-domain", "no-eku"])
def test_malformed_identity_refused(ca: CertificateAuthority, uris: list[str],
                                    ekus: list[x509.ObjectIdentifier] | None) -> None:
    cert = _hand_signed_leaf(ca, uris, ekus)
    with pytest.raises(CertificateError) as exc:
        verify_certificate(cert, ca.trust_store(), roles=None)
    assert exc.value.check == "role"


def test_other_trust_domain_refused(ca: CertificateAuthority, tmp_path: Path, make_csr: MakeCSR) -> None:
    other = CertificateAuthority.init(tmp_path / "other", trust_domain="other.example")
    _, cert = _issue(other, make_csr, Role.USER, "a")
    with pytest.raises(CertificateError) as exc:
        verify_certificate(cert, ca.trust_store(), roles=[Role.USER])
    assert exc.value.check == "role"
    with pytest.raises(InputError):
        ca.issue(cert.public_key(), Identity("other.example", Role.USER, "a"))  # type: ignore[arg-type]


# -- chain ------------------------------------------------------------------------------------------


def test_foreign_ca_certificate_refused(ca: CertificateAuthority, foreign_ca: CertificateAuthority,
                                        make_csr: MakeCSR) -> None:
    """Same trust domain and same CA names, different keys: the chain check catches it."""
    _, cert = _issue(foreign_ca, make_csr, Role.USER, "alice")
    assert cert.issuer == ca.intermediate.subject  # names collide on purpose
    with pytest.raises(CertificateError) as exc:
        verify_certificate(cert, ca.trust_store(), roles=[Role.USER])
    assert exc.value.check == "chain"
    # Presenting the foreign intermediate does not help: it does not chain to our root.
    with pytest.raises(CertificateError) as exc:
        verify_certificate(cert, ca.trust_store(), roles=[Role.USER], extra_intermediates=[foreign_ca.intermediate])
    assert exc.value.check == "chain"


def test_leaf_signed_by_leaf_refused(ca: CertificateAuthority, make_csr: MakeCSR) -> None:
    """A leaf key cannot act as a CA even if it names the intermediate as issuer."""
    host_key, host_cert = _issue(ca, make_csr, Role.HOST, "rogue")
    forged = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "forged")]))
        .issuer_name(host_cert.subject)
        .public_key(host_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(utcnow() - dt.timedelta(minutes=1))
        .not_valid_after(utcnow() + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.UniformResourceIdentifier("spiffe://bonseyes.local/admin/root")]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(host_key, signature_hash(host_key))  # type: ignore[arg-type]
    )
    with pytest.raises(CertificateError) as exc:
        verify_certificate(forged, ca.trust_store(), roles=[Role.ADMIN], extra_intermediates=[host_cert])
    assert exc.value.check == "chain"


def test_trust_root_must_be_self_signed_ca(ca: CertificateAuthority, make_csr: MakeCSR) -> None:
    with pytest.raises(CertificateError) as exc:
        TrustStore(root=ca.intermediate)
    assert exc.value.check == "root"
    _, leaf = _issue(ca, make_csr, Role.USER)
    with pytest.raises(CertificateError) as exc:
        TrustStore(root=leaf)
    assert exc.value.check == "root"


# -- validity window --------------------------------------------------------------------------------


def test_expired_certificate_refused(ca: CertificateAuthority, make_csr: MakeCSR) -> None:
    past = utcnow() - dt.timedelta(days=2)
    _, cert = _issue(ca, make_csr, Role.USER, "old", validity=dt.timedelta(days=1), now=past)
    with pytest.raises(CertificateError) as exc:
        verify_certificate(cert, ca.trust_store(), roles=[Role.USER])
    assert exc.value.check == "expired"


def test_expired_by_verification_time(ca: CertificateAuthority, make_csr: MakeCSR) -> None:
    _, cert = _issue(ca, make_csr, Role.RUNTIME, "rt-1")  # runtime default: 24 h
    with pytest.raises(CertificateError) as exc:
        verify_certificate(cert, ca.trust_store(), roles=[Role.RUNTIME], now=utcnow() + dt.timedelta(days=2))
    assert exc.value.check == "expired"


def test_not_yet_valid_certificate_refused(ca: CertificateAuthority, make_csr: MakeCSR) -> None:
    future = utcnow() + dt.timedelta(days=1)
    _, cert = _issue(ca, make_csr, Role.USER, "later", now=future)
    with pytest.raises(CertificateError) as exc:
        verify_certificate(cert, ca.trust_store(), roles=[Role.USER])
    assert exc.value.check == "not-yet-valid"
    assert verify_certificate(cert, ca.trust_store(), roles=[Role.USER], now=future).name == "later"


def test_leaf_never_outlives_intermediate(ca: CertificateAuthority, make_csr: MakeCSR) -> None:
    _, cert = _issue(ca, make_csr, Role.USER, "long", validity=dt.timedelta(days=100_000))
    assert cert.not_valid_after_utc == ca.intermediate.not_valid_after_utc


# -- CRLs -------------------------------------------------------------------------------------------


def test_revoked_certificate_refused(fresh_ca: CertificateAuthority, make_csr: MakeCSR) -> None:
    _, cert = _issue(fresh_ca, make_csr, Role.HOST, "h1")
    _, other = _issue(fresh_ca, make_csr, Role.HOST, "h2")
    assert verify_certificate(cert, fresh_ca.trust_store(), roles=[Role.HOST]).name == "h1"
    crl = fresh_ca.revoke(cert.serial_number)
    assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
    with pytest.raises(CertificateError) as exc:
        verify_certificate(cert, fresh_ca.trust_store(), roles=[Role.HOST])
    assert exc.value.check == "revoked"
    assert verify_certificate(other, fresh_ca.trust_store(), roles=[Role.HOST]).name == "h2"
    # Revoking twice is idempotent: still one entry, CRL number moves on.
    again = fresh_ca.revoke(cert.serial_number)
    assert len(list(again)) == 1
    number = again.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert number > crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def test_published_crl_is_the_intermediates(fresh_ca: CertificateAuthority) -> None:
    """The CRL is the intermediate's: it covers leaves, and the published PEM loads back."""
    crl = load_crl(fresh_ca.paths.crl.read_bytes())
    assert crl.issuer == fresh_ca.intermediate.subject
    assert crl.is_signature_valid(fresh_ca.intermediate.public_key())  # type: ignore[arg-type]


def test_stale_crl_refused(fresh_ca: CertificateAuthority, make_csr: MakeCSR) -> None:
    _, cert = _issue(fresh_ca, make_csr, Role.USER, "u")
    stale = fresh_ca.write_crl(now=utcnow() - dt.timedelta(days=30))
    trust = TrustStore(root=fresh_ca.root, intermediates=[fresh_ca.intermediate], crls=[stale])
    with pytest.raises(CertificateError) as exc:
        verify_certificate(cert, trust, roles=[Role.USER])
    assert exc.value.check == "crl-stale"


@pytest.mark.parametrize("algorithm", [KeyAlgorithm.EC_P256, KeyAlgorithm.ED25519, KeyAlgorithm.RSA_3072],
                         ids=["ec-p256", "ed25519", "rsa-3072"])
def test_crl_signed_by_foreign_ca_refused(ca: CertificateAuthority, make_csr: MakeCSR, ca_for: Callable,
                                          tmp_path: Path, algorithm: KeyAlgorithm) -> None:
    """A CRL carrying our intermediate's name but another key's signature (any key type) is refused."""
    forger = (CertificateAuthority.init(tmp_path / "forger") if algorithm is KeyAlgorithm.EC_P256
              else ca_for(algorithm))
    assert forger.current_crl().issuer == ca.intermediate.subject
    _, cert = _issue(ca, make_csr, Role.USER, "u")
    trust = TrustStore(root=ca.root, intermediates=[ca.intermediate], crls=[forger.current_crl()])
    with pytest.raises(CertificateError) as exc:
        verify_certificate(cert, trust, roles=[Role.USER])
    assert exc.value.check == "crl"


def test_require_crl_without_crl_refused(ca: CertificateAuthority, make_csr: MakeCSR) -> None:
    _, cert = _issue(ca, make_csr, Role.USER, "u")
    with pytest.raises(CertificateError) as exc:
        verify_certificate(cert, ca.trust_store(with_crl=False, require_crl=True), roles=[Role.USER])
    assert exc.value.check == "crl"
    assert verify_certificate(cert, ca.trust_store(with_crl=False), roles=[Role.USER]).name == "u"


# -- loaders ----------------------------------------------------------------------------------------


def test_certificate_loaders(ca: CertificateAuthority) -> None:
    assert load_certificate(certificate_pem(ca.root)) == ca.root
    assert load_certificate_chain(chain_pem(ca.chain)) == ca.chain
    for loader in (load_certificate, load_csr, load_crl, load_certificate_chain):
        with pytest.raises(InputError) as exc:
            loader(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
        assert exc.value.check == "input"
        with pytest.raises(InputError) as exc:
            loader("a str, not bytes")  # type: ignore[arg-type]
        assert exc.value.check == "input"
    with pytest.raises(InputError) as exc:
        load_certificate(b"A" * (64 * 1024 + 1))
    assert exc.value.check == "input"
    assert "limit" in str(exc.value)


# -- PKCS#12 ----------------------------------------------------------------------------------------


PASSPHRASE = b"correct horse battery"


@pytest.mark.parametrize("algorithm", [KeyAlgorithm.EC_P256, KeyAlgorithm.ED25519, KeyAlgorithm.RSA_3072],
                         ids=["ec-p256", "ed25519", "rsa-3072"])
def test_pkcs12_round_trip(ca: CertificateAuthority, make_csr: MakeCSR, algorithm: KeyAlgorithm) -> None:
    key, csr = make_csr(algorithm)
    cert = ca.issue_from_csr(csr, Role.USER, "alice")
    bundle = export_pkcs12("alice", key, cert, ca.chain, PASSPHRASE)
    got_key, got_cert, got_chain = import_pkcs12(bundle, PASSPHRASE)
    assert got_cert == cert
    assert got_chain == ca.chain
    assert _public_der(got_key.public_key()) == _public_der(key.public_key())
    assert verify_certificate(got_cert, ca.trust_store(), roles=[Role.USER]).name == "alice"


def test_pkcs12_wrong_and_short_passphrase(ca: CertificateAuthority, make_csr: MakeCSR) -> None:
    key, csr = make_csr()
    cert = ca.issue_from_csr(csr, Role.USER, "alice")
    bundle = export_pkcs12("alice", key, cert, ca.chain, PASSPHRASE)
    with pytest.raises(KeyFileError) as exc:
        import_pkcs12(bundle, b"wrong passphrase")
    assert exc.value.check == "key-file"
    with pytest.raises(InputError) as exc:
        export_pkcs12("alice", key, cert, ca.chain, b"short")
    assert exc.value.check == "passphrase"
    with pytest.raises(KeyFileError) as exc:
        import_pkcs12(b"\x30\x03\x02\x01\x03", PASSPHRASE)
    assert exc.value.check == "key-file"
    with pytest.raises(InputError) as exc:
        import_pkcs12(b"\x00" * (256 * 1024 + 1), PASSPHRASE)
    assert exc.value.check == "input"


@pytest.mark.parametrize("algorithm", [KeyAlgorithm.EC_P256, KeyAlgorithm.RSA_3072], ids=["ec-p256", "rsa-3072"])
def test_pkcs12_opens_with_openssl(ca: CertificateAuthority, make_csr: MakeCSR, tmp_path: Path,
                                   algorithm: KeyAlgorithm) -> None:
    """Browser-compatibility proxy: the system OpenSSL reads the bundle (PBES2/AES-256, SHA-256 MAC)."""
    key, csr = make_csr(algorithm)
    cert = ca.issue_from_csr(csr, Role.USER, "alice")
    bundle = tmp_path / "alice.p12"
    bundle.write_bytes(export_pkcs12("alice", key, cert, ca.chain, PASSPHRASE))
    result = subprocess.run(["openssl", "pkcs12", "-in", str(bundle), "-passin", f"pass:{PASSPHRASE.decode()}",
                             "-nokeys"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    certs = x509.load_pem_x509_certificates(result.stdout.encode())
    assert cert in certs
    assert ca.intermediate in certs
    wrong = subprocess.run(["openssl", "pkcs12", "-in", str(bundle), "-passin", "pass:not-the-passphrase",
                            "-nokeys"], capture_output=True, text=True, timeout=60, check=False)
    assert wrong.returncode != 0


def test_identity_of_reads_role(ca: CertificateAuthority, make_csr: MakeCSR) -> None:
    _, cert = _issue(ca, make_csr, Role.MARKETPLACE, "market")
    assert identity_of(cert).uri == "spiffe://bonseyes.local/marketplace/market"


def _with_bad_version(certificate: x509.Certificate) -> bytes:
    der = certificate.public_bytes(serialization.Encoding.DER)
    marker = bytes.fromhex("a003020102")  # [0] EXPLICIT INTEGER 2 (v3)
    assert der.count(marker) == 1
    return der.replace(marker, bytes.fromhex("a003020107"))


def test_certificate_with_invalid_version_refused(ca: CertificateAuthority) -> None:
    """cryptography raises InvalidVersion (not a ValueError) for this; the loaders map it to InputError."""
    from bonseyes_py.pki.certs import load_der_certificate

    der = _with_bad_version(ca.signer)
    with pytest.raises(InputError) as exc:
        load_der_certificate(der)
    assert exc.value.check == "input"
    pem = b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(der) + b"-----END CERTIFICATE-----\n"
    with pytest.raises(InputError) as exc:
        load_certificate(pem)
    assert exc.value.check == "input"
