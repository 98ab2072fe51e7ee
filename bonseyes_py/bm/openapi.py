"""OpenAPI 3.1 description of a Bonseyes Module's API, served at ``/openapi.json``.

The BM checks every request body against it before a handler runs (``bonseyes_py.web.request_schema``),
so the callers (the SM's ``bm_client`` and ``pipeline_runtime``, BL forwarding its licence) and the
BM agree on one document. ``x-roles`` names the certificate roles an operation accepts.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from bonseyes_py import __version__
from bonseyes_py.bm.agent import MAX_ENV

NAME = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}$"}
DIGEST = {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$"}
DIGESTS = {"type": "array", "items": DIGEST, "minItems": 1, "maxItems": 256}
ERROR_STATUSES = ("400", "403", "404", "409", "413", "503")


def _object(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error", "message"],
              "properties": {"error": {"type": "string"}, "message": {"type": "string"}}},
    "Digests": _object({"digests": DIGESTS}, ("digests",)),
    "StartRuntime": _object({
        "pipeline_id": NAME, "position": {"type": "integer", "minimum": 0, "maximum": 1023},
        "artefact_id": NAME, "digest": DIGEST, "user_id": NAME,
        "env": {"type": "object", "maxProperties": MAX_ENV,
                "propertyNames": {"pattern": "^BONSEYES_[A-Z0-9_]{1,64}$"},
                "additionalProperties": {"type": "string", "maxLength": 1024}}},
        ("pipeline_id", "position", "artefact_id", "digest", "user_id")),
    # Which runtimes to stop: a pipeline's, or those of some licence nonces (at least one of the two);
    # the reason is kept (shortened) as the runtimes' detail.
    "StopRuntimes": _object({"pipeline_id": NAME,
                             "nonces": {"type": "array", "items": {"type": "string", "maxLength": 128},
                                        "maxItems": 1024},
                             "reason": {"type": "string", "maxLength": 4096}}),
    # BL's artefact licence (a compact JWS) and its own phase durations, which the BM keeps for
    # benchmarks after dropping what is not a bounded ``bl_*`` number (so any object is accepted).
    "ArtefactLicence": _object({"licence": {"type": "string", "minLength": 1, "maxLength": 65536},
                                "timings": {"type": "object"}}, ("licence",)),
}


def _operation(operation_id: str, roles: tuple[str, ...], *, body: str | None = None, status: str = "200",
               params: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    responses: dict[str, Any] = {status: {"description": "OK", "content": {"application/json": {
        "schema": {"type": "object"}}}}}
    for code in ERROR_STATUSES:
        responses[code] = {"description": "error naming the failed check",
                           "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    operation: dict[str, Any] = {"operationId": operation_id, "x-roles": list(roles), "parameters": list(params),
                                 "responses": responses}
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{body}"}}}}
    return operation


@functools.lru_cache(maxsize=1)
def _document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Bonseyes Module", "version": __version__,
                 "description": "Steps 3 to 6 on one host, driven by the SM (role sm); BL forwards its artefact "
                                "licence (role runtime). Every operation requires mutual TLS."},
        "servers": [{"url": "/"}],
        "security": [{"mtls": []}],
        "paths": {
            "/v1/ping": {"get": _operation("ping", ("sm", "runtime", "admin", "host"))},
            "/v1/images/fetch": {"post": _operation("fetchImages", ("sm",), body="Digests")},
            "/v1/images/remove": {"post": _operation("removeImages", ("sm",), body="Digests")},
            "/v1/runtimes": {
                "post": _operation("startRuntime", ("sm",), body="StartRuntime", status="201"),
                "get": _operation("listRuntimes", ("sm", "admin"), params=(
                    {"name": "pipeline_id", "in": "query", "required": False, "schema": NAME},)),
            },
            "/v1/runtimes/stop": {"post": _operation("stopRuntimes", ("sm",), body="StopRuntimes")},
            "/v1/runtimes/licence": {"post": _operation("acceptArtefactLicence", ("runtime",),
                                                        body="ArtefactLicence")},
            "/v1/status": {"get": _operation("status", ("sm", "admin"))},
            "/openapi.json": {"get": _operation("openapi", ("sm", "runtime", "admin", "host"))},
        },
        "components": {"securitySchemes": {"mtls": {"type": "mutualTLS"}}, "schemas": SCHEMAS},
    }


def openapi_document() -> dict[str, Any]:
    return copy.deepcopy(_document())
