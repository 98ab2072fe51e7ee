"""The Security Manager's certificate authority.

A root (long-lived, may be kept offline with a passphrase) signs one online intermediate; the
intermediate signs every leaf and the CRL. A separate licence-signer leaf, also under the
intermediate, signs licences and IDs, so the intermediate key never touches JOSE code.

Leaves are issued from CSRs: the requester's private key never reaches the CA. The one exception
is the runtime identity of step 4, which the paper has the SM generate and hand out inside the
host licence response.

Revocations have one store per CA (``RevocationStore``). A standalone CA's store is its CRL file
(``CRLFileStore``); a CA that belongs to a Security Manager (``ca.json`` names it, written by
``init_sm``) keeps them in the SM's database, and its CRL file is only what the SM publishes from
there: ``revoke`` refuses to write such a CA's CRL directly (``bonseyes_py.sm.service.revocation_store``
picks the store).

The root key is needed only to sign intermediates. ``RootAuthority`` is the root on its own (a
directory that may live on an offline medium, key encrypted); renewing the intermediate certifies its
key again under it (``intermediate_csr`` -> ``RootAuthority.issue_intermediate`` ->
``install_intermediate``): same key and subject, so every leaf, CRL and licence issued before the
renewal still verifies. ``bonseyes_py.sm.service.install_intermediate`` adds what an SM's CA needs.
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
from typing import Literal, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from bonseyes_py import settings
from bonseyes_py.errors import CertificateError, InputError, KeyFileError
from bonseyes_py.pki.certs import certificate_pem, load_crl, read_certificate
from bonseyes_py.pki.keys import (
    KeyAlgorithm,
    PrivateKey,
    PublicKey,
    algorithm_of,
    generate_private_key,
    key_file_is_encrypted,
    read_private_key,
    signature_hash,
    write_private_key,
    write_public_file,
    write_secret_file,
)
from bonseyes_py.pki.roles import (
    DEFAULT_TRUST_DOMAIN,
    Identity,
    Role,
    check_name,
    check_trust_domain,
    ekus_for,
)
from bonseyes_py.pki.verify import TrustStore, check_issued_by, utcnow, verify_ca_certificate

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

    @property
    def intermediate_archive(self) -> Path:
        """Intermediate certificates replaced by a renewal, kept by serial."""
        return self.directory / "intermediates"


# The key of ca.json naming the Security Manager that owns a CA (relative to the CA directory).
OWNER_KEY = "security_manager"
# init_sm lays an SM out as <sm>/sm.json with its CA in <sm>/ca (SMConfig.ca_directory).
_SM_CONFIG_NAME = "sm.json"
_SM_CA_NAME = "ca"


def root_key_state(directory: Path | str) -> str:
    """``encrypted``, ``plaintext`` or ``absent`` (kept offline): the state of a CA directory's root key."""
    key = CAPaths(Path(directory)).root_key
    if not key.exists():
        return "absent"
    return "encrypted" if key_file_is_encrypted(key) else "plaintext"


@dataclass(frozen=True)
class CARecord:
    """``ca.json``: what a CA directory says about itself, loaded by the strict settings loader.

    A hand-edited file with a missing trust domain or a typo in a key is refused in one line naming the
    file and the key, not a ``KeyError`` traceback or a key silently ignored.
    """

    trust_domain: str = settings.setting(non_empty=True)
    algorithm: Literal["ec-p256", "ed25519", "rsa-3072"] = "ec-p256"
    # The owning Security Manager's directory, relative to the CA directory (OWNER_KEY).
    security_manager: str | None = None


def _owner_of(directory: Path, config: CARecord) -> Path | None:
    """The directory of the Security Manager that owns a CA, or None for a standalone CA.

    ``ca.json`` names it (init_sm writes it); a CA created before that record existed is recognised by
    the layout init_sm always uses, so no older SM's CA is mistaken for a standalone one.
    """
    recorded = config.security_manager
    if recorded:
        return (directory / recorded).resolve()
    if directory.name == _SM_CA_NAME and (directory.parent / _SM_CONFIG_NAME).exists():
        return directory.parent.resolve()
    return None


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


def _public_der(key: PrivateKey | PublicKey) -> bytes:
    public: PublicKey = key.public_key() if hasattr(key, "private_bytes") else key  # type: ignore[union-attr,assignment]
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _trust_domain_of(root: x509.Certificate) -> str:
    units = root.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    if not units:
        raise InputError("the root certificate names no trust domain (OU); not a Bonseyes root", check="root")
    return str(units[0].value)


