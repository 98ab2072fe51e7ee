"""The policy decision point with the real Cedar engine: every allow path, every deny reason.

Each deny case changes one attribute of an otherwise allowed request and checks that exactly the
forbid named for that reason decided, so ``determining_policies`` is a reason an operator can read.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bonseyes_py.errors import InputError, PolicyDenied, PolicyError
from bonseyes_py.policy import (
    DEFAULT_POLICY,
    Action,
    ArtefactAttributes,
    Decision,
    HostAttributes,
    PolicyEngine,
    PremiseAttributes,
    RequestContext,
    UserAttributes,
    policy_revision,
)

NOW = 1_700_000_000
LICENCE_ACTIONS = (Action.ISSUE_HOST_LICENCE, Action.ISSUE_ARTEFACT_LICENCE)


@pytest.fixture(scope="module")
def engine() -> PolicyEngine:
    return PolicyEngine()


def licence_request(**changes: Any) -> dict[str, Any]:
    """An allowed licence request: member user, available GPU host in the premise, bounded artefact."""
    request: dict[str, Any] = {
        "user": UserAttributes("alice", "ACME"),
        "host": HostAttributes("host-1", "bob", ("vp1", "vp2"), gpu_count=2, gpu_models=("A100", "A100")),
        "artefact": ArtefactAttributes(
            "artefact-1",
            "carol",
            requires_gpu=True,
            max_instances=3,
            allowed_premises=("vp1",),
            not_before=NOW - 60,
            not_after=NOW + 60,
        ),
        "premise": PremiseAttributes("vp1", ("alice", "dave")),
        "context": RequestContext(now=NOW, host_ip="127.0.0.2", running_instances=2),
    }
    for name, fields in changes.items():
        request[name] = dataclasses.replace(request[name], **fields)
    return request


def pipeline_request(**changes: Any) -> dict[str, Any]:
    request = licence_request(**changes)
    request["host"] = None
    request["artefact"] = None
    return request


# Allow paths.


def test_member_may_request_pipeline(engine: PolicyEngine) -> None:
    decision = engine.decide(DEFAULT_POLICY, Action.REQUEST_PIPELINE, **pipeline_request())
    assert decision == Decision(
        True, Action.REQUEST_PIPELINE, ("pipeline-member",), (), policy_revision(DEFAULT_POLICY)
    )


@pytest.mark.parametrize("action", LICENCE_ACTIONS)
@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({}, id="bounded-gpu-artefact"),
        pytest.param({"context": {"now": NOW - 60}}, id="at-not-before"),
        pytest.param({"context": {"now": NOW + 60}}, id="at-not-after"),
        pytest.param({"artefact": {"not_before": 0, "not_after": 0}, "context": {"now": 1}}, id="open-window"),
        pytest.param({"artefact": {"max_instances": 0}, "context": {"running_instances": 10_000}}, id="unlimited"),
        pytest.param({"artefact": {"allowed_premises": ()}}, id="any-premise"),
        pytest.param({"artefact": {"requires_gpu": False}, "host": {"gpu_count": 0}}, id="cpu-artefact-cpu-host"),
    ],
)
def test_licence_allowed(engine: PolicyEngine, action: Action, changes: dict[str, Any]) -> None:
    decision = engine.authorize(DEFAULT_POLICY, action, **licence_request(**changes))
    assert decision.allowed
    assert decision.action is action
    assert decision.determining_policies == ("licence-member",)
    assert decision.errors == ()


# Deny reasons: one attribute off, exactly one forbid decides.


def test_non_member_may_not_request_pipeline(engine: PolicyEngine) -> None:
    request = pipeline_request(user={"user_id": "mallory"})
    decision = engine.decide(DEFAULT_POLICY, Action.REQUEST_PIPELINE, **request)
    assert not decision.allowed
    assert decision.determining_policies == ("pipeline-non-member",)
    with pytest.raises(PolicyDenied) as denied:
        engine.authorize(DEFAULT_POLICY, Action.REQUEST_PIPELINE, **request)
    assert str(denied.value) == (
        "policy-denied: request_pipeline denied for user mallory on premise vp1: "
        "forbidden by policy pipeline-non-member"
    )


@pytest.mark.parametrize("action", LICENCE_ACTIONS)
@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        pytest.param({"user": {"user_id": "mallory"}}, "licence-non-member", id="non-member"),
        pytest.param({"host": {"premises": ("vp2",)}}, "host-not-in-premise", id="host-not-in-premise"),
        pytest.param({"host": {"available": False}}, "host-unavailable", id="host-unavailable"),
        pytest.param({"host": {"gpu_count": 0, "gpu_models": ()}}, "gpu-required", id="gpu-required"),
        pytest.param({"context": {"running_instances": 3}}, "instances-exhausted", id="instances-exhausted"),
        pytest.param({"context": {"now": NOW - 61}}, "before-window", id="before-window"),
        pytest.param({"context": {"now": NOW + 61}}, "after-window", id="after-window"),
        pytest.param({"artefact": {"allowed_premises": ("vp2",)}}, "premise-not-allowed", id="premise-not-allowed"),
    ],
)
def test_licence_denied(engine: PolicyEngine, action: Action, changes: dict[str, Any], reason: str) -> None:
    request = licence_request(**changes)
    decision = engine.decide(DEFAULT_POLICY, action, **request)
    assert not decision.allowed
    assert decision.determining_policies == (reason,)
    assert decision.errors == ()
    assert decision.policy_revision == policy_revision(DEFAULT_POLICY)
    with pytest.raises(PolicyDenied) as denied:
        engine.authorize(DEFAULT_POLICY, action, **request)
    user_id = request["user"].user_id
    assert str(denied.value) == (
        f"policy-denied: {action.value} denied for user {user_id} on host host-1 / artefact artefact-1 "
        f"in premise vp1: forbidden by policy {reason}"
    )


def test_every_failed_limit_is_named_in_policy_order(engine: PolicyEngine) -> None:
    request = licence_request(host={"available": False}, context={"running_instances": 99})
    decision = engine.decide(DEFAULT_POLICY, Action.ISSUE_HOST_LICENCE, **request)
    assert decision.determining_policies == ("host-unavailable", "instances-exhausted")


@pytest.mark.parametrize("action", LICENCE_ACTIONS)
def test_licence_without_host_or_artefact_is_denied_with_an_error(engine: PolicyEngine, action: Action) -> None:
    request = licence_request()
    request["host"] = None
    decision = engine.decide(DEFAULT_POLICY, action, **request)
    assert not decision.allowed
    assert decision.errors == (
        f"request does not fit the policy schema: {action.value} needs both a host and an artefact",
    )
    with pytest.raises(PolicyDenied, match="evaluation failed: request does not fit"):
        engine.authorize(DEFAULT_POLICY, action, **request)


def test_value_outside_cedar_long_is_denied_with_an_error(engine: PolicyEngine) -> None:
    decision = engine.decide(DEFAULT_POLICY, Action.ISSUE_HOST_LICENCE, **licence_request(context={"now": 2**63}))
    assert not decision.allowed
    assert decision.errors
    assert decision.errors[0].startswith("failed to build request")


def test_unknown_action_is_an_input_error(engine: PolicyEngine) -> None:
    with pytest.raises(InputError, match="unknown policy action 'delete_everything'"):
        engine.decide(DEFAULT_POLICY, "delete_everything", **pipeline_request())  # type: ignore[arg-type]


# Custom policies.

ACME_ONLY_ON_X = (
    DEFAULT_POLICY
    + """
