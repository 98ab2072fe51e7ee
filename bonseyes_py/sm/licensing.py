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
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from bonseyes_py.errors import InputError, LicenceError
from bonseyes_py.identity.ids import RuntimeID, check_digest, check_nonce
from bonseyes_py.licences import Expectations, LicenceKind, certificate_thumbprint, verify_licence
from bonseyes_py.pki.certs import certificate_pem, chain_pem
from bonseyes_py.pki.keys import private_key_pem
from bonseyes_py.pki.roles import Identity, Role, check_name
from bonseyes_py.policy import Action, Decision, RequestContext
from bonseyes_py.sm.artefacts import artefact_attributes
from bonseyes_py.sm.attributes import host_attributes, user_attributes
from bonseyes_py.sm.core import Forbidden, SMCore, found, require
from bonseyes_py.sm.hosts import host_available
from bonseyes_py.sm.models import Artefact, Host, Image, Licence, Pipeline, PipelineStage, Premise, User
from bonseyes_py.sm.pipelines import _Denied, denial
from bonseyes_py.sm.premises import premise_attributes
from bonseyes_py.sm.users import record_certificate
from bonseyes_py.web.errors import ConflictError, NotFoundError


def _hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, separators=(",", ":")).encode()).hexdigest()


class LicenceOperations(SMCore):
    # -- step 4 ---------------------------------------------------------------------------------

    def issue_host_licence(self, actor: Identity, peer_ip: str, *, image_digest: str, artefact_id: str,
                           user_id: str, nonce: str, renews: str | None = None) -> dict[str, Any]:
        check_digest(image_digest)
        check_name(artefact_id, "artefact ID")
        check_name(user_id, "user ID")
        check_nonce(nonce)
        if renews is not None and (not isinstance(renews, str) or len(renews) > 64):
            raise InputError("renews must be the licence_id of the licence being renewed", check="renews")
        host_id = actor.name
        request_key = _hash("host", host_id, nonce, renews or "")
        fingerprint = _hash(image_digest, artefact_id, user_id)
        stored = self._stored_response(request_key, fingerprint)
        if stored is not None:
            return stored
        try:
            return self._issue_host_licence(actor, peer_ip, image_digest, artefact_id, user_id, nonce, renews,
                                            request_key, fingerprint)
        except _Denied as denied:
            self._audit_denial(actor, "host-licence-denied", denied.decision, artefact_id=artefact_id,
                               user_id=user_id, digest=image_digest, nonce=nonce)
            raise denial(denied.decision) from None
        except IntegrityError:
            # A concurrent request with the same key committed first: answer as a retry would be answered.
            stored = self._stored_response(request_key, fingerprint)
            if stored is None:
                raise
            return stored

    def _stored_response(self, request_key: str, fingerprint: str) -> dict[str, Any] | None:
        with self.transaction() as session:
            row = session.execute(select(Licence).where(Licence.request_key == request_key)).scalar_one_or_none()
            if row is None:
                return None
            if row.request_fingerprint != fingerprint:
                raise ConflictError(f"nonce {row.nonce} was already used by this host for another request "
                                    f"(licence {row.jti}); use a fresh nonce", check="nonce-replay")
            return json.loads(self.box.open(row.response, row.jti))

    def _running_instances(self, session: Any, artefact_id: str, exclude: tuple[str, str], now: float) -> int:
        runtimes = session.execute(
            select(Licence.host_id, Licence.nonce).where(
                Licence.kind == "host", Licence.artefact_id == artefact_id, Licence.expires_at > now,
                Licence.revoked_at.is_(None)).distinct()).all()
        return sum(1 for runtime in runtimes if tuple(runtime) != exclude)

    def _issue_host_licence(self, actor: Identity, peer_ip: str, image_digest: str, artefact_id: str, user_id: str,
                            nonce: str, renews: str | None, request_key: str, fingerprint: str) -> dict[str, Any]:
        now = self.now()
        ttl = self.config.heartbeat_ttl_seconds
        with self.transaction() as session:
            # Locking the artefact serialises issuers of one artefact, so an instance limit holds under load.
            artefact = session.execute(select(Artefact).where(Artefact.artefact_id == artefact_id)
                                       .with_for_update()).scalar_one_or_none()
            artefact = found(artefact, "artefact", artefact_id)
            require(not artefact.revoked, Forbidden(f"artefact {artefact_id} is revoked", check="revoked"))
            host = found(session.get(Host, actor.name), "host", actor.name)
            require(not host.revoked, Forbidden(f"host {host.host_id} is revoked", check="revoked"))
            require(host_available(host, now, ttl),
                    ConflictError(f"host {host.host_id} is not available: send a heartbeat first",
                                  check="host-unavailable"))
            require(host.ip == peer_ip, ConflictError(f"host {host.host_id} connects from {peer_ip} but announced "
                                                      f"{host.ip}; send a heartbeat from this address",
                                                      check="host-ip"))
            user = found(session.get(User, user_id), "user", user_id)
            require(not user.revoked, Forbidden(f"user {user_id} is revoked", check="revoked"))
            image = found(session.get(Image, image_digest), "image", image_digest)
            require(image.artefact_id == artefact_id,
                    NotFoundError(f"image {image_digest} is not an image of artefact {artefact_id}"))
            pipeline = session.execute(
                select(Pipeline).join(PipelineStage, PipelineStage.pipeline_id == Pipeline.pipeline_id).where(
                    Pipeline.user_id == user_id, Pipeline.status == "ready", PipelineStage.host_id == host.host_id,
                    PipelineStage.artefact_id == artefact_id, PipelineStage.digest == image_digest)
                .order_by(Pipeline.created_at.desc()).limit(1)).scalar_one_or_none()
            require(pipeline is not None, Forbidden(
                f"user {user_id} has no verified pipeline running {artefact_id} ({image_digest}) on host "
                f"{host.host_id}", check="no-pipeline"))
            if renews is not None:
                previous = session.get(Licence, renews)
                require(previous is not None and previous.kind == "host" and previous.host_id == host.host_id
                        and previous.nonce == nonce and previous.request_fingerprint == fingerprint,
                        ConflictError(f"licence {renews} is not a host licence of this runtime", check="renewal"))
                require(previous is not None and previous.revoked_at is None,
                        Forbidden(f"licence {renews} is revoked", check="revoked"))
            assert pipeline is not None  # checked by require() above; narrows the type
            premise = found(session.get(Premise, pipeline.premise), "premise", pipeline.premise)
            running = self._running_instances(session, artefact_id, (host.host_id, nonce), now)
            decision = self.policy.decide(
                premise.policy, Action.ISSUE_HOST_LICENCE, user=user_attributes(user),
                host=host_attributes(session, host, now, ttl), artefact=artefact_attributes(artefact),
                premise=premise_attributes(session, premise),
                context=RequestContext(now=int(now), host_ip=peer_ip, running_instances=running))
            if not decision.allowed:
                raise _Denied(decision)
            validity = self._validity(artefact, now, self.config.host_licence_seconds)
            runtime = RuntimeID(image_digest=image_digest, artefact_id=artefact_id, user_id=user_id,
                                host_id=host.host_id, nonce=nonce, host_ip=peer_ip)
            terms = {"premise": premise.name, "policy_revision": decision.policy_revision,
                     "pipeline_id": pipeline.pipeline_id, "max_instances": artefact.max_instances}
            licence = self.issuer.issue_host_licence(runtime, validity=validity, terms=terms,
                                                     now=dt.datetime.fromtimestamp(now, dt.UTC))
            jti = licence.claims["jti"]
            response = {
                "licence_id": jti, "licence": licence.token, "expires_at": licence.claims["exp"],
                "runtime_id": runtime.as_claim(), "runtime_name": runtime.name,
                "runtime_key": private_key_pem(licence.runtime_key).decode(),
                "runtime_certificate": certificate_pem(licence.runtime_certificate).decode(),
                "runtime_chain": chain_pem([licence.runtime_certificate, self.ca.intermediate]).decode(),
                "renews": renews,
            }
            session.add(Licence(
                jti=jti, kind="host", request_key=request_key, request_fingerprint=fingerprint, host_id=host.host_id,
                user_id=user_id, artefact_id=artefact_id, digest=image_digest, nonce=nonce, runtime_name=runtime.name,
                runtime_thumbprint=certificate_thumbprint(licence.runtime_certificate), renews=renews,
                pipeline_id=pipeline.pipeline_id, policy_revision=decision.policy_revision, issued_at=now,
                expires_at=float(licence.claims["exp"]), response=self.box.seal(json.dumps(response).encode(), jti)))
            record_certificate(self, session, licence.runtime_certificate, Role.RUNTIME, runtime.name)
            self._audit_decision(session, actor, "host-licence-issued", jti, decision, artefact_id=artefact_id,
                                 user_id=user_id, digest=image_digest, nonce=nonce, host_ip=peer_ip,
                                 running_instances=running, renews=renews, expires_at=licence.claims["exp"])
        return response

    @staticmethod
    def _validity(artefact: Artefact, now: float, default_seconds: int) -> dt.timedelta:
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
        with self.transaction() as session:
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
            premise_name = pipeline.premise if pipeline is not None else ""
            premise = found(session.get(Premise, premise_name), "premise", premise_name)
            running = self._running_instances(session, artefact.artefact_id, (host.host_id, runtime.nonce), now)
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
        with self.transaction() as session:
            return list(session.execute(select(Licence.jti).where(
                Licence.revoked_at.is_not(None), Licence.expires_at > now).order_by(Licence.jti)).scalars())

    def count_licences(self) -> int:
        with self.transaction() as session:
            return int(session.execute(select(func.count()).select_from(Licence)).scalar_one())

    def licence_ids(self) -> set[str]:
        with self.transaction() as session:
            return set(session.execute(select(Licence.jti)).scalars())
