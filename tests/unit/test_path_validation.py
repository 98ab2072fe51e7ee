"""RFC 5280 section 6 path validation, on test vectors built here with cryptography.

Each vector is a real chain (root -> intermediate with pathLenConstraint 0 -> leaf, ECDSA P-256 unless
said otherwise) with exactly one thing wrong, so a refusal can only come from the check it names.
The memo tests show that what one trust store verified is its own.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from bonseyes_py.errors import CertificateError, InputError
from bonseyes_py.pki.ca import CertificateAuthority
from bonseyes_py.pki.keys import PrivateKey, read_private_key, signature_hash
from bonseyes_py.pki.roles import Role, ekus_for
from bonseyes_py.pki.verify import TrustStore, check_issued_by, utcnow, verify_ca_certificate, verify_certificate

TRUST_DOMAIN = "bonseyes.local"
UNKNOWN_OID = x509.ObjectIdentifier("1.3.6.1.4.1.55555.7.1")
NOW = utcnow()
HOUR = dt.timedelta(hours=1)
YEAR = dt.timedelta(days=365)

Extension = tuple[x509.ExtensionType, bool]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, TRUST_DOMAIN),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _unknown(critical: bool) -> Extension:
    return x509.UnrecognizedExtension(UNKNOWN_OID, b"\x05\x00"), critical


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=not cert_sign, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign, crl_sign=cert_sign,
                         encipher_only=False, decipher_only=False)


def _build(subject: x509.Name, public_key: object, issuer: x509.Name, signing_key: PrivateKey,
           extensions: list[Extension], *, not_before: dt.datetime = NOW - HOUR,
           not_after: dt.datetime = NOW + YEAR, hash_algorithm: hashes.HashAlgorithm | None = None) -> x509.Certificate:
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
               .public_key(public_key)  # type: ignore[arg-type]
               .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after))
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(signing_key, hash_algorithm or signature_hash(signing_key))  # type: ignore[arg-type]


def ca_extensions(public_key: object, issuer_key: object | None, *, path_length: int | None,
                  basic_constraints: bool = True, cert_sign: bool = True) -> list[Extension]:
    extensions: list[Extension] = []
    if basic_constraints:
        extensions.append((x509.BasicConstraints(ca=True, path_length=path_length), True))
    extensions.append((_key_usage(cert_sign=cert_sign), True))
    extensions.append((x509.SubjectKeyIdentifier.from_public_key(public_key), False))  # type: ignore[arg-type]
    if issuer_key is not None:
        extensions.append((x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key), False))  # type: ignore[arg-type]
    return extensions


@dataclass
class Chain:
    """A root, an intermediate (pathLenConstraint 0) and their keys; ``leaf`` issues under the intermediate."""

    root: x509.Certificate
    root_key: PrivateKey
    intermediate: x509.Certificate
    intermediate_key: PrivateKey
    leaves: dict[str, x509.Certificate] = field(default_factory=dict)

    def trust(self, **kwargs: object) -> TrustStore:
        return TrustStore(root=self.root, intermediates=[self.intermediate], **kwargs)  # type: ignore[arg-type]

    def leaf(self, role: Role = Role.HOST, name: str = "h1", *, extra: list[Extension] | None = None,
             ca: bool = False, issuer: x509.Certificate | None = None, issuer_key: PrivateKey | None = None,
             issuer_name: x509.Name | None = None, authority_key: object | None = None,
             **window: dt.datetime) -> x509.Certificate:
        issuer = issuer or self.intermediate
        signing_key = issuer_key or self.intermediate_key
        key = ec.generate_private_key(ec.SECP256R1())
        extensions: list[Extension] = [
            (x509.BasicConstraints(ca=ca, path_length=None), True),
            (_key_usage(cert_sign=False), True),
            (x509.ExtendedKeyUsage(list(ekus_for(role))), False),
            (x509.SubjectAlternativeName([x509.UniformResourceIdentifier(
                f"spiffe://{TRUST_DOMAIN}/{role.value}/{name}")]), False),
            (x509.AuthorityKeyIdentifier.from_issuer_public_key(  # type: ignore[arg-type]
                authority_key or signing_key.public_key()), False),
            *(extra or []),
        ]
        return _build(_name(name), key.public_key(), issuer_name or issuer.subject, signing_key, extensions, **window)


def make_chain(*, root_extra: list[Extension] | None = None, intermediate_extra: list[Extension] | None = None,
               root_window: dict[str, dt.datetime] | None = None,
               intermediate_window: dict[str, dt.datetime] | None = None, intermediate_path_length: int | None = 0,
               intermediate_basic_constraints: bool = True, intermediate_cert_sign: bool = True,
               root_path_length: int | None = 1, ed25519_keys: bool = False) -> Chain:
    def new_key() -> PrivateKey:
        return ed25519.Ed25519PrivateKey.generate() if ed25519_keys else ec.generate_private_key(ec.SECP256R1())

    root_key, intermediate_key = new_key(), new_key()
    root = _build(_name("Test Root"), root_key.public_key(), _name("Test Root"), root_key,
                  [*ca_extensions(root_key.public_key(), None, path_length=root_path_length), *(root_extra or [])],
                  **(root_window or {}))
    intermediate = _build(
        _name("Test Intermediate"), intermediate_key.public_key(), root.subject, root_key,
        [*ca_extensions(intermediate_key.public_key(), root_key.public_key(), path_length=intermediate_path_length,
                        basic_constraints=intermediate_basic_constraints, cert_sign=intermediate_cert_sign),
         *(intermediate_extra or [])],
        **(intermediate_window or {}))
    return Chain(root, root_key, intermediate, intermediate_key)


@pytest.fixture(scope="module")
def chain() -> Chain:
    return make_chain()


def refusal(certificate: x509.Certificate, trust: TrustStore, role: Role = Role.HOST,
            **kwargs: object) -> CertificateError:
    with pytest.raises(CertificateError) as raised:
        verify_certificate(certificate, trust, roles=[role], **kwargs)  # type: ignore[arg-type]
    message = str(raised.value)
    assert "\n" not in message
    return raised.value


# -- what passes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.HOST, Role.USER, Role.MARKETPLACE, Role.SECURITY_MANAGER, Role.RUNTIME,
                                  Role.LICENCE_SIGNER])
def test_valid_leaves_pass(chain: Chain, role: Role) -> None:
    identity = verify_certificate(chain.leaf(role, "x1"), chain.trust(), roles=[role])
    assert (identity.role, identity.name) == (role, "x1")


def test_ed25519_chain_passes() -> None:
    """The CA may be Ed25519 (KeyAlgorithm.ED25519): the reason pyca's Web PKI verifier does not fit here."""
    chain = make_chain(ed25519_keys=True)
    assert verify_certificate(chain.leaf(Role.USER, "ed"), chain.trust(), roles=[Role.USER]).name == "ed"


