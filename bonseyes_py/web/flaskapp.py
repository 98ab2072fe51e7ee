"""Flask glue shared by the services: JSON errors, body parsing, and per-endpoint role checks.

Each endpoint names the roles it accepts; ``Authenticator.require`` verifies the TLS peer's
certificate with ``bonseyes_py.pki.verify_certificate`` against a trust store that carries the
current CRL, so a revoked certificate that still passes the TLS handshake is refused with 403.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from bonseyes_py import safejson
from bonseyes_py.errors import BonseyesError, InputError
from bonseyes_py.pki.roles import Identity, Role
from bonseyes_py.pki.verify import TrustStore, verify_certificate
from bonseyes_py.web.errors import error_response, http_status_of
from bonseyes_py.web.tls import PEER_CERT_KEY, PEER_IP_KEY

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 256 * 1024

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
        return Peer(identity, certificate, request.environ.get(PEER_IP_KEY) or request.remote_addr or "")


def json_body() -> dict[str, Any]:
    """The request body as a JSON object, or an ``InputError`` that says what is wrong with it."""
    raw = request.get_data(cache=True)
    if not raw:
        raise InputError("request body is empty; a JSON object is required", check="json")
    # Flask's MAX_CONTENT_LENGTH bounds the size before this point; safejson bounds the nesting (a deep
    # body is a 400 json-too-deep, never a RecursionError) and any size beyond its own default.
    body = safejson.loads(raw, what="request body")
    if not isinstance(body, dict):
        raise InputError("request body must be a JSON object", check="json")
    return body


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


def create_flask_app(name: str, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> Flask:
    """A Flask app whose every error, expected or not, is a JSON body with an ``error`` check."""
    app = Flask(name)
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]

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
