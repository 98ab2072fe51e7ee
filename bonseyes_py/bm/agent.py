"""The Bonseyes Module's core: steps 2 to 6 on one host, without HTTP.

``BonseyesModule`` is what the BM's Flask app adapts. It keeps its runtime records on disk so a
restarted BM can tell licensed containers (which it keeps and renews) from containers whose
set-up it never finished (which it removes: nothing runs unlicensed). Background threads send
heartbeats (step 2), renew host licences, stop a runtime whose renewal is refused (a revoked
artefact, host or user, a stopped pipeline) and tidy up containers that exited.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import docker
import docker.errors
from cryptography import x509

from bonseyes_py.bl import layout
from bonseyes_py.bm import records as rec
from bonseyes_py.bm.config import BMConfig
from bonseyes_py.bm.devices import device_requests_for
from bonseyes_py.bm.images import FetchResult, ImageStore, RegistryIdentity
from bonseyes_py.bm.netrelay import NetRelay, Route, plan_routes, relay_map
from bonseyes_py.bm.records import RecordStore, RuntimeRecord
from bonseyes_py.bm.sm_client import SMClient, SMRefused, is_final_refusal
from bonseyes_py.errors import BonseyesError, InputError, LicenceError
from bonseyes_py.identity.ids import RuntimeID, check_digest
from bonseyes_py.licences import Expectations, LicenceKind, verify_licence
from bonseyes_py.pki.certs import load_certificate, load_certificate_chain, load_crl
from bonseyes_py.pki.roles import Identity, Role, check_name
from bonseyes_py.pki.verify import TrustStore

log = logging.getLogger(__name__)

LABEL_HOST = "io.bonseyes.bm.host"
LABEL_NONCE = "io.bonseyes.bm.nonce"
LABEL_RUNTIME = "io.bonseyes.bm.runtime"
LABEL_PIPELINE = "io.bonseyes.bm.pipeline"
_ENV_NAME = re.compile(r"^BONSEYES_[A-Z0-9_]{1,64}\Z")
MAX_ENV = 32
EXIT_POLL_SECONDS = 0.5


class RuntimeStartError(BonseyesError):
    check = "runtime-start"
    http_status = 424


class BonseyesModule:
    def __init__(self, config: BMConfig, *, docker_client: docker.DockerClient | None = None,
                 sm: SMClient | None = None) -> None:
        self.config = config
        config.ensure_private_dirs()
        self.host_id = check_name(config.host_id, "host ID")
        self.docker = docker_client or (docker.DockerClient(base_url=config.docker_url, timeout=300)
                                        if config.docker_url else docker.from_env(timeout=300))
        self.sm = sm or SMClient(config)
        self.images = ImageStore(self.docker, config.registry, scheme=config.registry_scheme, identity=RegistryIdentity(
            certificate=config.certificate, key=config.key, ca_bundle=config.ca_bundle, name=config.host_id,
            engine_certs_dir=Path(config.engine_certs_dir) if config.engine_certs_dir else None))
        self.store = RecordStore(config.records, config.runtimes)
        self.ca_bundle_pem = config.ca_bundle.read_bytes()
        chain = load_certificate_chain(self.ca_bundle_pem)
        roots = [c for c in chain if c.issuer == c.subject]
        self._root = roots[0]
        self._intermediates = [c for c in chain if c.issuer != c.subject]
        self._crl: x509.CertificateRevocationList | None = None
        # One store for the agent's life: its memo of verified chains lasts; a new CRL replaces only the CRLs.
        self._trust = TrustStore(root=self._root, intermediates=list(self._intermediates))
        self._lock = threading.RLock()
        self._records: dict[str, RuntimeRecord] = {r.nonce: r for r in self.store.load_all()}
        self._licensed: dict[str, threading.Event] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.removed_digests: list[str] = []
        self.relay = NetRelay(config.bind_ip)
        self.fetch_timings: dict[str, dict[str, float]] = {}  # the last fetch of each digest (benchmarks)
        self.last_heartbeat: dict[str, Any] = {}

    # -- trust --------------------------------------------------------------------------------------

    def trust_store(self) -> TrustStore:
        """SM root and intermediate, with the SM's CRL once fetched (refreshed with each heartbeat)."""
        return self._trust

    def refresh_crl(self) -> None:
        try:
            self._crl = load_crl(self.sm.crl_pem())
            self._trust.replace_crls([self._crl])
        except BonseyesError as exc:
            log.warning("could not refresh the CRL: %s", exc)

    # -- step 2 -------------------------------------------------------------------------------------

    def authenticate(self) -> dict[str, Any]:
        """Show up at the SM; a refusal (unregistered, revoked host) raises and the BM must not serve."""
        answer = self.sm.heartbeat()
        self.last_heartbeat = {**answer, "at": time.time()}
        self.refresh_crl()
        return answer

    def start_background(self) -> None:
        self._restore_relays()
        for name, target in (("heartbeat", self._heartbeat_loop), ("renewal", self._renewal_loop)):
            thread = threading.Thread(target=target, name=f"bm-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        self._stop.set()
        self.relay.close_all()

    def _restore_relays(self) -> None:
        """After a BM restart: the licensed containers' only network is this process's relay."""
        with self._lock:
            running = [r for r in self._records.values() if r.status == rec.RUNNING and r.routes]
        for record in running:
            try:
                self.relay.open(record.nonce, self.store.net_directory(record.nonce),
                                [Route.from_dict(route) for route in record.routes])
            except (OSError, ValueError, KeyError) as exc:
                self._stop_record(record, f"cannot restore its network relay after a BM restart: {exc}")

    def _endpoints(self, runtime_name: str, routes: list[Route]) -> dict[str, Any]:
        """What BL reads in endpoints.json (``relay``: see ``netrelay.relay_map``)."""
        return {"sm_url": self.config.sm_url, "bm_url": self.config.url, "host_id": self.host_id,
                "host_ip": self.config.bind_ip, "runtime_name": runtime_name, "relay": relay_map(routes)}

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.config.heartbeat_seconds):
            try:
                self.authenticate()
            except BonseyesError as exc:
                log.warning("heartbeat refused or failed: %s", exc)
                if is_final_refusal(exc):
                    # A revoked host must not keep anything running on the SM's behalf.
                    self.stop_runtimes(None, reason=f"host refused by SM: {exc}")

    # -- step 3 -------------------------------------------------------------------------------------

    def fetch_images(self, digests: list[str]) -> list[FetchResult]:
        results = [self.images.fetch(digest) for digest in digests]
        with self._lock:
            for result in results:
                self.fetch_timings[result.requested] = dict(result.timings)
        return results

    def remove_images(self, digests: list[str]) -> list[str]:
        removed = []
        for digest in digests:
            with self._lock:
                in_use = [r for r in self._records.values() if r.digest == digest and r.status == rec.RUNNING]
            for record in in_use:
                self._stop_record(record, "image removed on the SM's instruction")
            if self.images.remove(digest):
                removed.append(digest)
            self.removed_digests.append(digest)
        return removed

    # -- steps 4 and 5 -------------------------------------------------------------------------------

    def start_runtime(self, *, pipeline_id: str, position: int, artefact_id: str, digest: str, user_id: str,
                      env: dict[str, str] | None = None) -> dict[str, Any]:
        check_name(pipeline_id, "pipeline ID")
        check_name(artefact_id, "artefact ID")
        check_name(user_id, "user ID")
        check_digest(digest)
        if not isinstance(position, int) or isinstance(position, bool) or not 0 <= position < 1024:
            raise InputError("position must be an integer between 0 and 1023", check="position")
        stage_env = _check_env(env or {})
        routes = plan_routes(sm_url=self.config.sm_url, bind_ip=self.config.bind_ip, bm_port=self.config.port,
                             stage_env=stage_env)
        timings: dict[str, float] = {}
        started = time.perf_counter()
        if not self.images.is_present(digest):
            raise RuntimeStartError(f"image {digest} was not fetched and verified on host {self.host_id}",
                                    check="image-not-fetched")
        reference = self.images.reference(digest)
        timings["image_check"] = time.perf_counter() - started

        # Step 4: host licence for a fresh nonce, checked here before anything is started with it.
        started = time.perf_counter()
        nonce = secrets.token_urlsafe(24)
        answer = self.sm.host_licence(image_digest=digest, artefact_id=artefact_id, user_id=user_id, nonce=nonce)
        runtime_chain = load_certificate_chain(str(answer.get("runtime_chain", "")).encode())
        claims = verify_licence(answer["licence"], self.trust_store(), kind=LicenceKind.HOST, expect=Expectations(
            host_id=self.host_id, host_ip=self.config.bind_ip, image_digest=digest, nonce=nonce,
            artefact_id=artefact_id, user_id=user_id, runtime_certificate=runtime_chain[0]))
        runtime = RuntimeID.from_claim(claims["runtime"])
        device_requests = device_requests_for(claims.get("terms") or {})
        timings["host_licence"] = time.perf_counter() - started

        record = RuntimeRecord(nonce=nonce, runtime_name=runtime.name, pipeline_id=pipeline_id, position=position,
                               artefact_id=artefact_id, digest=digest, user_id=user_id,
                               host_licence_id=claims["jti"], host_licence_expires=float(claims["exp"]),
                               container_name=f"bonseyes-{nonce[:16]}".replace("_", "-"), timings=timings)
        event = threading.Event()
        with self._lock:
            self._records[nonce] = record
            self._licensed[nonce] = event
        self.store.save(record)
        try:
            started = time.perf_counter()
            directory = self.store.write_material(
                nonce, host_licence=answer["licence"], runtime_key_pem=str(answer["runtime_key"]),
                runtime_chain_pem=str(answer["runtime_chain"]), ca_bundle_pem=self.ca_bundle_pem,
                endpoints=self._endpoints(runtime.name, routes))
            net_directory = self.store.net_directory(nonce)
            try:
                self.relay.open(nonce, net_directory, routes)
            except OSError as exc:
                raise RuntimeStartError(f"cannot open the network relay of {runtime.name}: {exc}",
                                        check="relay") from exc
            record.routes = [route.view() for route in routes]
            timings["material"] = time.perf_counter() - started

            # Step 5: start the container; BL (its entrypoint) takes it from here. No network of its
            # own: BL reaches SM, BM and the next stage only through the relay's sockets.
            started = time.perf_counter()
            container = self.docker.containers.run(
                reference, detach=True, name=record.container_name, network_mode="none", privileged=False,
                security_opt=["no-new-privileges"],
                volumes={str(directory): {"bind": layout.LICENCE_DIR, "mode": "ro"},
                         str(net_directory): {"bind": layout.NET_DIR, "mode": "rw"}},
                environment={**stage_env, "BONSEYES_HOST_IP": self.config.bind_ip},
                labels={LABEL_HOST: self.host_id, LABEL_NONCE: nonce, LABEL_RUNTIME: runtime.name,
                        LABEL_PIPELINE: pipeline_id},
                # GPUs only when the host licence grants them (terms["gpus"], see bm/devices.py).
                **({"device_requests": device_requests} if device_requests else {}))
            record.container_id = str(container.id)
            self.store.save(record)
            timings["container_start"] = time.perf_counter() - started

            # Step 6 happens in BL and arrives at ``accept_artefact_licence``; wait for it or for BL to give up.
            started = time.perf_counter()
            self._wait_licensed(record, event, container)
            timings["bl_authorisation"] = time.perf_counter() - started
        except BaseException as exc:
            self._fail(record, str(exc))
            raise
        finally:
            with self._lock:
                self._licensed.pop(nonce, None)
        self.store.save(record)
        return record.view()

    def _wait_licensed(self, record: RuntimeRecord, event: threading.Event, container: Any) -> None:
        deadline = time.monotonic() + self.config.bl_timeout_seconds
        # The event wakes this at once when BL's licence arrives; the engine is asked only every
        # EXIT_POLL_SECONDS whether BL gave up, so parallel set-ups do not flood it with inspects.
        while not event.wait(EXIT_POLL_SECONDS):
            if time.monotonic() > deadline:
                raise RuntimeStartError(f"BL of {record.runtime_name} did not present an artefact licence within "
                                        f"{self.config.bl_timeout_seconds:.0f} s", check="bl-timeout")
            try:
                container.reload()
            except docker.errors.NotFound as exc:
                raise RuntimeStartError(f"container of {record.runtime_name} disappeared",
                                        check="bl-exited") from exc
            if container.status in ("exited", "dead"):
                if event.is_set():
                    break
                logs = container.logs(tail=5).decode(errors="replace").strip().replace("\n", " | ")
                raise RuntimeStartError(f"BL of {record.runtime_name} exited before authorisation: {logs}",
                                        check="bl-exited")
        if record.status != rec.RUNNING:
            raise RuntimeStartError(f"runtime {record.runtime_name} is {record.status}", check="bl-refused")

    def _fail(self, record: RuntimeRecord, detail: str) -> None:
        record.status = rec.FAILED
        record.detail = detail[:500]
        self._remove_container(record)
        self.relay.close(record.nonce)
        self.store.delete_material(record.nonce)
        self.store.save(record)

    # -- step 6 -------------------------------------------------------------------------------------

    def accept_artefact_licence(self, peer: Identity, peer_certificate: x509.Certificate,
                                licence: str, timings: Any = None) -> dict[str, Any]:
        """BL forwards the artefact licence it got from the SM; BM checks it names exactly its runtime.

        BL forwards a fresh one at each of its renewals too (before the previous one expires); BM
        records the newest. ``timings`` are BL's own phase durations (seconds), kept for benchmarks.
        """
        if peer.role is not Role.RUNTIME:
            raise LicenceError("only a runtime may present an artefact licence", check="role")
        with self._lock:
            record = next((r for r in self._records.values() if r.runtime_name == peer.name), None)
        if record is None or record.status not in (rec.STARTING, rec.RUNNING):
            raise LicenceError(f"runtime {peer.name} was not started by the BM of host {self.host_id}",
                               check="unknown-runtime")
        if not isinstance(licence, str):
            raise InputError("licence must be a compact JWS string", check="licence")
        began = time.perf_counter()
        claims = verify_licence(licence, self.trust_store(), kind=LicenceKind.ARTEFACT, expect=Expectations(
            host_id=self.host_id, host_ip=self.config.bind_ip, image_digest=record.digest, nonce=record.nonce,
            artefact_id=record.artefact_id, user_id=record.user_id, runtime_certificate=peer_certificate,
            host_licence_id=record.host_licence_id))
        with self._lock:
            if record.status == rec.STARTING:
                record.timings.update(_check_timings(timings))
                record.timings["bm_accept"] = time.perf_counter() - began
            record.status = rec.RUNNING
            record.artefact_licence_id = claims["jti"]
            record.artefact_licence_expires = float(claims["exp"])
            record.artefact_licences += 1
            self.store.save(record)
            event = self._licensed.get(record.nonce)
        if event is not None:
            event.set()
        return {"status": "licensed", "host_id": self.host_id, "runtime_name": record.runtime_name,
                "artefact_licence_id": claims["jti"]}

    # -- renewal, stop, reconcile -------------------------------------------------------------------

    def _renew_interval(self, record: RuntimeRecord) -> float:
        if self.config.renew_seconds > 0:
            return self.config.renew_seconds
        return max(1.0, (record.host_licence_expires - time.time()) / 3)

    def _renewal_loop(self) -> None:
        next_due: dict[str, float] = {}
        while not self._stop.wait(0.5):
            with self._lock:
                running = [r for r in self._records.values() if r.status == rec.RUNNING]
            for record in running:
                due = next_due.setdefault(record.nonce, time.monotonic() + self._renew_interval(record))
                if time.monotonic() >= due:
                    self.renew(record)
                    next_due[record.nonce] = time.monotonic() + self._renew_interval(record)
            self.tidy_exited()

    def renew(self, record: RuntimeRecord) -> bool:
        """Renew one runtime's host licence; a final refusal stops the runtime (fail closed)."""
        try:
            answer = self.sm.host_licence(image_digest=record.digest, artefact_id=record.artefact_id,
                                          user_id=record.user_id, nonce=record.nonce, renews=record.host_licence_id)
            chain = load_certificate_chain(str(answer["runtime_chain"]).encode())
            claims = verify_licence(answer["licence"], self.trust_store(), kind=LicenceKind.HOST, expect=Expectations(
                host_id=self.host_id, host_ip=self.config.bind_ip, image_digest=record.digest, nonce=record.nonce,
                artefact_id=record.artefact_id, user_id=record.user_id, runtime_certificate=chain[0]))
        except BonseyesError as exc:
            if is_final_refusal(exc) or time.time() >= record.host_licence_expires:
                log.warning("renewal of %s refused: %s; stopping it", record.runtime_name, exc)
                self._stop_record(record, f"licence renewal refused: {exc}")
                return False
            log.warning("renewal of %s failed, will retry: %s", record.runtime_name, exc)
            return True
        self.store.write_material(record.nonce, host_licence=answer["licence"],
                                  runtime_key_pem=str(answer["runtime_key"]),
                                  runtime_chain_pem=str(answer["runtime_chain"]), ca_bundle_pem=self.ca_bundle_pem,
                                  endpoints=self._endpoints(record.runtime_name,
                                                            [Route.from_dict(r) for r in record.routes]))
        with self._lock:
            record.host_licence_id = claims["jti"]
            record.host_licence_expires = float(claims["exp"])
            self.store.save(record)
        return True

    def _remove_container(self, record: RuntimeRecord) -> None:
        for reference in filter(None, (record.container_id, record.container_name)):
            try:
                self.docker.containers.get(reference).remove(force=True)
                return
            except docker.errors.NotFound:
                continue
            except docker.errors.APIError as exc:
                log.warning("could not remove container %s: %s", reference, exc)

    def _stop_record(self, record: RuntimeRecord, reason: str) -> None:
        self._remove_container(record)
        self.relay.close(record.nonce)
        self.store.delete_material(record.nonce)
        with self._lock:
            record.status = rec.STOPPED
            record.detail = reason[:500]
            self.store.save(record)

    def stop_runtimes(self, pipeline_id: str | None, *, reason: str = "stopped on the SM's instruction",
                      nonces: list[str] | None = None) -> list[str]:
        with self._lock:
            chosen = [r for r in self._records.values()
                      if (pipeline_id is None or r.pipeline_id == pipeline_id)
                      and (nonces is None or r.nonce in nonces)]
        # Runtimes still being set up are stopped too: their start fails and removes what it made.
        stopped = []
        for record in chosen:
            if record.status in (rec.STARTING, rec.RUNNING):
                self._stop_record(record, reason)
                stopped.append(record.runtime_name)
        # Containers of this host the records do not know (a crash between run and save).
        filters = {"label": [f"{LABEL_HOST}={self.host_id}"]}
        if pipeline_id is not None:
            filters["label"].append(f"{LABEL_PIPELINE}={pipeline_id}")
        for container in self.docker.containers.list(all=True, filters=filters):
            if nonces is None or container.labels.get(LABEL_NONCE) in nonces:
                container.remove(force=True)
        return stopped

    def tidy_exited(self) -> None:
        """A licensed container that exited is removed with its key material (one engine call per sweep)."""
        with self._lock:
            running = [r for r in self._records.values() if r.status == rec.RUNNING]
        if not running:
            return
        try:
            containers = {c.labels.get(LABEL_NONCE): c for c in self.docker.containers.list(
                all=True, ignore_removed=True, filters={"label": f"{LABEL_HOST}={self.host_id}"})}
        except docker.errors.APIError:
            return
        for record in running:
            container = containers.get(record.nonce)
            if container is None:
                self._stop_record(record, "container is gone")
                continue
            if container.status in ("exited", "dead"):
                try:
                    container.reload()
                    code = container.attrs.get("State", {}).get("ExitCode")
                    tail = container.logs(tail=3).decode(errors="replace").strip().replace("\n", " | ")
                except docker.errors.APIError:
                    code, tail = "?", ""
                self._stop_record(record, f"payload exited with status {code}: {tail}"[:500])

    def reconcile(self) -> dict[str, list[str]]:
        """After a (re)start: keep licensed runtimes, remove everything whose set-up never finished."""
        kept, removed = [], []
        with self._lock:
            records = dict(self._records)
        for record in records.values():
            if record.status == rec.RUNNING:
                kept.append(record.runtime_name)
            elif record.status == rec.STARTING:
                self._fail(record, "BM restarted before this runtime was authorised")
                removed.append(record.runtime_name)
        known = {r.nonce for r in records.values() if r.status == rec.RUNNING}
        for container in self.docker.containers.list(all=True, filters={"label": f"{LABEL_HOST}={self.host_id}"}):
            if container.labels.get(LABEL_NONCE) not in known:
                container.remove(force=True)
                removed.append(container.labels.get(LABEL_RUNTIME, container.name))
        for nonce_dir in self.config.runtimes.iterdir():
            if nonce_dir.name not in known:
                self.store.delete_material(nonce_dir.name)
        self.tidy_exited()
        return {"kept": kept, "removed": removed}

    def relay_routes(self) -> dict[str, int]:
        """Listening relay routes per running runtime: its network, open (0 means unreachable)."""
        with self._lock:
            running = [r for r in self._records.values() if r.status == rec.RUNNING]
        return {r.runtime_name: self.relay.routes_open(r.nonce) for r in running}

    def runtimes(self, pipeline_id: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [r.view() for r in self._records.values() if pipeline_id is None or r.pipeline_id == pipeline_id]

    def status(self) -> dict[str, Any]:
        return {"host_id": self.host_id, "ip": self.config.bind_ip, "port": self.config.port,
                "last_heartbeat": self.last_heartbeat, "runtimes": self.runtimes(),
                "removed_digests": list(self.removed_digests), "fetch_timings": dict(self.fetch_timings),
                "relay_routes": self.relay_routes(),
                "now": dt.datetime.now(dt.UTC).isoformat()}


def _check_env(env: Any) -> dict[str, str]:
    if not isinstance(env, dict) or len(env) > MAX_ENV:
        raise InputError(f"env must be an object of at most {MAX_ENV} entries", check="env")
    for name, value in env.items():
        if not isinstance(name, str) or not _ENV_NAME.match(name) or not isinstance(value, str) or len(value) > 1024:
            raise InputError(f"env entry {name!r} must be BONSEYES_[A-Z0-9_]+ with a string value up to 1024 "
                             "characters", check="env")
    return dict(env)


def _check_timings(value: Any) -> dict[str, float]:
    """BL's phase durations: at most 16 ``bl_*`` names with non-negative numbers; anything else is dropped."""
    if not isinstance(value, dict):
        return {}
    return {str(k): float(v) for k, v in list(value.items())[:16]
            if isinstance(k, str) and k.startswith("bl_") and len(k) <= 32 and isinstance(v, int | float)
            and not isinstance(v, bool) and 0 <= v < 3600}


def certificate_from_pem(pem: str) -> x509.Certificate:
    return load_certificate(pem.encode())


__all__ = ["BonseyesModule", "RuntimeStartError", "SMRefused"]
