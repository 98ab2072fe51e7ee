"""HTTP status of each typed error, and the one JSON error body every endpoint answers with.

A client always gets ``{"error": "<check>", "message": "..."}``: the check is the machine-readable
name of what failed (``revoked``, ``role``, ``nonce-replay``...), the message says it to a human.
"""

from __future__ import annotations

from flask import Response, jsonify

from bonseyes_py.errors import (
    BonseyesError,
    CertificateError,
    InputError,
    KeyFileError,
    LicenceError,
    PolicyDenied,
    PolicyError,
)


class NotFoundError(BonseyesError):
    """A named record (user, host, artefact, premise, pipeline, licence) does not exist."""

    check = "not-found"
    http_status = 404


class ConflictError(BonseyesError):
    """The request contradicts the stored state (a replayed nonce with other parameters, a duplicate)."""

    check = "conflict"
    http_status = 409


class ServiceUnavailable(BonseyesError):
    """A dependency (a BM, the database) did not answer; retrying later may succeed."""

    check = "unavailable"
    http_status = 503


_STATUS: tuple[tuple[type[BonseyesError], int], ...] = (
    (InputError, 400),
    (KeyFileError, 400),
    (PolicyError, 422),
    (PolicyDenied, 403),
    (CertificateError, 403),
    (LicenceError, 403),
)


def http_status_of(error: BonseyesError) -> int:
    explicit = getattr(error, "http_status", None)
    if isinstance(explicit, int):
        return explicit
    for kind, status in _STATUS:
        if isinstance(error, kind):
            return status
    return 400


def error_response(check: str, message: str, status: int) -> Response:
    response = jsonify({"error": check, "message": message})
    response.status_code = status
    return response
