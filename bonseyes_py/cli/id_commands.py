"""``bonseyes id``: this host's hardware ID, and the owner's signature over it (host ID)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bonseyes_py.cli import arguments
from bonseyes_py.cli.common import print_json, read_passphrase
from bonseyes_py.identity.hardware import collect_hardware_facts, host_name_for
from bonseyes_py.identity.ids import sign_host_id
from bonseyes_py.jose import Signer
from bonseyes_py.pki.certs import load_certificate_chain
from bonseyes_py.pki.keys import read_private_key, write_public_file
from bonseyes_py.pki.roles import identity_of


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("id", help="hardware and host identities")
    commands = parser.add_subparsers(dest="command", metavar="ACTION", required=True)

    hardware = commands.add_parser("hardware", help="print this host's hardware ID and the facts behind it")
    hardware.add_argument("--json", action="store_true", help="machine-readable output")
    hardware.add_argument("--sysroot", default="/", type=arguments.existing_directory, help=argparse.SUPPRESS)
    hardware.set_defaults(func=_hardware)

    sign = commands.add_parser("sign-host", help="sign a hardware ID with the host owner's user key (host ID)")
    sign.add_argument("--owner-cert", required=True, type=arguments.existing_file,
                      help="owner's certificate chain (PEM)")
    sign.add_argument("--owner-key", required=True, type=arguments.existing_file)
    sign.add_argument("--owner-key-passphrase-file", type=arguments.existing_file)
    sign.add_argument("--hardware-id", type=arguments.hardware_id, help="default: this host's")
    sign.add_argument("--out", required=True)
    sign.set_defaults(func=_sign_host)


def _hardware(args: argparse.Namespace) -> int:
    facts = collect_hardware_facts(args.sysroot)
    if args.json:
        print_json({**facts.as_dict(), "host_name": host_name_for(facts.hardware_id)})
        return 0
    print(f"hardware_id: {facts.hardware_id}")
    print(f"host_name:   {host_name_for(facts.hardware_id)}")
    for name, value in facts.as_dict().items():
        if name != "hardware_id":
            print(f"  {name}: {value if value not in (None, []) else '(not present)'}")
    return 0


def _sign_host(args: argparse.Namespace) -> int:
    chain = load_certificate_chain(Path(args.owner_cert).read_bytes())
    key = read_private_key(args.owner_key, read_passphrase(args.owner_key_passphrase_file))
    hardware_id = args.hardware_id or collect_hardware_facts().hardware_id
    token = sign_host_id(Signer(key, chain), identity_of(chain[0]).uri, hardware_id)
    write_public_file(args.out, token.encode())
    print_json({"host_id": args.out, "hardware_id": hardware_id, "host_name": host_name_for(hardware_id)})
    return 0
