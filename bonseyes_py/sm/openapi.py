"""OpenAPI 3 description of the SM API, served at ``/openapi.json`` and used by the tests.

Every operation requires mutual TLS (the ``mtls`` security scheme); ``x-roles`` names the
certificate roles an operation accepts. Errors always have the ``Error`` shape.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from bonseyes_py import __version__

NAME = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}$"}
DIGEST = {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$"}
PEM = {"type": "string", "maxLength": 65536}
STRINGS = {"type": "array", "items": {"type": "string"}}
ERROR_STATUSES = ("400", "403", "404", "409", "413", "422", "424")
# A marketplace names the owner it acts for when it changes an artefact (required of it; an admin may).
OWNER = {**NAME, "description": "the artefact's owner the caller acts for: required of a marketplace, which "
                                "may act only on artefacts it registered; checked when an admin gives it"}
TERMS = {"requires_gpu": {"type": "boolean"},
         "max_instances": {"type": "integer", "minimum": 0, "maximum": 2**40},
         "allowed_premises": {"type": "array", "items": NAME, "maxItems": 100},
         "allowed_hosts": {"type": "array", "items": NAME, "maxItems": 1000},
         "not_before": {"type": "integer", "minimum": 0, "maximum": 2**40},
         "not_after": {"type": "integer", "minimum": 0, "maximum": 2**40},
         "licence_seconds": {"type": "integer", "minimum": 0, "maximum": 2**40}}


def _object(properties: dict[str, Any], required: tuple[str, ...] = (), additional: bool = False) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required),
            "additionalProperties": additional}


SCHEMAS: dict[str, Any] = {
    "Error": _object({"error": {"type": "string"}, "message": {"type": "string"}}, ("error", "message")),
    "Ping": _object({"ok": {"type": "boolean"}, "role": {"type": "string"}, "name": {"type": "string"}},
                    ("ok", "role", "name")),
    "EnrolUser": _object({"user_id": NAME, "organisation": {"type": "string", "maxLength": 256},
                          "role": {"type": "string", "enum": ["user", "admin"]},
                          "passphrase": {"type": "string", "minLength": 8, "maxLength": 1024}, "csr": PEM},
                         ("user_id",)),
    "EnrolledUser": _object({"user_id": {"type": "string"}, "role": {"type": "string"}, "uri": {"type": "string"},
                             "serial": {"type": "string"}, "certificate": {"type": "string"},
                             "chain": {"type": "string"}, "pkcs12": {"type": "string", "format": "byte"}},
                            ("user_id", "role", "uri", "serial", "certificate", "chain")),
    "EnrolService": _object({"role": {"type": "string", "enum": ["marketplace"]}, "name": NAME, "csr": PEM},
                            ("role", "name", "csr")),
    "EnrolledService": _object({"role": {"type": "string"}, "name": {"type": "string"}, "uri": {"type": "string"},
                                "serial": {"type": "string"}, "certificate": {"type": "string"},
                                "chain": {"type": "string"}},
                               ("role", "name", "uri", "serial", "certificate", "chain")),
    "User": _object({"user_id": {"type": "string"}, "organisation": {"type": "string"}, "role": {"type": "string"},
                     "revoked": {"type": "boolean"}, "serials": STRINGS},
                    ("user_id", "organisation", "role", "revoked", "serials")),
    "RegisterHost": _object({"host_id": {"type": "string", "maxLength": 65536,
                                         "description": "host ID JWS signed by the owner"},
                             "csr": PEM, "premises": {"type": "array", "items": NAME, "maxItems": 100},
                             "gpu_count": {"type": "integer", "minimum": 0, "maximum": 1024},
                             "gpu_models": {"type": "array", "items": {"type": "string"}, "maxItems": 64},
                             "name": NAME}, ("host_id", "csr")),
    "RegisteredHost": _object({"host_id": {"type": "string"}, "hardware_id": {"type": "string"},
                               "owner": {"type": "string"}, "premises": STRINGS, "certificate": {"type": "string"},
                               "chain": {"type": "string"}},
                              ("host_id", "hardware_id", "owner", "premises", "certificate", "chain")),
    "Host": _object({"host_id": {"type": "string"}, "hardware_id": {"type": "string"}, "owner": {"type": "string"},
                     "premises": STRINGS, "gpu_count": {"type": "integer"}, "gpu_models": STRINGS,
                     "revoked": {"type": "boolean"}, "ip": {"type": ["string", "null"]},
                     "available": {"type": "boolean"}, "last_seen": {"type": ["number", "null"]}},
                    ("host_id", "hardware_id", "owner", "premises", "revoked", "available")),
    "Heartbeat": _object({"bm_port": {"type": "integer", "minimum": 1, "maximum": 65535}}),
    "HeartbeatAnswer": _object({"host_id": {"type": "string"}, "available": {"type": "boolean"},
                                "ip": {"type": "string"}, "bm_port": {"type": "integer"},
                                "online_since": {"type": ["number", "null"]}, "ttl_seconds": {"type": "integer"}},
                               ("host_id", "available", "ip", "ttl_seconds")),
    "Terms": _object(TERMS),
    "RegisterArtefact": _object({"artefact_id": NAME, "owner": NAME, "digest": DIGEST,
                                 "terms": {"$ref": "#/components/schemas/Terms"}},
                                ("artefact_id", "owner", "digest")),
    "Artefact": _object({"artefact_id": {"type": "string"}, "owner": {"type": "string"},
                         "artefact_id_token": {"type": "string"}, "revoked": {"type": "boolean"},
                         "terms": {"type": "object"},
                         "images": {"type": "array", "items": _object(
                             {"digest": {"type": "string"}, "image_id_token": {"type": "string"}},
                             ("digest", "image_id_token"))}},
                        ("artefact_id", "owner", "artefact_id_token", "revoked", "images")),
    "AddImage": _object({"digest": DIGEST, "owner": OWNER}, ("digest",)),
    "SetTerms": _object({**TERMS, "owner": OWNER}),
    "Image": _object({"digest": {"type": "string"}, "artefact_id": {"type": "string"},
                      "image_id_token": {"type": "string"}}, ("digest", "artefact_id", "image_id_token")),
    "PutPremise": _object({"policy": {"type": "string", "maxLength": 262144},
                           "users": {"type": "array", "items": NAME, "maxItems": 10_000},
                           "hosts": {"type": "array", "items": NAME, "maxItems": 10_000}}),
    "Premise": _object({"name": {"type": "string"}, "revision": {"type": "integer"},
                        "policy_revision": {"type": "string"}, "policy": {"type": "string"}, "users": STRINGS,
                        "hosts": STRINGS}, ("name", "revision", "policy_revision", "policy", "users", "hosts")),
    "RequestPipeline": _object({"premise": NAME, "stages": {"type": "array", "minItems": 1, "maxItems": 64,
                                                            "items": _object({"artefact_id": NAME, "host_id": NAME,
                                                                              "digest": DIGEST},
                                                                             ("artefact_id", "host_id"))}},
                               ("premise", "stages")),
    "Pipeline": _object({"pipeline_id": {"type": "string"}, "user_id": {"type": "string"},
                         "premise": {"type": "string"},
                         "status": {"type": "string", "enum": ["verifying", "ready", "aborted", "stopped"]},
                         "reason": {"type": "string"},
                         "stages": {"type": "array", "items": _object(
                             {"artefact_id": {"type": "string"}, "digest": {"type": "string"},
                              "host_id": {"type": "string"}, "reported_digest": {"type": ["string", "null"]}},
                             ("artefact_id", "digest", "host_id"))}},
                        ("pipeline_id", "user_id", "premise", "status", "stages")),
    "HostLicenceRequest": _object({"image_digest": DIGEST, "artefact_id": NAME, "user_id": NAME,
                                   "nonce": {"type": "string", "pattern": "^[A-Za-z0-9_-]{16,128}$"},
                                   "renews": {"type": "string", "maxLength": 64}},
                                  ("image_digest", "artefact_id", "user_id", "nonce")),
    "HostLicence": _object({"licence_id": {"type": "string"}, "licence": {"type": "string"},
                            "expires_at": {"type": "integer"}, "runtime_id": {"type": "object"},
                            "runtime_name": {"type": "string"}, "runtime_key": {"type": "string"},
                            "runtime_certificate": {"type": "string"}, "runtime_chain": {"type": "string"},
                            "renews": {"type": ["string", "null"]}},
                           ("licence_id", "licence", "expires_at", "runtime_id", "runtime_key",
                            "runtime_certificate", "runtime_chain")),
    "ArtefactLicenceRequest": _object({"host_licence": {"type": "string", "maxLength": 65536},
                                       "artefact_id": NAME}, ("host_licence", "artefact_id")),
    "ArtefactLicence": _object({"licence_id": {"type": "string"}, "licence": {"type": "string"},
                                "expires_at": {"type": "integer"}, "host_licence_id": {"type": "string"}},
                               ("licence_id", "licence", "expires_at", "host_licence_id")),
    "Revoke": _object({"kind": {"type": "string", "enum": ["user", "host", "artefact", "licence", "certificate"]},
                       "id": {"type": "string", "minLength": 1, "maxLength": 128},
                       "reason": {"type": "string", "maxLength": 1000}}, ("kind", "id")),
    "Revoked": _object({"kind": {"type": "string"}, "id": {"type": "string"}, "serials": STRINGS,
                        "licences": STRINGS, "crl_number": {"type": "integer"},
                        "already_revoked": {"type": "boolean"}},
                       ("kind", "id", "serials", "licences", "crl_number", "already_revoked")),
    "RevokedLicences": _object({"licence_ids": STRINGS}, ("licence_ids",)),
    "AuditEntry": _object({"seq": {"type": "integer"}, "at_ms": {"type": "integer"}, "actor": {"type": "string"},
                           "action": {"type": "string"}, "subject": {"type": "string"},
                           "outcome": {"type": "string"}, "policy_revision": {"type": ["string", "null"]},
                           "details": {"type": "object"}, "prev_hash": {"type": "string"},
                           "entry_hash": {"type": "string"}},
                          ("seq", "at_ms", "actor", "action", "subject", "outcome", "details", "prev_hash",
                           "entry_hash")),
    "AuditPage": _object({"entries": {"type": "array", "items": {"$ref": "#/components/schemas/AuditEntry"}}},
                         ("entries",)),
    "ReserveArtefactId": _object({"name": NAME, "owner": NAME}, ("name", "owner")),
    "ArtefactIdReservation": _object({"artefact_id": {"type": "string"}, "owner": {"type": "string"},
                                      "token": {"type": "string"}, "reserved": {"type": "boolean"}},
                                     ("artefact_id", "owner", "token", "reserved")),
    "ArtefactIdRelease": _object({"artefact_id": {"type": "string"}, "released": {"type": "boolean"},
                                  "images": {"type": "integer"}}, ("artefact_id", "released", "images")),
    "StopPipeline": _object({"reason": {"type": "string", "maxLength": 2000}}),
    "PipelineRuntime": _object({
        "pipeline_id": {"type": "string"},
        "status": {"type": "string", "enum": ["verifying", "ready", "aborted", "stopped"]},
        "reason": {"type": "string"},
        "stages": {"type": "array", "items": _object(
            {"pipeline_id": {"type": "string"}, "position": {"type": "integer"},
             "host_id": {"type": ["string", "null"]},
             "status": {"type": ["string", "null"], "enum": ["pending", "starting", "running", "failed", "stopped",
                                                            None]},
             "port": {"type": ["integer", "null"]}, "runtime_name": {"type": ["string", "null"]},
             "nonce": {"type": ["string", "null"]}, "detail": {"type": ["string", "null"]},
             "seconds": {"type": ["number", "null"]}, "timings": {"type": "object"},
             "updated_at": {"type": ["number", "null"]}}, ("pipeline_id", "position", "status"))},
        "stop_problems": STRINGS,
        "revoked_licences": {**STRINGS, "description": "licence IDs this stop revoked (with their runtime "
                                                       "certificates): every unexpired licence of the pipeline"}},
        ("pipeline_id", "status", "stages")),
    "AuditReport": _object({"ok": {"type": "boolean"}, "entries": {"type": "integer"},
                            "first_bad_seq": {"type": ["integer", "null"]}, "problem": {"type": "string"}},
                           ("ok", "entries", "first_bad_seq", "problem")),
}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _operation(operation_id: str, roles: tuple[str, ...], response: str | None, *, status: str = "200",
               body: str | None = None, params: tuple[dict[str, Any], ...] = (),
               content_type: str = "application/json", body_required: bool = True,
               description: str | None = None) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    if response is None:
        responses[status] = {"description": "OK", "content": {content_type: {"schema": {"type": "string"}}}}
    else:
        responses[status] = {"description": "OK", "content": {"application/json": {"schema": _ref(response)}}}
    for code in ERROR_STATUSES:
        responses[code] = {"description": "error naming the failed check",
                           "content": {"application/json": {"schema": _ref("Error")}}}
    operation: dict[str, Any] = {"operationId": operation_id, "x-roles": list(roles), "responses": responses,
                                 "parameters": list(params)}
    if description is not None:
        operation["description"] = description
    if body is not None:
        operation["requestBody"] = {"required": body_required,
                                    "content": {"application/json": {"schema": _ref(body)}}}
    return operation


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": NAME}


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


ANY = ("admin", "user", "host", "runtime", "marketplace", "sm")
# Operations on a user's own objects answer a user the same for an unknown ID as for another tenant's.
OWN_PIPELINE = ("To a user, an unknown pipeline ID and another user's pipeline are the same 403 pipeline-owner; "
                "an admin gets 404 for an unknown one.")


@functools.lru_cache(maxsize=1)
def _document() -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/v1/ping": {"get": _operation("ping", ANY, "Ping")},
        "/v1/crl": {"get": _operation("getCrl", ANY, None, content_type="application/x-pem-file")},
        "/v1/licences/revoked": {"get": _operation("revokedLicences", ANY, "RevokedLicences")},
        "/v1/users": {"post": _operation("enrolUser", ("admin",), "EnrolledUser", status="201", body="EnrolUser")},
        "/v1/services": {"post": _operation("enrolService", ("admin",), "EnrolledService", status="201",
                                            body="EnrolService")},
        "/v1/users/{user_id}": {"get": _operation("getUser", ("admin",), "User", params=(_path_param("user_id"),))},
        "/v1/hosts": {"post": _operation(
            "registerHost", ("user", "admin"), "RegisteredHost", status="201", body="RegisterHost",
            description="A user names only premises she is a member of: an unknown premise and another's are the "
                        "same 403 premise-member (an admin gets 404 for an unknown one).")},
        "/v1/hosts/heartbeat": {"post": _operation("heartbeat", ("host",), "HeartbeatAnswer", body="Heartbeat",
                                                   body_required=False)},
        "/v1/hosts/{host_id}": {"get": _operation(
            "getHost", ("admin", "user", "host"), "Host", params=(_path_param("host_id"),),
            description="To a user or host, an unknown host ID and a host not its own are the same 403 host-owner; "
                        "an admin gets 404 for an unknown one.")},
        "/v1/artefacts": {"post": _operation("registerArtefact", ("marketplace", "admin"), "Artefact",
                                             status="201", body="RegisterArtefact")},
        "/v1/artefacts/{artefact_id}": {"get": _operation("getArtefact", ("marketplace", "admin", "user"),
                                                          "Artefact", params=(_path_param("artefact_id"),))},
        "/v1/artefacts/{artefact_id}/images": {"post": _operation(
            "addImage", ("marketplace", "admin"), "Image", status="201", body="AddImage",
            params=(_path_param("artefact_id"),))},
        "/v1/artefacts/{artefact_id}/terms": {"put": _operation(
            "setTerms", ("marketplace", "admin"), "Artefact", body="SetTerms", params=(_path_param("artefact_id"),))},
        "/v1/premises/{name}": {
            "put": _operation("putPremise", ("admin",), "Premise", body="PutPremise", params=(_path_param("name"),)),
            "get": _operation("getPremise", ("admin",), "Premise",
                              params=(_path_param("name"),
                                      _query("revision", {"type": "integer", "minimum": 0, "maximum": 2**31}))),
        },
        "/v1/pipelines": {"post": _operation(
            "requestPipeline", ("user",), "Pipeline", status="201", body="RequestPipeline",
            description="An unknown premise is denied as a premise of the default policy without members (403 "
                        "policy-denied); a stage's host not in the premise, known or not, is 403 "
                        "host-not-in-premise.")},
        "/v1/pipelines/{pipeline_id}": {"get": _operation("getPipeline", ("user", "admin"), "Pipeline",
                                                          params=(_path_param("pipeline_id"),),
                                                          description=OWN_PIPELINE)},
        "/v1/pipelines/{pipeline_id}/start": {"post": _operation(
            "startPipeline", ("user",), "PipelineRuntime", params=(_path_param("pipeline_id"),),
            description=OWN_PIPELINE)},
        "/v1/pipelines/{pipeline_id}/stop": {"post": _operation(
            "stopPipeline", ("user", "admin"), "PipelineRuntime", body="StopPipeline", body_required=False,
            params=(_path_param("pipeline_id"),),
            description="Revokes every unexpired licence of the pipeline and its runtime certificates (CRL "
                        "republished) in the transaction that stops it. A stopped or aborted pipeline keeps its "
                        "status: stopping it again answers with that status. " + OWN_PIPELINE)},
        "/v1/pipelines/{pipeline_id}/runtime": {"get": _operation(
            "pipelineRuntime", ("user", "admin"), "PipelineRuntime", params=(_path_param("pipeline_id"),),
            description=OWN_PIPELINE)},
        "/v1/artefact-ids": {"post": _operation("reserveArtefactId", ("marketplace",), "ArtefactIdReservation",
                                                status="201", body="ReserveArtefactId")},
        "/v1/artefact-ids/{name}": {"delete": _operation("releaseArtefactId", ("marketplace", "admin"),
                                                         "ArtefactIdRelease",
                                                         params=(_path_param("name"), _query("owner", OWNER)))},
        "/v1/ca/chain": {"get": _operation("caChain", ANY, None, content_type="application/x-pem-file")},
        "/v1/licences/host": {"post": _operation("issueHostLicence", ("host",), "HostLicence", status="201",
                                                 body="HostLicenceRequest")},
        "/v1/licences/artefact": {"post": _operation("issueArtefactLicence", ("runtime",), "ArtefactLicence",
                                                     status="201", body="ArtefactLicenceRequest")},
        "/v1/revocations": {"post": _operation("revoke", ("admin",), "Revoked", body="Revoke")},
        "/v1/audit": {"get": _operation("auditLog", ("admin",), "AuditPage", params=(
            _query("after", {"type": "integer", "minimum": 0, "maximum": 2**62}),
            _query("limit", {"type": "integer", "minimum": 0, "maximum": 1000}),
            _query("action", {"type": "string"}), _query("subject", {"type": "string"})))},
        "/v1/audit/verify": {"get": _operation("verifyAudit", ("admin",), "AuditReport")},
        "/openapi.json": {"get": {"operationId": "openapi", "x-roles": list(ANY), "parameters": [],
                                  "responses": {"200": {"description": "this document",
                                                        "content": {"application/json": {"schema": {
                                                            "type": "object"}}}}}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Bonseyes Security Manager", "version": __version__,
                 "description": "PKI, registration, pipelines and licences of a virtual premise. "
                                "Every operation requires a client certificate issued by the SM (mutual TLS)."},
        "servers": [{"url": "/"}],
        "security": [{"mtls": []}],
        "components": {"securitySchemes": {"mtls": {"type": "mutualTLS"}}, "schemas": SCHEMAS},
        "paths": paths,
    }


def openapi_document() -> dict[str, Any]:
    return copy.deepcopy(_document())
