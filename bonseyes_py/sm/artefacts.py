"""Artefact records (step 1): the SM signs the artefact ID and the image ID the Marketplace asks for.

The Marketplace (role ``marketplace``) registers an artefact once it has vetted the image and
added BL: the SM signs the human-readable artefact ID (bound to its owner) and the image ID (the
OCI manifest digest of the final image, bound to the artefact). Both tokens are stored and
returned; the Marketplace bakes them into the image. The artefact's licence terms (GPU, instance
limit, allowed premises and hosts, time window, licence lifetime) are attributes the policy reads.

Who may change an artefact (``check_acting_for``): an admin any; a marketplace only an artefact it
created itself (``created_by``, set when it reserved the ID or registered the artefact), and only
when its request names the owner it acts for, which must be the artefact's owner.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from bonseyes_py.errors import InputError
from bonseyes_py.identity.ids import check_digest, sign_artefact_id, sign_image_id
from bonseyes_py.pki.roles import Identity, Role, check_name
from bonseyes_py.policy import ArtefactAttributes
from bonseyes_py.sm.core import Forbidden, SMCore, check_int, check_str_list, found, require
from bonseyes_py.sm.models import Artefact, Image, User
from bonseyes_py.web.errors import ConflictError

TERM_NAMES = ("requires_gpu", "max_instances", "allowed_premises", "allowed_hosts", "not_before", "not_after",
              "licence_seconds")


def check_terms(terms: Any) -> dict[str, Any]:
    if not isinstance(terms, dict):
        raise InputError("terms must be an object", check="terms")
    unknown = set(terms) - set(TERM_NAMES)
    if unknown:
        raise InputError(f"unknown terms {sorted(unknown)}; known: {', '.join(TERM_NAMES)}", check="terms")
    checked: dict[str, Any] = {}
    if "requires_gpu" in terms:
        if not isinstance(terms["requires_gpu"], bool):
            raise InputError("requires_gpu must be a boolean", check="terms")
        checked["requires_gpu"] = terms["requires_gpu"]
    for name in ("max_instances", "not_before", "not_after", "licence_seconds"):
        if name in terms:
            checked[name] = check_int(terms[name], name, maximum=2**40)
    if "allowed_premises" in terms:
        checked["allowed_premises"] = [check_name(p, "premise") for p in
                                       check_str_list(terms["allowed_premises"], "allowed premises", limit=100)]
    if "allowed_hosts" in terms:
        checked["allowed_hosts"] = [check_name(h, "host ID") for h in
                                    check_str_list(terms["allowed_hosts"], "allowed hosts", limit=1000)]
    if checked.get("not_before") and checked.get("not_after") and checked["not_after"] <= checked["not_before"]:
        raise InputError("not_after must be later than not_before", check="terms")
    return checked


def artefact_attributes(artefact: Artefact) -> ArtefactAttributes:
    return ArtefactAttributes(artefact_id=artefact.artefact_id, owner=artefact.owner,
                              requires_gpu=artefact.requires_gpu, max_instances=artefact.max_instances,
                              allowed_premises=tuple(artefact.allowed_premises),
                              allowed_hosts=tuple(artefact.allowed_hosts or ()), not_before=artefact.not_before,
                              not_after=artefact.not_after)


def check_acting_for(actor: Identity, artefact: Artefact, owner: Any) -> None:
    """Refuse unless ``actor`` may change ``artefact`` on behalf of ``owner`` (see the module docstring)."""
    if owner is not None:
        check_name(owner, "owner")
    if actor.role is not Role.ADMIN:
        require(actor.role is Role.MARKETPLACE,
                Forbidden(f"{actor.uri} may not change artefacts", check="role"))
        require(owner is not None,
                InputError("owner is required: name the owner of the artefact this marketplace acts for",
                           check="owner"))
        require(artefact.created_by == actor.uri,
                Forbidden(f"artefact {artefact.artefact_id} was not registered by {actor.uri}",
                          check="artefact-creator"))
    require(owner is None or owner == artefact.owner,
            Forbidden(f"artefact {artefact.artefact_id} is not owned by {owner}", check="artefact-owner"))


def artefact_view(artefact: Artefact, images: list[Image]) -> dict[str, Any]:
    return {"artefact_id": artefact.artefact_id, "owner": artefact.owner,
            "artefact_id_token": artefact.artefact_id_token, "revoked": artefact.revoked,
            "terms": {name: getattr(artefact, name) for name in TERM_NAMES},
            "images": [{"digest": i.digest, "image_id_token": i.image_id_token} for i in images]}


class ArtefactOperations(SMCore):
    @property
    def _signer_uri(self) -> str:
        return self.issuer.issuer_uri

    def register_artefact(self, actor: Identity, artefact_id: str, owner: str, digest: str,
                          terms: dict[str, Any] | None = None) -> dict[str, Any]:
        check_name(artefact_id, "artefact ID")
        check_name(owner, "owner")
        check_digest(digest)
        checked = check_terms(terms or {})
        artefact_token = sign_artefact_id(self.issuer.signer, self._signer_uri, artefact_id, owner)
        image_token = sign_image_id(self.issuer.signer, self._signer_uri, digest, artefact_id)
        with self.transaction() as session:
            user = found(session.get(User, owner), "owner", owner)
            require(not user.revoked, Forbidden(f"owner {owner} is revoked", check="revoked"))
            if session.get(Artefact, artefact_id) is not None:
                raise ConflictError(f"artefact {artefact_id!r} already exists; add images to it instead",
                                    check="artefact-exists")
            if session.get(Image, digest) is not None:
                raise ConflictError(f"image {digest} is already registered", check="image-exists")
            artefact = Artefact(artefact_id=artefact_id, owner=owner, artefact_id_token=artefact_token,
                                revoked=False, created_by=actor.uri, created_at=self.now(),
                                **{"requires_gpu": False, "max_instances": 0, "allowed_premises": [],
                                   "allowed_hosts": [], "not_before": 0, "not_after": 0, "licence_seconds": 0,
                                   **checked})
            session.add(artefact)
            session.flush()
            image = Image(digest=digest, artefact_id=artefact_id, image_id_token=image_token, created_at=self.now())
            session.add(image)
            self.audit(session, actor, "artefact-registered", artefact_id, owner=owner, digest=digest, terms=checked)
            return artefact_view(artefact, [image])

    def add_image(self, actor: Identity, artefact_id: str, digest: str, *, owner: str | None = None) -> dict[str, Any]:
        check_digest(digest)
        image_token = sign_image_id(self.issuer.signer, self._signer_uri, digest, artefact_id)
        with self.transaction() as session:
            artefact = found(session.get(Artefact, artefact_id), "artefact", artefact_id)
            check_acting_for(actor, artefact, owner)
            require(not artefact.revoked, Forbidden(f"artefact {artefact_id} is revoked", check="revoked"))
            existing = session.get(Image, digest)
            if existing is not None:
                require(existing.artefact_id == artefact_id,
                        ConflictError(f"image {digest} belongs to another artefact", check="image-exists"))
                return {"digest": digest, "artefact_id": artefact_id, "image_id_token": existing.image_id_token}
            session.add(Image(digest=digest, artefact_id=artefact_id, image_id_token=image_token,
                              created_at=self.now()))
            self.audit(session, actor, "image-registered", artefact_id, digest=digest)
        return {"digest": digest, "artefact_id": artefact_id, "image_id_token": image_token}

    def set_artefact_terms(self, actor: Identity, artefact_id: str, terms: dict[str, Any], *,
                           owner: str | None = None) -> dict[str, Any]:
        checked = check_terms(terms)
        with self.transaction() as session:
            artefact = found(session.get(Artefact, artefact_id), "artefact", artefact_id)
            check_acting_for(actor, artefact, owner)
            for name, value in checked.items():
                setattr(artefact, name, value)
            self.audit(session, actor, "artefact-terms", artefact_id, terms=checked)
            return artefact_view(artefact, self._images(session, artefact_id))

    @staticmethod
    def _images(session: Any, artefact_id: str) -> list[Image]:
        return list(session.execute(select(Image).where(Image.artefact_id == artefact_id)
                                    .order_by(Image.created_at)).scalars())

    def get_artefact(self, actor: Identity, artefact_id: str) -> dict[str, Any]:
        with self.transaction() as session:
            artefact = found(session.get(Artefact, artefact_id), "artefact", artefact_id)
            if actor.role is Role.USER and actor.name != artefact.owner:
                view = artefact_view(artefact, self._images(session, artefact_id))
                view.pop("terms")  # Terms are the owner's business; IDs are public.
                return view
            return artefact_view(artefact, self._images(session, artefact_id))