def test_non_critical_unknown_extension_passes(chain: Chain) -> None:
    leaf = chain.leaf(extra=[_unknown(critical=False)])
    assert verify_certificate(leaf, chain.trust(), roles=[Role.HOST]).name == "h1"
    with_intermediate = make_chain(intermediate_extra=[_unknown(critical=False)], root_extra=[_unknown(False)])
    assert verify_certificate(with_intermediate.leaf(), with_intermediate.trust(), roles=[Role.HOST]).name == "h1"


def test_sub_intermediate_passes_when_no_path_length_forbids_it() -> None:
    """The control of the path-length refusal below: the same shape with no constraint on the intermediate."""
    chain = make_chain(root_path_length=None, intermediate_path_length=None)
    sub_key = ec.generate_private_key(ec.SECP256R1())
    sub = _build(_name("Sub CA"), sub_key.public_key(), chain.intermediate.subject, chain.intermediate_key,
                 ca_extensions(sub_key.public_key(), chain.intermediate_key.public_key(), path_length=None))
    leaf = chain.leaf(issuer=sub, issuer_key=sub_key)
    assert verify_certificate(leaf, chain.trust(), roles=[Role.HOST], extra_intermediates=[sub]).name == "h1"


# -- unrecognised critical extensions ----------------------------------------------------------------


