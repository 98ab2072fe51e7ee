"""``bonseyes pipeline run|status|stop``: a user's pipeline on a virtual premise, with progress per stage.

The user speaks to the SM only, over mutual TLS with their identity (a PKCS#12 bundle, or PEM
certificate and key files). ``run`` asks for the pipeline (step 3: every BM fetches its images and
the SM verifies their digests), then starts it (steps 4 to 6 on every BM in parallel) and prints
each stage's state as it changes.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bonseyes_py.cli import arguments
from bonseyes_py.cli.common import print_json, read_passphrase
from bonseyes_py.errors import BonseyesError, InputError
from bonseyes_py.pki.certs import chain_pem
from bonseyes_py.pki.keys import write_private_key
from bonseyes_py.pki.pkcs12 import import_pkcs12
from bonseyes_py.web.client import BadResponse, ClientError, MTLSClient, ServerRefused


class PipelineError(BonseyesError):
    check = "pipeline"


MAX_ANSWER_BYTES = 4 * 1024 * 1024


@contextlib.contextmanager
def user_identity(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    """(certificate file, key file) of the user; a PKCS#12 bundle is unpacked into a private temp dir."""
    if args.pkcs12:
        key, certificate, chain = import_pkcs12(Path(args.pkcs12).read_bytes(),
                                                read_passphrase(args.passphrase_file, "BONSEYES_PASSPHRASE") or b"")
        with tempfile.TemporaryDirectory(prefix="bonseyes-user-") as work:
            key_path = write_private_key(Path(work) / "user.key", key)
            cert_path = Path(work) / "user.pem"
            cert_path.write_bytes(chain_pem([certificate, *[c for c in chain if c.subject != c.issuer]]))
            yield str(cert_path), str(key_path)
        return
    if not (args.cert and args.key):
        raise InputError("give --pkcs12 FILE, or --cert and --key", check="usage")
    yield args.cert, args.key


class SMSession:
    """The user's connection pool to the SM for one command: the status polls reuse one connection."""

    def __init__(self, url: str, cert: str, key: str, ca: str) -> None:
        self.url = url.rstrip("/")
        try:
            self.client = MTLSClient(self.url, ca_file=ca, cert_file=cert, key_file=key, timeout=600,
                                     max_response_bytes=MAX_ANSWER_BYTES)
        except ClientError as exc:
            raise PipelineError(exc.args[0], check="tls") from exc

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 600) -> Any:
        try:
            answer = self.client.request(method, path, json=body, timeout=timeout, expected=range(200, 300))
        except ServerRefused as exc:
            raise PipelineError(exc.message, check=exc.error or "http") from exc
        except BadResponse as exc:
            raise PipelineError(exc.args[0], check="sm-answer") from exc
        except ClientError as exc:
            raise PipelineError(f"SM at {self.url} did not answer: {exc.args[0]}", check="sm-unreachable") from exc
        if not isinstance(answer, dict):
            raise PipelineError(f"answer of the SM to {method} {path} is not a JSON object", check="sm-answer")
        return answer


def _print_stages(status: dict[str, Any], seen: dict[int, str]) -> None:
    for stage in status.get("stages", []):
        key = stage["position"]
        line = f"{stage['status']}"
        if seen.get(key) != line:
            seen[key] = line
            extra = f" ({stage['detail']})" if stage.get("detail") else ""
            print(f"stage {key} on {stage['host_id']}: {stage['status']}{extra}", flush=True)


def cmd_run(args: argparse.Namespace) -> int:
    with user_identity(args) as (cert, key):
        sm = SMSession(args.sm_url, cert, key, args.ca)
        print(f"step 3: fetching and verifying images of {len(args.stage)} stage(s)", flush=True)
        pipeline = sm.call("POST", "/v1/pipelines", {"premise": args.premise, "stages": args.stage})
        pipeline_id = pipeline["pipeline_id"]
        print(f"pipeline {pipeline_id}: {pipeline['status']}", flush=True)
        result: dict[str, Any] = {}
        failure: list[BaseException] = []

        def start() -> None:
            try:
                result.update(sm.call("POST", f"/v1/pipelines/{pipeline_id}/start"))
            except BaseException as exc:
                failure.append(exc)

        worker = threading.Thread(target=start, daemon=True)
        worker.start()
        seen: dict[int, str] = {}
        while worker.is_alive():
            with contextlib.suppress(BonseyesError):
                _print_stages(sm.call("GET", f"/v1/pipelines/{pipeline_id}/runtime", timeout=30), seen)
            worker.join(0.5)
        if failure:
            raise failure[0]
        _print_stages(result, seen)
        reason = f" - {result['reason']}" if result.get("reason") else ""
        print(f"pipeline {pipeline_id}: {result.get('status')}{reason}")
        if args.json:
            print_json(result)
        return 0 if all(s["status"] == "running" for s in result.get("stages", [])) else 1


def cmd_status(args: argparse.Namespace) -> int:
    with user_identity(args) as (cert, key):
        status = SMSession(args.sm_url, cert, key, args.ca).call("GET", f"/v1/pipelines/{args.pipeline_id}/runtime")
    if args.json:
        print_json(status)
    else:
        print(f"pipeline {args.pipeline_id}: {status['status']}")
        _print_stages(status, {})
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    with user_identity(args) as (cert, key):
        started = time.monotonic()
        status = SMSession(args.sm_url, cert, key, args.ca).call("POST", f"/v1/pipelines/{args.pipeline_id}/stop")
    print(f"pipeline {args.pipeline_id}: {status['status']} in {time.monotonic() - started:.1f} s")
    if status.get("stop_problems"):
        print("not confirmed by: " + "; ".join(status["stop_problems"]))
        return 1
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sm-url", required=True, type=arguments.https_url,
                        help="https://HOST:PORT of the Security Manager")
    parser.add_argument("--ca", required=True, type=arguments.existing_file,
                        help="SM CA bundle (root + intermediate, PEM)")
    parser.add_argument("--pkcs12", type=arguments.existing_file, help="user identity bundle (.p12)")
    parser.add_argument("--passphrase-file", type=arguments.existing_file,
                        help="file holding the PKCS#12 passphrase (or BONSEYES_PASSPHRASE)")
    parser.add_argument("--cert", type=arguments.existing_file,
                        help="user certificate chain (PEM), instead of --pkcs12")
    parser.add_argument("--key", type=arguments.existing_file, help="user key (PEM, 0600), instead of --pkcs12")
    parser.add_argument("--json", action="store_true", help="print the final state as JSON")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    group = subparsers.add_parser("pipeline", help="run, inspect and stop pipelines on a virtual premise")
    commands = group.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)
    run = commands.add_parser("run", help="request a pipeline (step 3) and start it (steps 4-6)")
    _common(run)
    run.add_argument("--premise", required=True, type=arguments.name("premise"))
    run.add_argument("stage", nargs="+", type=arguments.stage, help="ARTEFACT@HOST_ID, in pipeline order")
    run.set_defaults(func=cmd_run)
    status = commands.add_parser("status", help="state of each stage")
    _common(status)
    status.add_argument("pipeline_id", type=arguments.name("pipeline ID"))
    status.set_defaults(func=cmd_status)
    stop = commands.add_parser("stop", help="stop every stage and withdraw the pipeline's licences")
    _common(stop)
    stop.add_argument("pipeline_id", type=arguments.name("pipeline ID"))
    stop.set_defaults(func=cmd_stop)