class RootAuthority:
    """The root on its own: its certificate and key, which sign intermediates and nothing else.

    Its directory has the CA layout (``root.pem``, ``private/root.key``), so it is either a CA directory
    that still holds the root key or an offline one made by ``CertificateAuthority.init(root_directory=...)``
    or ``move_root``. The key is normally passphrase-encrypted.
    """

    def __init__(self, directory: Path, certificate: x509.Certificate, key: PrivateKey) -> None:
        self.paths = CAPaths(directory)
        self.certificate = certificate
        self._key = key
        self.trust_domain = _trust_domain_of(certificate)

    @classmethod
    def load(cls, directory: Path | str, *, passphrase: bytes | None = None) -> RootAuthority:
        paths = CAPaths(Path(directory))
        if not paths.root_cert.exists() or not paths.root_key.exists():
            raise InputError(f"no root in {paths.directory}: {paths.root_cert} and {paths.root_key} are needed"
                             " (is the offline medium mounted?)", check="root-missing")
        if passphrase is None and key_file_is_encrypted(paths.root_key):
            raise KeyFileError(f"the root key {paths.root_key} is encrypted: give its passphrase"
                               " (--root-passphrase-file, a file of mode 0600)")
        certificate = read_certificate(paths.root_cert)
        key = read_private_key(paths.root_key, passphrase)
        if _public_der(key) != _public_der(certificate.public_key()):  # type: ignore[arg-type]
            raise InputError(f"{paths.root_key} is not the key of {paths.root_cert}", check="root-key")
        return cls(paths.directory, certificate, key)

    def issue_intermediate(self, request: x509.CertificateSigningRequest | PublicKey, *,
                           now: dt.datetime | None = None) -> x509.Certificate:
        """Certify an intermediate key (from its CSR, whose signature proves possession) under this root.

        The subject is the one every Bonseyes intermediate of this trust domain has, whatever the CSR
        asks; the validity ends with the root's at the latest.
        """
        if isinstance(request, x509.CertificateSigningRequest):
            if not request.is_signature_valid:
                raise InputError("intermediate CSR signature is invalid: the requester does not hold the key",
                                 check="csr")
            public_key = request.public_key()
        else:
            public_key = request
        algorithm_of(public_key)  # type: ignore[arg-type]
        now = now or utcnow()
        validity = min(INTERMEDIATE_VALIDITY, self.certificate.not_valid_after_utc - now)
        if validity <= dt.timedelta(0):
            raise InputError(f"the root expired at {self.certificate.not_valid_after_utc.isoformat()}", check="root")
        return _ca_certificate(_ca_name(self.trust_domain, "Bonseyes Intermediate CA"), public_key,  # type: ignore[arg-type]
                               self.certificate.subject, self._key, 0, validity, now)


class CRLFileStore:
    """The revocation store of a standalone CA: its CRL file, signed by the intermediate."""

    def __init__(self, ca: CertificateAuthority) -> None:
        self.ca = ca
        self.name = f"crl-file:{ca.paths.crl}"

    def revoke(self, certificate: x509.Certificate, *, reason: str = "") -> Revocation:
        self.ca.check_issued_here(certificate)
        crl = self.ca.revoke(certificate.serial_number)
        return Revocation(serial=format(certificate.serial_number, "x"), store=self.name, crl=self.ca.paths.crl,
                          crl_number=crl_number_of(crl), crl_entries=len(list(crl)))


@dataclass(frozen=True)
class Revocation:
    """What a revocation store answers: the serial, where it was recorded, and the CRL published after."""

    serial: str
    store: str
    crl: Path
    crl_number: int
    crl_entries: int

    def as_dict(self) -> dict[str, object]:
        return {"revoked_serial": self.serial, "store": self.store, "crl": str(self.crl),
                "crl_number": self.crl_number, "crl_entries": self.crl_entries}


class RevocationStore(Protocol):
    """Where a CA's revocations are recorded; its CRL is published from this store and nowhere else."""

    name: str

    def revoke(self, certificate: x509.Certificate, *, reason: str = "") -> Revocation:
        """Record ``certificate`` as revoked (idempotent) and publish the CRL."""
        ...


def crl_number_of(crl: x509.CertificateRevocationList) -> int:
    try:
        return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
    except x509.ExtensionNotFound:
        return 0