def test_unknown_critical_extension_on_the_leaf_refused(chain: Chain) -> None:
    error = refusal(chain.leaf(extra=[_unknown(critical=True)]), chain.trust())
    assert error.check == "critical-extension"
    assert UNKNOWN_OID.dotted_string in str(error)
    assert "certificate 'CN=h1" in str(error)


def test_unknown_critical_extension_on_the_intermediate_refused() -> None:
    chain = make_chain(intermediate_extra=[_unknown(critical=True)])
    error = refusal(chain.leaf(), chain.trust())
    assert error.check == "critical-extension"
    assert UNKNOWN_OID.dotted_string in str(error)
    assert "Test Intermediate" in str(error)


def test_unknown_critical_extension_on_the_root_refused() -> None:
    chain = make_chain(root_extra=[_unknown(critical=True)])
    with pytest.raises(CertificateError) as raised:
        chain.trust()
    assert raised.value.check == "critical-extension"
    assert UNKNOWN_OID.dotted_string in str(raised.value)
    assert "trust root" in str(raised.value)


def test_critical_extension_this_verifier_does_not_process_refused(chain: Chain) -> None:
    """Name constraints parse fine in cryptography, but nothing here enforces them: critical means refuse."""
    constraints = x509.NameConstraints(permitted_subtrees=[x509.DNSName("example.org")], excluded_subtrees=None)
    error = refusal(chain.leaf(extra=[(constraints, True)]), chain.trust())
    assert error.check == "critical-extension"
    assert "2.5.29.30 (nameConstraints)" in str(error)


# -- CA flags, key usage, path length ---------------------------------------------------------------


def test_sub_intermediate_below_path_length_zero_refused(chain: Chain) -> None:
    sub_key = ec.generate_private_key(ec.SECP256R1())
    sub = _build(_name("Sub CA"), sub_key.public_key(), chain.intermediate.subject, chain.intermediate_key,
                 ca_extensions(sub_key.public_key(), chain.intermediate_key.public_key(), path_length=None))
    error = refusal(chain.leaf(issuer=sub, issuer_key=sub_key), chain.trust(), extra_intermediates=[sub])
    assert error.check == "path-length"
    assert "Sub CA" in str(error)
    assert "Test Intermediate" in str(error)


def test_leaf_that_is_a_ca_refused_as_end_entity(chain: Chain) -> None:
    error = refusal(chain.leaf(ca=True), chain.trust())
    assert error.check == "leaf-is-ca"
    assert "end entity" in str(error)


@pytest.mark.parametrize(("lacking", "check", "named"), [
    ("intermediate_cert_sign", "key-usage", "has no keyUsage keyCertSign"),
    ("intermediate_basic_constraints", "chain", "has no basicConstraints"),
], ids=["without-keyCertSign", "without-basicConstraints"])
def test_issuer_that_may_not_sign_certificates_refused(lacking: str, check: str, named: str) -> None:
    chain = make_chain(**{lacking: False})  # type: ignore[arg-type]
    error = refusal(chain.leaf(), chain.trust())
    assert error.check == check
    assert f"intermediate 'CN=Test Intermediate,OU=bonseyes.local' {named}" in str(error)


def test_ca_certificate_check_for_an_intermediate_to_install(chain: Chain) -> None:
    trust = TrustStore(root=chain.root)
    verify_ca_certificate(chain.intermediate, trust)
    with pytest.raises(CertificateError) as raised:
        verify_ca_certificate(chain.leaf(issuer=chain.root, issuer_key=chain.root_key), trust)
    assert raised.value.check == "chain"
    assert "is not a CA" in str(raised.value)


