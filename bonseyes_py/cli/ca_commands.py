"""``bonseyes ca``: create the SM's CA, issue role certificates, revoke, export user bundles, and keep
the root offline (move it out, renew the intermediate under it).

``revoke`` writes to the CA's one revocation store: the Security Manager's database when the CA
belongs to an SM, its CRL file otherwise (``bonseyes_py.sm.service.revocation_store``).

A new root key is never written in plaintext by default: ``ca init`` (and ``sm init``, which shares
``add_root_key_options``/``root_key_choice``) needs ``--root-passphrase-file`` (0600), ``--root-dir`` or
the explicit ``--plaintext-root``. Passphrases come from files only readable by their owner
(``read_passphrase_file``) and are never printed, nor are private keys.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from bonseyes_py.cli import arguments
from bonseyes_py.cli.common import print_json, require_one
from bonseyes_py.errors import InputError
from bonseyes_py.pki.ca import CertificateAuthority, RootAuthority, root_key_state
from bonseyes_py.pki.certs import certificate_pem, chain_pem, fingerprint_sha256, load_csr, read_certificate
from bonseyes_py.pki.keys import (
    KeyAlgorithm,
    generate_private_key,
    read_passphrase_file,
    write_private_key,
    write_public_file,
    write_secret_file,
)
from bonseyes_py.pki.pkcs12 import export_pkcs12
from bonseyes_py.pki.roles import Role


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("ca", help="the Security Manager's certificate authority")
    commands = parser.add_subparsers(dest="command", metavar="ACTION", required=True)

    init = commands.add_parser("init", help="create root, intermediate and licence signer in DIR")
    init.add_argument("directory", metavar="DIR")
    init.add_argument("--algorithm", choices=[a.value for a in KeyAlgorithm], default=KeyAlgorithm.EC_P256.value)
    init.add_argument("--trust-domain", default="bonseyes.local", type=arguments.trust_domain)
    add_root_key_options(init, "DIR")
    init.set_defaults(func=_init)

    issue = commands.add_parser("issue", help="issue a leaf certificate for a role")
    issue.add_argument("--ca", required=True, metavar="DIR", type=arguments.existing_directory)
    issue.add_argument("--role", required=True, choices=[r.value for r in Role if r is not Role.LICENCE_SIGNER])
    issue.add_argument("--name", required=True, type=arguments.name("name"))
    issue.add_argument("--csr", type=arguments.existing_file, help="CSR of the requester (its key never leaves it)")
    issue.add_argument("--new-key", metavar="KEYOUT", help="generate the key here instead (0600)")
    issue.add_argument("--key-algorithm", choices=[a.value for a in KeyAlgorithm], default=KeyAlgorithm.EC_P256.value)
    issue.add_argument("--out", required=True, help="certificate chain output (leaf, intermediate)")
    issue.add_argument("--ip", action="append", default=[], type=arguments.ip_address,
                       help="IP address SAN (repeatable)")
    issue.add_argument("--dns", action="append", default=[], type=arguments.dns_name, help="DNS name SAN (repeatable)")
    issue.add_argument("--validity-days", type=arguments.validity_days,
                       help=f"more than 0, at most {arguments.MAX_VALIDITY_DAYS} (100 years; default: the role's)")
    issue.set_defaults(func=_issue)

    revoke = commands.add_parser("revoke", help="revoke a certificate in the CA's revocation store (the SM's database"
                                                " for an SM's CA) and publish a new CRL")
    revoke.add_argument("--ca", required=True, metavar="DIR")
    revoke.add_argument("certificate", metavar="CERT")
    revoke.add_argument("--reason", default="", help="recorded in the SM's audit log")
    revoke.set_defaults(func=_revoke)

    renew = commands.add_parser("renew-intermediate",
                                help="certify the intermediate's key again under the (offline) root; a running SM"
                                     " keeps working and picks it up")
    renew.add_argument("--ca", required=True, metavar="DIR", help="the CA directory (e.g. the SM's ca/)")
    renew.add_argument("--root-dir", required=True, metavar="OFFLINE", help="directory holding the root key")
    renew.add_argument("--root-passphrase-file", metavar="FILE", help="passphrase of the root key (mode 0600)")
    renew.set_defaults(func=_renew_intermediate)

    csr = commands.add_parser("intermediate-csr", help="write a CSR of the intermediate key, for an air-gapped root")
    csr.add_argument("--ca", required=True, metavar="DIR")
    csr.add_argument("--out", required=True, metavar="FILE.csr")
    csr.set_defaults(func=_intermediate_csr)

    sign = commands.add_parser("sign-intermediate", help="on the offline machine: certify an intermediate CSR")
    sign.add_argument("--root-dir", required=True, metavar="OFFLINE")
    sign.add_argument("--root-passphrase-file", metavar="FILE", help="passphrase of the root key (mode 0600)")
    sign.add_argument("--csr", required=True, metavar="FILE.csr")
    sign.add_argument("--out", required=True, metavar="FILE.pem")
    sign.set_defaults(func=_sign_intermediate)

    install = commands.add_parser("install-intermediate", help="install an intermediate certified by the root")
    install.add_argument("--ca", required=True, metavar="DIR")
    install.add_argument("certificate", metavar="FILE.pem")
    install.set_defaults(func=_install_intermediate)

    move = commands.add_parser("move-root", help="move the root key out of DIR to an offline directory")
    move.add_argument("--ca", required=True, metavar="DIR")
    move.add_argument("--root-dir", required=True, metavar="OFFLINE")
    move.set_defaults(func=_move_root)

    export = commands.add_parser("export-user", help="issue a user identity as a PKCS#12 bundle")
    export.add_argument("--ca", required=True, metavar="DIR", type=arguments.existing_directory)
    export.add_argument("--name", required=True, type=arguments.name("name"))
    export.add_argument("--out", required=True, help="PKCS#12 file (0600)")
    export.add_argument("--passphrase-file", required=True, help="file holding the bundle passphrase (mode 0600)")
    export.add_argument("--admin", action="store_true", help="issue an admin identity instead of a user")
    export.set_defaults(func=_export_user)


PLAINTEXT_ROOT_WARNING = (
    "WARNING: the root key {key} is NOT encrypted. Whoever reads it can mint intermediates for the whole trust"
    " domain. Give --root-passphrase-file FILE (mode 0600) and --root-dir OFFLINE to keep it encrypted and"
    " offline (docs/pki-and-keys.md).")
ROOT_KEY_CHOICE_MISSING = (
    "refusing to write the root key unprotected: give --root-passphrase-file FILE (mode 0600) to encrypt it,"
    " --root-dir OFFLINE to write it to an offline medium, or --plaintext-root to keep it unencrypted"
    " explicitly (docs/pki-and-keys.md)")


def add_root_key_options(parser: argparse.ArgumentParser, directory: str) -> None:
    """How a new root key is kept: encrypted (``--root-passphrase-file``), offline (``--root-dir``), or
    explicitly in plaintext (``--plaintext-root``); ``root_key_choice`` refuses none of them."""
    encryption = parser.add_mutually_exclusive_group()
    encryption.add_argument("--root-passphrase-file", metavar="FILE",
                            help="encrypt the root key with the passphrase in FILE (one line, mode 0600)")
    encryption.add_argument("--plaintext-root", action="store_true",
                            help="keep the root key unencrypted (not recommended; says so loudly)")
    parser.add_argument("--root-dir", metavar="OFFLINE",
                        help=f"write the root key to OFFLINE (an offline medium), never into {directory}")
    parser.set_defaults(root_key_usage_error=parser.error)


def root_key_choice(args: argparse.Namespace) -> bytes | None:
    """The passphrase of a new root key, or None for a plaintext root the operator chose (``--plaintext-root``,
    or ``--root-dir`` alone: plaintext on the offline medium).

    Without any of the options this is a usage error (one line, exit 2) before anything is created; a
    passphrase file that group or others may read, or an empty one, is refused (``read_passphrase_file``,
    the check the security_manager role uses).
    """
    if not (args.root_passphrase_file or args.root_dir or args.plaintext_root):
        args.root_key_usage_error(ROOT_KEY_CHOICE_MISSING)
    return _root_passphrase(args.root_passphrase_file)


def root_key_path(ca_directory: Path, root_dir: str | None) -> Path:
    """Where a new CA's root key was written: ``OFFLINE/private/root.key`` or ``DIR/private/root.key``."""
    return (Path(root_dir) if root_dir else ca_directory) / "private" / "root.key"


