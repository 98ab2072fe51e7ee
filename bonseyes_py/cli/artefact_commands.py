"""``bonseyes artefact register|list|show`` and ``bonseyes mp init|serve``.

The artefact commands speak to the Marketplace service over mutual TLS as the user (a PKCS#12
bundle with a passphrase file, or PEM certificate and key). ``register`` always uploads: a ``docker
save`` archive (streamed from disk), or an image of your own Docker engine, which it saves to a
private temporary file first (the Marketplace never registers an image by name). It prints one
progress line per step on stderr (save, upload, vet, build, push, sign) while the result goes to
stdout as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from bonseyes_py import safejson
from bonseyes_py.cli.common import print_json, require_one
from bonseyes_py.cli.pipeline_commands import user_identity
from bonseyes_py.errors import InputError
from bonseyes_py.mp.client import MarketplaceClient


def _identity_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mp", default=os.environ.get("BONSEYES_MP_URL"), help="Marketplace URL "
                        "(https://HOST:PORT; default $BONSEYES_MP_URL)")
    parser.add_argument("--sm-root", default=os.environ.get("BONSEYES_SM_ROOT"),
                        help="the SM root certificate (PEM) the Marketplace must chain to (default $BONSEYES_SM_ROOT)")
    parser.add_argument("--pkcs12", help="your identity bundle (PKCS#12)")
    parser.add_argument("--passphrase-file", help="passphrase of the bundle (or $BONSEYES_PASSPHRASE)")
    parser.add_argument("--cert", help="your certificate (PEM), instead of --pkcs12")
    parser.add_argument("--key", help="your private key (PEM), with --cert")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("artefact", help="register, list and show AI artefacts on the Marketplace")
    commands = parser.add_subparsers(dest="command", metavar="ACTION", required=True)

    reg = commands.add_parser("register", help="upload a docker save archive or a local image as an artefact")
    reg.add_argument("name", metavar="NAME")
    reg.add_argument("--archive", help="a docker save archive to upload")
    reg.add_argument("--image", help="an image of this machine's Docker engine, saved (docker save) and uploaded")
    reg.add_argument("--policies", help="execution policies: a JSON object, or @FILE")
    reg.add_argument("--quiet", action="store_true", help="no progress lines")
    _identity_options(reg)
    reg.set_defaults(func=_register)

    listing = commands.add_parser("list", help="list registered artefacts")
    listing.add_argument("--owner")
    _identity_options(listing)
    listing.set_defaults(func=_list)

    show = commands.add_parser("show", help="show one artefact with its signed IDs and digest")
    show.add_argument("name", metavar="NAME")
    _identity_options(show)
    show.set_defaults(func=_show)

    mp = subparsers.add_parser("mp", help="the Marketplace service")
    mp_commands = mp.add_subparsers(dest="command", metavar="ACTION", required=True)
    init = mp_commands.add_parser("init", help="create a Marketplace directory and its marketplace identity")
    init.add_argument("directory", metavar="DIR")
    init.add_argument("--name", default="marketplace")
    init.add_argument("--ca-dir", help="the SM's CA directory (MP and SM deployed together)")
    init.add_argument("--sm-url", help="a running SM that enrols the MP and signs IDs")
    init.add_argument("--admin-cert", help="an SM admin certificate (with --sm-url)")
    init.add_argument("--admin-key", help="its key (with --sm-url)")
    init.add_argument("--sm-root", help="the SM root certificate (with --sm-url)")
    init.add_argument("--bind", default="127.0.0.1:8445")
    init.add_argument("--registry-port", type=int, default=5000)
    init.add_argument("--max-upload-bytes", type=int, default=4 * 1024**3)
    init.add_argument("--ip", action="append", default=[], help="IP SAN of the server certificate (with --ca-dir)")
    init.add_argument("--dns", action="append", default=[], help="DNS SAN of the server certificate (with --ca-dir)")
    init.set_defaults(func=_mp_init)
    serve = mp_commands.add_parser("serve", help="run the Marketplace (and its registry) in the foreground")
    serve.add_argument("directory", metavar="DIR")
    serve.add_argument("--bind")
    serve.add_argument("--workers", type=int)
    serve.set_defaults(func=_mp_serve)


# -- artefact ----------------------------------------------------------------------------------------


def _policies(raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    text = Path(raw[1:]).read_text() if raw.startswith("@") else raw
    try:
        value = safejson.loads(text, what="--policies")
    except InputError as exc:
        raise InputError(str(exc.args[0]) if exc.args else exc.check, check="policies") from exc
    if not isinstance(value, dict):
        raise InputError("--policies must be a JSON object", check="policies")
    return value


class ProgressPrinter:
    """One line per step on stderr; push and upload lines at most every 10 % or per layer state."""

    def __init__(self) -> None:
        self.layers: dict[str, str] = {}

    def __call__(self, stage: str, detail: dict[str, Any]) -> None:
        line = self.line(stage, detail)
        if line:
            print(line, file=sys.stderr, flush=True)

    def line(self, stage: str, detail: dict[str, Any]) -> str | None:
        if stage == "upload":
            return f"upload: {detail.get('percent', 0)}% ({detail.get('sent', 0)}/{detail.get('total', 0)} bytes)"
        if stage == "build":
            message = str(detail.get("message", ""))
            return f"build: {message}" if message.startswith("Step") or "Successfully" in message else None
        if stage == "push":
            layer, status = detail.get("layer"), str(detail.get("status", ""))
            if not layer:
                return f"push: {status}" if status else None
            progress = detail.get("detail") or {}
            if status == "Pushing" and progress.get("total"):
                return f"push: {layer} {progress.get('current', 0) * 100 // progress['total']}%"
            if self.layers.get(str(layer)) == status:
                return None
            self.layers[str(layer)] = status
            return f"push: {layer} {status}"
        if stage == "save":
            return f"save: {detail.get('image', '')} ({detail.get('id', '')}) from the local engine"
        if stage == "vet":
            return "vet: checking the image"
        if stage == "sign":
            return f"sign: {detail.get('digest', '')}"
        if stage == "done":
            return f"done: {detail.get('reference', '')}"
        return f"{stage}: {json.dumps(detail, sort_keys=True, default=str)}"


def _client(args: argparse.Namespace, cert: str, key: str) -> MarketplaceClient:
    if not args.mp:
        raise InputError("give --mp https://HOST:PORT (or set BONSEYES_MP_URL)", check="usage")
    if not args.sm_root:
        raise InputError("give --sm-root (or set BONSEYES_SM_ROOT)", check="usage")
    return MarketplaceClient(args.mp, cert, key, args.sm_root)


def _register(args: argparse.Namespace) -> int:
    require_one(archive=args.archive, image=args.image)
    policies = _policies(args.policies)
    progress = None if args.quiet else ProgressPrinter()
    with user_identity(args) as (cert, key):
        client = _client(args, cert, key)
        if args.archive:
            result = client.register_archive(args.archive, args.name, policies, progress)
        else:
            result = client.register_image(args.image, args.name, policies, progress)
    print_json(result)
    return 0


def _list(args: argparse.Namespace) -> int:
    with user_identity(args) as (cert, key):
        print_json(_client(args, cert, key).list(args.owner))
    return 0


def _show(args: argparse.Namespace) -> int:
    with user_identity(args) as (cert, key):
        print_json(_client(args, cert, key).show(args.name))
    return 0


# -- mp ------------------------------------------------------------------------------------------------


def _mp_init(args: argparse.Namespace) -> int:
    from bonseyes_py.mp.server import init_mp

    require_one(ca_dir=args.ca_dir, sm_url=args.sm_url)
    config = init_mp(args.directory, name=args.name, ca_directory=args.ca_dir, sm_url=args.sm_url,
                     admin_certificate=args.admin_cert, admin_key=args.admin_key, sm_root=args.sm_root,
                     server_ips=tuple(args.ip) or ("127.0.0.1",), server_names=tuple(args.dns) or ("localhost",),
                     bind=args.bind, registry_port=args.registry_port, max_upload_bytes=args.max_upload_bytes)
    print_json({"directory": str(config.directory), "certificate": str(config.tls_certificate),
                "bind": config.bind, "registry": f"{config.registry_host}:{config.registry_port}",
                "signer": config.sm_url or config.ca_directory})
    return 0


def _mp_serve(args: argparse.Namespace) -> int:
    from bonseyes_py.mp.config import MPConfig
    from bonseyes_py.mp.server import serve

    serve(MPConfig.load(args.directory, bind=args.bind, workers=args.workers))
    return 0
