"""``bonseyes licence``: issue (from a local CA, for operators and demos) and verify licences.

``verify`` exits 0 and prints the claims as JSON when every check passes; otherwise it prints one
line naming the failed check and exits 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import secrets
from pathlib import Path

from bonseyes_py.cli import arguments
from bonseyes_py.cli.common import print_json
from bonseyes_py.identity.ids import RuntimeID
from bonseyes_py.licences import Expectations, LicenceIssuer, LicenceKind, verify_licence
from bonseyes_py.pki.ca import CertificateAuthority
from bonseyes_py.pki.certs import chain_pem, load_certificate_chain, load_crl, read_certificate
from bonseyes_py.pki.keys import write_private_key, write_public_file
from bonseyes_py.pki.verify import TrustStore

MAX_LICENCE_FILE_BYTES = 64 * 1024 + 1


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("licence", help="host and artefact licences")
    commands = parser.add_subparsers(dest="command", metavar="ACTION", required=True)

    issue = commands.add_parser("issue", help="issue a host licence from a local CA (step 4 without the service)")
    issue.add_argument("--ca", required=True, metavar="DIR", type=arguments.existing_directory)
    issue.add_argument("--host-id", required=True, type=arguments.name("host ID"))
    issue.add_argument("--host-ip", required=True, type=arguments.ip_address)
    issue.add_argument("--digest", required=True, type=arguments.digest, help="image digest sha256:...")
    issue.add_argument("--artefact", required=True, type=arguments.name("artefact ID"))
    issue.add_argument("--user", required=True, type=arguments.name("user ID"))
    issue.add_argument("--nonce", type=arguments.nonce, help="default: 128 random bits")
    issue.add_argument("--validity", type=arguments.validity_seconds, default=900,
                       help=f"whole seconds, at least 1 and at most {arguments.MAX_VALIDITY_SECONDS} (100 years); "
                            "default 900")
    issue.add_argument("--out", required=True)
    issue.add_argument("--runtime-key-out", help="write the runtime private key here (0600)")
    issue.set_defaults(func=_issue)

    verify = commands.add_parser("verify", help="verify a licence against the SM root")
    verify.add_argument("file", metavar="FILE", type=arguments.existing_file)
    verify.add_argument("--root", required=True, type=arguments.existing_file, help="SM root certificate (PEM)")
    verify.add_argument("--intermediate", type=arguments.existing_file, help="extra intermediate certificates (PEM)")
    verify.add_argument("--crl", type=arguments.existing_file, help="CRL to check the signer against")
    verify.add_argument("--kind", choices=["host", "artefact"], default="host")
    verify.add_argument("--expect-audience")
    verify.add_argument("--expect-host", help="host ID the licence must be for")
    verify.add_argument("--expect-ip", type=arguments.ip_address, help="host IP the licence must be for")
    verify.add_argument("--expect-digest", help="image digest the licence must be for")
    verify.add_argument("--expect-nonce")
    verify.add_argument("--expect-artefact")
    verify.add_argument("--expect-user")
    verify.add_argument("--expect-runtime-cert", type=arguments.existing_file,
                        help="runtime certificate the licence's cnf must bind")
    verify.set_defaults(func=_verify)


def _issue(args: argparse.Namespace) -> int:
    issuer = LicenceIssuer(CertificateAuthority.load(args.ca))
    runtime = RuntimeID(image_digest=args.digest, artefact_id=args.artefact, user_id=args.user, host_id=args.host_id,
                        nonce=args.nonce or secrets.token_urlsafe(16), host_ip=args.host_ip)
    licence = issuer.issue_host_licence(runtime, validity=dt.timedelta(seconds=args.validity))
    write_public_file(args.out, licence.token.encode())
    certificate_out = Path(args.out).with_suffix(".runtime.pem")
    write_public_file(certificate_out, chain_pem([licence.runtime_certificate, issuer.ca.intermediate]))
    if args.runtime_key_out:
        write_private_key(args.runtime_key_out, licence.runtime_key)
    print_json({"licence": args.out, "runtime_certificate": str(certificate_out), "jti": licence.claims["jti"],
                "runtime": licence.claims["runtime"], "exp": licence.claims["exp"]})
    return 0


def _verify(args: argparse.Namespace) -> int:
    with open(args.file, "rb") as handle:
        token = handle.read(MAX_LICENCE_FILE_BYTES).strip()
    trust = TrustStore(
        root=read_certificate(args.root),
        intermediates=load_certificate_chain(Path(args.intermediate).read_bytes()) if args.intermediate else [],
        crls=[load_crl(Path(args.crl).read_bytes())] if args.crl else [],
    )
    expect = Expectations(
        audience=args.expect_audience, host_id=args.expect_host, host_ip=args.expect_ip,
        image_digest=args.expect_digest, nonce=args.expect_nonce, artefact_id=args.expect_artefact,
        user_id=args.expect_user,
        runtime_certificate=read_certificate(args.expect_runtime_cert) if args.expect_runtime_cert else None,
    )
    kind = LicenceKind.HOST if args.kind == "host" else LicenceKind.ARTEFACT
    print_json(verify_licence(token, trust, kind=kind, expect=expect))
    return 0