def warn_plaintext_root(key: Path) -> None:
    print(PLAINTEXT_ROOT_WARNING.format(key=key), file=sys.stderr)


def _root_passphrase(path: str | None) -> bytes | None:
    return read_passphrase_file(path) if path else None


def _init(args: argparse.Namespace) -> int:
    passphrase = root_key_choice(args)
    authority = CertificateAuthority.init(args.directory, trust_domain=args.trust_domain, algorithm=args.algorithm,
                                          root_passphrase=passphrase, root_directory=args.root_dir)
    root_key = root_key_path(authority.paths.directory, args.root_dir)
    if passphrase is None:
        warn_plaintext_root(root_key)
    print_json({"root": str(authority.paths.root_cert), "intermediate": str(authority.paths.intermediate_cert),
                "signer": str(authority.paths.signer_cert), "crl": str(authority.paths.crl),
                "root_sha256": fingerprint_sha256(authority.root), "trust_domain": authority.trust_domain,
                "root_key": str(root_key), "root_key_encrypted": passphrase is not None})
    return 0


def _issue(args: argparse.Namespace) -> int:
    require_one(csr=args.csr, new_key=args.new_key)
    authority = CertificateAuthority.load(args.ca)
    validity = dt.timedelta(days=args.validity_days) if args.validity_days else None
    extra = {"validity": validity, "ip_addresses": tuple(args.ip), "dns_names": tuple(args.dns)}
    if args.csr:
        certificate = authority.issue_from_csr(load_csr(Path(args.csr).read_bytes()), args.role, args.name, **extra)
    else:
        key = generate_private_key(args.key_algorithm)
        certificate = authority.issue(key.public_key(), authority.identity(args.role, args.name), **extra)  # type: ignore[arg-type]
        write_private_key(args.new_key, key)
    write_public_file(args.out, chain_pem([certificate, authority.intermediate]))
    print_json({"certificate": args.out, "serial": f"{certificate.serial_number:x}",
                "identity": authority.identity(args.role, args.name).uri,
                "not_after": certificate.not_valid_after_utc.isoformat()})
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from bonseyes_py.sm.service import revocation_store

    certificate = read_certificate(args.certificate)
    print_json(revocation_store(args.ca).revoke(certificate, reason=args.reason).as_dict())
    return 0


