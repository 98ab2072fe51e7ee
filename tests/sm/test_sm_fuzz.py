"""Fuzz every operation of the SM from its own OpenAPI document (schemathesis): never a 5xx.

The fuzzer runs against an SM of its own (revocations it generates must not touch other tests'
records) and speaks, for each operation, as an identity whose role the operation accepts, so the
generated bodies reach the handlers instead of stopping at the role check. Examples are bounded so
the whole run stays well under a minute.
"""

from __future__ import annotations

from pathlib import Path

import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from sm_fixtures import World, launch_sm
from sm_testlib import stop

EXAMPLES_PER_OPERATION = 25


def run_operation(operation: object, client: object, base_url: str, root: str, session: requests.Session,
                  failures: list[str], statuses: list[int]) -> None:
    cert = (str(client.cert), str(client.key))  # type: ignore[attr-defined]

    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())  # type: ignore[attr-defined]
    def run(case: schemathesis.Case) -> None:
        response = case.call(base_url=base_url, session=session, timeout=30, cert=cert, verify=root)
        statuses.append(response.status_code)
        if response.status_code >= 500:
            failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}")

    run()


def test_fuzz_api_from_its_openapi_document(tmp_path: Path) -> None:
    server = launch_sm(tmp_path / "sm")
    world = World(server, tmp_path / "world")
    try:
        user = world.enrol_user()
        host = world.register_host(user, ip="127.0.0.1")
        world.heartbeat(host)
        marketplace = world.marketplace()
        admin = world.admin
        by_role = {"admin": admin, "user": user.client, "host": host.client, "marketplace": marketplace.client}
        document = admin.get("/openapi.json").json()
        schema = schemathesis.openapi.from_dict(document)
        session = requests.Session()
        failures: list[str] = []
        statuses: list[int] = []
        for result in schema.get_all_operations():
            operation = result.ok()
            roles = operation.definition.raw.get("x-roles", ["admin"])
            client = next((by_role[r] for r in roles if r in by_role), admin)

            run_operation(operation, client, server.base_url, str(server.root), session, failures, statuses)
        assert failures == [], "\n".join(failures)
        operations = len(document["paths"])
        assert len(statuses) > 3 * operations, f"only {len(statuses)} requests were generated"
        assert any(200 <= status < 300 for status in statuses)
        assert "Traceback" not in server.log.read_text()
    finally:
        world.close()
        stop(server.process)
