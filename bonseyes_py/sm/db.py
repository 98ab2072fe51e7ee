"""Database engines of the SM: SQLite (WAL) by default, PostgreSQL through psycopg 3.

SQLite, writes: one writer at a time, queued without polling. SQLite's own busy handler makes a
waiting writer sleep in growing steps (up to 100 ms) and retry, which gave the licence path a
p99 of nearly a second under load with two gunicorn workers. So writers of one SM queue on a
``WriteLock`` instead: a ``threading.Lock`` between the threads of a process and an ``flock`` on
``<database>.lock`` between processes (gunicorn workers, an admin CLI), both of which wake the next
waiter as soon as the lock is released. Inside it, every write transaction starts with
``BEGIN IMMEDIATE`` (so a transaction never reads the audit head and then fails to upgrade to a
write lock), and SQLite's busy timeout is only a short backstop against writers outside this code.

SQLite, reads: a second engine whose transactions are plain deferred ``BEGIN``; in WAL mode they
read a consistent snapshot without blocking, or waiting for, the writer.

Durability: ``synchronous=NORMAL`` (the default here) in WAL mode writes every commit to the WAL
file before the commit returns, so a process crash or ``kill -9`` of the server loses nothing a
client has received; only a power loss or kernel crash may drop the last commits, because the WAL
is fsynced at checkpoints rather than at every commit. ``synchronous=FULL`` (``sqlite_synchronous``
in ``sm.json``) fsyncs every commit and survives a power cut too, at several milliseconds per
licence on ordinary disks.

The choice: NORMAL is the default. The requirement the SM is built and tested for is that a
crash or ``kill -9`` of the server never loses a licence a client received (``tests/sm/
test_sm_crash.py``), and NORMAL meets it: a commit is in the WAL, i.e. in the kernel's page cache,
before the licence leaves. Surviving a power cut as well needs an fsync per commit, which on
ordinary disks would cost more than all the rest of a licence and become the service's limit; an
operator whose SM must survive power loss sets ``sqlite_synchronous: FULL`` (or runs PostgreSQL
with its default ``synchronous_commit=on``), and ``bench/bench_sm.py --sqlite-synchronous FULL``
measures what it costs. The licence path (``fastsql.py``) commits on the same connections, with
the same pragmas.

PostgreSQL: the audit head row is locked ``FOR UPDATE`` by the audit module, which serialises
writers that append to the chain; reads and writes share one engine.

The schema is created and upgraded only by alembic (``upgrade_database``), at ``init_sm`` and at
every server start.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from bonseyes_py.errors import InputError

MIGRATIONS = Path(__file__).parent / "migrations"
# A backstop only: writers of this SM queue on WriteLock, so SQLite's sleep-and-retry rarely runs.
SQLITE_BUSY_TIMEOUT_MS = 10_000
SYNCHRONOUS_MODES = ("NORMAL", "FULL")


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL (None for an in-memory database)."""
    database = make_url(url).database
    return Path(database) if database and database != ":memory:" else None


def make_engine(url: str, *, synchronous: str = "NORMAL", immediate: bool = True, **kwargs: Any) -> Engine:
    """An engine for ``url``; on SQLite, ``immediate`` makes every transaction ``BEGIN IMMEDIATE``."""
    if not is_sqlite(url):
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20, **kwargs)
    synchronous = synchronous.upper()
    if synchronous not in SYNCHRONOUS_MODES:
        raise InputError(f"sqlite_synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}, not {synchronous!r}",
                         check="sqlite-synchronous")
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
                                              "check_same_thread": False}, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the driver so the BEGIN below is the only BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class WriteLock:
    """Serialises the write transactions of every process that opens one SQLite database.

    Re-entrant per thread (a write transaction may call a helper that opens another one only after
    the first committed, but a nested acquire must not deadlock). On PostgreSQL it does nothing.
    """

    def __init__(self, url: str) -> None:
        path = sqlite_path(url) if is_sqlite(url) else None
        self._path = path.with_name(path.name + ".lock") if path is not None else None
        self._thread_lock = threading.RLock()
        self._fd: int | None = None
        self._pid = 0
        self._depth = 0

    def _file(self) -> int:
        # A descriptor per process: after a fork the child must not share the parent's flock.
        if self._fd is None or self._pid != os.getpid():
            assert self._path is not None
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            self._pid = os.getpid()
        return self._fd

    def __enter__(self) -> WriteLock:
        if self._path is None:
            return self
        self._thread_lock.acquire()
        if self._depth == 0:
            try:
                fcntl.flock(self._file(), fcntl.LOCK_EX)
            except BaseException:
                self._thread_lock.release()
                raise
        self._depth += 1
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._path is None:
            return
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._thread_lock.release()

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade_database(url: str) -> None:
    """``alembic upgrade head``, programmatically; idempotent."""
    engine = make_engine(url)
    lock = WriteLock(url)
    try:
        with lock, engine.begin() as connection:
            config = alembic_config(url)
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    finally:
        lock.close()
        engine.dispose()