def _renew_intermediate(args: argparse.Namespace) -> int:
    from bonseyes_py.sm.service import install_intermediate

    authority = CertificateAuthority.load(args.ca)
    root = RootAuthority.load(args.root_dir, passphrase=_root_passphrase(args.root_passphrase_file))
    if root.certificate != authority.root:
        raise InputError(f"the root in {args.root_dir} is not the root of {args.ca}", check="root")
    certificate = root.issue_intermediate(authority.intermediate_csr())
    print_json(install_intermediate(authority, certificate))
    return 0


def _intermediate_csr(args: argparse.Namespace) -> int:
    authority = CertificateAuthority.load(args.ca)
    write_public_file(args.out, authority.intermediate_csr().public_bytes(serialization.Encoding.PEM))
    print_json({"csr": args.out, "intermediate_serial": f"{authority.intermediate.serial_number:x}",
                "not_after": authority.intermediate.not_valid_after_utc.isoformat()})
    return 0


def _sign_intermediate(args: argparse.Namespace) -> int:
    root = RootAuthority.load(args.root_dir, passphrase=_root_passphrase(args.root_passphrase_file))
    certificate = root.issue_intermediate(load_csr(Path(args.csr).read_bytes()))
    write_public_file(args.out, certificate_pem(certificate))
    print_json({"intermediate": args.out, "serial": f"{certificate.serial_number:x}",
                "not_after": certificate.not_valid_after_utc.isoformat()})
    return 0


def _install_intermediate(args: argparse.Namespace) -> int:
    from bonseyes_py.sm.service import install_intermediate

    print_json(install_intermediate(CertificateAuthority.load(args.ca), read_certificate(args.certificate)))
    return 0


def _move_root(args: argparse.Namespace) -> int:
    authority = CertificateAuthority.load(args.ca)
    state = root_key_state(authority.paths.directory)
    moved = authority.move_root(args.root_dir)
    if state == "plaintext":
        warn_plaintext_root(moved)
    print_json({"root_key": str(moved), "root_key_encrypted": state == "encrypted",
                "ca_root_key": root_key_state(authority.paths.directory)})
    return 0


def _export_user(args: argparse.Namespace) -> int:
    authority = CertificateAuthority.load(args.ca)
    passphrase = read_passphrase_file(args.passphrase_file)
    key = generate_private_key()
    role = Role.ADMIN if args.admin else Role.USER
    certificate = authority.issue(key.public_key(), authority.identity(role, args.name))
    bundle = export_pkcs12(args.name, key, certificate, authority.chain, passphrase)
    write_secret_file(args.out, bundle)
    write_public_file(Path(args.out).with_suffix(".pem"), certificate_pem(certificate))
    print_json({"pkcs12": args.out, "identity": authority.identity(role, args.name).uri,
                "serial": f"{certificate.serial_number:x}"})
    return 0
