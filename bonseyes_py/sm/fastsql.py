"""Prebuilt Core statements run straight on the DBAPI cursor: the licence path's transaction.

A host licence runs about six small statements in one write transaction. Measured on SQLite, each
cost roughly twice as much in SQLAlchemy's execution machinery (pool checkout and events,
execution contexts, result wrapping, commit bookkeeping) as in SQLite itself. Here each Core
statement is compiled once for the engine's dialect, with the dialect's own bind and result
processors (JSON, booleans, binary), and then executed on the DBAPI cursor of one pooled
connection. The SQL is exactly what SQLAlchemy would send, on SQLite and PostgreSQL alike.

Transactions: on SQLite ``BEGIN IMMEDIATE`` (the engine's connections are in driver autocommit
mode, see ``db.make_engine``); on PostgreSQL the driver opens the transaction at the first
statement. Either way the transaction commits before ``transaction`` returns, or rolls back.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

from sqlalchemy import Engine
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import UpdateBase

from bonseyes_py.sm.db import WriteLock, is_sqlite


class _Compiled:
    """One statement, compiled for one dialect and one set of parameter names."""

    def __init__(self, statement: ClauseElement, engine: Engine, names: tuple[str, ...]) -> None:
        dialect = engine.dialect
        compiled = cast(SQLCompiler, statement.compile(dialect=dialect, column_keys=list(names) if names else None))
        self.sql = str(compiled)
        self.positional = tuple(compiled.positiontup or ()) if compiled.positional else None
        if "POSTCOMPILE" in self.sql:
            # A literal-execute parameter (the separator of an aggregate) is rendered with its fixed value.
            state = compiled.construct_expanded_state(dict(compiled.params))
            self.sql = state.statement
            self.positional = tuple(state.positiontup or ()) if compiled.positional else None
        self.defaults = {key: value for key, value in compiled.params.items() if key not in names}
        # Named styles (psycopg's pyformat): send only the parameters the SQL names.
        self.named = None if self.positional is not None else tuple(
            key for key in compiled.params if f"%({key})s" in self.sql or f":{key}" in self.sql)
        self.binders: dict[str, Callable[[Any], Any]] = {}
        for key, bind in compiled.binds.items():
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                self.binders[key] = processor
        self.dialect = dialect
        self.row: Any = None
        self.columns: list[Any] = []
        self.readers: list[Callable[[Any], Any] | None] | None = None
        if not isinstance(statement, UpdateBase):
            self.columns = list(statement.selected_columns)  # type: ignore[attr-defined]
            self.row = collections.namedtuple(  # type: ignore[misc]
                "Row", [str(column.key) for column in self.columns], rename=True)

    def result_readers(self, description: Any) -> list[Callable[[Any], Any] | None]:
        """The dialect's result processors, given the driver's column types (as SQLAlchemy does)."""
        if self.readers is None:
            dialect = self.dialect
            self.readers = [column.type.dialect_impl(dialect).result_processor(dialect, entry[1])
                            for column, entry in zip(self.columns, description, strict=True)]
        return self.readers

    def parameters(self, params: dict[str, Any]) -> Any:
        values = {**self.defaults, **params}
        for key, processor in self.binders.items():
            if key in values:
                values[key] = processor(values[key])
        if self.positional is not None:
            return tuple(values[key] for key in self.positional)
        return {key: values[key] for key in self.named or ()}


class Result:
    """The rows of one statement, with the few accessors the licence path uses."""

    def __init__(self, rows: list[Any]) -> None:
        self.rows = rows

    def __iter__(self) -> Iterator[Any]:
        return iter(self.rows)

    def one(self) -> Any:
        if len(self.rows) != 1:
            raise LookupError(f"expected one row, got {len(self.rows)}")
        return self.rows[0]

    def one_or_none(self) -> Any:
        if len(self.rows) > 1:
            raise LookupError(f"expected at most one row, got {len(self.rows)}")
        return self.rows[0] if self.rows else None

    def scalar_one(self) -> Any:
        return self.one()[0]


class FastConnection:
    """``execute(statement, params)`` on one DBAPI cursor, inside a ``FastSQL.transaction``."""

    def __init__(self, owner: FastSQL, cursor: Any) -> None:
        self._owner = owner
        self._cursor = cursor

    def execute(self, statement: ClauseElement, params: dict[str, Any] | None = None) -> Result:
        params = params or {}
        compiled = self._owner.compiled(statement, tuple(sorted(params)) if isinstance(statement, UpdateBase) else ())
        cursor = self._cursor
        cursor.execute(compiled.sql, compiled.parameters(params))
        if compiled.row is None:
            return Result([])
        readers = compiled.result_readers(cursor.description)
        make = compiled.row._make
        rows = [make([value if reader is None else reader(value) for reader, value in zip(readers, raw, strict=True)])
                for raw in cursor.fetchall()]
        return Result(rows)


class FastSQL:
    """Write transactions of the licence path, under the SM's write lock."""

    def __init__(self, engine: Engine, write_lock: WriteLock) -> None:
        self.engine = engine
        self.write_lock = write_lock
        self._sqlite = is_sqlite(engine.url.drivername)
        # The driver's IntegrityError (a unique key taken by a concurrent transaction).
        self.integrity_error: type[Exception] = engine.dialect.loaded_dbapi.IntegrityError
        self._compiled: dict[tuple[int, tuple[str, ...]], _Compiled] = {}
        self._keep: list[ClauseElement] = []  # keeps compiled statements alive, so their ids stay theirs
        self._lock = threading.Lock()

    def compiled(self, statement: ClauseElement, names: tuple[str, ...]) -> _Compiled:
        key = (id(statement), names)
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = _Compiled(statement, self.engine, names)
            with self._lock:
                self._compiled[key] = compiled
                self._keep.append(statement)
        return compiled

    @contextmanager
    def transaction(self) -> Iterator[FastConnection]:
        """One write transaction, committed before the caller's ``with`` block ends without error."""
        with self.write_lock:
            raw = self.engine.raw_connection()
            try:
                cursor = raw.cursor()
                try:
                    if self._sqlite:
                        cursor.execute("BEGIN IMMEDIATE")
                    yield FastConnection(self, cursor)
                except BaseException:
                    raw.rollback()
                    raise
                raw.commit()
                cursor.close()
            finally:
                raw.close()
