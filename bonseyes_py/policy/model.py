"""The vocabulary of the policy decision point: actions, attributes, decisions.

These plain, frozen dataclasses are what the Security Manager fills from its records and verified
TLS peers; the engine turns them into Cedar entities. Keeping them free of Cedar types means the
callers never build policy-engine data by hand.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass


class Action(str, enum.Enum):  # noqa: UP042 - the agreed interface; str() stays "Action.X"
    """The three decisions the paper's protocol asks the Security Manager to take."""

    REQUEST_PIPELINE = "request_pipeline"  # A user asks SM for a pipeline on a premise (step 3).
    ISSUE_HOST_LICENCE = "issue_host_licence"  # A BM asks for a host licence (step 4).
    ISSUE_ARTEFACT_LICENCE = "issue_artefact_licence"  # A BL asks for an artefact licence (step 6).


@dataclass(frozen=True)
class UserAttributes:
    """The user on whose behalf a pipeline runs."""

    user_id: str
    organisation: str = ""


@dataclass(frozen=True)
class HostAttributes:
    """A registered host, as the Security Manager knows it."""

    host_id: str
    owner: str  # user_id of the host owner
    premises: tuple[str, ...] = ()  # virtual premises the host belongs to
    gpu_count: int = 0
    gpu_models: tuple[str, ...] = ()
    available: bool = True  # marked available by step 2


@dataclass(frozen=True)
class ArtefactAttributes:
    """A registered artefact and the limits its owner set on it."""

    artefact_id: str
    owner: str
    requires_gpu: bool = False
    max_instances: int = 0  # 0 = unlimited
    allowed_premises: tuple[str, ...] = ()  # empty = any premise
    allowed_hosts: tuple[str, ...] = ()  # host_ids; empty = any host
    not_before: int = 0  # epoch seconds; 0 = no bound
    not_after: int = 0  # epoch seconds; 0 = no bound


@dataclass(frozen=True)
class PremiseAttributes:
    """A virtual premise and the users allowed to run pipelines on it."""

    name: str
    members: tuple[str, ...] = ()  # user_ids allowed to run pipelines on it


@dataclass(frozen=True)
class RequestContext:
    """Facts of the moment that are not attributes of any entity."""

    now: int  # epoch seconds
    host_ip: str = ""
    running_instances: int = 0  # instances of this artefact running now (for max_instances)


@dataclass(frozen=True)
class Decision:
    """The outcome of one decision, with enough to audit it later.

    ``determining_policies`` holds the ``@id`` annotations (or Cedar's positional ids when a policy
    has none) of the permits that allowed or the forbids that denied; ``policy_revision`` pins the
    exact policy text, so an audit log can tell which revision decided.
    """

    allowed: bool
    action: Action
    determining_policies: tuple[str, ...]
    errors: tuple[str, ...]
    policy_revision: str


def policy_revision(policy_text: str) -> str:
    """Name a policy text by its content, so decisions record exactly which text applied."""
    return "sha256:" + hashlib.sha256(policy_text.encode("utf-8")).hexdigest()