class CertificateAuthority:
    """Root + intermediate + licence signer kept in one directory; leaves and CRLs issued from it."""

    def __init__(self, directory: Path, trust_domain: str, root: x509.Certificate,
                 intermediate: x509.Certificate, intermediate_key: PrivateKey,
                 signer: x509.Certificate, signer_key: PrivateKey, *,
                 security_manager: Path | None = None) -> None:
        self.paths = CAPaths(directory)
        self.trust_domain = trust_domain
        self.root = root
        self.intermediate = intermediate
        self._intermediate_key = intermediate_key
        self.signer = signer
        self.signer_key = signer_key
        # The SM whose database is this CA's revocation store (None: the CRL file is the store).
        self.security_manager = security_manager
        self._intermediate_aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(
            intermediate_key.public_key())  # type: ignore[arg-type]
        self._intermediate_version = self._file_version(self.paths.intermediate_cert)

    # -- creation and loading -------------------------------------------------------------------

    @classmethod
    def init(cls, directory: Path | str, *, trust_domain: str = DEFAULT_TRUST_DOMAIN,
             algorithm: KeyAlgorithm | str = KeyAlgorithm.EC_P256, root_passphrase: bytes | None = None,
             intermediate_passphrase: bytes | None = None, now: dt.datetime | None = None,
             root_directory: Path | str | None = None,
             security_manager: Path | str | None = None) -> CertificateAuthority:
        """Create a new CA; refuses to overwrite an existing one.

        ``root_passphrase`` encrypts the root key. With ``root_directory`` (an offline medium) the root
        key is written there, never into ``directory``, which gets only the root certificate.
        ``security_manager`` records the SM whose database is this CA's revocation store.
        """
        paths = CAPaths(Path(directory))
        check_trust_domain(trust_domain)
        algorithm = KeyAlgorithm(algorithm)
        if paths.config.exists() or paths.root_cert.exists():
            raise InputError(f"a CA already exists in {paths.directory}; refusing to overwrite it", check="ca-exists")
        root_paths = CAPaths(Path(root_directory)) if root_directory is not None else paths
        if root_directory is not None:
            if root_paths.directory.resolve() == paths.directory.resolve():
                raise InputError("the root directory must not be the CA directory", check="root-directory")
            if root_paths.root_key.exists() or root_paths.root_cert.exists():
                raise InputError(f"a root already exists in {root_paths.directory}; refusing to overwrite it",
                                 check="root-exists")
            root_paths.directory.mkdir(parents=True, exist_ok=True)
            (root_paths.directory / "private").mkdir(mode=0o700, exist_ok=True)
            os.chmod(root_paths.directory / "private", 0o700)
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
        write_private_key(root_paths.root_key, root_key, root_passphrase)
        if root_directory is not None:
            write_public_file(root_paths.root_cert, certificate_pem(root))
        write_private_key(paths.intermediate_key, intermediate_key, intermediate_passphrase)
        write_public_file(paths.root_cert, certificate_pem(root))
        write_public_file(paths.intermediate_cert, certificate_pem(intermediate))

        signer_key = generate_private_key(algorithm)
        owner = Path(security_manager).resolve() if security_manager is not None else None
        authority = cls(paths.directory, trust_domain, root, intermediate, intermediate_key,
                        root, signer_key, security_manager=owner)  # signer set just below
        authority.signer = authority.issue(signer_key.public_key(), Identity(trust_domain, Role.LICENCE_SIGNER, "sm"),
                                           validity=SIGNER_VALIDITY, now=now)
        write_private_key(paths.signer_key, signer_key)
        write_public_file(paths.signer_cert, certificate_pem(authority.signer))
        authority.write_crl(now=now)
        config: dict[str, str] = {"trust_domain": trust_domain, "algorithm": algorithm.value}
        if owner is not None:
            config[OWNER_KEY] = os.path.relpath(owner, paths.directory.resolve())
        paths.config.write_text(json.dumps(config, indent=2))
        return authority

    @classmethod
    def load(cls, directory: Path | str, *, intermediate_passphrase: bytes | None = None) -> CertificateAuthority:
        paths = CAPaths(Path(directory))
        if not paths.config.exists():
            raise InputError(f"no CA in {paths.directory}; run `bonseyes ca init {paths.directory} "
                             "--root-passphrase-file FILE` first",
                             check="ca-missing")
        config = settings.load_file(CARecord, paths.config, what="CA configuration")
        return cls(paths.directory, config.trust_domain, read_certificate(paths.root_cert),
                   read_certificate(paths.intermediate_cert),
                   read_private_key(paths.intermediate_key, intermediate_passphrase),
                   read_certificate(paths.signer_cert), read_private_key(paths.signer_key),
                   security_manager=_owner_of(paths.directory, config))

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
        """Add a serial to the CRL file (idempotent) and publish it: the store of a standalone CA only.

        A CA that belongs to a Security Manager keeps its revocations in the SM's database; writing its
        CRL here would be undone by the SM's next publication, so it is refused.
        """
        if self.security_manager is not None:
            raise InputError(f"the revocations of the CA in {self.paths.directory} are kept by the Security Manager"
                             f" in {self.security_manager}; revoke through it (bonseyes ca revoke --ca"
                             f" {self.paths.directory} CERT, or bonseyes sm revoke)", check="revocation-store")
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

    def check_issued_here(self, certificate: x509.Certificate) -> None:
        """Refuse a certificate this CA's intermediate did not sign (revoking it here would mean nothing)."""
        try:
            check_issued_by(certificate, self.intermediate)
        except CertificateError as exc:
            raise InputError(f"certificate serial {certificate.serial_number:x} was not issued by the CA in"
                             f" {self.paths.directory}: {exc.args[0]}", check="issuer") from exc

    # -- the intermediate under an offline root ---------------------------------------------------

    def intermediate_csr(self) -> x509.CertificateSigningRequest:
        """A CSR over the intermediate's key, for the offline root to certify again (renewal)."""
        return (x509.CertificateSigningRequestBuilder().subject_name(self.intermediate.subject)
                .sign(self._intermediate_key, signature_hash(self._intermediate_key)))  # type: ignore[arg-type]

    def install_intermediate(self, certificate: x509.Certificate) -> x509.Certificate:
        """Replace the intermediate certificate by a renewal of it; returns the previous one (archived).

        The renewal must certify the same key under the same subject, be signed by this CA's root and
        not expire before the current one: then every leaf, CRL and licence signed so far keeps verifying.
        """
        previous = self.intermediate
        if _public_der(certificate.public_key()) != _public_der(self._intermediate_key):  # type: ignore[arg-type]
            raise InputError("the new intermediate certificate is not for this CA's intermediate key",
                             check="intermediate")
        if certificate.subject != previous.subject:
            raise InputError(f"the new intermediate is for {certificate.subject.rfc4514_string()!r}, not"
                             f" {previous.subject.rfc4514_string()!r}", check="intermediate")
        if certificate.issuer != self.root.subject:
            raise InputError(f"the new intermediate is not signed by the root of {self.paths.directory}",
                             check="intermediate")
        try:
            verify_ca_certificate(certificate, TrustStore(root=self.root))
        except CertificateError as exc:
            if exc.check == "chain":
                raise InputError(f"the new intermediate is not signed by the root of {self.paths.directory}",
                                 check="intermediate") from exc
            raise InputError(f"the new intermediate certificate is refused: {exc}", check="intermediate") from exc
        if certificate.not_valid_after_utc < previous.not_valid_after_utc:
            raise InputError(f"the new intermediate expires {certificate.not_valid_after_utc.isoformat()}, before"
                             f" the current one ({previous.not_valid_after_utc.isoformat()})", check="intermediate")
        write_public_file(self.paths.intermediate_archive / f"{previous.serial_number:x}.pem",
                          certificate_pem(previous))
        write_public_file(self.paths.intermediate_cert, certificate_pem(certificate))
        self.intermediate = certificate
        self._intermediate_version = self._file_version(self.paths.intermediate_cert)
        return previous

    def move_root(self, root_directory: Path | str) -> Path:
        """Move the root key (as it is, normally encrypted) and a copy of the root certificate to an offline
        directory; afterwards this directory holds no root key. Returns the new key path."""
        target = CAPaths(Path(root_directory))
        if target.directory.resolve() == self.paths.directory.resolve():
            raise InputError("the root directory must not be the CA directory", check="root-directory")
        if not self.paths.root_key.exists():
            raise InputError(f"{self.paths.directory} holds no root key (already offline?)", check="root-missing")
        if target.root_key.exists():
            raise InputError(f"{target.root_key} exists; refusing to overwrite a root key", check="root-exists")
        (target.directory / "private").mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(target.directory / "private", 0o700)
        write_secret_file(target.root_key, self.paths.root_key.read_bytes())
        write_public_file(target.root_cert, certificate_pem(self.root))
        self.paths.root_key.unlink()
        return target.root_key

    @staticmethod
    def _file_version(path: Path) -> tuple[int, int, int]:
        try:
            stat = path.stat()
        except FileNotFoundError:
            return (0, 0, 0)
        return (stat.st_mtime_ns, stat.st_size, stat.st_ino)

    def reload_if_renewed(self) -> bool:
        """Pick up an intermediate certificate renewed on disk by another process (one stat when it was not).

        Only a renewal of the same key is taken; the SM's workers call this so that leaves issued after
        ``bonseyes ca renew-intermediate`` get the new validity and chain without a restart.
        """
        version = self._file_version(self.paths.intermediate_cert)
        if version == self._intermediate_version:
            return False
        self._intermediate_version = version
        try:
            certificate = read_certificate(self.paths.intermediate_cert)
        except (OSError, InputError):
            return False
        if (certificate == self.intermediate or certificate.subject != self.intermediate.subject
                or _public_der(certificate.public_key()) != _public_der(self._intermediate_key)):  # type: ignore[arg-type]
            return False
        self.intermediate = certificate
        return True

    def trust_store(self, *, with_crl: bool = True, require_crl: bool = False) -> TrustStore:
        crls = [self.current_crl()] if with_crl and self.paths.crl.exists() else []
        return TrustStore(root=self.root, intermediates=[self.intermediate], crls=crls,
                          trust_domain=self.trust_domain, require_crl=require_crl)

