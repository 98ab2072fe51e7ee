"""The Marketplace's Flask app: HTTPS + mutual TLS in front of ``Marketplace`` (same stack as the SM).

Roles per endpoint: a user registers (and reads); users, hosts and admins list and show. A
registration is an upload, and only an upload: a ``docker save`` archive streamed as the request body
into a private spool file under a size limit (never into memory), removed whatever happens. The
service takes no image reference: the Marketplace's engine holds every tenant's images, so naming
one proves nothing about owning it (``Marketplace.register_local_image`` is the operator's, in
process; no route reaches it). A registration may take minutes; with ``Accept:
application/x-ndjson`` the answer streams its progress (vet, build, push, sign) and ends with a
``result`` or ``error`` event; without it the answer is one JSON document.
Refusals are JSON ``{"error": <check>, "message": ...}`` with a status that says whose fault it is:
4xx for the request, 502/503 when the SM or the registry failed (retrying later may succeed).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
from flask import Flask, Response, jsonify, request

from bonseyes_py.errors import BonseyesError
from bonseyes_py.mp.catalogue import Catalogue
from bonseyes_py.mp.config import MPConfig
from bonseyes_py.mp.errors import RegistrationError, RegistryError, VettingError
from bonseyes_py.mp.openapi import openapi_document
from bonseyes_py.mp.server import registry_process
from bonseyes_py.mp.service import READ_ROLES, REGISTER_ROLES, Marketplace
from bonseyes_py.mp.signing import ArtefactSigner, HttpsArtefactSigner, LocalArtefactSigner
from bonseyes_py.mp.vetting import VettingRules
from bonseyes_py.pki.ca import CertificateAuthority
from bonseyes_py.pki.certs import load_certificate_chain, load_crl
from bonseyes_py.pki.roles import Identity, Role
from bonseyes_py.pki.verify import TrustStore
from bonseyes_py.web.errors import error_response, http_status_of
from bonseyes_py.web.flaskapp import Authenticator, create_flask_app, query_args

log = logging.getLogger(__name__)

ANY_ROLE = (Role.ADMIN, Role.USER, Role.HOST, Role.RUNTIME, Role.MARKETPLACE, Role.SECURITY_MANAGER)
NDJSON = "application/x-ndjson"
ARCHIVE_TYPES = ("application/x-tar", "application/octet-stream")
UPLOAD_CHUNK = 1024 * 1024
# An oversized body is read and dropped up to this bound so the client sees the 413, not a reset.
MAX_DRAIN_BYTES = 64 * 1024 * 1024
CRL_REFRESH_SECONDS = 60.0

_STATUS_BY_CHECK = {"name-taken": 409, "artefact-exists": 409, "not-found": 404, "upload-too-large": 413,
                    "content-type": 415, "revoked": 403, "signing": 502}


def status_of(error: BonseyesError) -> int:
    """HTTP status of an MP error: the check decides (name taken is a conflict, the registry down a 503)."""
    if isinstance(error, RegistryError):
        return 503
    if isinstance(error, VettingError):
        return 422
    if isinstance(error, RegistrationError):
        return _STATUS_BY_CHECK.get(error.check, 400)
    return http_status_of(error)


def _message(error: BonseyesError) -> str:
    return str(error.args[0]) if error.args else error.check


# -- trust -----------------------------------------------------------------------------------------


class SMTrust:
    """Root, intermediate and the SM's CRL (refreshed every minute; the last good one is kept)."""

    def __init__(self, config: MPConfig, signer: HttpsArtefactSigner) -> None:
        bundle = load_certificate_chain(config.ca_bundle.read_bytes())
        self.root = bundle[0]
        self.intermediates = bundle[1:]
        self.signer = signer
        self._lock = threading.Lock()
        self._store: TrustStore | None = None
        self._fetched = 0.0

    def __call__(self) -> TrustStore:
        now = time.monotonic()
        if self._store is not None and now - self._fetched < CRL_REFRESH_SECONDS:
            return self._store
        with self._lock:
            if self._store is not None and now - self._fetched < CRL_REFRESH_SECONDS:
                return self._store
            if self._store is None:
                # One store for the MP's life: its memo of verified chains lasts; a refresh replaces only the CRLs.
                self._store = TrustStore(root=self.root, intermediates=self.intermediates)
            try:
                self._store.replace_crls([load_crl(self.signer.crl_pem())])
            except BonseyesError as exc:
                log.warning("CRL refresh failed, keeping the previous one: %s", exc)
            self._fetched = now
            return self._store


