"""What every SM operation shares: configuration, CA, database sessions, trust store, clock.

The operations themselves live in small mixins (``users``, ``hosts``, ``artefacts``, ``premises``,
``pipelines``, ``licensing``, ``revocation``) combined by ``service.SecurityManager``. Callers pass
a verified ``Identity`` as ``actor``: the web adapter gets it from the TLS peer, the admin API from
the admin certificate on disk, and it is what the audit log records.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Connection, Engine, Table, update
from sqlalchemy.orm import Session, sessionmaker

from bonseyes_py.errors import BonseyesError, InputError
from bonseyes_py.licences import LicenceIssuer
from bonseyes_py.pki.ca import CertificateAuthority
from bonseyes_py.pki.roles import Identity, Role
from bonseyes_py.pki.verify import TrustStore
from bonseyes_py.policy import PolicyEngine
from bonseyes_py.sm import audit
from bonseyes_py.sm.bm_client import BonseyesModuleClient
from bonseyes_py.sm.config import SMConfig
from bonseyes_py.sm.fastsql import FastSQL
from bonseyes_py.sm.instances import InstanceTracker
from bonseyes_py.sm.models import SMState
from bonseyes_py.web.errors import NotFoundError

Clock = Callable[[], float]

_STATE = cast(Table, SMState.__table__)
BUMP_GENERATION = update(_STATE).where(_STATE.c.id == 1).values(generation=_STATE.c.generation + 1)


class Forbidden(BonseyesError):
    """The caller is authenticated but this record is not theirs, or it is revoked."""

    check = "forbidden"
    http_status = 403


def require(condition: bool, error: BonseyesError) -> None:
    if not condition:
        raise error


def found(record: Any, what: str, key: str) -> Any:
    if record is None:
        raise NotFoundError(f"{what} {key!r} does not exist")
    return record


def check_int(value: Any, what: str, *, minimum: int = 0, maximum: int = 2**62) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
        raise InputError(f"{what} must be an integer between {minimum} and {maximum}", check=what.replace(" ", "-"))
    return value


def check_str_list(value: Any, what: str, *, limit: int = 1000) -> list[str]:
    if not isinstance(value, list) or len(value) > limit or not all(isinstance(v, str) for v in value):
        raise InputError(f"{what} must be a list of at most {limit} strings", check=what.replace(" ", "-"))
    return list(value)


class DataBox:
    """AES-256-GCM for stored licence responses (they hold runtime private keys)."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, context: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, plaintext, context.encode())

    def open(self, sealed: bytes, context: str) -> bytes:
        return self._aead.decrypt(sealed[:12], sealed[12:], context.encode())


class SMCore:
    """State shared by the operations of one SM process (one per gunicorn worker)."""

    def __init__(self, config: SMConfig, ca: CertificateAuthority, engine: Engine,
                 bm_client: BonseyesModuleClient | None = None, clock: Clock = time.time) -> None:
        from bonseyes_py.sm.db import WriteLock, is_sqlite, make_engine, session_factory

        self.config = config
        self.ca = ca
        self.engine = engine
        self.sessions: sessionmaker[Session] = session_factory(engine)
        url = engine.url.render_as_string(hide_password=False)
        # SQLite: reads get their own engine with deferred BEGIN, so they never queue behind writers.
        self.read_engine = (make_engine(url, synchronous=config.sqlite_synchronous, immediate=False)
                            if is_sqlite(url) else engine)
        self.read_sessions: sessionmaker[Session] = session_factory(self.read_engine)
        self.write_lock = WriteLock(url)
        # The licence path's write transactions, on the DBAPI cursor (fastsql.py).
        self.fast_sql = FastSQL(engine, self.write_lock)
        self.bm_client = bm_client
        self.clock = clock
        self.issuer = LicenceIssuer(ca)
        self.policy = PolicyEngine()
        self.box = DataBox(config.data_key.read_bytes())
        self._trust_lock = threading.Lock()
        self._trust: tuple[tuple[int, int], TrustStore] | None = None
        # Heartbeats of hosts already available, waiting for the next batched write: {host_id: seen at}.
        self._pending_heartbeats: dict[str, float] = {}
        self._heartbeat_lock = threading.Lock()
        self._heartbeat_flusher: threading.Thread | None = None
        self._closing = threading.Event()
        # Licence-path reads, valid while sm_state.generation is the one they were read at (licensing.py).
        self.instances = InstanceTracker()
        self.licence_reads: dict[tuple[str, ...], Any] = {}
        self.licence_reads_generation: int | None = None
        self.licence_reads_lock = threading.Lock()

    # -- transactions and audit -------------------------------------------------------------------

    @contextmanager
    def transaction(self, *, changes: bool = True) -> Iterator[Session]:
        """One unit of work; commits on success (before the caller answers anybody).

        Write transactions of this SM queue on ``write_lock`` (see ``db.py``): on SQLite they would
        otherwise poll for SQLite's write lock with sleeps of up to 100 ms.

        Unless the caller says it ``changes`` nothing the licence path reads (a denial's audit entry,
        an artefact licence, a read), the transaction increments ``sm_state.generation`` before it
        commits, which invalidates every worker's cached licence-path reads (``licensing.py``). The
        default is to increment: a missing increment would serve stale data, an extra one costs a
        cache miss.
        """
        with self.write_lock, self.sessions.begin() as session:
            yield session
            if changes:
                session.execute(BUMP_GENERATION)

    @contextmanager
    def write_connection(self) -> Iterator[Connection]:
        """Like ``transaction``, on a Core connection, for hot paths that need no ORM objects."""
        with self.write_lock, self.engine.begin() as connection:
            yield connection

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A read-only snapshot that neither takes nor waits for the write lock."""
        with self.read_sessions.begin() as session:
            yield session

    def audit(self, session: Session | Connection, actor: Identity | str, action: str, subject: str, *,
              outcome: str = "ok", policy_revision: str | None = None, **details: Any) -> None:
        actor_uri = actor.uri if isinstance(actor, Identity) else actor
        audit.append(session, actor=actor_uri, action=action, subject=subject, outcome=outcome,
                     policy_revision=policy_revision, details=details)

    def audit_now(self, actor: Identity | str, action: str, subject: str, **kwargs: Any) -> None:
        """Record something in its own transaction (a denial, whose main transaction rolled back)."""
        with self.transaction(changes=False) as session:
            self.audit(session, actor, action, subject, **kwargs)

    # -- trust ------------------------------------------------------------------------------------

    def trust_store(self) -> TrustStore:
        """Root, intermediate and the current CRL, reloaded when the CRL file changes.

        A CRL past half of its validity is re-signed first (``refresh_stale_crl``), so the published
        CRL never reaches its nextUpdate while the SM is serving: every request passes here.
        """
        store = self._load_trust_store()
        if self.refresh_stale_crl(store):
            store = self._load_trust_store()
        return store

    def _load_trust_store(self) -> TrustStore:
        path = self.ca.paths.crl
        stat = path.stat()
        version = (stat.st_mtime_ns, stat.st_size)
        cached = self._trust
        if cached is not None and cached[0] == version:
            return cached[1]
        with self._trust_lock:
            store = self.ca.trust_store(with_crl=True, require_crl=True)
            self._trust = (version, store)
            return store

    def refresh_stale_crl(self, store: TrustStore) -> bool:
        """Re-sign the CRL if it is stale; True when it did (implemented by the revocation operations)."""
        return False

    def identity(self, role: Role, name: str) -> Identity:
        return self.ca.identity(role, name)

    def now(self) -> float:
        return self.clock()
