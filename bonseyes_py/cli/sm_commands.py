"""``bonseyes sm``: create, serve and administer a Security Manager directory.

Administration runs in-process on the SM directory with the admin identity stored in it
(``bonseyes_py.sm.admin_api``): the same service methods the HTTPS API calls, with the same checks
and audit entries, and the same write lock, so it is safe next to a running server. ``serve`` runs
gunicorn with mutual TLS, never a development server.

``init`` keeps the CA's root key as ``ca init`` does (``--root-passphrase-file``, ``--root-dir`` or the
explicit ``--plaintext-root``; a command line with none of them is refused): the running SM signs with
the intermediate and never reads the root key.
"""

from __future__ import annotations

import argparse
import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bonseyes_py.cli import arguments
from bonseyes_py.cli.ca_commands import add_root_key_options, root_key_choice, root_key_path, warn_plaintext_root
from bonseyes_py.cli.common import print_json, read_text_file
from bonseyes_py.errors import InputError
from bonseyes_py.pki.keys import read_passphrase_file, write_secret_file

Handler = Callable[[argparse.Namespace], int]

# bonseyes_py.sm.revocation.REVOCABLE, spelled out so that parsing a command line does not import the
# whole service (Flask, SQLAlchemy: seconds per command); tests/cli checks that both stay equal.
REVOCABLE = ("user", "host", "artefact", "licence", "certificate")
# Policies are read with the engine's size limit (bonseyes_py.policy.engine.MAX_POLICY_BYTES) and nesting
# limit (MAX_POLICY_NESTING: Cedar's parser recurses per level, and ~1000 nested brackets crash the process).
MAX_POLICY_FILE_BYTES = 256 * 1024


