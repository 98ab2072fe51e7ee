"""Host licences (step 4) and artefact licences (step 6), with licence control and idempotency.

Host licence: a BM (host certificate) asks with (image digest, artefact ID, user ID, nonce); the
host ID is its certificate's name and the host IP its TLS peer address. The SM checks the host is
registered and available, that the user has a ready pipeline with this (artefact, digest, host)
stage, and asks the premise policy, giving it the number of running instances of the artefact
(distinct runtimes holding an unexpired, unrevoked host licence). The licence lives until the
artefact's licence lifetime or its time window ends, whichever is first.

Idempotency and crash safety: a request is keyed by (host, nonce, renewed licence). The licence
and the exact response are committed (the response encrypted, since it holds the runtime key)
before the response leaves; a retry with the same key and parameters gets the same response, a
retry with other parameters gets 409 ``nonce-replay``, never a second licence. Renewal is a new
request for the same runtime naming the licence it renews (``renews``): it does not count as a
second instance.

Artefact licence: a BL (runtime certificate) presents its host licence and artefact ID. The host
licence must verify (signature, chain, time, not revoked) and its ``cnf`` must be the thumbprint
of the very certificate the BL authenticated with over TLS.

A runtime belongs to the pipeline its host licence names (``licences.pipeline_id``). Once that
pipeline is no longer ``ready`` (its user stopped it, or its start was aborted), its runtimes get
no artefact licence, no renewal (which stays in the renewed licence's pipeline) and no retry of a
stored licence: 409 ``pipeline-not-running``. A fresh host licence needs a ready pipeline with
the requested stage (403 ``no-pipeline``), which is checked before the user the request names: a
host learns whether a user exists, or is revoked, only for users with a pipeline on it.
Stopping a pipeline also revokes the licences it already has (``pipeline_runtime.py``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bonseyes_py import safejson
from bonseyes_py.errors import BonseyesError, InputError, LicenceError
from bonseyes_py.identity.ids import RuntimeID, check_digest, check_nonce
from bonseyes_py.licences import Expectations, HostLicence, LicenceKind, verify_licence
from bonseyes_py.pki.certs import certificate_pem, chain_pem
from bonseyes_py.pki.keys import private_key_pem
from bonseyes_py.pki.roles import Identity, Role, check_name
from bonseyes_py.policy import Action, Decision, HostAttributes, PremiseAttributes, RequestContext, policy_revision
from bonseyes_py.sm import audit
from bonseyes_py.sm.artefacts import artefact_attributes
from bonseyes_py.sm.attributes import host_attributes, user_attributes
from bonseyes_py.sm.core import Forbidden, SMCore, found, require
from bonseyes_py.sm.hosts import host_available
from bonseyes_py.sm.models import (
    Artefact,
    AuditHead,
    Certificate,
    Host,
    Image,
    Licence,
    Pipeline,
    PipelineStage,
    Premise,
    PremiseHost,
    PremiseUser,
    SMState,
    User,
)
from bonseyes_py.sm.pipelines import _Denied, denial
from bonseyes_py.sm.premises import premise_attributes
from bonseyes_py.web.errors import ConflictError, NotFoundError

ARTEFACTS = cast(Table, Artefact.__table__)
HOSTS = cast(Table, Host.__table__)
USERS = cast(Table, User.__table__)
IMAGES = cast(Table, Image.__table__)
PIPELINES = cast(Table, Pipeline.__table__)
STAGES = cast(Table, PipelineStage.__table__)
PREMISES = cast(Table, Premise.__table__)
PREMISE_USERS = cast(Table, PremiseUser.__table__)
PREMISE_HOSTS = cast(Table, PremiseHost.__table__)
LICENCES = cast(Table, Licence.__table__)
CERTIFICATES = cast(Table, Certificate.__table__)
STATE = cast(Table, SMState.__table__)
AUDIT_HEAD = cast(Table, AuditHead.__table__)

# The host-licence path runs these: built once, they skip SQLAlchemy's statement construction and
# cache-key work. Each statement costs about as much in SQLAlchemy's execution machinery as in
# SQLite, so a licence normally runs one read (``_PREAMBLE``) and four writes:
#
# - ``_PREAMBLE`` locks the audit head first (PostgreSQL: FOR UPDATE; SQLite: BEGIN IMMEDIATE has
#   already serialised writers), and reads with it the write generation and any stored response
#   for this request key (a retry). Holding the head from the start serialises issuers, so the
#   instance limit holds under load, and takes locks in the same order as revocations (head first).
# - the records the checks and the policy read (artefact, host, user, image, ready pipeline, premise
#   policy and members, the host's premises) are read once per write generation and cached
#   (``_licence_reads``); the running-instances count comes from ``InstanceTracker``.
_PREAMBLE = (
    select(STATE.c.generation, AUDIT_HEAD.c.seq, AUDIT_HEAD.c.entry_hash, LICENCES.c.jti, LICENCES.c.nonce,
           LICENCES.c.request_fingerprint, LICENCES.c.response, LICENCES.c.revoked_at, LICENCES.c.pipeline_id,
           PIPELINES.c.status.label("pipeline_status"))
    .select_from(STATE.join(AUDIT_HEAD, AUDIT_HEAD.c.id == STATE.c.id)
                 .outerjoin(LICENCES, LICENCES.c.request_key == bindparam("request_key"))
                 .outerjoin(PIPELINES, PIPELINES.c.pipeline_id == LICENCES.c.pipeline_id))
    .where(STATE.c.id == 1)
    .with_for_update(of=AUDIT_HEAD))
_STATE_AND_HEAD = (select(STATE.c.generation, AUDIT_HEAD.c.seq)
                   .select_from(STATE.join(AUDIT_HEAD, AUDIT_HEAD.c.id == STATE.c.id))
                   .where(STATE.c.id == 1).with_for_update(of=AUDIT_HEAD))
_SUBJECT_PREFIXES = (("a_", ARTEFACTS), ("h_", HOSTS), ("u_", USERS))
_SUBJECTS = (
    select(*[column.label(prefix + column.name) for prefix, table in _SUBJECT_PREFIXES for column in table.c],
           IMAGES.c.artefact_id.label("image_artefact"))
    .select_from(ARTEFACTS.outerjoin(HOSTS, HOSTS.c.host_id == bindparam("host_id"))
                 .outerjoin(USERS, USERS.c.user_id == bindparam("user_id"))
                 .outerjoin(IMAGES, IMAGES.c.digest == bindparam("digest")))
    .where(ARTEFACTS.c.artefact_id == bindparam("artefact_id")))
_READY_PIPELINE = (
    select(PIPELINES.c.pipeline_id, PIPELINES.c.premise, PREMISES.c.name, PREMISES.c.policy)
    .join(STAGES, STAGES.c.pipeline_id == PIPELINES.c.pipeline_id)
    .outerjoin(PREMISES, PREMISES.c.name == PIPELINES.c.premise)
    .where(PIPELINES.c.user_id == bindparam("user_id"), PIPELINES.c.status == "ready",
           STAGES.c.host_id == bindparam("host_id"), STAGES.c.artefact_id == bindparam("artefact_id"),
           STAGES.c.digest == bindparam("digest"))
    .order_by(PIPELINES.c.created_at.desc()).limit(1))
# A renewal names the licence it renews; the runtime belongs to that licence's pipeline.
_RENEWED = (select(LICENCES.c.kind, LICENCES.c.host_id, LICENCES.c.nonce, LICENCES.c.request_fingerprint,
                   LICENCES.c.revoked_at, LICENCES.c.pipeline_id, PIPELINES.c.status.label("pipeline_status"))
            .select_from(LICENCES.outerjoin(PIPELINES, PIPELINES.c.pipeline_id == LICENCES.c.pipeline_id))
            .where(LICENCES.c.jti == bindparam("jti")))
# ``_READY_PIPELINE`` for one named pipeline (a renewal's), with the same columns.
_READY_PIPELINE_BY_ID = (
    select(PIPELINES.c.pipeline_id, PIPELINES.c.premise, PREMISES.c.name, PREMISES.c.policy)
    .join(STAGES, STAGES.c.pipeline_id == PIPELINES.c.pipeline_id)
    .outerjoin(PREMISES, PREMISES.c.name == PIPELINES.c.premise)
    .where(PIPELINES.c.pipeline_id == bindparam("pipeline_id"), PIPELINES.c.user_id == bindparam("user_id"),
           PIPELINES.c.status == "ready", STAGES.c.host_id == bindparam("host_id"),
           STAGES.c.artefact_id == bindparam("artefact_id"), STAGES.c.digest == bindparam("digest"))
    .limit(1))
# Names are check_name()d (no spaces), so a space-joined aggregate splits back exactly; the order of
# an aggregate is not guaranteed, so the parts are sorted in Python.
_MEMBERSHIPS = select(
    select(func.aggregate_strings(PREMISE_USERS.c.user_id, " "))
    .where(PREMISE_USERS.c.premise == bindparam("premise")).scalar_subquery().label("members"),
    select(func.aggregate_strings(PREMISE_HOSTS.c.premise, " "))
    .where(PREMISE_HOSTS.c.host_id == bindparam("host_id")).scalar_subquery().label("host_premises"))
@dataclass(frozen=True)
class _Presigned:
    """A signed licence and its sealed response, for the reads (and generation) it was built from."""

    generation: int
    reads: Any
    policy_revision: str
    runtime: RuntimeID
    licence: HostLicence
    plain: bytes  # the response's JSON, as sent and as sealed
    sealed: bytes


# How many reads the cache keeps per worker before it starts afresh (a generation change empties it).
_LICENCE_READS_LIMIT = 4096


@dataclass(frozen=True)
class _LicenceReads:
    """What one (artefact, host, user, digest) request reads from the records, at one generation."""

    artefact: Any
    host: Any
    user: Any
    image_artefact: str | None
    pipeline: Any
    members: tuple[str, ...]
    host_premises: tuple[str, ...]


_STORED = (select(LICENCES.c.jti, LICENCES.c.nonce, LICENCES.c.request_fingerprint, LICENCES.c.response,
                  LICENCES.c.revoked_at, LICENCES.c.pipeline_id, PIPELINES.c.status.label("pipeline_status"))
           .select_from(LICENCES.outerjoin(PIPELINES, PIPELINES.c.pipeline_id == LICENCES.c.pipeline_id))
           .where(LICENCES.c.request_key == bindparam("request_key")))
# The database's own count of running instances: what ``InstanceTracker`` must equal (tests/sm).
_RUNNING = select(func.count()).select_from(
    select(LICENCES.c.host_id, LICENCES.c.nonce).where(
        LICENCES.c.artefact_id == bindparam("artefact_id"), LICENCES.c.kind == "host",
        LICENCES.c.expires_at > bindparam("now"), LICENCES.c.revoked_at.is_(None),
        ~and_(LICENCES.c.host_id == bindparam("exclude_host"), LICENCES.c.nonce == bindparam("exclude_nonce")))
    .distinct().subquery())
_INSERT_LICENCE = insert(LICENCES)
_INSERT_CERTIFICATE = insert(CERTIFICATES)


def _part(row: Any, prefix: str, table: Table) -> SimpleNamespace | None:
    """The columns of ``table`` in a folded row (labelled ``prefix + name``); None when it did not join."""
    if row is None or getattr(row, prefix + next(iter(table.primary_key.columns)).name) is None:
        return None
    return SimpleNamespace(**{column.name: getattr(row, prefix + column.name) for column in table.c})


def row_dict(row: Any) -> dict[str, Any]:
    """A SQLAlchemy row or a ``fastsql`` row (a namedtuple) as a dict."""
    mapping = getattr(row, "_mapping", None)
    return dict(mapping) if mapping is not None else dict(row._asdict())


def require_pipeline_running(pipeline_id: str | None, status: str | None, what: str) -> None:
    """409 ``pipeline-not-running`` unless the pipeline a runtime belongs to is ``ready`` (running or startable)."""
    require(status == "ready", ConflictError(
        f"pipeline {pipeline_id} of {what} is {status or 'gone'}, not running: its runtimes get no licence",
        check="pipeline-not-running"))


def _hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, separators=(",", ":")).encode()).hexdigest()


class LicenceOperations(SMCore):
    # -- step 4 ---------------------------------------------------------------------------------

    def issue_host_licence(self, actor: Identity, peer_ip: str, *, image_digest: str, artefact_id: str,
                           user_id: str, nonce: str, renews: str | None = None) -> dict[str, Any]:
        """Step 4 for in-process callers: the response as a dict (see ``issue_host_licence_json``)."""
        return cast(dict[str, Any], safejson.loads(self.issue_host_licence_json(
            actor, peer_ip, image_digest=image_digest, artefact_id=artefact_id, user_id=user_id, nonce=nonce,
            renews=renews), what="host licence response"))

    def issue_host_licence_json(self, actor: Identity, peer_ip: str, *, image_digest: str, artefact_id: str,
                                user_id: str, nonce: str, renews: str | None = None) -> bytes:
        """Step 4: the response as the JSON bytes that were sealed and stored (a retry gets the same bytes).

        The web adapter sends these bytes as they are, so a licence is serialised once, not once for
        the database and again for the HTTP answer.
        """
        check_digest(image_digest)
        check_name(artefact_id, "artefact ID")
        check_name(user_id, "user ID")
        check_nonce(nonce)
        if renews is not None and (not isinstance(renews, str) or len(renews) > 64):
            raise InputError("renews must be the licence_id of the licence being renewed", check="renews")
        host_id = actor.name
        request_key = _hash("host", host_id, nonce, renews or "")
        fingerprint = _hash(image_digest, artefact_id, user_id)
        try:
            return self._issue_host_licence(actor, peer_ip, image_digest, artefact_id, user_id, nonce, renews,
                                            request_key, fingerprint)
        except _Denied as denied:
            self._audit_denial(actor, "host-licence-denied", denied.decision, artefact_id=artefact_id,
                               user_id=user_id, digest=image_digest, nonce=nonce)
            raise denial(denied.decision) from None
        except (IntegrityError, self.fast_sql.integrity_error):
            # A concurrent request with the same key committed first; answer as a retry would be. (The
            # preamble's head lock serialises issuers, so this is a backstop.)
            stored = self._stored_response(request_key, fingerprint)
            if stored is None:
                raise
            return json.dumps(stored).encode()

    def _stored_response(self, request_key: str, fingerprint: str, session: Any = None) -> dict[str, Any] | None:
        """The response already given to this request key (a retry), or None; 409 for other parameters."""
        if session is None:
            with self.reading() as own_session:
                return self._stored_response(request_key, fingerprint, own_session)
        connection = session.connection() if isinstance(session, Session) else session
        row = connection.execute(_STORED, {"request_key": request_key}).one_or_none()
        return None if row is None else self._replayed(row, fingerprint)

    def _licence_reads(self, conn: Any, generation: int, artefact_id: str, host_id: str, user_id: str,
                       digest: str, *, fresh: bool = False) -> _LicenceReads:
        """The records a host licence request reads, from this worker's cache while the generation holds.

        Every write that can change them increments ``sm_state.generation`` (``SMCore.transaction``),
        except batched heartbeats, which only move a host's ``last_seen`` forward: a cached host can
        therefore only look *less* available than it is, and the caller asks again with ``fresh``
        before refusing a host as unavailable.
        """
        key = (artefact_id, host_id, user_id, digest)
        with self.licence_reads_lock:
            if self.licence_reads_generation != generation:
                self.licence_reads.clear()
                self.licence_reads_generation = generation
            cached = None if fresh else self.licence_reads.get(key)
        if cached is not None:
            return cast(_LicenceReads, cached)
        row = conn.execute(_SUBJECTS, {"artefact_id": artefact_id, "host_id": host_id, "user_id": user_id,
                                       "digest": digest}).one_or_none()
        pipeline = conn.execute(_READY_PIPELINE, {"user_id": user_id, "host_id": host_id, "artefact_id": artefact_id,
                                                  "digest": digest}).one_or_none()
        pipeline_part, members, host_premises = self._pipeline_part(conn, pipeline, host_id)
        reads = _LicenceReads(
            artefact=_part(row, "a_", ARTEFACTS), host=_part(row, "h_", HOSTS), user=_part(row, "u_", USERS),
            image_artefact=row.image_artefact if row is not None else None,
            pipeline=pipeline_part, members=members, host_premises=host_premises)
        with self.licence_reads_lock:
            if self.licence_reads_generation == generation:
                if len(self.licence_reads) >= _LICENCE_READS_LIMIT:
                    self.licence_reads.clear()
                self.licence_reads[key] = reads
        return reads

    @staticmethod
    def _pipeline_part(conn: Any, pipeline: Any, host_id: str) -> tuple[Any, tuple[str, ...], tuple[str, ...]]:
        """A ready pipeline's row as the reads keep it, with its premise's members and the host's premises."""
        if pipeline is None:
            return None, (), ()
        members: tuple[str, ...] = ()
        host_premises: tuple[str, ...] = ()
        if pipeline.name is not None:
            inputs = conn.execute(_MEMBERSHIPS, {"premise": pipeline.name, "host_id": host_id}).one()
            members = tuple(sorted(inputs.members.split(" "))) if inputs.members else ()
            host_premises = tuple(sorted(inputs.host_premises.split(" "))) if inputs.host_premises else ()
        return SimpleNamespace(**row_dict(pipeline)), members, host_premises

    def _renewed_runtime_reads(self, conn: Any, reads: _LicenceReads, renews: str, host_id: str, nonce: str,
                               fingerprint: str, user_id: str, artefact_id: str, digest: str) -> _LicenceReads:
        """Check the licence a renewal names, and the reads for the pipeline its runtime belongs to.

        The runtime stays in the pipeline of the licence it renews: once that pipeline is stopped or
        aborted there is no renewal, even if another ready pipeline of the user has the same stage.
        """
        previous = conn.execute(_RENEWED, {"jti": renews}).one_or_none()
        require(previous is not None and previous.kind == "host" and previous.host_id == host_id
                and previous.nonce == nonce and previous.request_fingerprint == fingerprint,
                ConflictError(f"licence {renews} is not a host licence of this runtime", check="renewal"))
        require(previous.revoked_at is None, Forbidden(f"licence {renews} is revoked", check="revoked"))
        require_pipeline_running(previous.pipeline_id, previous.pipeline_status, f"licence {renews}")
        if reads.pipeline is not None and reads.pipeline.pipeline_id == previous.pipeline_id:
            return reads
        row = conn.execute(_READY_PIPELINE_BY_ID, {"pipeline_id": previous.pipeline_id, "user_id": user_id,
                                                   "host_id": host_id, "artefact_id": artefact_id,
                                                   "digest": digest}).one_or_none()
        pipeline, members, host_premises = self._pipeline_part(conn, row, host_id)
        return dataclasses.replace(reads, pipeline=pipeline, members=members, host_premises=host_premises)

    def _presign(self, host_id: str, peer_ip: str, artefact_id: str, user_id: str, digest: str, nonce: str,
                 renews: str | None, now: float) -> _Presigned | None:
        """Sign the licence outside the write lock when this worker has the request's reads cached.

        Signing (a runtime key pair, its certificate, the JWT) and sealing the response are most of
        a licence's CPU time; done before the lock, they no longer make other issuers wait. Nothing
        signed here leaves the process unless the transaction then finds these very reads current,
        every check passes and the policy allows, with the same policy revision.
        """
        key = (artefact_id, host_id, user_id, digest)
        with self.licence_reads_lock:
            generation = self.licence_reads_generation
            reads = cast(_LicenceReads | None, self.licence_reads.get(key))
        if (generation is None or reads is None or reads.artefact is None or reads.host is None
                or reads.pipeline is None or reads.pipeline.name is None or reads.image_artefact != artefact_id):
            return None
        try:
            revision = policy_revision(reads.pipeline.policy)
            return self._sign_host_licence(reads, peer_ip, artefact_id, user_id, digest, nonce, renews, now,
                                           generation, revision)
        except BonseyesError:
            return None  # Whatever failed is reported by the checks in the transaction.

    def _sign_host_licence(self, reads: _LicenceReads, peer_ip: str, artefact_id: str, user_id: str, digest: str,
                           nonce: str, renews: str | None, now: float, generation: int,
                           revision: str) -> _Presigned:
        artefact, host, pipeline = reads.artefact, reads.host, reads.pipeline
        validity = self._validity(artefact, now, self.config.host_licence_seconds)
        runtime = RuntimeID(image_digest=digest, artefact_id=artefact_id, user_id=user_id, host_id=host.host_id,
                            nonce=nonce, host_ip=peer_ip)
        terms = {"premise": pipeline.name, "policy_revision": revision, "pipeline_id": pipeline.pipeline_id,
                 "max_instances": artefact.max_instances}
        if artefact.requires_gpu:
            # The policy allowed a GPU artefact on this host: BM requests its GPUs for the container.
            terms["gpus"] = host.gpu_count
        licence = self.issuer.issue_host_licence(runtime, validity=validity, terms=terms,
                                                 now=dt.datetime.fromtimestamp(now, dt.UTC))
        jti = licence.claims["jti"]
        certificate_text = certificate_pem(licence.runtime_certificate).decode()
        response = {
            "licence_id": jti, "licence": licence.token, "expires_at": licence.claims["exp"],
            "runtime_id": runtime.as_claim(), "runtime_name": runtime.name,
            "runtime_key": private_key_pem(licence.runtime_key).decode(),
            "runtime_certificate": certificate_text,
            "runtime_chain": certificate_text + self._intermediate_pem(),
            "renews": renews,
        }
        plain = json.dumps(response, separators=(",", ":")).encode()
        return _Presigned(generation, reads, revision, runtime, licence, plain, self.box.seal(plain, jti))

    def _issue_host_licence(self, actor: Identity, peer_ip: str, image_digest: str, artefact_id: str, user_id: str,
                            nonce: str, renews: str | None, request_key: str, fingerprint: str) -> bytes:
        now = self.now()
        ttl = self.config.heartbeat_ttl_seconds
        host_id = actor.name
        # Signed before the write lock, from this worker's cached reads; used only if the transaction
        # below finds the same reads current and the policy allows (otherwise signed again in it).
        presigned = self._presign(host_id, peer_ip, artefact_id, user_id, image_digest, nonce, renews, now)
        # This is the hot path of the SM: one write transaction of prebuilt statements on the DBAPI
        # cursor (fastsql.py). The retry lookup, every check, the licence, its runtime certificate and
        # its audit entry are read and written together and committed before the answer leaves.
        with self.fast_sql.transaction() as conn:
            head = conn.execute(_PREAMBLE, {"request_key": request_key}).one()
            if head.jti is not None:
                return self._replayed_json(head, fingerprint)
            generation = int(head.generation)
            reads = self._licence_reads(conn, generation, artefact_id, host_id, user_id, image_digest)
            host = reads.host
            if host is not None and not (host_available(host, now, ttl) and host.ip == peer_ip):
                # Cached hosts only lag behind batched heartbeats: look again before refusing.
                reads = self._licence_reads(conn, generation, artefact_id, host_id, user_id, image_digest,
                                            fresh=True)
            artefact = found(reads.artefact, "artefact", artefact_id)
            require(not artefact.revoked, Forbidden(f"artefact {artefact_id} is revoked", check="revoked"))
            host = found(reads.host, "host", host_id)
            require(not host.revoked, Forbidden(f"host {host.host_id} is revoked", check="revoked"))
            require(host_available(host, now, ttl),
                    ConflictError(f"host {host.host_id} is not available: send a heartbeat first",
                                  check="host-unavailable"))
            require(host.ip == peer_ip, ConflictError(f"host {host.host_id} connects from {peer_ip} but announced "
                                                      f"{host.ip}; send a heartbeat from this address",
                                                      check="host-ip"))
            found(reads.image_artefact, "image", image_digest)
            require(reads.image_artefact == artefact_id,
                    NotFoundError(f"image {image_digest} is not an image of artefact {artefact_id}"))
            if renews is not None:
                reads = self._renewed_runtime_reads(conn, reads, renews, host.host_id, nonce, fingerprint, user_id,
                                                    artefact_id, image_digest)
            pipeline = reads.pipeline
            require(pipeline is not None, Forbidden(
                f"user {user_id} has no verified pipeline running {artefact_id} ({image_digest}) on host "
                f"{host.host_id}", check="no-pipeline"))
            assert pipeline is not None  # checked by require() above; narrows the type
            # The user only now: to a host that runs no pipeline of hers, whether a user exists or is
            # revoked is none of its business (it gets ``no-pipeline`` above either way).
            user = found(reads.user, "user", user_id)
            require(not user.revoked, Forbidden(f"user {user_id} is revoked", check="revoked"))
            require(pipeline.name is not None, NotFoundError(f"premise {pipeline.premise!r} does not exist"))
            running = self.instances.running(conn, generation=generation, head_seq=int(head.seq),
                                             artefact_id=artefact_id, exclude=(host.host_id, nonce), now=now)
            decision = self.policy.decide(
                pipeline.policy, Action.ISSUE_HOST_LICENCE, user=user_attributes(user),
                host=HostAttributes(host_id=host.host_id, owner=host.owner, premises=reads.host_premises,
                                    gpu_count=host.gpu_count, gpu_models=tuple(host.gpu_models),
                                    available=True),
                artefact=artefact_attributes(artefact),
                premise=PremiseAttributes(name=pipeline.name, members=reads.members),
                context=RequestContext(now=int(now), host_ip=peer_ip, running_instances=running))
            if not decision.allowed:
                raise _Denied(decision)
            if (presigned is None or presigned.reads is not reads or presigned.generation != generation
                    or presigned.policy_revision != decision.policy_revision):
                presigned = self._sign_host_licence(reads, peer_ip, artefact_id, user_id, image_digest, nonce,
                                                    renews, now, generation, decision.policy_revision)
            licence, plain, sealed = presigned.licence, presigned.plain, presigned.sealed
            jti = licence.claims["jti"]
            runtime = presigned.runtime
            runtime_certificate = licence.runtime_certificate
            seq = int(head.seq) + 1
            expires_at = float(licence.claims["exp"])
            conn.execute(_INSERT_LICENCE, dict(
                jti=jti, kind="host", request_key=request_key, request_fingerprint=fingerprint, host_id=host.host_id,
                user_id=user_id, artefact_id=artefact_id, digest=image_digest, nonce=nonce, runtime_name=runtime.name,
                runtime_thumbprint=licence.claims["cnf"]["x5t#S256"], renews=renews,
                pipeline_id=pipeline.pipeline_id, policy_revision=decision.policy_revision, issued_at=now,
                expires_at=expires_at, audit_seq=seq, response=sealed))
            conn.execute(_INSERT_CERTIFICATE, dict(
                serial=format(runtime_certificate.serial_number, "x"), role=Role.RUNTIME.value, name=runtime.name,
                not_after=runtime_certificate.not_valid_after_utc.timestamp(), revoked_at=None, created_at=now))
            audit.append(conn, actor=actor.uri, action="host-licence-issued", subject=jti,
                         policy_revision=decision.policy_revision, head=head,
                         details=dict(policies=list(decision.determining_policies), artefact_id=artefact_id,
                                      user_id=user_id, digest=image_digest, nonce=nonce, host_ip=peer_ip,
                                      running_instances=running, renews=renews, expires_at=licence.claims["exp"]))
        # Committed: this worker knows its own licence without reading it back.
        self.instances.issued(generation=generation, seq=seq, artefact_id=artefact_id, runtime=(host.host_id, nonce),
                              expires_at=expires_at)
        return plain

    def _replayed(self, row: Any, fingerprint: str) -> dict[str, Any]:
        """The response stored for a request key (a retry), or 409 when the parameters differ."""
        return cast(dict[str, Any], safejson.loads(self._replayed_json(row, fingerprint),
                                                   what="stored licence response"))

    def _replayed_json(self, row: Any, fingerprint: str) -> bytes:
        if row.request_fingerprint != fingerprint:
            raise ConflictError(f"nonce {row.nonce} was already used by this host for another request "
                                f"(licence {row.jti}); use a fresh nonce", check="nonce-replay")
        # A retry must not hand back what a revocation (of the licence, its artefact, host or user) took away,
        # nor a licence of a pipeline that is no longer running.
        if row.revoked_at is not None:
            raise LicenceError(f"licence {row.jti} is revoked", check="revoked")
        require_pipeline_running(row.pipeline_id, row.pipeline_status, f"licence {row.jti}")
        return self.box.open(row.response, row.jti)

    def _intermediate_pem(self) -> str:
        cached = getattr(self, "_intermediate_pem_text", None)
        if cached is None:
            cached = chain_pem([self.ca.intermediate]).decode()
            self._intermediate_pem_text = cached
        return cast(str, cached)

    @staticmethod
    def _validity(artefact: Any, now: float, default_seconds: int) -> dt.timedelta:
        seconds = float(artefact.licence_seconds or default_seconds)
        if artefact.not_after:
            seconds = min(seconds, artefact.not_after - now)
        return dt.timedelta(seconds=max(int(seconds), 1))

    def _audit_decision(self, session: Any, actor: Identity, action: str, subject: str, decision: Decision,
                        **details: Any) -> None:
        self.audit(session, actor, action, subject, policy_revision=decision.policy_revision,
                   policies=list(decision.determining_policies), **details)

    def _audit_denial(self, actor: Identity, action: str, decision: Decision, **details: Any) -> None:
        self.audit_now(actor, action, details.get("artefact_id", "-"), outcome="denied",
                       policy_revision=decision.policy_revision, policies=list(decision.determining_policies),
                       errors=list(decision.errors), **details)

    # -- step 6 ---------------------------------------------------------------------------------

    def issue_artefact_licence(self, actor: Identity, peer_certificate: Any, peer_ip: str, *, host_licence: str,
                               artefact_id: str) -> dict[str, Any]:
        check_name(artefact_id, "artefact ID")
        if not isinstance(host_licence, str):
            raise InputError("host_licence must be a compact JWS string", check="host-licence")
        trust = self.trust_store()
        claims = verify_licence(host_licence, trust, kind=LicenceKind.HOST,
                                expect=Expectations(artefact_id=artefact_id, runtime_certificate=peer_certificate),
                                now=dt.datetime.fromtimestamp(self.now(), dt.UTC))
        host_jti = claims["jti"]
        runtime = RuntimeID.from_claim(claims["runtime"])
        if actor.name != runtime.name:
            raise LicenceError(f"runtime certificate {actor.name} is not the runtime {runtime.name} of the licence",
                               check="runtime-key")
        request_key = _hash("artefact", host_jti)
        stored = self._stored_response(request_key, _hash(artefact_id))
        if stored is not None:
            return stored
        try:
            return self._issue_artefact_licence(actor, claims, runtime, peer_ip, request_key)
        except _Denied as denied:
            self._audit_denial(actor, "artefact-licence-denied", denied.decision, artefact_id=artefact_id,
                               host_licence_id=host_jti)
            raise denial(denied.decision) from None
        except IntegrityError:
            stored = self._stored_response(request_key, _hash(artefact_id))
            if stored is None:
                raise
            return stored

    def _issue_artefact_licence(self, actor: Identity, claims: dict[str, Any], runtime: RuntimeID, peer_ip: str,
                                request_key: str) -> dict[str, Any]:
        now = self.now()
        ttl = self.config.heartbeat_ttl_seconds
        host_jti = claims["jti"]
        # An artefact licence changes nothing the host-licence path caches: no generation increment.
        with self.transaction(changes=False) as session:
            # Head locked first (as the host-licence path and revocations do); the running instances
            # come from the tracker, which needs the generation and head seen under that lock.
            state = session.connection().execute(_STATE_AND_HEAD).one()
            record = found(session.get(Licence, host_jti), "host licence", host_jti)
            require(record.kind == "host", NotFoundError(f"host licence {host_jti!r} does not exist"))
            if record.revoked_at is not None:
                raise LicenceError(f"licence {host_jti} is revoked", check="revoked")
            artefact = found(session.get(Artefact, runtime.artefact_id), "artefact", runtime.artefact_id)
            require(not artefact.revoked, Forbidden(f"artefact {artefact.artefact_id} is revoked", check="revoked"))
            host = found(session.get(Host, runtime.host_id), "host", runtime.host_id)
            require(not host.revoked, Forbidden(f"host {host.host_id} is revoked", check="revoked"))
            user = found(session.get(User, runtime.user_id), "user", runtime.user_id)
            require(not user.revoked, Forbidden(f"user {user.user_id} is revoked", check="revoked"))
            pipeline = session.get(Pipeline, record.pipeline_id) if record.pipeline_id else None
            # The runtime belongs to the pipeline of its host licence: stopped or aborted, it gets nothing.
            require_pipeline_running(record.pipeline_id, pipeline.status if pipeline is not None else None,
                                     f"host licence {host_jti}")
            assert pipeline is not None  # checked above; narrows the type
            premise = found(session.get(Premise, pipeline.premise), "premise", pipeline.premise)
            running = self.instances.running(session.connection(), generation=int(state.generation),
                                             head_seq=int(state.seq), artefact_id=artefact.artefact_id,
                                             exclude=(host.host_id, runtime.nonce), now=now)
            decision = self.policy.decide(
                premise.policy, Action.ISSUE_ARTEFACT_LICENCE, user=user_attributes(user),
                host=host_attributes(session, host, now, ttl), artefact=artefact_attributes(artefact),
                premise=premise_attributes(session, premise),
                context=RequestContext(now=int(now), host_ip=runtime.host_ip, running_instances=running))
            if not decision.allowed:
                raise _Denied(decision)
            validity = self._validity(artefact, now, self.config.artefact_licence_seconds)
            token = self.issuer.issue_artefact_licence(
                claims, artefact_id=artefact.artefact_id, validity=validity,
                terms={"premise": premise.name, "policy_revision": decision.policy_revision},
                now=dt.datetime.fromtimestamp(now, dt.UTC))
            artefact_claims = verify_licence(token, self.trust_store(), kind=LicenceKind.ARTEFACT,
                                             now=dt.datetime.fromtimestamp(now, dt.UTC))
            jti = artefact_claims["jti"]
            response = {"licence_id": jti, "licence": token, "expires_at": artefact_claims["exp"],
                        "host_licence_id": host_jti}
            session.add(Licence(
                jti=jti, kind="artefact", request_key=request_key, request_fingerprint=_hash(artefact.artefact_id),
                host_id=host.host_id, user_id=user.user_id, artefact_id=artefact.artefact_id,
                digest=runtime.image_digest, nonce=runtime.nonce, runtime_name=runtime.name,
                runtime_thumbprint=claims["cnf"]["x5t#S256"], host_licence_jti=host_jti,
                pipeline_id=record.pipeline_id, policy_revision=decision.policy_revision, issued_at=now,
                expires_at=float(artefact_claims["exp"]), response=self.box.seal(json.dumps(response).encode(), jti)))
            self._audit_decision(session, actor, "artefact-licence-issued", jti, decision,
                                 artefact_id=artefact.artefact_id, host_licence_id=host_jti, host_id=host.host_id,
                                 peer_ip=peer_ip, running_instances=running)
        return response

    # -- queries --------------------------------------------------------------------------------

    def revoked_licence_ids(self) -> list[str]:
        """Licence IDs revoked before their expiry, for verifiers (BM, BL) to refuse."""
        now = self.now()
        with self.reading() as session:
            return list(session.execute(select(Licence.jti).where(
                Licence.revoked_at.is_not(None), Licence.expires_at > now).order_by(Licence.jti)).scalars())

    def count_licences(self) -> int:
        with self.reading() as session:
            return int(session.execute(select(func.count()).select_from(Licence)).scalar_one())

    def licence_ids(self) -> set[str]:
        with self.reading() as session:
            return set(session.execute(select(Licence.jti)).scalars())
