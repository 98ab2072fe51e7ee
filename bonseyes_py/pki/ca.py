"""The Security Manager's certificate authority.

A root (long-lived, may be kept offline with a passphrase) signs one online intermediate; the
intermediate signs every leaf and the CRL. A separate licence-signer leaf, also under the
intermediate, signs licences and IDs, so the intermediate key never touches JOSE code.

Leaves are issued from CSRs: the requester's private key never reaches the CA. The one exception
is the runtime identity of step 4, which the paper has the SM generate and hand out inside the
host licence response.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from bonseyes_py.errors import InputError
from bonseyes_py.pki.certs import certificate_pem, load_crl, read_certificate
from bonseyes_py.pki.keys import (
    KeyAlgorithm,
    PrivateKey,
    PublicKey,
    algorithm_of,
    generate_private_key,
    read_private_key,
    signature_hash,
    write_private_key,
    write_public_file,
)
from bonseyes_py.pki.roles import (
    DEFAULT_TRUST_DOMAIN,
    Identity,
    Role,
    check_name,
    check_trust_domain,
    ekus_for,
)
from bonseyes_py.pki.verify import TrustStore, utcnow

ROOT_VALIDITY = dt.timedelta(days=3650)
INTERMEDIATE_VALIDITY = dt.timedelta(days=1825)
SIGNER_VALIDITY = dt.timedelta(days=365)
DEFAULT_LEAF_VALIDITY: dict[Role, dt.timedelta] = {
    Role.SECURITY_MANAGER: dt.timedelta(days=365),
    Role.LICENCE_SIGNER: SIGNER_VALIDITY,
    Role.MARKETPLACE: dt.timedelta(days=365),
    Role.HOST: dt.timedelta(days=365),
    Role.USER: dt.timedelta(days=365),
    Role.ADMIN: dt.timedelta(days=90),
    Role.RUNTIME: dt.timedelta(hours=24),
}
CRL_VALIDITY = dt.timedelta(days=7)
BACKDATE = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class CAPaths:
    directory: Path

    @property
    def config(self) -> Path:
        return self.directory / "ca.json"

    @property
    def root_cert(self) -> Path:
        return self.directory / "root.pem"

    @property
    def root_key(self) -> Path:
        return self.directory / "private" / "root.key"

    @property
    def intermediate_cert(self) -> Path:
        return self.directory / "intermediate.pem"

    @property
    def intermediate_key(self) -> Path:
        return self.directory / "private" / "intermediate.key"

    @property
    def signer_cert(self) -> Path:
        return self.directory / "signer.pem"

    @property
    def signer_key(self) -> Path:
        return self.directory / "private" / "signer.key"

    @property
    def crl(self) -> Path:
        return self.directory / "crl.pem"


def _serial() -> int:
    return secrets.randbits(159) | 1


def _ca_name(trust_domain: str, label: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Bonseyes Security Manager"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, trust_domain),
        x509.NameAttribute(NameOID.COMMON_NAME, label),
    ])


def _ca_certificate(subject: x509.Name, public_key: PublicKey, issuer: x509.Name, issuer_key: PrivateKey,
                    path_length: int | None, validity: dt.timedelta, now: dt.datetime) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(_serial())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if issuer != subject:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)  # type: ignore[arg-type]
    return builder.sign(issuer_key, signature_hash(issuer_key))  # type: ignore[arg-type]


_EXTENDED_KEY_USAGE = {role: x509.ExtendedKeyUsage(list(ekus_for(role))) for role in Role}


_LEAF_CONSTRAINTS = x509.BasicConstraints(ca=False, path_length=None)


@functools.cache
def _leaf_key_usage(role: Role, algorithm: KeyAlgorithm) -> x509.KeyUsage:
    # Cached: one immutable extension per (role, key type); issuance runs this for every runtime.
    key_agreement_ok = algorithm is KeyAlgorithm.RSA_3072 and role is not Role.LICENCE_SIGNER
    return x509.KeyUsage(digital_signature=True, content_commitment=role is Role.LICENCE_SIGNER,
                         key_encipherment=key_agreement_ok, data_encipherment=False, key_agreement=False,
                         key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False)


class CertificateAuthority:
    """Root + intermediate + licence signer kept in one directory; leaves and CRLs issued from it."""

    def __init__(self, directory: Path, trust_domain: str, root: x509.Certificate,
                 intermediate: x509.Certificate, intermediate_key: PrivateKey,
                 signer: x509.Certificate, signer_key: PrivateKey) -> None:
        self.paths = CAPaths(directory)
        self.trust_domain = trust_domain
        self.root = root
        self.intermediate = intermediate
        self._intermediate_key = intermediate_key
        self.signer = signer
        self.signer_key = signer_key
        self._intermediate_aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(
            intermediate_key.public_key())  # type: ignore[arg-type]

    # -- creation and loading -------------------------------------------------------------------

    @classmethod
    def init(cls, directory: Path | str, *, trust_domain: str = DEFAULT_TRUST_DOMAIN,
             algorithm: KeyAlgorithm | str = KeyAlgorithm.EC_P256, root_passphrase: bytes | None = None,
             intermediate_passphrase: bytes | None = None, now: dt.datetime | None = None) -> CertificateAuthority:
        """Create a new CA; refuses to overwrite an existing one."""
        paths = CAPaths(Path(directory))
        check_trust_domain(trust_domain)
        algorithm = KeyAlgorithm(algorithm)
        if paths.config.exists() or paths.root_cert.exists():
            raise InputError(f"a CA already exists in {paths.directory}; refusing to overwrite it", check="ca-exists")
        now = now or utcnow()
        paths.directory.mkdir(parents=True, exist_ok=True)
        (paths.directory / "private").mkdir(mode=0o700, exist_ok=True)
        os.chmod(paths.directory / "private", 0o700)

        root_key = generate_private_key(algorithm)
        root_name = _ca_name(trust_domain, "Bonseyes Root CA")
        root = _ca_certificate(root_name, root_key.public_key(), root_name, root_key, 1, ROOT_VALIDITY, now)
        intermediate_key = generate_private_key(algorithm)
        intermediate = _ca_certificate(_ca_name(trust_domain, "Bonseyes Intermediate CA"),
                                       intermediate_key.public_key(), root_name, root_key, 0,
                                       INTERMEDIATE_VALIDITY, now)
        write_private_key(paths.root_key, root_key, root_passphrase)
        write_private_key(paths.intermediate_key, intermediate_key, intermediate_passphrase)
        write_public_file(paths.root_cert, certificate_pem(root))
        write_public_file(paths.intermediate_cert, certificate_pem(intermediate))

        signer_key = generate_private_key(algorithm)
        authority = cls(paths.directory, trust_domain, root, intermediate, intermediate_key,
                        root, signer_key)  # signer set just below
        authority.signer = authority.issue(signer_key.public_key(), Identity(trust_domain, Role.LICENCE_SIGNER, "sm"),
                                           validity=SIGNER_VALIDITY, now=now)
        write_private_key(paths.signer_key, signer_key)
        write_public_file(paths.signer_cert, certificate_pem(authority.signer))
        authority.write_crl(now=now)
        paths.config.write_text(json.dumps({"trust_domain": trust_domain, "algorithm": algorithm.value}, indent=2))
        return authority

    @classmethod
    def load(cls, directory: Path | str, *, intermediate_passphrase: bytes | None = None) -> CertificateAuthority:
        paths = CAPaths(Path(directory))
        if not paths.config.exists():
            raise InputError(f"no CA in {paths.directory}; run `bonseyes ca init {paths.directory}` first",
                             check="ca-missing")
        config = json.loads(paths.config.read_text())
        return cls(paths.directory, config["trust_domain"], read_certificate(paths.root_cert),
                   read_certificate(paths.intermediate_cert),
                   read_private_key(paths.intermediate_key, intermediate_passphrase),
                   read_certificate(paths.signer_cert), read_private_key(paths.signer_key))

    # -- issuance ---------------------------------------------------------------------------------

    @property
    def chain(self) -> list[x509.Certificate]:
        """Intermediate then root: what a leaf presents after itself."""
        return [self.intermediate, self.root]

    @property
    def signer_chain(self) -> list[x509.Certificate]:
        """The licence signer's x5c chain (leaf first, root excluded: verifiers bring their own)."""
        return [self.signer, self.intermediate]

    def identity(self, role: Role | str, name: str) -> Identity:
        return Identity(self.trust_domain, Role(role), check_name(name))

    def issue(self, public_key: PublicKey, identity: Identity, *, validity: dt.timedelta | None = None,
              dns_names: tuple[str, ...] = (), ip_addresses: tuple[str, ...] = (),
              now: dt.datetime | None = None) -> x509.Certificate:
        """Sign a leaf for ``identity`` over ``public_key``; the role goes into SAN URI and EKU."""
        if identity.trust_domain != self.trust_domain:
            raise InputError(f"identity is in trust domain {identity.trust_domain}, CA serves {self.trust_domain}")
        algorithm = algorithm_of(public_key)
        now = now or utcnow()
        validity = validity or DEFAULT_LEAF_VALIDITY[identity.role]
        not_after = min(now + validity, self.intermediate.not_valid_after_utc)
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(identity.uri)]
        names += [x509.DNSName(d) for d in dns_names]
        try:
            names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
        except ValueError as exc:
            raise InputError(f"bad IP address in {ip_addresses!r}: {exc}") from exc
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, identity.role.value),
                x509.NameAttribute(NameOID.COMMON_NAME, identity.name[:64]),
            ]))
            .issuer_name(self.intermediate.subject)
            .public_key(public_key)
            .serial_number(_serial())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(_LEAF_CONSTRAINTS, critical=True)
            .add_extension(_leaf_key_usage(identity.role, algorithm), critical=True)
            .add_extension(_EXTENDED_KEY_USAGE[identity.role], critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(self._intermediate_aki, critical=False)
        )
        return builder.sign(self._intermediate_key, signature_hash(self._intermediate_key))  # type: ignore[arg-type]

    def issue_from_csr(self, csr: x509.CertificateSigningRequest, role: Role | str, name: str,
                       **kwargs: object) -> x509.Certificate:
        """Issue from a CSR whose signature proves the requester holds the key; the CA picks role and name."""
        if not csr.is_signature_valid:
            raise InputError("CSR signature is invalid: the requester does not hold the key", check="csr")
        return self.issue(csr.public_key(), self.identity(role, name), **kwargs)  # type: ignore[arg-type]

    def issue_runtime_identity(self, runtime_name: str, *, algorithm: KeyAlgorithm | str = KeyAlgorithm.EC_P256,
                               validity: dt.timedelta | None = None, ip_addresses: tuple[str, ...] = (),
                               now: dt.datetime | None = None) -> tuple[PrivateKey, x509.Certificate]:
        """Step 4: a fresh key pair and certificate bound to one runtime ID."""
        key = generate_private_key(algorithm)
        certificate = self.issue(key.public_key(), self.identity(Role.RUNTIME, runtime_name), validity=validity,
                                 ip_addresses=ip_addresses, now=now)
        return key, certificate

    # -- revocation -------------------------------------------------------------------------------

    def current_crl(self) -> x509.CertificateRevocationList:
        return load_crl(self.paths.crl.read_bytes())

    def write_crl(self, revoked: list[x509.RevokedCertificate] | None = None,
                  now: dt.datetime | None = None) -> x509.CertificateRevocationList:
        now = now or utcnow()
        number = 1
        if self.paths.crl.exists():
            previous = self.current_crl()
            try:
                number = previous.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number + 1
            except x509.ExtensionNotFound:
                number = 1
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.intermediate.subject)
            .last_update(now - BACKDATE)
            .next_update(now + CRL_VALIDITY)
            .add_extension(x509.CRLNumber(number), critical=False)
            .add_extension(self._intermediate_aki, critical=False)
        )
        for entry in revoked or []:
            builder = builder.add_revoked_certificate(entry)
        crl = builder.sign(self._intermediate_key, signature_hash(self._intermediate_key))  # type: ignore[arg-type]
        write_public_file(self.paths.crl, crl.public_bytes(serialization.Encoding.PEM))
        return crl

    def revoke(self, serial_number: int, *, reason: x509.ReasonFlags = x509.ReasonFlags.unspecified,
               now: dt.datetime | None = None) -> x509.CertificateRevocationList:
        """Add a serial to the CRL (idempotent) and publish the new CRL."""
        now = now or utcnow()
        existing = list(self.current_crl()) if self.paths.crl.exists() else []
        if any(entry.serial_number == serial_number for entry in existing):
            return self.write_crl(existing, now=now)
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(serial_number)
            .revocation_date(now)
            .add_extension(x509.CRLReason(reason), critical=False)
            .build()
        )
        return self.write_crl([*existing, entry], now=now)

    def trust_store(self, *, with_crl: bool = True, require_crl: bool = False) -> TrustStore:
        crls = [self.current_crl()] if with_crl and self.paths.crl.exists() else []
        return TrustStore(root=self.root, intermediates=[self.intermediate], crls=crls,
                          trust_domain=self.trust_domain, require_crl=require_crl)

