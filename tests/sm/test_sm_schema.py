"""The served OpenAPI document covers every route of the app; alembic alone creates every table.

Routes are compared with the Flask URL map of an app built in-process (a route added without its
operation in ``bonseyes_py/sm/openapi.py`` would be invisible to clients and to the fuzzer). The
schema is compared with the SQLAlchemy models after ``alembic upgrade head`` on a fresh SQLite
database (PostgreSQL: ``test_sm_postgres.py``), and an older database whose ``pipeline_runtimes``
was created by ``create_all`` (before migration 0003) upgrades cleanly.
"""

from __future__ import annotations

import re
from pathlib import Path

from alembic import command
from sqlalchemy import create_engine, inspect

from bonseyes_py.sm import init_sm
from bonseyes_py.sm.app import create_app
from bonseyes_py.sm.db import alembic_config, upgrade_database
from bonseyes_py.sm.models import Base, PipelineRuntimeRecord
from bonseyes_py.sm.openapi import openapi_document

IGNORED_METHODS = {"HEAD", "OPTIONS"}


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_every_route_of_the_app_is_in_the_openapi_document(tmp_path: Path) -> None:
    app = create_app(init_sm(tmp_path / "sm"))
    try:
        routes = {(re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule), method.lower())
                  for rule in app.url_map.iter_rules() if rule.endpoint != "static"
                  for method in rule.methods or () if method not in IGNORED_METHODS}
        paths = openapi_document()["paths"]
        documented = {(path, method) for path, operations in paths.items() for method in operations}
        assert routes - documented == set(), "routes missing from the OpenAPI document"
        assert documented - routes == set(), "documented operations the app does not serve"
        assert ("/v1/artefact-ids", "post") in routes
        assert ("/v1/pipelines/{pipeline_id}/start", "post") in routes
    finally:
        app.extensions["bonseyes_sm"].close()


def test_alembic_upgrade_head_on_a_fresh_sqlite_database_creates_every_table(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    upgrade_database(url)
    upgrade_database(url)  # idempotent
    tables = _tables(url)
    assert set(Base.metadata.tables) <= tables
    assert {"pipeline_runtimes", "sm_state"} <= tables


def test_a_database_with_a_create_all_pipeline_runtimes_table_upgrades(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    config = alembic_config(url)
    command.upgrade(config, "0002")
    engine = create_engine(url)
    try:
        PipelineRuntimeRecord.__table__.create(engine)  # what ensure_table() did before migration 0003
    finally:
        engine.dispose()
    upgrade_database(url)
    assert set(Base.metadata.tables) <= _tables(url)
