"""Core statements run straight on the DBAPI cursor: for the write path's few hot statements.

SQLAlchemy builds the SQL (one compilation per dialect and set of parameters, with the
columns' Python-side defaults filled in as it would) and owns the connection and its
transaction; only the execution skips its per-statement machinery (execution context, result
wrapping, events), which cost ~20 us a statement against ~3 us for sqlite3 itself: most of
an instance's index write. DBAPI errors are raised as SQLAlchemy's, and a lost connection is
invalidated, as `Connection.execute` would.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Executable

_POSITIONAL = frozenset({"qmark", "numeric", "format"})


@dataclass(frozen=True)
class _Compiled:
    sql: str
    names: tuple[str, ...] | None  # parameter order, for positional paramstyles
    processors: dict[str, Callable[[Any], Any]]
    defaults: dict[str, Callable[[], Any]]  # Python-side column defaults of an INSERT
    constants: dict[str, Any]  # values written into the statement itself


class DriverStatement:
    """One Core statement, executed on the DBAPI cursor of a SQLAlchemy connection."""

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._compiled: dict[tuple[str, frozenset[str]], _Compiled] = {}

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        """The DBAPI cursor, after executing with ``params``."""
        dialect = conn.dialect
        key = (dialect.name, frozenset(params))
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._compiled[key] = self._compile(dialect, params)
        values = {**compiled.constants, **params}
        for name, default in compiled.defaults.items():
            values[name] = default()
        for name, process in compiled.processors.items():
            values[name] = process(values[name])
        arguments: Any = values
        if compiled.names is not None:
            arguments = tuple(values[name] for name in compiled.names)
        pooled = conn.connection
        cursor = pooled.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(compiled.sql, arguments)
        except dialect.loaded_dbapi.Error as exc:
            if dialect.is_disconnect(exc, pooled, cursor):  # type: ignore[arg-type]
                conn.invalidate(exc)
            raise DBAPIError.instance(
                compiled.sql, arguments, exc, dialect.loaded_dbapi.Error
            ) from exc
        return cursor

    def first(self, conn: Connection, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        cursor = self.execute(conn, params)
        try:
            row = cursor.fetchone()
        finally:
            cursor.close()
        return tuple(row) if row is not None else None

    def rows(self, conn: Connection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        cursor = self.execute(conn, params)
        try:
            return [tuple(row) for row in cursor.fetchall()]
        finally:
            cursor.close()

    def scalar(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        row = self.first(conn, params)
        return row[0] if row is not None else None

    def run(self, conn: Connection, params: Mapping[str, Any]) -> None:
        self.execute(conn, params).close()

    def _compile(self, dialect: Dialect, params: Mapping[str, Any]) -> _Compiled:
        compiled: Any = self.statement.compile(dialect=dialect, column_keys=list(params))
        if getattr(compiled, "update_prefetch", None):
            raise NotImplementedError("Python-side onupdate values are not supported here")
        defaults: dict[str, Callable[[], Any]] = {}
        for column in getattr(compiled, "insert_prefetch", ()):
            default = column.default
            if default is None or not (default.is_scalar or default.is_callable):
                raise NotImplementedError(f"column default of {column} is not supported here")
            if default.is_scalar:
                defaults[column.key] = lambda value=default.arg: value
            else:
                defaults[column.key] = lambda function=default.arg: function(None)
        processors = {}
        constants = {}
        for name, bind in compiled.binds.items():
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                processors[name] = process
            if name not in params and name not in defaults:
                constants[name] = bind.effective_value
        names = None
        if dialect.paramstyle in _POSITIONAL:
            names = tuple(compiled.positiontup)
        return _Compiled(compiled.string, names, processors, defaults, constants)
