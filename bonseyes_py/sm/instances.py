"""Running instances per artefact, kept in memory from the licences' change feed.

The instance limit needs, on every host-licence request, the number of distinct runtimes (host,
nonce) that hold a live, unrevoked host licence of the artefact. Counted by the database, that is a
walk over every such licence: it grows with the licences issued in the last licence lifetime and
was the largest single cost of a licence under load. Here each worker keeps the live runtimes of
every artefact in memory and brings them up to date inside the licence transaction:

- licences carry ``audit_seq``, the sequence number of the audit entry written with them. Audit
  sequence numbers are assigned under the audit head lock and committed in that order, so once a
  transaction holds the head lock, "host licences with ``audit_seq`` in (mark, head]" is exactly
  what other writers committed since this worker last looked;
- anything else that can change the count (revoking a licence, host or artefact) goes through an
  ordinary write transaction, which increments ``sm_state.generation``: a new generation, or a
  clock that went backwards, makes the tracker reload the live runtimes from the database.

Expiry is applied lazily with a heap of expiry times per artefact, at the latest request time seen
(requests read the clock before they queue for the lock, so their times arrive a little out of
order; a licence that expired a few milliseconds before the lock was taken no longer counts, as
it would not for a request that came those milliseconds later). The result equals the database
count at that time; ``tests/sm`` checks both agree, also for a clock that goes back.
"""

from __future__ import annotations

import heapq
import threading
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, select

from bonseyes_py.sm.models import Licence

_LICENCES = cast(Table, Licence.__table__)
_RELOAD = (select(_LICENCES.c.artefact_id, _LICENCES.c.host_id, _LICENCES.c.nonce,
                  func.max(_LICENCES.c.expires_at).label("expires_at"))
           .where(_LICENCES.c.kind == "host", _LICENCES.c.revoked_at.is_(None),
                  _LICENCES.c.expires_at > bindparam("now"))
           .group_by(_LICENCES.c.artefact_id, _LICENCES.c.host_id, _LICENCES.c.nonce))
_SINCE = select(_LICENCES.c.artefact_id, _LICENCES.c.host_id, _LICENCES.c.nonce, _LICENCES.c.expires_at).where(
    _LICENCES.c.audit_seq > bindparam("after"), _LICENCES.c.audit_seq <= bindparam("upto"),
    _LICENCES.c.kind == "host", _LICENCES.c.revoked_at.is_(None))

Runtime = tuple[str, str]  # (host_id, nonce)
# Concurrent requests read the clock before they wait for the write lock; a step back larger than
# this is a clock change (or a test's clock), and the live runtimes are reloaded for it.
CLOCK_SLACK_SECONDS = 1.0


class InstanceTracker:
    """Live runtimes of every artefact, valid for one (generation, audit seq) of the database."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._generation: int | None = None
        self._mark = -1  # the audit seq up to which licences are known
        self._last_now = float("-inf")
        self._live: dict[str, dict[Runtime, float]] = {}
        self._expiries: dict[str, list[tuple[float, str, str]]] = {}

    def running(self, connection: Any, *, generation: int, head_seq: int, artefact_id: str,
                exclude: Runtime, now: float) -> int:
        """Distinct live runtimes of ``artefact_id`` other than ``exclude``, as the database has them.

        Must be called in a transaction that holds the audit head lock and read ``generation`` and
        ``head_seq`` in it.
        """
        with self._lock:
            if now < self._last_now - CLOCK_SLACK_SECONDS:
                self._generation = None  # the clock went back: expired runtimes may be live again
                self._last_now = now
            # Requests take ``now`` before they queue for the lock, so they reach here slightly out of
            # order: expiry is applied at the latest time seen, i.e. when the lock is held.
            now = max(now, self._last_now)
            if self._generation != generation or head_seq < self._mark:
                self._reload(connection, now)
                self._generation = generation
                self._mark = head_seq
            elif head_seq > self._mark:
                for row in connection.execute(_SINCE, {"after": self._mark, "upto": head_seq}):
                    self._add(row.artefact_id, (row.host_id, row.nonce), float(row.expires_at))
                self._mark = head_seq
            self._last_now = now
            live = self._live.get(artefact_id)
            if not live:
                return 0
            heap = self._expiries[artefact_id]
            while heap and heap[0][0] <= now:
                expires, host_id, nonce = heapq.heappop(heap)
                if live.get((host_id, nonce)) == expires:
                    del live[(host_id, nonce)]
            count = len(live)
            if live.get(exclude, now) > now:
                count -= 1
            return count

    def issued(self, *, generation: int, seq: int, artefact_id: str, runtime: Runtime, expires_at: float) -> None:
        """Record a licence this worker committed with audit seq ``seq`` (skipped if others came between)."""
        with self._lock:
            if self._generation == generation and self._mark == seq - 1:
                self._add(artefact_id, runtime, expires_at)
                self._mark = seq

    def forget(self) -> None:
        with self._lock:
            self._generation = None

    def _reload(self, connection: Any, now: float) -> None:
        self._live = {}
        self._expiries = {}
        for row in connection.execute(_RELOAD, {"now": now}):
            self._add(row.artefact_id, (row.host_id, row.nonce), float(row.expires_at))

    def _add(self, artefact_id: str, runtime: Runtime, expires_at: float) -> None:
        live = self._live.setdefault(artefact_id, {})
        if live.get(runtime, float("-inf")) >= expires_at:
            return
        live[runtime] = expires_at
        heapq.heappush(self._expiries.setdefault(artefact_id, []), (expires_at, runtime[0], runtime[1]))

