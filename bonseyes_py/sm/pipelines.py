"""Pipeline requests and the image integrity check (step 3).

A user asks for a pipeline on a premise: stages map artefacts to hosts. The policy decides; the
pipeline is recorded as ``verifying`` and committed; then the SM asks each BM to fetch its images
by digest and report the digests it computed, and checks each against the digest in the SM-signed
image ID. Any mismatch, unknown answer or unreachable BM aborts the pipeline, and every BM of the
pipeline is told to remove the images. Only a ``ready`` pipeline lets its hosts get licences, and
only a pipeline still ``verifying`` becomes ready or aborted: one its user stopped meanwhile stays
stopped, and its BMs are told to remove the images they fetched for it all the same.

What a user learns of other tenants' objects: a pipeline ID that is not hers is 403
``pipeline-owner`` whether it exists or not (``caller_pipeline``); a premise that does not exist is
decided by the default policy as a premise without members, so it is denied exactly like an existing
premise she is not a member of; a stage's host is checked for membership of the premise before
anything else, so an unknown host and another premise's host are the same 403 ``host-not-in-premise``.
Artefact IDs and image digests are public (``GET /v1/artefacts/<id>``): unknown ones stay 404.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import select

from bonseyes_py.errors import BonseyesError, InputError, LicenceError, PolicyDenied
from bonseyes_py.identity.ids import check_digest, verify_image_id
from bonseyes_py.pki.roles import Identity, Role, check_name
from bonseyes_py.policy import DEFAULT_POLICY, Action, PremiseAttributes, RequestContext
from bonseyes_py.sm import audit
from bonseyes_py.sm.attributes import user_attributes
from bonseyes_py.sm.bm_client import BonseyesModuleEndpoint, BonseyesModuleError
from bonseyes_py.sm.core import Forbidden, SMCore, found, require
from bonseyes_py.sm.hosts import host_available
from bonseyes_py.sm.models import Artefact, Host, Image, Pipeline, PipelineStage, Premise, PremiseHost, User
from bonseyes_py.sm.premises import premise_attributes
from bonseyes_py.web.errors import ConflictError, NotFoundError

log = logging.getLogger(__name__)
MAX_STAGES = 64
# A pipeline in one of these stays in it: a later stop or a late end of step 3 does not rewrite it.
TERMINAL_STATUSES = ("stopped", "aborted")


class _Denied(Exception):
    """Carries a denying decision out of the transaction that must roll back."""

    def __init__(self, decision: Any) -> None:
        super().__init__("denied")
        self.decision = decision


class ImageIntegrityError(ConflictError):
    check = "image-integrity"


def denial(decision: Any) -> PolicyDenied:
    if decision.errors:
        reason = f"evaluation failed: {decision.errors[0]}"
    elif decision.determining_policies:
        reason = "forbidden by policy " + ", ".join(decision.determining_policies)
    else:
        reason = "no policy permits it"
    return PolicyDenied(f"{decision.action.value} denied (policy revision {decision.policy_revision}): {reason}")


def caller_pipeline(actor: Identity, pipeline: Pipeline | None, pipeline_id: str) -> Pipeline:
    """``pipeline`` (None: not found) as ``actor`` may see it: a user only her own, an admin any.

    A user gets the same 403 ``pipeline-owner`` for an unknown ID as for another user's pipeline, so
    the answer does not tell which IDs exist; an admin gets 404 for an unknown one.
    """
    if actor.role is not Role.ADMIN:
        require(pipeline is not None and pipeline.user_id == actor.name,
                Forbidden(f"pipeline {pipeline_id} is not a pipeline of {actor.name}", check="pipeline-owner"))
    return found(pipeline, "pipeline", pipeline_id)


def _parse_stages(stages: Any) -> list[dict[str, str | None]]:
    if not isinstance(stages, list) or not 1 <= len(stages) <= MAX_STAGES:
        raise InputError(f"stages must be a list of 1 to {MAX_STAGES} objects", check="stages")
    parsed = []
    for position, stage in enumerate(stages):
        if not isinstance(stage, dict) or not {"artefact_id", "host_id"} <= set(stage):
            raise InputError(f"stage {position} must be an object with artefact_id and host_id", check="stages")
        digest = stage.get("digest")
        parsed.append({"artefact_id": check_name(stage["artefact_id"], "artefact ID"),
                       "host_id": check_name(stage["host_id"], "host ID"),
                       "digest": check_digest(digest) if digest is not None else None})
    return parsed


class PipelineOperations(SMCore):
    def request_pipeline(self, actor: Identity, premise_name: str, stages: Any) -> dict[str, Any]:
        check_name(premise_name, "premise")
        parsed = _parse_stages(stages)
        pipeline_id = "pl-" + uuid.uuid4().hex
        decision = None
        try:
            self._record_pipeline(actor, premise_name, parsed, pipeline_id)
        except _Denied as denied:
            decision = denied.decision
        if decision is not None:
            self.audit_now(actor, "pipeline-denied", premise_name, outcome="denied",
                           policy_revision=decision.policy_revision, policies=list(decision.determining_policies),
                           errors=list(decision.errors))
            raise denial(decision)
        self._verify_images(actor, pipeline_id)
        return self.get_pipeline(actor, pipeline_id)

    def _record_pipeline(self, actor: Identity, premise_name: str, parsed: list[dict[str, str | None]],
                         pipeline_id: str) -> None:
        now = self.now()
        with self.transaction() as session:
            user = found(session.get(User, actor.name), "user", actor.name)
            require(not user.revoked, Forbidden(f"user {user.user_id} is revoked", check="revoked"))
            premise = session.get(Premise, premise_name)
            # An unknown premise is decided as a premise with the default policy and no members: the
            # user gets the denial a non-member of an existing premise gets, not a 404 naming it unknown.
            decision = self.policy.decide(
                premise.policy if premise is not None else DEFAULT_POLICY, Action.REQUEST_PIPELINE,
                user=user_attributes(user), host=None, artefact=None,
                premise=(premise_attributes(session, premise) if premise is not None
                         else PremiseAttributes(name=premise_name, members=())),
                context=RequestContext(now=int(now)))
            if not decision.allowed:
                raise _Denied(decision)  # Rolled back here; recorded by the caller in its own transaction.
            found(premise, "premise", premise_name)  # the default policy never permits a premise without members
            resolved = [self._resolve_stage(session, premise_name, stage, now) for stage in parsed]
            session.add(Pipeline(pipeline_id=pipeline_id, user_id=user.user_id, premise=premise_name,
                                 status="verifying", reason="", created_at=now))
            session.flush()
            for position, (artefact_id, digest, host_id) in enumerate(resolved):
                session.add(PipelineStage(pipeline_id=pipeline_id, position=position, artefact_id=artefact_id,
                                          digest=digest, host_id=host_id))
            self.audit(session, actor, "pipeline-requested", pipeline_id, policy_revision=decision.policy_revision,
                       premise=premise_name, policies=list(decision.determining_policies),
                       stages=[{"artefact_id": a, "digest": d, "host_id": h} for a, d, h in resolved])

    def _resolve_stage(self, session: Any, premise: str, stage: dict[str, str | None],
                       now: float) -> tuple[str, str, str]:
        artefact_id, host_id = str(stage["artefact_id"]), str(stage["host_id"])
        artefact = found(session.get(Artefact, artefact_id), "artefact", artefact_id)
        require(not artefact.revoked, Forbidden(f"artefact {artefact_id} is revoked", check="revoked"))
        # Membership first: an unknown host and another premise's host (revoked or not) are one answer.
        require(session.get(PremiseHost, (premise, host_id)) is not None,
                Forbidden(f"host {host_id} is not a member of premise {premise}", check="host-not-in-premise"))
        host = found(session.get(Host, host_id), "host", host_id)
        require(not host.revoked, Forbidden(f"host {host_id} is revoked", check="revoked"))
        require(host_available(host, now, self.config.heartbeat_ttl_seconds),
                ConflictError(f"host {host_id} is not available (no heartbeat within "
                              f"{self.config.heartbeat_ttl_seconds} s)", check="host-unavailable"))
        digest = stage["digest"]
        if digest is None:
            image = session.execute(select(Image).where(Image.artefact_id == artefact_id)
                                    .order_by(Image.created_at.desc()).limit(1)).scalar_one_or_none()
            image = found(image, "image of artefact", artefact_id)
        else:
            image = found(session.get(Image, digest), "image", digest)
            require(image.artefact_id == artefact_id,
                    NotFoundError(f"image {digest} is not an image of artefact {artefact_id}"))
        return artefact_id, image.digest, host_id

    def _verify_images(self, actor: Identity, pipeline_id: str) -> None:
        """Ask every BM to fetch and digest its images; abort everywhere on the first doubt."""
        with self.transaction() as session:
            stages = list(session.execute(select(PipelineStage, Host, Image)
                                          .join(Host, Host.host_id == PipelineStage.host_id)
                                          .join(Image, Image.digest == PipelineStage.digest)
                                          .where(PipelineStage.pipeline_id == pipeline_id)
                                          .order_by(PipelineStage.position)).all())
        by_host: dict[str, list[tuple[PipelineStage, Image]]] = defaultdict(list)
        endpoints: dict[str, BonseyesModuleEndpoint] = {}
        for stage, host, image in stages:
            by_host[host.host_id].append((stage, image))
            endpoints[host.host_id] = BonseyesModuleEndpoint(host.host_id, host.ip or "",
                                                             host.bm_port or self.config.bm_port)
        reported: dict[int, str] = {}
        failure: BonseyesError | None = None
        try:
            if self.bm_client is None:
                raise BonseyesModuleError("this SM has no BM client configured", check="bm-unreachable")
            trust = self.trust_store()
            answers = self._fetch_everywhere(by_host, endpoints)
            for host_id, entries in by_host.items():
                answer = answers[host_id]
                for stage, image in entries:
                    computed = answer.get(image.digest)
                    reported[stage.id] = computed or ""
                    if computed != image.digest:
                        raise ImageIntegrityError(f"host {host_id} computed digest {computed!r} for image "
                                                  f"{image.digest} of artefact {stage.artefact_id}")
                    try:
                        verify_image_id(image.image_id_token, trust, expect_digest=image.digest,
                                        expect_artefact=stage.artefact_id)
                    except LicenceError as exc:
                        raise ImageIntegrityError(f"image ID of {image.digest} does not verify: {exc}") from exc
        except BonseyesError as exc:
            failure = exc
        if failure is not None:
            self._abort(actor, pipeline_id, by_host, endpoints, reported, failure)
            raise failure
        with self.transaction() as session:
            # The audit head before the pipeline's row, in the order a stop takes them (PostgreSQL).
            audit.lock_chain(session)
            for stage_row in session.execute(select(PipelineStage).where(
                    PipelineStage.pipeline_id == pipeline_id)).scalars():
                stage_row.reported_digest = reported.get(stage_row.id)
            pipeline = found(session.get(Pipeline, pipeline_id, with_for_update=True), "pipeline", pipeline_id)
            status = pipeline.status
            if status == "verifying":
                pipeline.status = "ready"
                self.audit(session, actor, "pipeline-ready", pipeline_id, digests_verified=len(reported))
            else:
                # Stopped by its user while the BMs fetched: it stays stopped and never becomes ready.
                self.audit(session, actor, "pipeline-not-ready", pipeline_id, status=status)
        if status != "verifying":
            # ... and the images fetched for it do not stay on its hosts (as after an abort).
            removal_errors = self._remove_images(pipeline_id, by_host, endpoints)
            self.audit_now(actor, "pipeline-images-removed", pipeline_id, status=status,
                           hosts=sorted(by_host), removal_errors=removal_errors)

    def _fetch_everywhere(self, by_host: dict[str, list[tuple[PipelineStage, Image]]],
                          endpoints: dict[str, BonseyesModuleEndpoint]) -> dict[str, dict[str, str]]:
        """Step 3 on every BM at once: pulls run in parallel, so set-up time is the slowest host's."""
        assert self.bm_client is not None
        client = self.bm_client

        def fetch(host_id: str) -> dict[str, str]:
            return client.fetch_images(endpoints[host_id], sorted({image.digest for _, image in by_host[host_id]}))

        with ThreadPoolExecutor(max_workers=min(16, max(1, len(by_host)))) as pool:
            futures = {host_id: pool.submit(fetch, host_id) for host_id in by_host}
            # Every fetch finishes before the first failure is raised, so the abort that follows
            # removes images from hosts that were still pulling too.
            outcomes = {host_id: future.exception() or future.result() for host_id, future in futures.items()}
        for outcome in outcomes.values():
            if isinstance(outcome, BaseException):
                raise outcome
        return outcomes  # type: ignore[return-value]

    def _remove_images(self, pipeline_id: str, by_host: dict[str, list[tuple[PipelineStage, Image]]],
                       endpoints: dict[str, BonseyesModuleEndpoint]) -> list[str]:
        """Tell every BM of the pipeline, in parallel, to remove its images; the hosts that could not be told."""
        removal_errors = []
        client = self.bm_client

        def remove(host_id: str) -> None:
            if client is not None:
                client.remove_images(endpoints[host_id], sorted({i.digest for _, i in by_host[host_id]}))

        with ThreadPoolExecutor(max_workers=min(16, max(1, len(by_host)))) as pool:
            futures = {host_id: pool.submit(remove, host_id) for host_id in by_host}
        for host_id, future in futures.items():
            exc = future.exception()
            if isinstance(exc, BonseyesError):
                removal_errors.append(f"{host_id}: {exc}")
                log.warning("could not tell BM of %s to remove images of pipeline %s: %s", host_id, pipeline_id, exc)
            elif exc is not None:
                raise exc
        return removal_errors

    def _abort(self, actor: Identity, pipeline_id: str, by_host: dict[str, list[tuple[PipelineStage, Image]]],
               endpoints: dict[str, BonseyesModuleEndpoint], reported: dict[int, str], failure: BonseyesError) -> None:
        removal_errors = self._remove_images(pipeline_id, by_host, endpoints)
        with self.transaction() as session:
            audit.lock_chain(session)  # before the pipeline's row, as a stop takes them
            for stage_row in session.execute(select(PipelineStage).where(
                    PipelineStage.pipeline_id == pipeline_id)).scalars():
                stage_row.reported_digest = reported.get(stage_row.id)
            pipeline = found(session.get(Pipeline, pipeline_id, with_for_update=True), "pipeline", pipeline_id)
            if pipeline.status != "verifying":
                # Stopped while the BMs fetched: it keeps that status (and its reason).
                self.audit(session, actor, "pipeline-not-ready", pipeline_id, status=pipeline.status,
                           reason=str(failure), removal_errors=removal_errors)
                return
            pipeline.status = "aborted"
            pipeline.reason = str(failure)
            self.audit(session, actor, "pipeline-aborted", pipeline_id, outcome="aborted", reason=str(failure),
                       removal_errors=removal_errors)

    def get_pipeline(self, actor: Identity, pipeline_id: str) -> dict[str, Any]:
        with self.transaction() as session:
            pipeline = caller_pipeline(actor, session.get(Pipeline, pipeline_id), pipeline_id)
            stages = session.execute(select(PipelineStage).where(PipelineStage.pipeline_id == pipeline_id)
                                     .order_by(PipelineStage.position)).scalars()
            return {"pipeline_id": pipeline.pipeline_id, "user_id": pipeline.user_id, "premise": pipeline.premise,
                    "status": pipeline.status, "reason": pipeline.reason,
                    "stages": [{"artefact_id": s.artefact_id, "digest": s.digest, "host_id": s.host_id,
                                "reported_digest": s.reported_digest} for s in stages]}
