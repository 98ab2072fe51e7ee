"""``bonseyes bm enrol|serve``: install a host's Bonseyes Module and run it."""

from __future__ import annotations

import argparse

from bonseyes_py.cli import arguments
from bonseyes_py.cli.common import print_json


def cmd_enrol(args: argparse.Namespace) -> int:
    from bonseyes_py.bm.enrol import OwnerIdentity, enrol_host

    config = enrol_host(args.directory, sm_url=args.sm_url, ca_bundle=args.ca,
                        owner=OwnerIdentity(args.owner_cert, args.owner_key), bind_ip=args.bind_ip, port=args.port,
                        registry=args.registry or "", premises=args.premise or [], sysroot=args.sysroot)
    print_json({"host_id": config.host_id, "directory": str(config.directory), "url": config.url})
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from bonseyes_py.bm.config import BMConfig
    from bonseyes_py.bm.server import serve

    serve(BMConfig.load(args.directory))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    group = subparsers.add_parser("bm", help="Bonseyes Module of a host: enrol, serve")
    commands = group.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)
    enrol = commands.add_parser("enrol", help="register this host at the SM (owner-signed host ID) and install BM")
    enrol.add_argument("directory")
    enrol.add_argument("--sm-url", required=True, type=arguments.https_url, help="https://HOST:PORT of the SM")
    enrol.add_argument("--ca", required=True, type=arguments.existing_file, help="SM CA bundle (root + intermediate)")
    enrol.add_argument("--owner-cert", required=True, type=arguments.existing_file,
                       help="the host owner's user certificate chain (PEM)")
    enrol.add_argument("--owner-key", required=True, type=arguments.existing_file,
                       help="the host owner's key (PEM, 0600)")
    enrol.add_argument("--bind-ip", required=True, type=arguments.ip_address,
                       help="the host's IP address; BM listens and connects from it")
    enrol.add_argument("--port", type=arguments.port, default=8444)
    enrol.add_argument("--registry", type=arguments.pull_registry,
                       help="HOST:PORT of the registry's mTLS pull endpoint (not 127.0.0.0/8)")
    enrol.add_argument("--premise", action="append", type=arguments.name("premise"),
                       help="virtual premise to join (repeatable)")
    enrol.add_argument("--sysroot", default="/", type=arguments.existing_directory,
                       help="root of the hardware facts (tests: a fake tree)")
    enrol.set_defaults(func=cmd_enrol)
    serve = commands.add_parser("serve", help="authenticate to the SM and serve mutual TLS (foreground)")
    serve.add_argument("directory")
    serve.set_defaults(func=cmd_serve)