class LocalTrust:
    """The CA directory's trust store, reloaded when its CRL file changes."""

    def __init__(self, ca: CertificateAuthority) -> None:
        self.ca = ca
        self._cached: tuple[tuple[int, int], TrustStore] | None = None

    def __call__(self) -> TrustStore:
        stat = self.ca.paths.crl.stat()
        version = (stat.st_mtime_ns, stat.st_size)
        if self._cached is None or self._cached[0] != version:
            self._cached = (version, self.ca.trust_store(with_crl=True))
        return self._cached[1]


def open_service(config: MPConfig, *, docker_client: docker.DockerClient | None = None,
                 bl_dir: Path | None = None) -> tuple[Marketplace, Callable[[], TrustStore]]:
    """The Marketplace of one worker and the trust store its TLS peers are checked against."""
    signer: ArtefactSigner
    trust: Callable[[], TrustStore]
    if config.ca_directory:
        ca = CertificateAuthority.load(config.ca_directory)
        signer, trust = LocalArtefactSigner(ca), LocalTrust(ca)
    else:
        remote = HttpsArtefactSigner(config.sm_url, client_certificate=config.tls_certificate,
                                     client_key=config.tls_key, sm_root=config.sm_root)
        signer, trust = remote, SMTrust(config, remote)
    settings: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in config.vetting.items()}
    rules = VettingRules(**settings)
    registry = registry_process(config)
    marketplace = Marketplace(catalogue=Catalogue(config.database_url), registry=registry.client(),
                              registry_address=registry.address, credentials=registry.credentials(),
                              signer=signer, rules=rules, docker_client=docker_client, bl_dir=bl_dir,
                              work_dir=config.uploads)  # scratch beside the spool: sized for uploads
    return marketplace, trust


# -- uploads ---------------------------------------------------------------------------------------


def _drain(stream: Any, remaining: int) -> None:
    try:
        while remaining > 0:
            chunk = stream.read(min(UPLOAD_CHUNK, remaining))
            if not chunk:
                return
            remaining -= len(chunk)
    except Exception:  # a client that went away is not worth an error here
        return


def receive_upload(spool: Path, limit: int) -> Path:
    """Stream the request body into a new 0600 file under ``spool``; the caller removes it."""
    length = request.content_length
    stream = request.environ["wsgi.input"]
    if length is not None and length > limit:
        raise RegistrationError(f"upload of {length} bytes exceeds the {limit}-byte limit", check="upload-too-large")
    spool.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = spool / f"upload-{secrets.token_hex(8)}.tar"
    received = 0
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            while length is None or received < length:
                try:
                    chunk = stream.read(UPLOAD_CHUNK if length is None else min(UPLOAD_CHUNK, length - received))
                except Exception as exc:  # gunicorn raises its own errors for a body cut short
                    raise RegistrationError(f"upload broke off after {received} bytes: {exc}",
                                            check="upload-truncated") from exc
                if not chunk:
                    break
                received += len(chunk)
                if received > limit:
                    raise RegistrationError(f"upload exceeds the {limit}-byte limit", check="upload-too-large")
                handle.write(chunk)
        if length is not None and received < length:
            raise RegistrationError(f"upload broke off after {received} of {length} bytes", check="upload-truncated")
        if received == 0:
            raise RegistrationError("upload is empty; send the bytes of a docker save archive", check="archive")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


# -- the app ---------------------------------------------------------------------------------------


