"""The SM on a real PostgreSQL server (started here): migrations, the whole protocol, the audit chain."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from postgres_server import PostgresServer, start_postgres
from sm_fixtures import World, build_lab, launch_sm
from sm_testlib import check_error, check_response, free_port, nonce, stop
from sqlalchemy import create_engine, inspect

from bonseyes_py.sm.db import upgrade_database
from bonseyes_py.sm.models import Base

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    server = start_postgres(free_port())
    yield server
    server.stop()


def test_migrations_create_the_schema_and_are_idempotent(postgres: PostgresServer) -> None:
    url = postgres.create_database("migrations")
    upgrade_database(url)
    upgrade_database(url)
    engine = create_engine(url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"users", "hosts", "licences", "audit_log", "audit_head", "alembic_version"} <= tables
    # Every model's table, pipeline_runtimes (migration 0003) and sm_state (0004) included.
    assert set(Base.metadata.tables) | {"alembic_version"} <= tables
    assert {"pipeline_runtimes", "sm_state"} <= tables


def test_protocol_on_postgres(postgres: PostgresServer, tmp_path: Path) -> None:
    server = launch_sm(tmp_path / "sm", database_url=postgres.create_database("sm"))
    world = World(server, tmp_path / "world")
    try:
        lab = build_lab(world, terms={"max_instances": 2}, ip="127.0.0.6")
        request = lab.licence_request(nonce())
        first = check_response(lab.host.client.post("/v1/licences/host", request), "POST", "/v1/licences/host", 201)
        assert lab.host.client.post("/v1/licences/host", request).json() == first
        check_error(lab.host.client.post("/v1/licences/host", {**request, "user_id": "admin"}), 409, "nonce-replay")
        check_response(lab.host.client.post("/v1/licences/host", lab.licence_request(nonce())),
                       "POST", "/v1/licences/host", 201)
        check_error(lab.host.client.post("/v1/licences/host", lab.licence_request(nonce())), 403, "policy-denied")
        runtime = world.runtime(first)
        check_response(runtime.client.post("/v1/licences/artefact", {
            "host_licence": first["licence"], "artefact_id": lab.artefact["artefact_id"]}),
            "POST", "/v1/licences/artefact", 201)
        report = check_response(world.admin.get("/v1/audit/verify"), "GET", "/v1/audit/verify", 200)
        assert report["ok"], report
        assert report["entries"] > 5
    finally:
        world.close()
        stop(server.process)
