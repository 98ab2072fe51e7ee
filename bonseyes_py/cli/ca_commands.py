"""``bonseyes ca``: create the SM's CA, issue role certificates, revoke, export user bundles."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from bonseyes_py.cli.common import print_json, read_passphrase, require_one
from bonseyes_py.pki.ca import CertificateAuthority
from bonseyes_py.pki.certs import certificate_pem, chain_pem, fingerprint_sha256, load_csr, read_certificate
from bonseyes_py.pki.keys import (
    KeyAlgorithm,
    generate_private_key,
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
    init.add_argument("--trust-domain", default="bonseyes.local")
    init.add_argument("--root-passphrase-file", help="encrypt the root key (keep it offline)")
    init.set_defaults(func=_init)

    issue = commands.add_parser("issue", help="issue a leaf certificate for a role")
    issue.add_argument("--ca", required=True, metavar="DIR")
    issue.add_argument("--role", required=True, choices=[r.value for r in Role if r is not Role.LICENCE_SIGNER])
    issue.add_argument("--name", required=True)
    issue.add_argument("--csr", help="CSR of the requester (its key never leaves it)")
    issue.add_argument("--new-key", metavar="KEYOUT", help="generate the key here instead (0600)")
    issue.add_argument("--key-algorithm", choices=[a.value for a in KeyAlgorithm], default=KeyAlgorithm.EC_P256.value)
    issue.add_argument("--out", required=True, help="certificate chain output (leaf, intermediate)")
    issue.add_argument("--ip", action="append", default=[], help="IP address SAN (repeatable)")
    issue.add_argument("--dns", action="append", default=[], help="DNS name SAN (repeatable)")
    issue.add_argument("--validity-days", type=float)
    issue.set_defaults(func=_issue)

    revoke = commands.add_parser("revoke", help="revoke a certificate and publish a new CRL")
    revoke.add_argument("--ca", required=True, metavar="DIR")
    revoke.add_argument("certificate", metavar="CERT")
    revoke.set_defaults(func=_revoke)

    export = commands.add_parser("export-user", help="issue a user identity as a PKCS#12 bundle")
    export.add_argument("--ca", required=True, metavar="DIR")
    export.add_argument("--name", required=True)
    export.add_argument("--out", required=True, help="PKCS#12 file (0600)")
    export.add_argument("--passphrase-file", required=True)
    export.add_argument("--admin", action="store_true", help="issue an admin identity instead of a user")
    export.set_defaults(func=_export_user)


def _init(args: argparse.Namespace) -> int:
    authority = CertificateAuthority.init(args.directory, trust_domain=args.trust_domain, algorithm=args.algorithm,
                                          root_passphrase=read_passphrase(args.root_passphrase_file))
    print_json({"root": str(authority.paths.root_cert), "intermediate": str(authority.paths.intermediate_cert),
                "signer": str(authority.paths.signer_cert), "crl": str(authority.paths.crl),
                "root_sha256": fingerprint_sha256(authority.root), "trust_domain": authority.trust_domain})
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
    authority = CertificateAuthority.load(args.ca)
    certificate = read_certificate(args.certificate)
    crl = authority.revoke(certificate.serial_number)
    print_json({"revoked_serial": f"{certificate.serial_number:x}", "crl": str(authority.paths.crl),
                "crl_entries": len(list(crl))})
    return 0


def _export_user(args: argparse.Namespace) -> int:
    authority = CertificateAuthority.load(args.ca)
    passphrase = read_passphrase(args.passphrase_file) or b""
    key = generate_private_key()
    role = Role.ADMIN if args.admin else Role.USER
    certificate = authority.issue(key.public_key(), authority.identity(role, args.name))
    bundle = export_pkcs12(args.name, key, certificate, authority.chain, passphrase)
    write_secret_file(args.out, bundle)
    write_public_file(Path(args.out).with_suffix(".pem"), certificate_pem(certificate))
    print_json({"pkcs12": args.out, "identity": authority.identity(role, args.name).uri,
                "serial": f"{certificate.serial_number:x}"})
    return 0