def create_app(config: MPConfig, *, marketplace: Marketplace | None = None,
               trust: Callable[[], TrustStore] | None = None) -> Flask:
    """Build the app of one worker; the Marketplace (catalogue, registry client, signer) is made here."""
    if marketplace is None or trust is None:
        marketplace, trust = open_service(config)
    mp = marketplace
    auth = Authenticator(trust)
    document = openapi_document()
    # Content-Type and query parameters of every route are checked against the served document.
    app = create_flask_app("bonseyes_mp", max_body_bytes=config.max_body_bytes, openapi=document)
    app.extensions["bonseyes_mp"] = mp

    @app.errorhandler(BonseyesError)
    def _typed(error: BonseyesError) -> Response:
        return error_response(error.check, _message(error), status_of(error))

    @app.after_request
    def _drain_refused_upload(response: Response) -> Response:
        """Read the rest of a refused upload (bounded) so the client gets the answer, not a reset."""
        length = request.content_length or 0
        if response.status_code >= 400 and request.mimetype in ARCHIVE_TYPES and length:
            bound = config.max_upload_bytes if length <= config.max_upload_bytes else MAX_DRAIN_BYTES
            if length <= bound:
                _drain(request.environ["wsgi.input"], length)
        return response

    def route(rule: str, methods: list[str], roles: tuple[Role, ...]) -> Callable[[Callable[..., Any]], Any]:
        def decorate(handler: Callable[..., Any]) -> Any:
            def view(**kwargs: Any) -> Any:
                peer = auth.peer(roles)
                result = handler(peer.identity, **kwargs)
                return result if isinstance(result, (Response, tuple)) else jsonify(result)

            view.__name__ = handler.__name__
            return app.route(rule, methods=methods)(view)

        return decorate

    @route("/v1/ping", ["GET"], ANY_ROLE)
    def ping(caller: Identity) -> dict[str, Any]:
        return {"ok": True, "role": caller.role.value, "name": caller.name, "max_upload_bytes": config.max_upload_bytes}

    @route("/openapi.json", ["GET"], ANY_ROLE)
    def openapi(_caller: Identity) -> dict[str, Any]:
        return document

    @route("/v1/artefacts", ["GET"], READ_ROLES)
    def list_artefacts(caller: Identity) -> dict[str, Any]:
        return {"artefacts": [a.as_dict() for a in mp.list(caller, query_args().get("owner"))]}

    @route("/v1/artefacts/<name>", ["GET"], READ_ROLES)
    def show_artefact(caller: Identity, name: str) -> dict[str, Any]:
        return mp.show(caller, name).as_dict()

    @route("/v1/artefacts", ["POST"], REGISTER_ROLES)
    def register(caller: Identity) -> Any:
        # Already checked against the document: Content-Type one of ARCHIVE_TYPES (else 415 content-type,
        # before any byte is read: the Marketplace registers uploads only, never an image named on its
        # engine), name a valid name, policies a bounded string.
        query = query_args()
        name, policies = query["name"], query.get("policies")
        _precheck(mp, caller, name)
        upload = receive_upload(config.uploads, config.max_upload_bytes)
        if NDJSON in (request.headers.get("Accept") or ""):
            return Response(_stream(mp, caller, upload, name, policies), status=200, mimetype=NDJSON)
        try:
            artefact = mp.register(upload, caller=caller, name=name, policies=policies)
        finally:
            upload.unlink(missing_ok=True)
        return jsonify(artefact.as_dict()), 201

    return app


def _precheck(mp: Marketplace, caller: Identity, name: str) -> None:
    """Refuse a taken name before receiving gigabytes; ``register`` checks again."""
    existing = mp.catalogue.get(name)
    if existing is not None and existing.owner != caller.name:
        raise RegistrationError(f"artefact name {name!r} is already registered by owner {existing.owner}",
                                check="name-taken")


def _stream(mp: Marketplace, caller: Identity, upload: Path, name: str, policies: Any) -> Iterator[bytes]:
    """Run the registration in a thread and stream its progress as NDJSON, then its outcome."""
    events: queue.Queue[dict[str, Any] | None] = queue.Queue()
    last_push: dict[str, float] = {}

    def progress(stage: str, detail: dict[str, Any]) -> None:
        if stage == "push" and detail.get("status") == "Pushing":
            key = str(detail.get("layer"))
            now = time.monotonic()
            if now - last_push.get(key, 0.0) < 0.5:
                return
            last_push[key] = now
        events.put({"event": "progress", "stage": stage, "detail": detail})

    def work() -> None:
        outcome: dict[str, Any]
        try:
            artefact = mp.register(upload, caller=caller, name=name, policies=policies, progress=progress)
            outcome = {"event": "result", "status": 201, "artefact": artefact.as_dict()}
        except BonseyesError as exc:
            outcome = {"event": "error", "status": status_of(exc), "error": exc.check, "message": _message(exc)}
        except Exception as exc:  # reported, never a silent end of stream
            log.exception("registration of %s failed", name)
            outcome = {"event": "error", "status": 500, "error": "internal",
                       "message": f"internal error ({type(exc).__name__}); see the server log"}
        finally:
            # Spool removed before the outcome is told: a client that sees it sees a clean spool.
            upload.unlink(missing_ok=True)
        events.put(outcome)
        events.put(None)

    thread = threading.Thread(target=work, name=f"register-{name}", daemon=True)
    thread.start()
    while True:
        event = events.get()
        if event is None:
            return
        yield (json.dumps(event, default=str) + "\n").encode()
