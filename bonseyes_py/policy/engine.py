"""The attribute-based policy decision point: Cedar policies, validated against a schema.

The Security Manager asks one question per protocol step (request a pipeline, issue a host
licence, issue an artefact licence). The answer comes from a maintained engine (Cedar, through
``cedarpy``) over a policy text the operator controls, not from if/else chains in the service.

Two rules keep it hard to misuse:

- A policy text is parsed and validated against ``bonseyes.cedarschema`` before it is used at all;
  a typo in an attribute name is refused up front instead of silently never matching.
- Decisions fail closed: an evaluation error in any policy (which Cedar would otherwise skip, and
  a skipped forbid could turn into an allow) or request data Cedar cannot accept gives a denied
  ``Decision`` that carries the error.

Parsed handles are cached (the licence path is hot): the schema once per engine, policy sets per
policy text, and schema-checked entity slices per (user, host, artefact, premise), each in an LRU.
The attribute classes are frozen, so a changed attribute is a different key, never a stale hit.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from importlib import resources
from typing import Any

import cedarpy

from bonseyes_py.errors import InputError, PolicyDenied, PolicyError
from bonseyes_py.policy.cedar_request import build_entities, build_request
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
from bonseyes_py.safejson import bracket_nesting

MAX_POLICY_BYTES = 256 * 1024
# Cedar's parser recurses once per bracket level: about 1000 nested brackets crash the whole process (a
# segfault, not an exception), so texts are refused beyond this nesting before Cedar sees them.
MAX_POLICY_NESTING = 64
# A Cedar string (skipped whole; the closing quote optional so an unterminated one ends the scan in one
# step, keeping it linear), a // comment, or one bracket.
_POLICY_TOKEN = re.compile(r'"(?:[^"\\]++|\\.)*+"?|//[^\n]*|[(){}\[\]]', re.DOTALL)


def policy_nesting(text: str, limit: int | None = None) -> int:
    """The deepest nesting of ( [ { in a Cedar text, brackets in strings and comments ignored (linear)."""
    return bracket_nesting(text, _POLICY_TOKEN, limit)


_CACHE_SIZE = 16
_ENTITY_CACHE_SIZE = 1024


def _read_packaged(name: str) -> str:
    return resources.files("bonseyes_py.policy").joinpath(name).read_text(encoding="utf-8")


DEFAULT_POLICY: str = _read_packaged("default.cedar")
DEFAULT_SCHEMA: str = _read_packaged("bonseyes.cedarschema")


def _first_line(text: str) -> str:
    line = next((part.strip() for part in str(text).splitlines() if part.strip()), "")
    return line or "unknown error"


class PolicyEngine:
    """Validates Cedar policy texts and decides requests against them."""

    def __init__(self, schema_text: str | None = None) -> None:
        text = DEFAULT_SCHEMA if schema_text is None else schema_text
        try:
            self._schema = cedarpy.Schema.from_str(text)
        except ValueError as exc:
            raise PolicyError(f"schema does not parse: {_first_line(str(exc))}") from exc
        self._compiled: OrderedDict[str, tuple[cedarpy.PolicySet, str]] = OrderedDict()
        self._entity_cache: OrderedDict[tuple[Any, ...], cedarpy.Entities] = OrderedDict()
        self._lock = threading.Lock()

    def validate(self, policy_text: str) -> None:
        """Refuse a policy text that is empty, oversized, malformed or not valid for the schema."""
        self._compile(policy_text)

    def _compile(self, policy_text: str) -> tuple[cedarpy.PolicySet, str]:
        """Return the parsed policy set and revision of a validated text, from the cache if known."""
        with self._lock:
            cached = self._compiled.get(policy_text) if isinstance(policy_text, str) else None
            if cached is not None:
                self._compiled.move_to_end(policy_text)
                return cached
        compiled = self._check(policy_text)
        with self._lock:
            self._compiled[policy_text] = compiled
            while len(self._compiled) > _CACHE_SIZE:
                self._compiled.popitem(last=False)
        return compiled

    def _check(self, policy_text: str) -> tuple[cedarpy.PolicySet, str]:
        if not isinstance(policy_text, str):
            raise PolicyError(f"policy text must be a string, not {type(policy_text).__name__}")
        if not policy_text.strip():
            raise PolicyError("policy text is empty")
        try:
            size = len(policy_text.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise PolicyError(f"policy text is not valid UTF-8 at character {exc.start}") from exc
        if size > MAX_POLICY_BYTES:
            raise PolicyError(f"policy text is {size} bytes, over the limit of {MAX_POLICY_BYTES}")
        if policy_nesting(policy_text, MAX_POLICY_NESTING) > MAX_POLICY_NESTING:
            raise PolicyError(f"policy text nests brackets deeper than {MAX_POLICY_NESTING} levels")
        try:
            policy_set = cedarpy.PolicySet.from_str(policy_text)
        except ValueError as exc:
            raise PolicyError(f"policy does not parse: {_first_line(str(exc))}") from exc
        if len(policy_set) == 0:
            raise PolicyError("policy text holds no policies")
        result = cedarpy.validate_policies(policy_text, self._schema)
        if not result.validation_passed:
            first = result.errors[0] if result.errors else None
            if first is None:
                raise PolicyError("policy does not validate against the schema")
            name = result.id_annotations_by_policy_id.get(first.policy_id, first.policy_id)
            where = f"policy {name!r}: " if name else ""
            raise PolicyError(f"policy does not validate against the schema: {where}{_first_line(first.error)}")
        return policy_set, policy_revision(policy_text)

    def decide(
        self,
        policy_text: str,
        action: Action,
        *,
        user: UserAttributes,
        host: HostAttributes | None,
        artefact: ArtefactAttributes | None,
        premise: PremiseAttributes,
        context: RequestContext,
    ) -> Decision:
        """Decide one request; never allows on an error.

        Raises ``PolicyError`` when the policy text itself is refused (see ``validate``) and
        ``InputError`` for an unknown action; everything about the request data is answered with a
        ``Decision`` whose ``errors`` say what went wrong.
        """
        try:
            action = Action(action)
        except ValueError as exc:
            raise InputError(f"unknown policy action {action!r}") from exc
        policy_set, revision = self._compile(policy_text)

        if action is Action.REQUEST_PIPELINE:
            # The pipeline request names no host or artefact in Cedar; dropping them keeps the
            # entity cache keyed by what the decision actually reads.
            host, artefact = None, None
        try:
            request = build_request(action, user=user, host=host, artefact=artefact, premise=premise, context=context)
            entities = self._entities(user, host, artefact, premise)
            result = cedarpy.is_authorized(request, policy_set, entities, self._schema)
        except (ValueError, TypeError, AttributeError, OverflowError) as exc:
            error = f"request does not fit the policy schema: {_first_line(str(exc))}"
            return Decision(False, action, (), (error,), revision)
        diagnostics = result.diagnostics
        errors = tuple(_first_line(error) for error in diagnostics.errors)
        if errors:
            return Decision(False, action, (), errors, revision)
        names = diagnostics.id_annotations_by_reason
        # Cedar reports reasons in hash order; policy-text order keeps decisions reproducible.
        reasons = sorted(diagnostics.reasons, key=_text_order)
        determining = tuple(names.get(reason, reason) for reason in reasons)
        return Decision(result.allowed, action, determining, (), revision)

    def _entities(
        self,
        user: UserAttributes,
        host: HostAttributes | None,
        artefact: ArtefactAttributes | None,
        premise: PremiseAttributes,
    ) -> cedarpy.Entities:
        """Return the parsed, schema-checked entity slice, reusing it while the parties repeat.

        Loading entities is the largest share of a Cedar call; steps 4 and 6 of one pipeline, and
        the instances of one artefact, ask about the same parties again and again.
        """
        key: tuple[Any, ...] | None = (user, host, artefact, premise)
        try:
            hash(key)
        except TypeError:
            key = None  # Unhashable attribute values (lists passed for tuples): decide uncached.
        if key is not None:
            with self._lock:
                cached = self._entity_cache.get(key)
                if cached is not None:
                    self._entity_cache.move_to_end(key)
                    return cached
        entities = cedarpy.Entities.from_json_str(
            json.dumps(build_entities(user, host, artefact, premise)), self._schema
        )
        if key is not None:
            with self._lock:
                self._entity_cache[key] = entities
                while len(self._entity_cache) > _ENTITY_CACHE_SIZE:
                    self._entity_cache.popitem(last=False)
        return entities

    def authorize(self, policy_text: str, action: Action, **attributes: Any) -> Decision:
        """Like ``decide``, but raise ``PolicyDenied`` naming the reason unless allowed."""
        decision = self.decide(policy_text, action, **attributes)
        if decision.allowed:
            return decision
        if decision.errors:
            reason = f"evaluation failed: {decision.errors[0]}"
        elif decision.determining_policies:
            reason = "forbidden by policy " + ", ".join(decision.determining_policies)
        else:
            reason = "no policy permits it"
        raise PolicyDenied(f"{decision.action.value} denied for {_subject(**attributes)}: {reason}")


def _text_order(policy_id: str) -> tuple[int, str]:
    """Sort Cedar's positional ids (policy0, policy1, ...) in the order the policies were written."""
    suffix = policy_id.removeprefix("policy")
    return (int(suffix), policy_id) if suffix.isdigit() else (1 << 62, policy_id)


def _subject(
    *,
    user: UserAttributes,
    host: HostAttributes | None = None,
    artefact: ArtefactAttributes | None = None,
    premise: PremiseAttributes | None = None,
    **_: Any,
) -> str:
    """Say who asked for what, in the words an operator reads in a log."""
    where = f" in premise {premise.name}" if premise is not None else ""
    if host is None and artefact is None:
        return f"user {user.user_id} on premise {premise.name if premise else '-'}"
    host_id = host.host_id if host is not None else "-"
    artefact_id = artefact.artefact_id if artefact is not None else "-"
    return f"user {user.user_id} on host {host_id} / artefact {artefact_id}{where}"
