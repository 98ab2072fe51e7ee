"""Measure policy decisions per second on the licence hot path; run by hand, not in CI.

.venv/bin/python bench/policy_decisions.py [seconds]
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Any

from bonseyes_py.policy import (
    DEFAULT_POLICY,
    Action,
    ArtefactAttributes,
    HostAttributes,
    PolicyEngine,
    PremiseAttributes,
    RequestContext,
    UserAttributes,
)


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    engine = PolicyEngine()
    kwargs: dict[str, Any] = {
        "user": UserAttributes("alice", "ACME"),
        "host": HostAttributes("host-1", "bob", ("vp1", "vp2"), gpu_count=2, gpu_models=("A100", "A100")),
        "artefact": ArtefactAttributes(
            "artefact-1",
            "carol",
            requires_gpu=True,
            max_instances=8,
            allowed_premises=("vp1",),
            not_before=1,
            not_after=2**40,
        ),
        "premise": PremiseAttributes("vp1", (*(f"user-{i}" for i in range(50)), "alice")),
        "context": RequestContext(now=int(time.time()), host_ip="127.0.0.2", running_instances=3),
    }
    for action in (Action.ISSUE_HOST_LICENCE, Action.REQUEST_PIPELINE):
        assert engine.decide(DEFAULT_POLICY, action, **kwargs).allowed
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            engine.decide(DEFAULT_POLICY, action, **kwargs)
            count += 1
        report(f"{action.value}, same parties (entity cache hit)", count, time.perf_counter() - start)
    # A fresh artefact every call defeats the entity cache: the cost of a first decision.
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fresh = dataclasses.replace(kwargs["artefact"], artefact_id=f"artefact-{count}")
        engine.decide(DEFAULT_POLICY, Action.ISSUE_HOST_LICENCE, **{**kwargs, "artefact": fresh})
        count += 1
    report("issue_host_licence, new parties (entity cache miss)", count, time.perf_counter() - start)


def report(label: str, count: int, elapsed: float) -> None:
    print(f"{label}: {count / elapsed:,.0f} decisions/s ({elapsed / count * 1e6:.0f} us each)")


if __name__ == "__main__":
    main()
