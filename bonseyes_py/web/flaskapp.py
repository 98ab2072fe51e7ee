"""Flask glue shared by the services: JSON errors, body parsing, and per-endpoint role checks.

Each endpoint names the roles it accepts; ``Authenticator.peer`` verifies the TLS peer's
certificate with ``bonseyes_py.pki.verify_certificate`` against a trust store that carries the
current CRL, so a revoked certificate that still passes the TLS handshake is refused with 403.

An app built with its OpenAPI document (``create_flask_app(..., openapi=document)``) checks every
request against it (``request_schema.py``) as soon as the caller is known, before the handler runs:
the caller's role is checked first, so a refused caller learns nothing about the request's shape.
Handlers then read the checked body with ``json_body()`` and the typed query with ``query_args()``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from flask import Flask, Response, current_app, g, request
from werkzeug.exceptions import HTTPException

from bonseyes_py import safejson
from bonseyes_py.errors import BonseyesError, InputError
from bonseyes_py.pki.roles import Identity, Role
from bonseyes_py.pki.verify import TrustStore, verify_certificate
from bonseyes_py.web.errors import error_response, http_status_of
from bonseyes_py.web.request_schema import OperationSchema, RequestSchemas
from bonseyes_py.web.tls import PEER_CERT_KEY, PEER_IP_KEY

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 256 * 1024
REQUEST_SCHEMAS = "bonseyes_request_schemas"

_HTTP_CHECKS = {400: "bad-request", 404: "not-found", 405: "method-not-allowed", 413: "body-too-large",
                415: "unsupported-media-type"}


@dataclass(frozen=True)
class Peer:
    """The verified caller of one request."""

    identity: Identity
    certificate: x509.Certificate
    ip: str


class Authenticator:
    """Verifies the TLS peer of the current request against a (refreshable) trust store."""

    def __init__(self, trust: Callable[[], TrustStore]) -> None:
        self.trust = trust

    def peer(self, roles: Iterable[Role]) -> Peer:
        certificate = request.environ.get(PEER_CERT_KEY)
        if certificate is None:
            # Only reachable behind a server that does not require client certificates.
            raise InputError("no client certificate was presented", check="client-certificate")
        identity = verify_certificate(certificate, self.trust(), roles=roles)
        peer = Peer(identity, certificate, request.environ.get(PEER_IP_KEY) or request.remote_addr or "")
        check_request()
        return peer


def _parse_body(raw: bytes) -> dict[str, Any]:
    # Flask's MAX_CONTENT_LENGTH bounds the size before this point; safejson bounds the nesting (a deep
    # body is a 400 json-too-deep, never a RecursionError) and any size beyond its own default.
    body = safejson.loads(raw, what="request body")
    if not isinstance(body, dict):
        raise InputError("request body must be a JSON object", check="json")
    return body


def _operation() -> OperationSchema | None:
    schemas: RequestSchemas | None = current_app.extensions.get(REQUEST_SCHEMAS)
    if schemas is None or request.url_rule is None:
        return None
    # Flask answers HEAD with the GET view (without its body): the GET operation's rules apply.
    method = "GET" if request.method == "HEAD" else request.method
    operation = schemas.operation(method, request.url_rule.rule)
    if operation is None:
        # The app serves a route its own document does not describe: a programming error, never the client's.
        raise RuntimeError(f"{request.method} {request.url_rule.rule} has no operation in the OpenAPI document")
    return operation


def check_request() -> None:
    """Check the query and the JSON body of this request against the served schema (once per request).

    Called by ``Authenticator.peer`` once the caller is verified, and by ``json_body`` and
    ``query_args`` in case a handler reads the request without a peer check.
    """
    if "request_checked" in g:
        return
    operation = _operation()
    if operation is not None:
        operation.check_media_type(request.mimetype)
    g.query_args = operation.check_query(request.args) if operation is not None else {}
    if operation is not None and operation.takes_json:
        raw = request.get_data(cache=True)
        if raw:
            body = _parse_body(raw)
            operation.check_body(body)
            g.json_body = body
        elif operation.body_required:
            raise InputError("request body is empty; a JSON object is required", check="json")
        else:
            g.json_body = {}
    g.request_checked = True


def json_body() -> dict[str, Any]:
    """The request body as a JSON object (checked against the served schema when the app has one).

    Without a schema it is only parsed, or an ``InputError`` says what is wrong with it. An app with
    a schema refuses to hand a body to a route whose operation declares none: such a body would go
    unchecked, so the route is fixed (its ``requestBody`` added), not the request.
    """
    check_request()
    if "json_body" in g:
        return dict(g.json_body)
    if current_app.extensions.get(REQUEST_SCHEMAS) is not None:
        raise RuntimeError(f"{request.method} {request.path}: the handler reads a JSON body its OpenAPI operation "
                           "does not declare; add a requestBody schema")
    raw = request.get_data(cache=True)
    if not raw:
        raise InputError("request body is empty; a JSON object is required", check="json")
    return _parse_body(raw)


def query_args() -> dict[str, Any]:
    """The query parameters the operation declares, typed and checked (integers as ``int``)."""
    check_request()
    return dict(g.query_args)


MAX_DRAIN_BYTES = 4 * 1024 * 1024


def _drain_body() -> None:
    """Read and drop a refused body (up to a bound) so the client gets the 413 instead of a reset."""
    length = request.content_length or 0
    if not 0 < length <= MAX_DRAIN_BYTES:
        return
    stream = request.environ.get("wsgi.input")
    remaining = length
    try:
        while remaining > 0 and stream is not None:
            chunk = stream.read(min(65536, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
    except (OSError, ValueError):
        pass


def create_flask_app(name: str, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                     openapi: dict[str, Any] | None = None) -> Flask:
    """A Flask app whose every error, expected or not, is a JSON body with an ``error`` check.

    With ``openapi`` (the document the app serves), its request schemas are compiled here, once per
    worker, and every request is checked against them (``check_request``).
    """
    app = Flask(name)
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    if openapi is not None:
        app.extensions[REQUEST_SCHEMAS] = RequestSchemas.from_openapi(openapi)

    @app.errorhandler(BonseyesError)
    def _typed(error: BonseyesError) -> Response:
        return error_response(error.check, error.args[0], http_status_of(error))

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException) -> Response:
        status = error.code or 500
        check = _HTTP_CHECKS.get(status, "http")
        message = error.description or error.name
        if status == 413:
            message = f"request body exceeds the {max_body_bytes}-byte limit"
            _drain_body()
        return error_response(check, message, status)

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response("internal", f"internal error ({type(error).__name__}); see the server log", 500)

    return app