@id("acme-only-on-x")
forbid (principal, action == Bonseyes::Action::"request_pipeline", resource == Bonseyes::Premise::"X")
unless { principal.organisation == "ACME" };
"""
)


def test_custom_policy_takes_effect(engine: PolicyEngine) -> None:
    engine.validate(ACME_ONLY_ON_X)
    on_x = {"premise": {"name": "X"}}
    acme = engine.decide(ACME_ONLY_ON_X, Action.REQUEST_PIPELINE, **pipeline_request(**on_x))
    assert acme.allowed
    assert acme.policy_revision == policy_revision(ACME_ONLY_ON_X) != policy_revision(DEFAULT_POLICY)
    other = pipeline_request(premise={"name": "X"}, user={"organisation": "Initech"})
    decision = engine.decide(ACME_ONLY_ON_X, Action.REQUEST_PIPELINE, **other)
    assert not decision.allowed
    assert decision.determining_policies == ("acme-only-on-x",)
    # The same user on another premise is untouched, and the baseline alone still allows it on X.
    elsewhere = pipeline_request(user={"organisation": "Initech"})
    assert engine.decide(ACME_ONLY_ON_X, Action.REQUEST_PIPELINE, **elsewhere).allowed
    assert engine.decide(DEFAULT_POLICY, Action.REQUEST_PIPELINE, **other).allowed


def test_policy_without_permits_denies_with_no_determining_policy(engine: PolicyEngine) -> None:
    text = '@id("nothing") forbid (principal, action, resource) when { false };'
    decision = engine.decide(text, Action.REQUEST_PIPELINE, **pipeline_request())
    assert decision == Decision(False, Action.REQUEST_PIPELINE, (), (), policy_revision(text))
    with pytest.raises(
        PolicyDenied, match="request_pipeline denied for user alice on premise vp1: no policy permits it"
    ):
        engine.authorize(text, Action.REQUEST_PIPELINE, **pipeline_request())


# Validation.


def test_default_policy_validates(engine: PolicyEngine) -> None:
    engine.validate(DEFAULT_POLICY)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "permit (principal, action, resource) when { ",
            "policy: policy does not parse: unexpected end of input",
            id="syntax",
        ),
        pytest.param(
            '@id("typo") permit (principal, action == Bonseyes::Action::"request_pipeline", resource)'
            ' when { principal.organization == "ACME" };',
            "policy: policy does not validate against the schema: policy 'typo': for policy `policy0`, "
            "attribute `organization` on entity type `Bonseyes::User` not found",
            id="unknown-attribute",
        ),
        pytest.param(
            '@id("wrong-type") permit (principal, action == Bonseyes::Action::"issue_host_licence", resource)'
            ' when { context.now == "yesterday" };',
            "policy: policy does not validate against the schema: policy 'wrong-type': "
            "the types Long and String are not compatible",
            id="wrong-type",
        ),
        pytest.param(
            'permit (principal, action == Bonseyes::Action::"fly", resource);',
            None,
            id="unknown-action",
        ),
        pytest.param("", "policy: policy text is empty", id="empty"),
        pytest.param("  \n\t", "policy: policy text is empty", id="blank"),
        pytest.param("// just a comment\n", "policy: policy text holds no policies", id="comments-only"),
        pytest.param(
            "permit (principal, action, resource);" + " " * 256 * 1024,
            "policy: policy text is 262181 bytes, over the limit of 262144",
            id="oversized",
        ),
        pytest.param("permit (principal, action, resource); // \ud800", None, id="not-utf8"),
    ],
)
def test_validate_refuses(engine: PolicyEngine, text: str, message: str | None) -> None:
    with pytest.raises(PolicyError) as refused:
        engine.validate(text)
    assert refused.value.check == "policy"
    assert "\n" not in str(refused.value)
    if message is not None:
        assert str(refused.value) == message
    # decide() refuses the same text the same way instead of deciding with it.
    with pytest.raises(PolicyError):
        engine.decide(text, Action.REQUEST_PIPELINE, **pipeline_request())


def test_schema_that_does_not_parse_is_refused() -> None:
    with pytest.raises(PolicyError, match="schema does not parse"):
        PolicyEngine("namespace Bonseyes { entity }")


def test_policy_revision_is_sha256_of_utf8() -> None:
    assert policy_revision("abc") == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert policy_revision("\u00e9") == "sha256:" + hashlib.sha256(b"\xc3\xa9").hexdigest()


# Property: whatever the attributes, decide() answers with a Decision and never allows on an error.

names = st.text(max_size=12)
longs = st.one_of(st.integers(min_value=-(2**63), max_value=2**63 - 1), st.integers())
name_tuples = st.lists(st.sampled_from(["vp1", "vp2", "X", ""]) | names, max_size=3).map(tuple)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    action=st.sampled_from(list(Action)),
    user=st.builds(UserAttributes, user_id=names, organisation=names),
    host=st.none()
    | st.builds(
        HostAttributes,
        host_id=names,
        owner=names,
        premises=name_tuples,
        gpu_count=longs,
        gpu_models=name_tuples,
        available=st.booleans(),
    ),
    artefact=st.none()
    | st.builds(
        ArtefactAttributes,
        artefact_id=names,
        owner=names,
        requires_gpu=st.booleans(),
        max_instances=longs,
        allowed_premises=name_tuples,
        not_before=longs,
        not_after=longs,
    ),
    premise=st.builds(PremiseAttributes, name=st.sampled_from(["vp1", "X"]) | names, members=name_tuples),
    context=st.builds(RequestContext, now=longs, host_ip=names, running_instances=longs),
)
def test_decide_always_answers(
    engine: PolicyEngine,
    action: Action,
    user: UserAttributes,
    host: HostAttributes | None,
    artefact: ArtefactAttributes | None,
    premise: PremiseAttributes,
    context: RequestContext,
) -> None:
    decision = engine.decide(
        DEFAULT_POLICY, action, user=user, host=host, artefact=artefact, premise=premise, context=context
    )
    assert isinstance(decision, Decision)
    assert decision.action is action
    assert decision.policy_revision == policy_revision(DEFAULT_POLICY)
    if decision.errors:
        assert not decision.allowed
    if decision.allowed:
        assert user.user_id in premise.members
        if action is not Action.REQUEST_PIPELINE:
            assert host is not None
            assert host.available
            assert premise.name in host.premises


def test_nesting_beyond_the_limit_is_refused_before_cedar_parses(engine: PolicyEngine) -> None:
    """Cedar segfaults on ~1000 nested brackets; the engine must refuse such a text with a PolicyError."""
    deep = 'permit (principal, action, resource) when { ' + "(" * 2_000 + "true" + ")" * 2_000 + " };"
    with pytest.raises(PolicyError, match="nests brackets deeper than 64"):
        engine.validate(deep)


def test_brackets_in_strings_and_comments_do_not_count_and_the_scan_is_linear() -> None:
    from bonseyes_py.policy.engine import policy_nesting

    assert policy_nesting('permit (principal, action, resource) when { ("((((" == "[") }; // ((((\n') == 2
    # An unterminated string followed by many escaped quotes: linear, not one scan per quote.
    assert policy_nesting('"' + '\\"' * 200_000 + "(((") == 0
    assert policy_nesting("(" * 10_000, limit=64) == 65
