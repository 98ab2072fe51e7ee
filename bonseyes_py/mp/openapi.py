"""The OpenAPI 3.1 document the Marketplace serves at ``/openapi.json``.

The app checks every request's query parameters (and Content-Type) against it before the handler
runs (``bonseyes_py.web.request_schema``), so what it says is what the Marketplace accepts.
"""

from __future__ import annotations

from typing import Any

from bonseyes_py.mp.service import MAX_POLICY_BYTES

NAME = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}$"}
_ERROR = {"$ref": "#/components/schemas/Error"}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): {"description": "refused", "content": {"application/json": {"schema": _ERROR}}} for s in statuses}


def openapi_document() -> dict[str, Any]:
    artefact = {"$ref": "#/components/schemas/Artefact"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Bonseyes Marketplace", "version": "1",
                 "description": "Artefact registration (step 1) and the artefact catalogue. Mutual TLS: the "
                                "caller is its client certificate (role user registers; users, hosts and "
                                "admins read)."},
        "paths": {
            "/v1/ping": {"get": {"summary": "Who am I, and the upload limit", "responses": {
                "200": {"description": "ok", "content": {"application/json": {"schema": {
                    "type": "object", "required": ["ok", "role", "name", "max_upload_bytes"],
                    "properties": {"ok": {"type": "boolean"}, "role": {"type": "string"},
                                   "name": {"type": "string"}, "max_upload_bytes": {"type": "integer"}}}}}},
                **_errors(403)}}},
            "/v1/artefacts": {
                "get": {"summary": "List artefacts", "parameters": [
                    {"name": "owner", "in": "query", "required": False, "schema": NAME}],
                    "responses": {"200": {"description": "the catalogue", "content": {"application/json": {
                        "schema": {"type": "object", "required": ["artefacts"],
                                   "properties": {"artefacts": {"type": "array", "items": artefact}}}}}},
                        **_errors(403)}},
                "post": {
                    "summary": "Register the bytes of a docker save archive, with name and policies as query "
                               "parameters (role user; the Marketplace registers uploads only)",
                    "description": "The request body is the bytes of a `docker save` archive (Content-Type "
                                   "application/x-tar), with `name` and `policies` as query parameters. The "
                                   "upload is the whole source: its config and every layer must hash to the "
                                   "digests they are named by (400 `archive-digest` otherwise), and nothing is "
                                   "taken from what the Marketplace's engine or registry already holds. An image "
                                   "is never named for registration (any other Content-Type, JSON included, is "
                                   "415 `content-type`): save it (`docker save`) and upload it. With "
                                   "`Accept: application/x-ndjson` the answer is a stream of progress events "
                                   "(vet, build, push, sign) ending with a `result` or `error` event.",
                    "parameters": [
                        {"name": "name", "in": "query", "required": True, "schema": NAME},
                        {"name": "policies", "in": "query", "required": False,
                         "schema": {"type": "string", "maxLength": MAX_POLICY_BYTES,
                                    "description": "execution policies, a JSON object"}}],
                    "requestBody": {"required": True, "content": {
                        "application/x-tar": {"schema": {"type": "string", "format": "binary"}},
                        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
                    "responses": {"201": {"description": "registered", "content": {
                        "application/json": {"schema": artefact},
                        "application/x-ndjson": {"schema": {"type": "object"}}}},
                        **_errors(400, 403, 409, 413, 415, 422, 502, 503)}}},
            "/v1/artefacts/{name}": {"get": {
                "summary": "One artefact", "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "the artefact",
                                      "content": {"application/json": {"schema": artefact}}},
                              **_errors(403, 404)}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "ok"}}}},
        },
        "components": {"schemas": {
            "Error": {"type": "object", "required": ["error", "message"],
                      "properties": {"error": {"type": "string"}, "message": {"type": "string"}}},
            "Artefact": {"type": "object",
                         "required": ["name", "owner", "artefact_id", "image_id", "digest", "reference",
                                      "policies", "original", "size", "created_at"],
                         "properties": {"name": {"type": "string"}, "owner": {"type": "string"},
                                        "artefact_id": {"type": "string"}, "image_id": {"type": "string"},
                                        "digest": {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$"},
                                        "reference": {"type": "string"}, "policies": {"type": "object"},
                                        "original": {"type": "object"}, "size": {"type": "integer"},
                                        "created_at": {"type": "string"}}},
        }},
    }
