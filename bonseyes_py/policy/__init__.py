"""Attribute-based policy decision point (Cedar) for pipelines, host and artefact licences."""

from __future__ import annotations

from bonseyes_py.policy.engine import DEFAULT_POLICY, PolicyEngine
from bonseyes_py.policy.model import (
    Action,
    ArtefactAttributes,
    Decision,
    HostAttributes,
    PremiseAttributes,
    RequestContext,
    UserAttributes,
    policy_revision,
)

__all__ = [
    "DEFAULT_POLICY",
    "Action",
    "ArtefactAttributes",
    "Decision",
    "HostAttributes",
    "PolicyEngine",
    "PremiseAttributes",
    "RequestContext",
    "UserAttributes",
    "policy_revision",
]
