"""The BM's Flask app: a thin mTLS adapter over ``BonseyesModule``.

The SM (role ``sm``) drives steps 3 to 5 (fetch, remove, start, stop); BL (role ``runtime``)
forwards its artefact licence (step 6). Who calls comes from the TLS peer certificate, verified
against the SM root and the CRL on every request; what it sends is checked against the served
OpenAPI document (``openapi.py``) before a handler runs.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify

from bonseyes_py.bm.agent import BonseyesModule
from bonseyes_py.bm.openapi import openapi_document
from bonseyes_py.errors import InputError
from bonseyes_py.pki.roles import Role
from bonseyes_py.web.flaskapp import Authenticator, create_flask_app, json_body, query_args

SM_ONLY = (Role.SECURITY_MANAGER,)


def create_app(bm: BonseyesModule) -> Flask:
    document = openapi_document()
    app = create_flask_app("bonseyes_bm", openapi=document)
    auth = Authenticator(bm.trust_store)
    app.extensions["bonseyes_bm"] = bm

    @app.get("/v1/ping")
    def ping() -> Any:
        peer = auth.peer((Role.SECURITY_MANAGER, Role.RUNTIME, Role.ADMIN, Role.HOST))
        return jsonify({"ok": True, "host_id": bm.host_id, "role": peer.identity.role.value})

    @app.post("/v1/images/fetch")
    def fetch() -> Any:
        auth.peer(SM_ONLY)
        body = json_body()
        results = bm.fetch_images(body["digests"])
        return jsonify({"digests": {r.requested: r.computed for r in results},
                        "errors": {r.requested: r.error for r in results if r.error}})

    @app.post("/v1/images/remove")
    def remove() -> Any:
        auth.peer(SM_ONLY)
        body = json_body()
        return jsonify({"removed": bm.remove_images(body["digests"])})

    @app.post("/v1/runtimes")
    def start() -> Any:
        auth.peer(SM_ONLY)
        body = json_body()
        return jsonify(bm.start_runtime(pipeline_id=body["pipeline_id"], position=body["position"],
                                        artefact_id=body["artefact_id"], digest=body["digest"],
                                        user_id=body["user_id"], env=body.get("env"))), 201

    @app.get("/v1/runtimes")
    def runtimes() -> Any:
        auth.peer((Role.SECURITY_MANAGER, Role.ADMIN))
        return jsonify({"runtimes": bm.runtimes(query_args().get("pipeline_id"))})

    @app.post("/v1/runtimes/stop")
    def stop() -> Any:
        auth.peer(SM_ONLY)
        body = json_body()
        pipeline_id = body.get("pipeline_id")
        nonces = body.get("nonces")
        if pipeline_id is None and nonces is None:  # one of the two: a rule across fields, not in the schema
            raise InputError("name a pipeline_id or nonces to stop", check="missing-field")
        stopped = bm.stop_runtimes(pipeline_id, nonces=nonces,
                                   reason=str(body.get("reason") or "stopped on the SM's instruction")[:300])
        return jsonify({"stopped": stopped})

    @app.post("/v1/runtimes/licence")
    def artefact_licence() -> Any:
        peer = auth.peer((Role.RUNTIME,))
        body = json_body()
        return jsonify(bm.accept_artefact_licence(peer.identity, peer.certificate, body["licence"],
                                                  timings=body.get("timings")))

    @app.get("/v1/status")
    def status() -> Any:
        auth.peer((Role.SECURITY_MANAGER, Role.ADMIN))
        return jsonify(bm.status())

    @app.get("/openapi.json")
    def openapi() -> Any:
        auth.peer((Role.SECURITY_MANAGER, Role.RUNTIME, Role.ADMIN, Role.HOST))
        return jsonify(document)

    return app
