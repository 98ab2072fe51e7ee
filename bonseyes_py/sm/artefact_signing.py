"""Two-phase artefact registration for a remote Marketplace: artefact ID first, image ID after the push.

``POST /v1/artefacts`` signs the artefact ID and the image ID together from a digest, but the MP
must bake the artefact ID into the image before that image (and so its digest) exists. This module
adds the first phase:

- ``POST /v1/artefact-ids`` (marketplace only) signs the artefact ID of ``{name, owner}`` and
  reserves the name: it creates the SM's artefact record with no image yet. A name held by
  another owner, or reserved by another marketplace, is a 409 ``name-taken``; the same marketplace
  asking again for the same owner and a name that still has no image gets the stored token back
  (a retry after an MP crash).
- the second phase is the existing ``POST /v1/artefacts/<name>/images`` (image ID from the digest),
  which names the owner too (``artefacts.check_acting_for``).
- ``DELETE /v1/artefact-ids/<name>?owner=<owner>`` releases a reservation when the MP's registration
  failed, so a failure leaves no half-registered artefact on the SM either. Only the marketplace that
  made it may release it, naming its owner (an admin may release any), and never once a pipeline or
  licence refers to the artefact.
- ``GET /v1/ca/chain``: the SM root and intermediate (PEM) the MP bakes into each image.

Registered on the SM's Flask app by ``register_artefact_signing`` (one hook in ``sm/app.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask, Response, jsonify, request
from sqlalchemy import delete, func, select

from bonseyes_py.identity.ids import sign_artefact_id
from bonseyes_py.pki.certs import chain_pem
from bonseyes_py.pki.roles import Identity, Role, check_name
from bonseyes_py.sm.artefacts import check_acting_for
from bonseyes_py.sm.core import Forbidden, found, require
from bonseyes_py.sm.models import Artefact, Image, Licence, PipelineStage, User
from bonseyes_py.sm.service import SecurityManager
from bonseyes_py.web.errors import ConflictError
from bonseyes_py.web.flaskapp import Authenticator, json_body

ANY_ROLE = (Role.ADMIN, Role.USER, Role.HOST, Role.RUNTIME, Role.MARKETPLACE, Role.SECURITY_MANAGER)
_DEFAULT_TERMS: dict[str, Any] = {"requires_gpu": False, "max_instances": 0, "allowed_premises": [],
                                  "not_before": 0, "not_after": 0, "licence_seconds": 0}


def _image_count(session: Any, name: str) -> int:
    return int(session.scalar(select(func.count()).select_from(Image).where(Image.artefact_id == name)) or 0)


def reserve_artefact_id(sm: SecurityManager, actor: Identity, name: str, owner: str) -> dict[str, Any]:
    """Sign the artefact ID of ``name`` for ``owner`` and reserve the name (an artefact without image)."""
    check_name(name, "artefact ID")
    check_name(owner, "owner")
    token = sign_artefact_id(sm.issuer.signer, sm.issuer.issuer_uri, name, owner)
    with sm.transaction() as session:
        user = found(session.get(User, owner), "owner", owner)
        require(not user.revoked, Forbidden(f"owner {owner} is revoked", check="revoked"))
        existing = session.get(Artefact, name)
        if existing is not None:
            if existing.owner != owner:
                raise ConflictError(f"artefact name {name!r} is taken by another owner", check="name-taken")
            if existing.created_by != actor.uri:
                # The stored token is given back only to the marketplace that reserved the name.
                raise ConflictError(f"artefact name {name!r} was reserved by another marketplace", check="name-taken")
            if existing.revoked:
                raise Forbidden(f"artefact {name} is revoked", check="revoked")
            if _image_count(session, name):
                raise ConflictError(f"artefact {name!r} is already registered with an image",
                                    check="artefact-exists")
            return {"artefact_id": name, "owner": owner, "token": existing.artefact_id_token, "reserved": True}
        session.add(Artefact(artefact_id=name, owner=owner, artefact_id_token=token, revoked=False,
                             created_by=actor.uri, created_at=sm.now(), **_DEFAULT_TERMS))
        sm.audit(session, actor, "artefact-id-signed", name, owner=owner)
    return {"artefact_id": name, "owner": owner, "token": token, "reserved": True}


def release_artefact_id(sm: SecurityManager, actor: Identity, name: str, owner: str | None = None) -> dict[str, Any]:
    """Undo a reservation (and an image ID signed for it) after the MP's registration failed."""
    check_name(name, "artefact ID")
    with sm.transaction() as session:
        artefact = found(session.get(Artefact, name), "artefact", name)
        check_acting_for(actor, artefact, owner)
        in_use = session.scalar(select(func.count()).select_from(PipelineStage)
                                .where(PipelineStage.artefact_id == name)) or 0
        in_use += session.scalar(select(func.count()).select_from(Licence).where(Licence.artefact_id == name)) or 0
        if in_use:
            raise ConflictError(f"artefact {name} is in use by pipelines or licences; revoke it instead",
                                check="in-use")
        images = _image_count(session, name)
        session.execute(delete(Image).where(Image.artefact_id == name))
        session.delete(artefact)
        sm.audit(session, actor, "artefact-id-released", name, images=images)
    return {"artefact_id": name, "released": True, "images": images}


def register_artefact_signing(app: Flask, sm: SecurityManager, auth: Authenticator) -> None:
    """Add the artefact-ID phase of remote registration to the SM's app."""

    def view(rule: str, methods: list[str], roles: tuple[Role, ...],
             handler: Callable[..., tuple[Any, int] | Response]) -> None:
        def wrapped(**kwargs: Any) -> Any:
            peer = auth.peer(roles)
            result = handler(peer.identity, **kwargs)
            if isinstance(result, Response):
                return result
            body, status = result
            return jsonify(body), status

        wrapped.__name__ = f"artefact_signing_{handler.__name__}"
        app.add_url_rule(rule, view_func=wrapped, methods=methods)

    def reserve(actor: Identity) -> tuple[dict[str, Any], int]:
        body = json_body()  # {"name", "owner"} and nothing else: the ReserveArtefactId schema
        return reserve_artefact_id(sm, actor, body["name"], body["owner"]), 201

    def release(actor: Identity, name: str) -> tuple[dict[str, Any], int]:
        return release_artefact_id(sm, actor, name, request.args.get("owner")), 200

    def chain(_actor: Identity) -> Response:
        return Response(chain_pem([sm.ca.root, sm.ca.intermediate]), mimetype="application/x-pem-file")

    view("/v1/artefact-ids", ["POST"], (Role.MARKETPLACE,), reserve)
    view("/v1/artefact-ids/<name>", ["DELETE"], (Role.MARKETPLACE, Role.ADMIN), release)
    view("/v1/ca/chain", ["GET"], ANY_ROLE, chain)