def _dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", metavar="DIR", help="the Security Manager directory (sm init)")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("sm", help="the Security Manager: init, serve, administer",
                                   description=__doc__.splitlines()[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", metavar="ACTION", required=True)

    init = commands.add_parser("init", help="create the CA, TLS identity, first admin, config and database in DIR")
    _dir(init)
    init.add_argument("--bind", default="127.0.0.1:8443", type=arguments.host_port,
                      help="HOST:PORT the server will listen on")
    init.add_argument("--trust-domain", default="bonseyes.local", type=arguments.trust_domain)
    init.add_argument("--server-name", action="append", default=None, type=arguments.dns_name,
                      help="DNS SAN of the server (repeatable)")
    init.add_argument("--server-ip", action="append", default=None, type=arguments.ip_address,
                      help="IP SAN of the server (repeatable)")
    init.add_argument("--admin", default="admin", type=arguments.name("admin name"), help="name of the first admin")
    init.add_argument("--database-url", default="", help="SQLAlchemy URL (default: SQLite in DIR)")
    add_root_key_options(init, "DIR/ca")
    init.set_defaults(func=_init)

    serve = commands.add_parser("serve", help="run the SM under gunicorn with mutual TLS (foreground)")
    _dir(serve)
    serve.add_argument("--bind", type=arguments.host_port, help="HOST:PORT (default: from sm.json)")
    serve.add_argument("--workers", type=arguments.bounded_int(1, 1024))
    serve.add_argument("--threads", type=arguments.bounded_int(1, 1024))
    serve.add_argument("--worker-class", choices=("gthread", "sync"))
    serve.add_argument("--pidfile")
    serve.set_defaults(func=_serve)

    premise = commands.add_parser("premise", help="virtual premises: members and policy").add_subparsers(
        dest="premise_command", metavar="ACTION", required=True)
    for name, helptext in (("create", "create a premise (or update its members)"),
                           ("set-policy", "set the Cedar policy of a premise from a .cedar file")):
        sub = premise.add_parser(name, help=helptext)
        _dir(sub)
        sub.add_argument("name", metavar="PREMISE", type=arguments.name("premise"))
        if name == "create":
            sub.add_argument("--policy", metavar="FILE.cedar", type=arguments.existing_file,
                             help="policy text (default: the baseline policy)")
            sub.add_argument("--user", action="append", default=None, type=arguments.name("user ID"),
                             help="member user (repeatable)")
            sub.add_argument("--host", action="append", default=None, type=arguments.name("host ID"),
                             help="member host (repeatable)")
        else:
            sub.add_argument("policy", metavar="FILE.cedar", type=arguments.existing_file)
        sub.set_defaults(func=_premise_put)
    show = premise.add_parser("show", help="show a premise, its members and policy")
    _dir(show)
    show.add_argument("name", metavar="PREMISE", type=arguments.name("premise"))
    show.add_argument("--revision", type=arguments.positive_int,
                      help="show this policy revision instead of the current one")
    show.set_defaults(func=_premise_show)

    policy = commands.add_parser("policy", help="Cedar policies").add_subparsers(
        dest="policy_command", metavar="ACTION", required=True)
    validate = policy.add_parser("validate", help="check a .cedar file against the policy schema")
    validate.add_argument("file", metavar="FILE.cedar", type=arguments.existing_file)
    validate.set_defaults(func=_policy_validate)
    default = policy.add_parser("default", help="print the baseline policy (a starting point)")
    default.set_defaults(func=_policy_default)

    hosts = commands.add_parser("host", help="registered hosts").add_subparsers(
        dest="host_command", metavar="ACTION", required=True)
    listing = hosts.add_parser("list", help="list hosts with availability")
    _dir(listing)
    listing.set_defaults(func=_host_list)
    host_show = hosts.add_parser("show", help="show one host")
    _dir(host_show)
    host_show.add_argument("host_id", metavar="HOST_ID", type=arguments.name("host ID"))
    host_show.set_defaults(func=_host_show)

    users = commands.add_parser("user", help="users and admins").add_subparsers(
        dest="user_command", metavar="ACTION", required=True)
    enrol = users.add_parser("enrol", help="enrol a user; writes their PKCS#12 bundle (0600) once")
    _dir(enrol)
    enrol.add_argument("user_id", metavar="USER", type=arguments.name("user ID"))
    enrol.add_argument("--out", required=True, metavar="FILE.p12", help="PKCS#12 output (written 0600)")
    enrol.add_argument("--passphrase-file", required=True, type=arguments.existing_file,
                       help="file holding the bundle passphrase (one line, mode 0600)")
    enrol.add_argument("--role", choices=("user", "admin"), default="user")
    enrol.add_argument("--organisation", default="")
    enrol.set_defaults(func=_user_enrol)
    user_show = users.add_parser("show", help="show one user and their certificate serials")
    _dir(user_show)
    user_show.add_argument("user_id", metavar="USER", type=arguments.name("user ID"))
    user_show.set_defaults(func=_user_show)

    revoke = commands.add_parser("revoke", help="revoke a user, host, artefact, licence or certificate; "
                                                "publishes a new CRL")
    _dir(revoke)
    revoke.add_argument("kind", choices=REVOCABLE)
    revoke.add_argument("id", metavar="ID", help="user ID, host ID, artefact ID, licence ID or hex serial")
    revoke.add_argument("--reason", default="")
    revoke.set_defaults(func=_revoke)


def check_sm_directory(directory: str) -> None:
    """A missing or unusable ``sm.json`` is one line naming it (the strict loader's), before anything else runs."""
    from bonseyes_py.sm.config import SMConfig

    SMConfig.load(directory)


def _with_admin(args: argparse.Namespace, action: Callable[[Any, Any], Any]) -> Any:
    from bonseyes_py.sm import admin_api

    check_sm_directory(args.directory)
    sm, admin = admin_api(args.directory)
    try:
        return action(sm, admin)
    finally:
        sm.close()


def _init(args: argparse.Namespace) -> int:
    passphrase = root_key_choice(args)
    from bonseyes_py.sm import init_sm

    config = init_sm(args.directory, trust_domain=args.trust_domain, database_url=args.database_url,
                     server_names=tuple(args.server_name or ("localhost",)),
                     server_ips=tuple(args.server_ip or ("127.0.0.1",)), admin_name=args.admin, bind=args.bind,
                     root_passphrase=passphrase, root_directory=args.root_dir)
    root_key = root_key_path(config.ca_directory, args.root_dir)
    if passphrase is None:
        warn_plaintext_root(root_key)
    print(f"Security Manager created in {config.directory}")
    print(f"  root key: {root_key} ({'encrypted' if passphrase is not None else 'NOT encrypted'}; only needed"
          " to renew the intermediate)")
    print(f"  admin identity: {config.admin_certificate} (key {config.admin_key}, 0600)")
    print(f"  CA bundle for clients: {config.ca_bundle}")
    print(f"  serve it with: bonseyes sm serve {config.directory}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from bonseyes_py.sm import SMConfig, serve

    check_sm_directory(args.directory)
    config = SMConfig.load(args.directory, bind=args.bind, workers=args.workers, threads=args.threads,
                           worker_class=args.worker_class, pidfile=args.pidfile)
    serve(config)
    return 0


def _read_policy(path: str) -> str:
    """A policy file's text: UTF-8, within the engine's size limit, and not nested beyond what Cedar parses."""
    text = read_text_file(path, what="policy file", max_bytes=MAX_POLICY_FILE_BYTES)
    from bonseyes_py.policy.engine import MAX_POLICY_NESTING, policy_nesting

    if policy_nesting(text, MAX_POLICY_NESTING) > MAX_POLICY_NESTING:
        raise InputError(f"policy file {path} nests brackets deeper than {MAX_POLICY_NESTING} levels",
                         check="policy-file")
    return text


def _premise_put(args: argparse.Namespace) -> int:
    policy = _read_policy(args.policy) if args.policy else None
    users = getattr(args, "user", None)
    hosts = getattr(args, "host", None)
    view = _with_admin(args, lambda sm, admin: sm.put_premise(admin, args.name, policy=policy, users=users,
                                                                  hosts=hosts))
    print(f"premise {view['name']}: revision {view['revision']} ({view['policy_revision']}), "
          f"{len(view['users'])} users, {len(view['hosts'])} hosts")
    return 0


def _premise_show(args: argparse.Namespace) -> int:
    print_json(_with_admin(args, lambda sm, _admin: sm.get_premise(args.name, args.revision)))
    return 0


def _policy_validate(args: argparse.Namespace) -> int:
    from bonseyes_py.policy import PolicyEngine, policy_revision

    text = _read_policy(args.file)
    PolicyEngine().validate(text)
    print(f"policy valid: {args.file} ({policy_revision(text)})")
    return 0


def _policy_default(_args: argparse.Namespace) -> int:
    from bonseyes_py.policy import DEFAULT_POLICY

    print(DEFAULT_POLICY, end="")
    return 0


def _host_list(args: argparse.Namespace) -> int:
    hosts = _with_admin(args, lambda sm, _admin: sm.list_hosts())
    if not hosts:
        print("no hosts registered")
    for host in hosts:
        state = "revoked" if host["revoked"] else ("available" if host["available"] else "offline")
        print(f"{host['host_id']}  owner={host['owner']}  {state}  ip={host['ip'] or '-'}  "
              f"premises={','.join(host['premises']) or '-'}")
    return 0


def _host_show(args: argparse.Namespace) -> int:
    print_json(_with_admin(args, lambda sm, admin: sm.get_host(admin, args.host_id)))
    return 0


def _user_enrol(args: argparse.Namespace) -> int:
    passphrase = read_passphrase_file(args.passphrase_file)
    out = Path(args.out)
    if out.exists():
        raise InputError(f"{out} already exists; refusing to overwrite an identity bundle", check="output-exists")
    answer = _with_admin(args, lambda sm, admin: sm.enrol_user(
        admin, args.user_id, organisation=args.organisation, role=args.role, passphrase=passphrase.decode()))
    write_secret_file(out, base64.b64decode(answer["pkcs12"]))
    print(f"enrolled {answer['role']} {answer['user_id']} ({answer['uri']}), serial {answer['serial']}; "
          f"PKCS#12 written to {out} (0600)")
    return 0


def _user_show(args: argparse.Namespace) -> int:
    print_json(_with_admin(args, lambda sm, _admin: sm.get_user(args.user_id)))
    return 0


def _revoke(args: argparse.Namespace) -> int:
    result = _with_admin(args, lambda sm, admin: sm.revoke(admin, args.kind, args.id, reason=args.reason))
    if result.get("already_revoked"):
        print(f"already revoked {result['kind']} {result['id']}: nothing new to revoke; "
              f"CRL number {result['crl_number']}")
        return 0
    print(f"revoked {result['kind']} {result['id']}: {len(result['serials'])} certificates, "
          f"{len(result['licences'])} licences; CRL number {result['crl_number']}")
    return 0