# -- validity windows at each level -----------------------------------------------------------------

EXPIRED = {"not_before": NOW - 2 * YEAR, "not_after": NOW - YEAR}
NOT_YET_VALID = {"not_before": NOW + YEAR, "not_after": NOW + 2 * YEAR}


@pytest.mark.parametrize("level", ["leaf", "intermediate", "root"])
@pytest.mark.parametrize(("window", "check"), [(EXPIRED, "expired"), (NOT_YET_VALID, "not-yet-valid")],
                         ids=["expired", "not-yet-valid"])
def test_window_at_each_level(level: str, window: dict[str, dt.datetime], check: str) -> None:
    chain = make_chain(root_window=window if level == "root" else None,
                       intermediate_window=window if level == "intermediate" else None)
    leaf = chain.leaf(**(window if level == "leaf" else {}))
    error = refusal(leaf, chain.trust())
    assert error.check == check
    what = {"leaf": "certificate", "intermediate": "issuing CA certificate", "root": "trust root"}[level]
    assert str(error).startswith(f"{check}: {what} ")


# -- name chaining, key identifiers, algorithms ------------------------------------------------------


def test_issuer_name_mismatch_refused(chain: Chain) -> None:
    """Signed by the intermediate's key, but naming another issuer: no path exists."""
    leaf = chain.leaf(issuer_name=_name("Someone Else"))
    error = refusal(leaf, chain.trust())
    assert error.check == "chain"
    assert "no trusted issuer" in str(error)
    with pytest.raises(CertificateError) as raised:
        check_issued_by(leaf, chain.intermediate)
    assert raised.value.check == "chain"
    assert "Someone Else" in str(raised.value)


def test_authority_key_identifier_mismatch_refused(chain: Chain) -> None:
    """A valid signature, but the AKI names another key than the issuer's SKI."""
    stranger = ec.generate_private_key(ec.SECP256R1()).public_key()
    error = refusal(chain.leaf(authority_key=stranger), chain.trust())
    assert error.check == "key-identifier"
    assert "Test Intermediate" in str(error)


def test_weak_signature_algorithm_refused(chain: Chain) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = _build(_name("h1"), key.public_key(), chain.intermediate.subject, chain.intermediate_key,
                  [(x509.BasicConstraints(ca=False, path_length=None), True),
                   (x509.ExtendedKeyUsage(list(ekus_for(Role.HOST))), False),
                   (x509.SubjectAlternativeName([x509.UniformResourceIdentifier(
                       f"spiffe://{TRUST_DOMAIN}/host/h1")]), False)],
                  hash_algorithm=hashes.SHA224())
    error = refusal(leaf, chain.trust())
    assert error.check == "signature-algorithm"
    assert "ecdsa-with-SHA224" in str(error)


def test_foreign_signature_still_refused_as_chain(chain: Chain) -> None:
    """Same names, another key: the signature check, not the key identifier, is what refuses it."""
    other = make_chain()
    other.intermediate = _build(chain.intermediate.subject, other.intermediate_key.public_key(), chain.root.subject,
                                other.root_key, ca_extensions(other.intermediate_key.public_key(),
                                                              chain.root_key.public_key(), path_length=0))
    leaf = other.leaf()
    error = refusal(leaf, chain.trust(), extra_intermediates=[other.intermediate])
    assert error.check == "chain"


# -- the memo belongs to its trust store -------------------------------------------------------------


