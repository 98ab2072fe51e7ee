"""The SM's Flask app: a thin adapter from HTTPS + mTLS to ``SecurityManager``.

Each route names the roles it accepts (``Authenticator.peer``), reads a JSON object already checked
against the operation's request schema in the served OpenAPI document (``openapi.py``: known fields
only, types, lengths), calls one service method and returns its JSON. Who the caller is, and from
which address, comes from the TLS peer, never from the body.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask, Response, jsonify

from bonseyes_py.pki.roles import Role
from bonseyes_py.sm.config import SMConfig
from bonseyes_py.sm.openapi import openapi_document
from bonseyes_py.sm.service import SecurityManager
from bonseyes_py.web.flaskapp import Authenticator, create_flask_app, json_body, query_args

ANY_ROLE = (Role.ADMIN, Role.USER, Role.HOST, Role.RUNTIME, Role.MARKETPLACE, Role.SECURITY_MANAGER)


def create_app(config: SMConfig, *, service: SecurityManager | None = None) -> Flask:
    """Build the app of one worker; the service (DB pool, CA, caches) is created here, after fork."""
    sm = service or SecurityManager.open(config)
    auth = Authenticator(sm.trust_store)
    document = openapi_document()
    app = create_flask_app("bonseyes_sm", max_body_bytes=config.max_body_bytes, openapi=document)
    app.extensions["bonseyes_sm"] = sm

    def route(rule: str, methods: list[str], roles: tuple[Role, ...]) -> Callable[[Callable[..., Any]], Any]:
        def decorate(handler: Callable[..., Any]) -> Any:
            def view(**kwargs: Any) -> Any:
                peer = auth.peer(roles)
                result = handler(peer, **kwargs)
                return result if isinstance(result, (Response, tuple)) else jsonify(result)

            view.__name__ = handler.__name__
            return app.route(rule, methods=methods)(view)

        return decorate

    @route("/v1/ping", ["GET"], ANY_ROLE)
    def ping(peer: Any) -> dict[str, Any]:
        return {"ok": True, "role": peer.identity.role.value, "name": peer.identity.name}

    @route("/openapi.json", ["GET"], ANY_ROLE)
    def openapi(_peer: Any) -> dict[str, Any]:
        return document

    @route("/v1/crl", ["GET"], ANY_ROLE)
    def crl(_peer: Any) -> Response:
        return Response(sm.crl_pem(), mimetype="application/x-pem-file")

    @route("/v1/licences/revoked", ["GET"], ANY_ROLE)
    def revoked_licences(_peer: Any) -> dict[str, Any]:
        return {"licence_ids": sm.revoked_licence_ids()}

    @route("/v1/users", ["POST"], (Role.ADMIN,))
    def enrol_user(peer: Any) -> tuple[Response, int]:
        body = json_body()
        answer = sm.enrol_user(peer.identity, body["user_id"], organisation=body.get("organisation", ""),
                               role=body.get("role", "user"), passphrase=body.get("passphrase"),
                               csr_pem=body.get("csr"))
        return jsonify(answer), 201

    @route("/v1/services", ["POST"], (Role.ADMIN,))
    def enrol_service(peer: Any) -> tuple[Response, int]:
        body = json_body()
        return jsonify(sm.enrol_service(peer.identity, body["role"], body["name"], body["csr"])), 201

    @route("/v1/users/<user_id>", ["GET"], (Role.ADMIN,))
    def get_user(_peer: Any, user_id: str) -> dict[str, Any]:
        return sm.get_user(user_id)

    @route("/v1/hosts", ["POST"], (Role.USER, Role.ADMIN))
    def register_host(peer: Any) -> tuple[Response, int]:
        body = json_body()
        answer = sm.register_host(peer.identity, body["host_id"], body["csr"], premises=body.get("premises"),
                                  gpu_count=body.get("gpu_count", 0), gpu_models=body.get("gpu_models"),
                                  name=body.get("name"))
        return jsonify(answer), 201

    @route("/v1/hosts/heartbeat", ["POST"], (Role.HOST,))
    def heartbeat(peer: Any) -> dict[str, Any]:
        body = json_body()
        return sm.heartbeat(peer.identity, peer.ip, bm_port=body.get("bm_port"))

    @route("/v1/hosts/<host_id>", ["GET"], (Role.ADMIN, Role.USER, Role.HOST))
    def get_host(peer: Any, host_id: str) -> dict[str, Any]:
        return sm.get_host(peer.identity, host_id)

    @route("/v1/artefacts", ["POST"], (Role.MARKETPLACE, Role.ADMIN))
    def register_artefact(peer: Any) -> tuple[Response, int]:
        body = json_body()
        answer = sm.register_artefact(peer.identity, body["artefact_id"], body["owner"], body["digest"],
                                      body.get("terms"))
        return jsonify(answer), 201

    @route("/v1/artefacts/<artefact_id>", ["GET"], (Role.MARKETPLACE, Role.ADMIN, Role.USER))
    def get_artefact(peer: Any, artefact_id: str) -> dict[str, Any]:
        return sm.get_artefact(peer.identity, artefact_id)

    @route("/v1/artefacts/<artefact_id>/images", ["POST"], (Role.MARKETPLACE, Role.ADMIN))
    def add_image(peer: Any, artefact_id: str) -> tuple[Response, int]:
        # owner: the owner the marketplace acts for (required of a marketplace, checked for anyone).
        body = json_body()
        return jsonify(sm.add_image(peer.identity, artefact_id, body["digest"], owner=body.get("owner"))), 201

    @route("/v1/artefacts/<artefact_id>/terms", ["PUT"], (Role.MARKETPLACE, Role.ADMIN))
    def set_terms(peer: Any, artefact_id: str) -> dict[str, Any]:
        terms = json_body()
        owner = terms.pop("owner", None)  # beside the terms, as for images
        return sm.set_artefact_terms(peer.identity, artefact_id, terms, owner=owner)

    @route("/v1/premises/<name>", ["PUT"], (Role.ADMIN,))
    def put_premise(peer: Any, name: str) -> dict[str, Any]:
        body = json_body()
        return sm.put_premise(peer.identity, name, policy=body.get("policy"), users=body.get("users"),
                              hosts=body.get("hosts"))

    @route("/v1/premises/<name>", ["GET"], (Role.ADMIN,))
    def get_premise(_peer: Any, name: str) -> dict[str, Any]:
        return sm.get_premise(name, query_args().get("revision"))

    @route("/v1/pipelines", ["POST"], (Role.USER,))
    def request_pipeline(peer: Any) -> tuple[Response, int]:
        body = json_body()
        return jsonify(sm.request_pipeline(peer.identity, body["premise"], body["stages"])), 201

    @route("/v1/pipelines/<pipeline_id>", ["GET"], (Role.USER, Role.ADMIN))
    def get_pipeline(peer: Any, pipeline_id: str) -> dict[str, Any]:
        return sm.get_pipeline(peer.identity, pipeline_id)

    @route("/v1/licences/host", ["POST"], (Role.HOST,))
    def host_licence(peer: Any) -> tuple[Response, int]:
        body = json_body()
        answer = sm.issue_host_licence_json(peer.identity, peer.ip, image_digest=body["image_digest"],
                                            artefact_id=body["artefact_id"], user_id=body["user_id"],
                                            nonce=body["nonce"], renews=body.get("renews"))
        # The JSON that was sealed and stored, sent as it is (serialised once per licence).
        return Response(answer, status=201, mimetype="application/json"), 201

    @route("/v1/licences/artefact", ["POST"], (Role.RUNTIME,))
    def artefact_licence(peer: Any) -> tuple[Response, int]:
        body = json_body()
        answer = sm.issue_artefact_licence(peer.identity, peer.certificate, peer.ip,
                                           host_licence=body["host_licence"], artefact_id=body["artefact_id"])
        return jsonify(answer), 201

    @route("/v1/revocations", ["POST"], (Role.ADMIN,))
    def revoke(peer: Any) -> dict[str, Any]:
        body = json_body()
        return sm.revoke(peer.identity, body["kind"], body["id"], reason=body.get("reason", ""))

    @route("/v1/audit", ["GET"], (Role.ADMIN,))
    def audit_log(_peer: Any) -> dict[str, Any]:
        query = query_args()
        entries = sm.audit_log(after=query.get("after", 0), limit=query.get("limit", 100),
                               action=query.get("action"), subject=query.get("subject"))
        return {"entries": entries}

    @route("/v1/audit/verify", ["GET"], (Role.ADMIN,))
    def audit_verify(_peer: Any) -> dict[str, Any]:
        return sm.verify_audit().as_dict()

    # Steps 4-6 across the BMs (start/stop/status of a pipeline's runtimes): bonseyes_py/sm/pipeline_runtime.py.
    from bonseyes_py.sm.pipeline_runtime import register_pipeline_runtime

    register_pipeline_runtime(app, sm, auth)
    from bonseyes_py.sm.artefact_signing import register_artefact_signing  # the MP's two-phase IDs

    register_artefact_signing(app, sm, auth)
    return app
