"""Turn the attribute dataclasses into one Cedar request plus its entity slice.

Representation (it must match ``bonseyes.cedarschema``):

- Every entity's Cedar id is its natural key (``user_id``, ``host_id``, ``artefact_id``, premise
  ``name``); the other fields become attributes. User and Host also list the premise as a parent
  when they belong to it, so policies can write ``principal in resource`` or
  ``context.host in context.premise``.
- ``request_pipeline`` has no host or artefact yet (step 3 happens before any licence), so its
  resource is the Premise and its context holds only ``now``, ``host_ip``, ``running_instances``.
- ``issue_host_licence`` / ``issue_artefact_licence``: the resource is the Artefact; the Host and
  the Premise are entities referenced from the context (``context.host``, ``context.premise``),
  because a Cedar request names exactly one resource.

Ids go through the JSON ``{"type", "id"}`` form, never Cedar surface syntax, so any string (quotes,
newlines) is an id and cannot inject policy text.
"""

from __future__ import annotations

from typing import Any

from bonseyes_py.policy.model import (
    Action,
    ArtefactAttributes,
    HostAttributes,
    PremiseAttributes,
    RequestContext,
    UserAttributes,
)

NAMESPACE = "Bonseyes"


def _uid(kind: str, entity_id: str) -> dict[str, str]:
    return {"type": f"{NAMESPACE}::{kind}", "id": entity_id}


def _user_ref(user_id: str) -> dict[str, Any]:
    # Entity references inside attributes need the explicit "__entity" escape in Cedar JSON.
    return {"__entity": _uid("User", user_id)}


def _premise_ref(name: str) -> dict[str, Any]:
    return {"__entity": _uid("Premise", name)}


def build_request(
    action: Action,
    *,
    user: UserAttributes,
    host: HostAttributes | None,
    artefact: ArtefactAttributes | None,
    premise: PremiseAttributes,
    context: RequestContext,
) -> dict[str, Any]:
    """Return the Cedar request (principal, action, resource, context) for ``cedarpy.is_authorized``.

    Raises ``ValueError`` when a licence action lacks its host or artefact: the engine reports
    that as a denied decision rather than guessing.
    """
    cedar_context: dict[str, Any] = {
        "now": context.now,
        "host_ip": context.host_ip,
        "running_instances": context.running_instances,
    }
    if action is Action.REQUEST_PIPELINE:
        resource = _uid("Premise", premise.name)
    else:
        if host is None or artefact is None:
            raise ValueError(f"{action.value} needs both a host and an artefact")
        resource = _uid("Artefact", artefact.artefact_id)
        cedar_context["host"] = {"__entity": _uid("Host", host.host_id)}
        cedar_context["premise"] = _premise_ref(premise.name)
    return {
        "principal": _uid("User", user.user_id),
        "action": _uid("Action", action.value),
        "resource": resource,
        "context": cedar_context,
    }


def build_entities(
    user: UserAttributes,
    host: HostAttributes | None,
    artefact: ArtefactAttributes | None,
    premise: PremiseAttributes,
) -> list[dict[str, Any]]:
    """Return the entity slice a decision needs, in Cedar JSON form.

    It depends only on the parties, not on the moment, so the engine can parse it once and reuse
    the handle while the same user, host, artefact and premise come back.
    """
    premise_uid = _uid("Premise", premise.name)
    entities: list[dict[str, Any]] = [
        {
            "uid": _uid("User", user.user_id),
            "attrs": {"organisation": user.organisation},
            "parents": [premise_uid] if user.user_id in premise.members else [],
        },
        {
            "uid": premise_uid,
            "attrs": {"members": [_user_ref(member) for member in premise.members]},
            "parents": [],
        },
    ]
    if host is not None:
        entities.append(
            {
                "uid": _uid("Host", host.host_id),
                "attrs": {
                    "owner": _user_ref(host.owner),
                    "premises": [_premise_ref(name) for name in host.premises],
                    "gpu_count": host.gpu_count,
                    "gpu_models": list(host.gpu_models),
                    "available": host.available,
                },
                # Every premise of the host is a parent, so policies may name other premises too;
                # Cedar accepts parents that the entity slice does not define.
                "parents": [_uid("Premise", name) for name in dict.fromkeys(host.premises)],
            }
        )
    if artefact is not None:
        entities.append(
            {
                "uid": _uid("Artefact", artefact.artefact_id),
                "attrs": {
                    "owner": _user_ref(artefact.owner),
                    "requires_gpu": artefact.requires_gpu,
                    "max_instances": artefact.max_instances,
                    "allowed_premises": [_premise_ref(name) for name in artefact.allowed_premises],
                    "allowed_hosts": [{"__entity": _uid("Host", name)} for name in artefact.allowed_hosts],
                    "not_before": artefact.not_before,
                    "not_after": artefact.not_after,
                },
                "parents": [],
            }
        )
    return entities