def test_memo_is_the_trust_stores_own(chain: Chain) -> None:
    leaf = chain.leaf(Role.USER, "memo")
    path = (leaf, chain.intermediate, chain.root)
    trust = chain.trust()
    assert path not in trust.memo
    verify_certificate(leaf, trust, roles=[Role.USER])
    assert path in trust.memo
    assert (trust.memo.hits, trust.memo.misses) == (0, 1)
    verify_certificate(leaf, trust, roles=[Role.USER])
    assert (trust.memo.hits, trust.memo.misses) == (1, 1)

    second = chain.trust()
    assert path not in second.memo
    assert len(second.memo) == 0
    verify_certificate(leaf, second, roles=[Role.USER])
    assert (second.memo.hits, second.memo.misses) == (0, 1)

    trust.replace_crls([])  # paths do not depend on CRLs: they stay
    assert path in trust.memo
    trust.replace_anchors(chain.root, [chain.intermediate])
    assert path not in trust.memo
    assert len(trust.memo) == 0
    verify_certificate(leaf, trust, roles=[Role.USER])
    assert (trust.memo.hits, trust.memo.misses) == (0, 1)


def test_replacing_anchors_takes_effect_at_once(chain: Chain) -> None:
    """After the anchors change, a leaf memoised under the old ones is judged against the new ones."""
    leaf = chain.leaf()
    trust = chain.trust()
    verify_certificate(leaf, trust, roles=[Role.HOST])
    other = make_chain()
    trust.replace_anchors(other.root, [other.intermediate])
    assert refusal(leaf, trust).check == "chain"
    with pytest.raises(CertificateError) as raised:
        trust.replace_anchors(chain.intermediate)
    assert raised.value.check == "root"


def _crl(chain: Chain, revoked: list[x509.Certificate], signing_key: PrivateKey | None = None,
         ) -> x509.CertificateRevocationList:
    builder = (x509.CertificateRevocationListBuilder().issuer_name(chain.intermediate.subject)
               .last_update(NOW - HOUR).next_update(NOW + HOUR))
    for certificate in revoked:
        builder = builder.add_revoked_certificate(x509.RevokedCertificateBuilder()
                                                  .serial_number(certificate.serial_number)
                                                  .revocation_date(NOW - HOUR).build())
    return builder.sign(signing_key or chain.intermediate_key, hashes.SHA256())  # type: ignore[arg-type]


def test_new_crls_take_effect_on_a_memoised_path(chain: Chain) -> None:
    leaf = chain.leaf()
    trust = chain.trust(crls=[_crl(chain, [])], require_crl=True)
    verify_certificate(leaf, trust, roles=[Role.HOST])
    verify_certificate(leaf, trust, roles=[Role.HOST])
    assert trust.memo.hits == 1
    trust.replace_crls([_crl(chain, [leaf])])
    assert (leaf, chain.intermediate, chain.root) in trust.memo  # the path itself stays memoised ...
    assert refusal(leaf, trust).check == "revoked"  # ... but revocation is read from the new CRL
    trust.replace_crls([_crl(chain, [], signing_key=ec.generate_private_key(ec.SECP256R1()))])
    assert refusal(leaf, trust).check == "crl"
    trust.replace_crls([])
    assert refusal(leaf, trust).check == "crl"  # required, and none left


def test_memo_never_skips_windows(chain: Chain) -> None:
    leaf = chain.leaf(not_after=NOW + HOUR)
    trust = chain.trust()
    verify_certificate(leaf, trust, roles=[Role.HOST])
    error = refusal(leaf, trust, now=NOW + 2 * HOUR)
    assert error.check == "expired"


# -- callers routed through the verifier -------------------------------------------------------------


def test_install_intermediate_refuses_an_unknown_critical_extension(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "ca")
    root_key = read_private_key(ca.paths.root_key)
    renewal = _build(ca.intermediate.subject, ca.intermediate.public_key(), ca.root.subject, root_key,
                     [*ca_extensions(ca.intermediate.public_key(), root_key.public_key(), path_length=0),
                      _unknown(critical=True)],
                     not_after=ca.intermediate.not_valid_after_utc + dt.timedelta(days=1))
    with pytest.raises(InputError) as raised:
        ca.install_intermediate(renewal)
    assert raised.value.check == "intermediate"
    assert UNKNOWN_OID.dotted_string in str(raised.value)
    assert CertificateAuthority.load(tmp_path / "ca").intermediate != renewal
