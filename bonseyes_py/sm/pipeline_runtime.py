"""Steps 4 to 6 of a pipeline, driven by the SM across the BMs in parallel, and stopping it.

``request_pipeline`` (``pipelines.py``) ends after step 3 with a ``ready`` pipeline whose images
every BM fetched and the SM verified. ``start`` then asks every stage's BM, in parallel, to start
its runtime (``POST /v1/runtimes``): the BM gets a host licence (step 4), starts the container
(step 5) and answers once BL came back with an artefact licence (step 6). If any stage fails,
every BM of the pipeline is told to stop all its runtimes and the pipeline is ``aborted``, so no
stage keeps running on its own and no further licence is issued for it.

Stopping a pipeline (its user, an admin, or a start that failed) revokes, in the transaction that
changes its status, every unexpired host and artefact licence of its runtimes and their runtime
certificates, and republishes the CRL, with ``revocation.py``'s own helpers: the licence IDs appear
at ``GET /v1/licences/revoked`` and the certificates on the CRL at once, so a licence already issued
does not outlive the stop. A stopped or aborted pipeline keeps that status: stopping it again
changes nothing, tells its BMs to stop once more and answers with the status it has.

Per-stage progress lives in its own table (``pipeline_runtimes``, migration 0003), so ``status``
answers from any worker while a start is still running. Its writes take the SM's write lock
(``write_connection``) like every other write: on SQLite they would otherwise meet the licence
path's ``BEGIN IMMEDIATE`` transactions in SQLite's sleep-and-retry busy handler. They change
nothing the licence path reads, so they leave the write generation alone; stopping a pipeline
changes its status in an ordinary ``transaction`` (which increments it).

Stages reach each other at ``BONSEYES_NEXT`` (the next
stage's host IP and port) over mutual TLS with their runtime certificates.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from flask import Flask, Response, jsonify
from sqlalchemy import Table, delete, insert, select, update

from bonseyes_py import safejson
from bonseyes_py.errors import BonseyesError
from bonseyes_py.pki.roles import Identity, Role
from bonseyes_py.sm import audit
from bonseyes_py.sm.bm_client import BMConnections, BonseyesModuleEndpoint
from bonseyes_py.sm.core import found
from bonseyes_py.sm.models import Host, Licence, Pipeline, PipelineRuntimeRecord, PipelineStage
from bonseyes_py.sm.pipelines import TERMINAL_STATUSES, caller_pipeline
from bonseyes_py.sm.service import SecurityManager
from bonseyes_py.web.errors import ConflictError
from bonseyes_py.web.flaskapp import Authenticator, json_body

log = logging.getLogger(__name__)

START_TIMEOUT_SECONDS = 180.0
MAX_PARALLEL = 32
PORT_BASE = 20000

# Created by migration 0003 (it used to be created with create_all when a worker built its app).
runtimes_table = cast(Table, PipelineRuntimeRecord.__table__)


def stage_port(pipeline_id: str, position: int) -> int:
    """A port per stage, spread by pipeline so concurrent pipelines on one host rarely meet."""
    spread = int(hashlib.sha256(pipeline_id.encode()).hexdigest()[:8], 16) % 600
    return PORT_BASE + spread * 64 + position


class BMRuntimeClient:
    """SM -> BM calls of steps 4-6 with the SM's TLS identity, pinned to the host's certificate name."""

    def __init__(self, sm: SecurityManager, timeout: float = START_TIMEOUT_SECONDS) -> None:
        config = sm.config
        self.connections = BMConnections(config.tls_certificate, config.tls_key, config.ca_bundle, timeout=timeout)

    def post(self, endpoint: BonseyesModuleEndpoint, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.connections.post(endpoint, path, body)


class PipelineRuntime:
    def __init__(self, sm: SecurityManager) -> None:
        self.sm = sm
        self.client = BMRuntimeClient(sm)

    # -- reading ------------------------------------------------------------------------------------

    def _pipeline(self, actor: Identity, pipeline_id: str) -> tuple[Any, list[tuple[Any, Any]]]:
        with self.sm.reading() as session:
            pipeline = caller_pipeline(actor, session.get(Pipeline, pipeline_id), pipeline_id)
            stages = list(session.execute(select(PipelineStage, Host).join(Host, Host.host_id == PipelineStage.host_id)
                                          .where(PipelineStage.pipeline_id == pipeline_id)
                                          .order_by(PipelineStage.position)).tuples())
            session.expunge_all()
            return pipeline, stages

    def status(self, actor: Identity, pipeline_id: str) -> dict[str, Any]:
        pipeline, _ = self._pipeline(actor, pipeline_id)
        with self.sm.read_engine.connect() as connection:
            rows = connection.execute(select(runtimes_table).where(runtimes_table.c.pipeline_id == pipeline_id)
                                      .order_by(runtimes_table.c.position)).mappings().all()
        stages = [{**dict(row), "timings": safejson.loads(row["timings"] or "{}", what="stage timings")}
                  for row in rows]
        return {"pipeline_id": pipeline_id, "status": pipeline.status, "reason": pipeline.reason, "stages": stages}

    def _set(self, pipeline_id: str, position: int, **values: Any) -> None:
        with self.sm.write_connection() as connection:
            connection.execute(update(runtimes_table).where(runtimes_table.c.pipeline_id == pipeline_id,
                                                            runtimes_table.c.position == position)
                               .values(updated_at=time.time(), **values))

    # -- start (steps 4-6 on every BM, in parallel) ---------------------------------------------------

    def start(self, actor: Identity, pipeline_id: str) -> dict[str, Any]:
        pipeline, stages = self._pipeline(actor, pipeline_id)
        if pipeline.status != "ready":
            raise ConflictError(f"pipeline {pipeline_id} is {pipeline.status}, not ready", check="pipeline-state")
        with self.sm.write_connection() as connection:
            started = connection.execute(select(runtimes_table.c.position).where(
                runtimes_table.c.pipeline_id == pipeline_id)).first()
            if started is not None:
                raise ConflictError(f"pipeline {pipeline_id} was already started", check="pipeline-state")
            connection.execute(insert(runtimes_table), [
                {"pipeline_id": pipeline_id, "position": stage.position, "host_id": host.host_id,
                 "status": "pending", "port": stage_port(pipeline_id, stage.position), "runtime_name": "",
                 "nonce": "", "detail": "", "seconds": 0.0, "timings": "{}", "updated_at": time.time()}
                for stage, host in stages])
        by_position = {stage.position: (stage, host) for stage, host in stages}
        self.sm.audit_now(actor, "pipeline-start", pipeline_id, stages=len(stages))

        def env_of(position: int) -> dict[str, str]:
            _, host = by_position[position]
            env = {"BONSEYES_PIPELINE": pipeline_id, "BONSEYES_POSITION": str(position),
                   "BONSEYES_LISTEN": f"{host.ip}:{stage_port(pipeline_id, position)}"}
            if position + 1 in by_position:
                _, next_host = by_position[position + 1]
                env["BONSEYES_NEXT"] = f"https://{next_host.ip}:{stage_port(pipeline_id, position + 1)}"
            return env

        def start_stage(position: int) -> str | None:
            stage, host = by_position[position]
            began = time.perf_counter()
            self._set(pipeline_id, position, status="starting")
            endpoint = BonseyesModuleEndpoint(host.host_id, host.ip or "", host.bm_port or self.sm.config.bm_port)
            try:
                answer = self.client.post(endpoint, "/v1/runtimes", {
                    "pipeline_id": pipeline_id, "position": position, "artefact_id": stage.artefact_id,
                    "digest": stage.digest, "user_id": pipeline.user_id, "env": env_of(position)})
            except BonseyesError as exc:
                self._set(pipeline_id, position, status="failed", detail=str(exc)[:1000],
                          seconds=time.perf_counter() - began)
                return f"stage {position} on {host.host_id}: {exc}"
            self._set(pipeline_id, position, status="running", runtime_name=str(answer.get("runtime_name", "")),
                      nonce=str(answer.get("nonce", "")), seconds=time.perf_counter() - began,
                      timings=json.dumps(answer.get("timings") or {}))
            return None

        with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, max(1, len(stages)))) as pool:
            failures = [f for f in pool.map(start_stage, sorted(by_position)) if f]
        if failures:
            reason = "; ".join(failures)[:2000]
            # The stop's answer: what it revoked, and which BMs it could not reach.
            return self.stop(actor, pipeline_id, reason=f"set-up failed: {reason}", status="aborted")
        self.sm.audit_now(actor, "pipeline-running", pipeline_id)
        return self.status(actor, pipeline_id)

    # -- stop -----------------------------------------------------------------------------------------

    def stop(self, actor: Identity, pipeline_id: str, *, reason: str = "stopped by its user",
             status: str = "stopped") -> dict[str, Any]:
        _pipeline, stages = self._pipeline(actor, pipeline_id)
        with self.sm.transaction() as session:
            # The audit head first, as revocations and the licence path take it: a licence issued
            # before this transaction is revoked by it, none is issued after it.
            audit.lock_chain(session)
            row = found(session.get(Pipeline, pipeline_id, with_for_update=True), "pipeline", pipeline_id)
            if row.status in TERMINAL_STATUSES:
                # Stopped or aborted already: it keeps that status and reason (a repeated stop).
                self.sm.audit(session, actor, "pipeline-stop-repeated", pipeline_id, status=row.status,
                              reason=reason[:500])
            else:
                # No BM renews or obtains a licence for this pipeline any more ...
                row.status = status
                row.reason = reason[:2000]
                self.sm.audit(session, actor, f"pipeline-{status}", pipeline_id, reason=reason[:500])
            # ... and none it already has stays valid.
            revoked = self._revoke_licences(session, actor, pipeline_id, reason)
        hosts = {host.host_id: host for _, host in stages}
        problems = []

        def stop_on(host: Any) -> str | None:
            endpoint = BonseyesModuleEndpoint(host.host_id, host.ip or "", host.bm_port or self.sm.config.bm_port)
            error = ""
            for attempt in range(3):
                try:
                    self.client.post(endpoint, "/v1/runtimes/stop", {"pipeline_id": pipeline_id,
                                                                      "reason": reason[:300]})
                    return None
                except BonseyesError as exc:
                    error = str(exc)
                    time.sleep(1.0 * (attempt + 1))
            return f"{host.host_id}: {error}"

        with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, max(1, len(hosts)))) as pool:
            problems = [p for p in pool.map(stop_on, hosts.values()) if p]
        with self.sm.write_connection() as connection:
            connection.execute(update(runtimes_table).where(
                runtimes_table.c.pipeline_id == pipeline_id, runtimes_table.c.status.in_(("running", "starting",
                                                                                          "pending")))
                .values(status="stopped", updated_at=time.time()))
        if problems:
            log.warning("pipeline %s: BMs not told to stop: %s", pipeline_id, problems)
        return {**self.status(actor, pipeline_id), "stop_problems": problems, "revoked_licences": revoked}

    def _revoke_licences(self, session: Any, actor: Identity, pipeline_id: str, reason: str) -> list[str]:
        """Revoke the pipeline's unexpired licences and their runtimes' certificates; publish the CRL.

        Runs in the stopping transaction, after the audit head was locked, through the same helpers as
        ``revocation.RevocationOperations.revoke`` (which revokes a host licence's runtime certificate
        with it). Returns the revoked licence IDs (none: no CRL is published and no entry written).
        """
        sm = self.sm
        now = sm.now()
        runtime_names = sorted(set(session.execute(select(Licence.runtime_name).where(
            Licence.pipeline_id == pipeline_id, Licence.kind == "host", Licence.revoked_at.is_(None),
            Licence.expires_at > now)).scalars()))
        licences = sm._revoke_licences(session, Licence.pipeline_id == pipeline_id, now)
        if not licences:
            return []
        serials: list[str] = []
        for name in runtime_names:
            serials += sm._revoke_certificates(session, (Role.RUNTIME.value,), name, now)
        crl_number = sm._publish_crl(session, now)
        sm.audit(session, actor, "revoked", f"pipeline:{pipeline_id}", reason=reason[:1000], serials=sorted(serials),
                 licences=licences, crl_number=crl_number, via="pipeline stop")
        return licences

    def forget(self, pipeline_id: str) -> None:
        with self.sm.write_connection() as connection:
            connection.execute(delete(runtimes_table).where(runtimes_table.c.pipeline_id == pipeline_id))


def register_pipeline_runtime(app: Flask, sm: SecurityManager, auth: Authenticator) -> None:
    """Add the start/stop/status routes of pipeline runtimes to the SM's app."""
    runtime = PipelineRuntime(sm)

    def view(roles: tuple[Role, ...], handler: Callable[..., Any]) -> Callable[..., Response]:
        def wrapped(pipeline_id: str) -> Response:
            peer = auth.peer(roles)
            return jsonify(handler(peer.identity, pipeline_id))

        wrapped.__name__ = f"pipeline_runtime_{handler.__name__}"
        return wrapped

    def start(actor: Identity, pipeline_id: str) -> dict[str, Any]:
        return runtime.start(actor, pipeline_id)

    def stop(actor: Identity, pipeline_id: str) -> dict[str, Any]:
        body = json_body() if _has_body() else {}
        return runtime.stop(actor, pipeline_id, reason=str(body.get("reason") or "stopped by its user"))

    app.add_url_rule("/v1/pipelines/<pipeline_id>/start", view_func=view((Role.USER,), start), methods=["POST"])
    app.add_url_rule("/v1/pipelines/<pipeline_id>/stop", view_func=view((Role.USER, Role.ADMIN), stop),
                     methods=["POST"])
    app.add_url_rule("/v1/pipelines/<pipeline_id>/runtime", view_func=view((Role.USER, Role.ADMIN), runtime.status),
                     methods=["GET"])


def _has_body() -> bool:
    from flask import request

    return bool(request.content_length)
