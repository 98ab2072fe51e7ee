"""Host registration (step 1) and host authentication / heartbeat (step 2).

A host is named after its hardware (``host_name_for(hardware_id)``). Its owner vouches for it with
a host ID (the hardware ID signed by the owner's user certificate); the SM issues the BM's host
certificate from a CSR, with the host name as a DNS SAN so the SM can pin it when it calls the BM.
A host whose hardware ID changed gets a different name, and a request to re-register under the old
name is refused: the old name's hardware is not this machine.

Only the owner (or an admin) registers a host, and a user may name only premises she is a member
of: registering, and re-registering, adds the host to those premises. A user learns nothing of
premises she is not a member of: an unknown premise is the same 403 ``premise-member`` as another
tenant's (an admin gets 404). Reading a host record, likewise: to a user or host, an unknown host
ID and somebody else's host are the same 403 ``host-owner``.

A host is available while its heartbeats arrive within ``heartbeat_ttl_seconds``; its address is
the TLS peer address of its last heartbeat, never a value it claims.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, cast

from sqlalchemy import Table, bindparam, or_, select, update

from bonseyes_py.errors import InputError
from bonseyes_py.identity.hardware import host_name_for
from bonseyes_py.identity.ids import verify_host_id
from bonseyes_py.pki.certs import certificate_pem, chain_pem, load_csr
from bonseyes_py.pki.roles import Identity, Role
from bonseyes_py.sm.core import Forbidden, SMCore, check_int, check_str_list, found, require
from bonseyes_py.sm.models import Host, Premise, PremiseHost, PremiseUser, User
from bonseyes_py.sm.users import record_certificate
from bonseyes_py.web.errors import ConflictError

log = logging.getLogger(__name__)


_HOSTS = cast(Table, Host.__table__)
_HOST_STATE = select(_HOSTS.c.host_id, _HOSTS.c.revoked, _HOSTS.c.ip, _HOSTS.c.bm_port, _HOSTS.c.last_seen,
                     _HOSTS.c.online_since).where(_HOSTS.c.host_id == bindparam("host_id"))
# Never moves last_seen backwards, and never revives a host revoked since its heartbeat was queued.
_TOUCH_HOST = (update(_HOSTS).where(_HOSTS.c.host_id == bindparam("touched_host"), _HOSTS.c.revoked.is_(False),
                                    or_(_HOSTS.c.last_seen.is_(None), _HOSTS.c.last_seen < bindparam("seen")))
               .values(last_seen=bindparam("seen")))


def host_available(host: Any, now: float, ttl: float) -> bool:
    return bool(not host.revoked and host.last_seen is not None and now - host.last_seen <= ttl)


class HostOperations(SMCore):
    def register_host(self, actor: Identity, host_id_token: str, csr_pem: str, *, premises: list[str] | None = None,
                      gpu_count: int = 0, gpu_models: list[str] | None = None,
                      name: str | None = None) -> dict[str, Any]:
        if not isinstance(host_id_token, str) or not isinstance(csr_pem, str):
            raise InputError("host_id and csr must be strings", check="input")
        premises = check_str_list(premises or [], "premises", limit=100)
        gpu_models = check_str_list(gpu_models or [], "gpu models", limit=64)
        check_int(gpu_count, "gpu count", maximum=1024)
        host_id = verify_host_id(host_id_token, self.trust_store())
        owner = Identity.parse_uri(host_id.owner_uri)
        if actor.role is Role.USER and actor.uri != owner.uri:
            raise Forbidden(f"host ID is signed by {owner.uri}, not by the caller {actor.uri}", check="host-owner")
        host_name = host_name_for(host_id.hardware_id)
        if name is not None and name != host_name:
            raise ConflictError(f"host {name!r} was registered for other hardware; this host's hardware ID "
                                f"gives the name {host_name!r}: register it as a new host", check="hardware-changed")
        csr = load_csr(csr_pem.encode())
        with self.transaction() as session:
            user = found(session.get(User, owner.name), "owner", owner.name)
            require(not user.revoked, Forbidden(f"owner {owner.name} is revoked", check="revoked"))
            for premise in premises:
                if actor.role is Role.ADMIN:
                    found(session.get(Premise, premise), "premise", premise)
                else:
                    # A user puts hosts only into premises she is a member of (an admin into any). A
                    # membership implies the premise exists, so an unknown one gets this answer too.
                    require(session.get(PremiseUser, (premise, actor.name)) is not None,
                            Forbidden(f"{actor.uri} is not a member of premise {premise} and cannot add hosts "
                                      f"to it", check="premise-member"))
            host = session.get(Host, host_name)
            if host is not None:
                require(host.hardware_id == host_id.hardware_id,
                        ConflictError(f"host {host_name} is registered for other hardware", check="hardware-changed"))
                # The name comes from the caller's own hardware ID; who else registered it is not hers to know.
                require(host.owner == owner.name,
                        ConflictError(f"host {host_name} is registered to another owner"
                                      + (f" ({host.owner})" if actor.role is Role.ADMIN else ""), check="host-owner"))
                require(not host.revoked, Forbidden(f"host {host_name} is revoked", check="revoked"))
                host.host_id_token = host_id_token
                host.gpu_count = gpu_count
                host.gpu_models = gpu_models
                action = "host-reregistered"
            else:
                host = Host(host_id=host_name, hardware_id=host_id.hardware_id, owner=owner.name,
                            host_id_token=host_id_token, gpu_count=gpu_count, gpu_models=gpu_models,
                            revoked=False, created_at=self.now())
                session.add(host)
                action = "host-registered"
            session.flush()
            for premise in premises:
                if session.get(PremiseHost, (premise, host_name)) is None:
                    session.add(PremiseHost(premise=premise, host_id=host_name))
            certificate = self.ca.issue_from_csr(csr, Role.HOST, host_name, dns_names=(host_name,))
            record_certificate(self, session, certificate, Role.HOST, host_name)
            self.audit(session, actor, action, self.identity(Role.HOST, host_name).uri,
                       hardware_id=host_id.hardware_id, owner=owner.name, premises=premises,
                       serial=format(certificate.serial_number, "x"))
            member_of = self._premises_of(session, host_name)
        return {"host_id": host_name, "hardware_id": host_id.hardware_id, "owner": owner.name,
                "premises": member_of, "certificate": certificate_pem(certificate).decode(),
                "chain": chain_pem(self.ca.chain).decode()}

    @staticmethod
    def _premises_of(session: Any, host_id: str) -> list[str]:
        return sorted(session.execute(select(PremiseHost.premise).where(PremiseHost.host_id == host_id)).scalars())

    def heartbeat(self, actor: Identity, peer_ip: str, *, bm_port: int | None = None) -> dict[str, Any]:
        """Step 2: the BM shows up over mTLS; the SM records its address and marks it available.

        A host that is not available yet, moved, changed its BM port, or whose stored ``last_seen``
        is older than half the TTL is written synchronously (so "online" is true in the database
        before the BM hears it). Otherwise the heartbeat only refreshes a host the database already
        shows available for at least half a TTL more: it is kept in memory and written with the
        others in one transaction every ``heartbeat_flush_seconds``. Revocation is checked on every
        heartbeat, against the database.
        """
        if bm_port is not None:
            check_int(bm_port, "bm port", minimum=1, maximum=65535)
        now = self.now()
        ttl = self.config.heartbeat_ttl_seconds
        with self.read_engine.connect() as connection:
            state = connection.execute(_HOST_STATE, {"host_id": actor.name}).one_or_none()
            connection.rollback()
        host_state = found(state, "host", actor.name)
        require(not host_state.revoked, Forbidden(f"host {host_state.host_id} is revoked", check="revoked"))
        if (host_available(host_state, now, ttl) and host_state.ip == peer_ip
                and (bm_port is None or bm_port == host_state.bm_port) and now - host_state.last_seen <= ttl / 2):
            self._queue_heartbeat(host_state.host_id, now)
            return {"host_id": host_state.host_id, "available": True, "ip": peer_ip,
                    "bm_port": host_state.bm_port or self.config.bm_port, "online_since": host_state.online_since,
                    "ttl_seconds": ttl}
        with self.transaction() as session:
            host = found(session.get(Host, actor.name), "host", actor.name)
            require(not host.revoked, Forbidden(f"host {host.host_id} is revoked", check="revoked"))
            was_available = host_available(host, now, ttl)
            moved = host.ip != peer_ip
            host.last_seen = max(now, host.last_seen or now)
            host.ip = peer_ip
            if bm_port is not None:
                host.bm_port = bm_port
            if not was_available or moved:
                host.online_since = now
                self.audit(session, actor, "host-online", actor.uri, ip=peer_ip, bm_port=host.bm_port)
            return {"host_id": host.host_id, "available": True, "ip": peer_ip,
                    "bm_port": host.bm_port or self.config.bm_port, "online_since": host.online_since,
                    "ttl_seconds": ttl}

    def _queue_heartbeat(self, host_id: str, seen: float) -> None:
        with self._heartbeat_lock:
            self._pending_heartbeats[host_id] = max(seen, self._pending_heartbeats.get(host_id, 0.0))
            if self._heartbeat_flusher is None or not self._heartbeat_flusher.is_alive():
                self._heartbeat_flusher = threading.Thread(target=self._flush_heartbeats_forever,
                                                           name="sm-heartbeat-flush", daemon=True)
                self._heartbeat_flusher.start()

    def _flush_heartbeats_forever(self) -> None:
        while not self._closing.wait(self.config.heartbeat_flush_seconds):
            try:
                self.flush_heartbeats()
            except Exception:
                log.exception("could not write batched heartbeats; retrying")

    def flush_heartbeats(self) -> int:
        """Write the queued heartbeats in one transaction; returns how many hosts were updated."""
        with self._heartbeat_lock:
            pending, self._pending_heartbeats = self._pending_heartbeats, {}
        if not pending:
            return 0
        try:
            with self.write_connection() as connection:
                connection.execute(_TOUCH_HOST, [{"touched_host": h, "seen": t} for h, t in pending.items()])
        except Exception:
            with self._heartbeat_lock:
                for host_id, seen in pending.items():
                    self._pending_heartbeats[host_id] = max(seen, self._pending_heartbeats.get(host_id, 0.0))
            raise
        return len(pending)

    def list_hosts(self) -> list[dict[str, Any]]:
        """Every registered host with its availability (admin view)."""
        now, ttl = self.now(), self.config.heartbeat_ttl_seconds
        with self.reading() as session:
            hosts = session.execute(select(Host).order_by(Host.host_id)).scalars().all()
            memberships: dict[str, list[str]] = {}
            for premise, host_id in session.execute(select(PremiseHost.premise, PremiseHost.host_id)):
                memberships.setdefault(host_id, []).append(premise)
            return [{"host_id": h.host_id, "owner": h.owner, "premises": sorted(memberships.get(h.host_id, [])),
                     "revoked": h.revoked, "ip": h.ip, "available": host_available(h, now, ttl),
                     "last_seen": h.last_seen} for h in hosts]

    def get_host(self, actor: Identity, host_id: str) -> dict[str, Any]:
        with self.transaction() as session:
            host = session.get(Host, host_id)
            # Unknown and not the caller's are one answer to anybody but an admin.
            if actor.role is Role.HOST:
                require(host is not None and actor.name == host.host_id,
                        Forbidden("a host may only read its own record", check="host-owner"))
            elif actor.role is not Role.ADMIN:
                require(host is not None and actor.name == host.owner,
                        Forbidden(f"host {host_id} is not a host of {actor.name}", check="host-owner"))
            host = found(host, "host", host_id)
            return {"host_id": host.host_id, "hardware_id": host.hardware_id, "owner": host.owner,
                    "premises": self._premises_of(session, host_id), "gpu_count": host.gpu_count,
                    "gpu_models": list(host.gpu_models), "revoked": host.revoked, "ip": host.ip,
                    "available": host_available(host, self.now(), self.config.heartbeat_ttl_seconds),
                    "last_seen": host.last_seen}
