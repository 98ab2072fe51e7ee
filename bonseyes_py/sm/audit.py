"""Hash-chained audit log.

Every entry holds ``prev_hash``, the SHA-256 of the previous entry's canonical JSON (genesis: 64
zeros), and ``entry_hash``, the SHA-256 of its own canonical JSON (which includes ``prev_hash``).
The one-row ``audit_head`` table records the last sequence number and hash; appending locks it, so
concurrent writers (threads, workers, several SMs on one PostgreSQL) extend one chain. An entry is
appended in the same transaction as the change it records, so the log never claims what did not
happen and never misses what did.

``verify_audit_chain`` recomputes the chain and names the first entry that was edited, deleted,
inserted or moved.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, Table, insert, select, update
from sqlalchemy.orm import Session

from bonseyes_py import safejson
from bonseyes_py.sm.fastsql import FastConnection
from bonseyes_py.sm.models import AuditEntry, AuditHead

GENESIS_HASH = "0" * 64
_FIELDS = ("seq", "at_ms", "actor", "action", "subject", "outcome", "policy_revision", "details", "prev_hash")


def canonical_json(entry: dict[str, Any]) -> bytes:
    return json.dumps({name: entry[name] for name in _FIELDS}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def entry_digest(entry: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(entry)).hexdigest()


def as_dict(entry: AuditEntry) -> dict[str, Any]:
    return {"seq": entry.seq, "at_ms": entry.at_ms, "actor": entry.actor, "action": entry.action,
            "subject": entry.subject, "outcome": entry.outcome, "policy_revision": entry.policy_revision,
            "details": entry.details, "prev_hash": entry.prev_hash, "entry_hash": entry.entry_hash}


_HEAD = cast(Table, AuditHead.__table__)
_LOCK_HEAD = select(_HEAD.c.seq, _HEAD.c.entry_hash).where(_HEAD.c.id == 1).with_for_update()
_INSERT_ENTRY = insert(cast(Table, AuditEntry.__table__))
_UPDATE_HEAD = update(_HEAD).where(_HEAD.c.id == 1)


Writer = Session | Connection | FastConnection


def _normalised(details: dict[str, Any] | None) -> dict[str, Any]:
    """``details`` as the JSON it is stored as (tuples become lists, keys strings), so the hash of an
    entry is the same before and after a database round trip. This parses the SM's own serialisation,
    hence bounds that only a broken caller could reach: the size of the text, and a depth well past
    what bounded request bodies (MAX_DEPTH) plus the few levels ``details`` adds can reach."""
    text = json.dumps(details or {}, sort_keys=True)
    return safejson.loads_object(text, what="audit details", max_bytes=max(len(text), 1),
                                 max_depth=4 * safejson.MAX_DEPTH)


def _connection(session: Writer) -> Connection | FastConnection:
    return session.connection() if isinstance(session, Session) else session


def lock_chain(session: Writer) -> Any:
    """Lock the chain head for the rest of the transaction (a no-op lock on SQLite, which is serialised).

    Returns the head row (``seq``, ``entry_hash``).
    """
    return _connection(session).execute(_LOCK_HEAD).one()


def append(session: Writer, *, actor: str, action: str, subject: str, outcome: str = "ok",
           policy_revision: str | None = None, details: dict[str, Any] | None = None,
           head: Any = None) -> dict[str, Any]:
    """Append one entry in the caller's transaction (locks the chain head until it commits).

    Written with Core statements on the session's connection: every write of the SM appends here,
    so the ORM's per-object bookkeeping would be paid on every request. Pending ORM objects of the
    session are flushed first, so entries land in the order the changes they record were made.
    A caller that already locked the head in this transaction (``lock_chain``, or the licence
    path's first statement) passes the row it read as ``head``.
    """
    if isinstance(session, Session):
        session.flush()
    if head is None:
        head = lock_chain(session)
    record = {"seq": head.seq + 1, "at_ms": int(time.time() * 1000), "actor": actor, "action": action,
              "subject": subject, "outcome": outcome, "policy_revision": policy_revision,
              "details": _normalised(details), "prev_hash": head.entry_hash}
    digest = entry_digest(record)
    connection = _connection(session)
    connection.execute(_INSERT_ENTRY, {**record, "entry_hash": digest})
    connection.execute(_UPDATE_HEAD, {"seq": record["seq"], "entry_hash": digest})
    return {**record, "entry_hash": digest}


@dataclass(frozen=True)
class ChainReport:
    """Result of a chain check; ``first_bad_seq`` is None when the chain is intact."""

    ok: bool
    entries: int
    first_bad_seq: int | None = None
    problem: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "entries": self.entries, "first_bad_seq": self.first_bad_seq,
                "problem": self.problem}


def verify_entries(entries: Iterable[dict[str, Any]], head: tuple[int, str] | None = None) -> ChainReport:
    """Check a sequence of entries (in stored order) and, optionally, the recorded head."""
    expected_prev = GENESIS_HASH
    expected_seq = 1
    count = 0
    for entry in entries:
        count += 1
        seq = entry["seq"]
        if seq != expected_seq:
            return ChainReport(False, count, seq, f"entry {seq} follows entry {expected_seq - 1}: "
                                                  "entries were deleted, inserted or reordered")
        if entry["prev_hash"] != expected_prev:
            return ChainReport(False, count, seq, f"entry {seq} does not link to the entry before it "
                                                  "(the previous entry was edited, deleted or moved)")
        digest = entry_digest(entry)
        if digest != entry["entry_hash"]:
            return ChainReport(False, count, seq, f"entry {seq} was edited: its content does not match its hash")
        expected_prev = digest
        expected_seq += 1
    if head is not None:
        head_seq, head_hash = head
        if head_seq != expected_seq - 1 or head_hash != expected_prev:
            return ChainReport(False, count, expected_seq if head_seq >= expected_seq else head_seq,
                               f"the chain ends at entry {expected_seq - 1} but the head records entry {head_seq}:"
                               " entries at the end were deleted or the head was altered")
    return ChainReport(True, count)


def verify_audit_chain(session: Session) -> ChainReport:
    """Verify the whole stored chain, in sequence order, against the recorded head."""
    rows = session.execute(select(AuditEntry).order_by(AuditEntry.seq)).scalars()
    head = session.execute(select(AuditHead).where(AuditHead.id == 1)).scalar_one()
    return verify_entries((as_dict(row) for row in rows), (head.seq, head.entry_hash))


def query(session: Session, *, after: int = 0, limit: int = 100, action: str | None = None,
          subject: str | None = None) -> list[dict[str, Any]]:
    statement = select(AuditEntry).where(AuditEntry.seq > after)
    if action:
        statement = statement.where(AuditEntry.action == action)
    if subject:
        statement = statement.where(AuditEntry.subject == subject)
    rows = session.execute(statement.order_by(AuditEntry.seq).limit(limit)).scalars()
    return [as_dict(row) for row in rows]
