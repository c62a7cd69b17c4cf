"""Peewee internals cardlink_lite relies on (and nothing else touches), each pinned by
tests/test_peewee_internals.py; ``pyproject.toml`` pins the Peewee version they pass on."""

from __future__ import annotations

import contextlib
from typing import Any, NamedTuple

import peewee

__all__ = [
    "ROW_FLAG",
    "ConnectedHook",
    "NullsLow",
    "Param",
    "Slot",
    "discard_connection",
    "driver_errors",
    "field_values",
    "mark_clean",
    "model_builder",
    "passes_through",
    "set_field_type",
    "thread_state",
    "watch_savepoints",
]

# The keyword Peewee's cursor wrappers pass to a model's constructor when building it
# from a fetched row (the values are already converted: nothing to check).
ROW_FLAG = "__no_default__"


def field_values(obj: peewee.Model) -> dict:
    """The instance's field values (foreign keys as their raw id), without a related query."""
    return obj.__data__


def mark_clean(obj: peewee.Model) -> None:
    """Forget the instance's pending changes (its row was just written another way)."""
    obj._dirty.clear()


def passes_through(field) -> bool:
    """True when ``field.python_value`` gives the drivers' value back unchanged: Peewee's
    plain converter over an int, float or text column (a foreign key: its target's)."""
    if isinstance(field, peewee.ForeignKeyField):
        field = field.rel_field
    convert = type(field).python_value
    if convert is not peewee.Field.python_value:
        # Our UUID text field only turns its value into str: drivers hand back str.
        return getattr(type(field), "passes_text_through", False)
    return type(field).adapt in (peewee.IntegerField.adapt, peewee.FloatField.adapt,
                                 peewee._StringField.adapt)


def model_builder(model, fields):
    """A function turning fetched rows (columns: ``fields``) into ``model`` instances equal to
    Peewee's, converting only values the drivers do not already give as is."""
    names = tuple(f.name for f in fields)
    convert = tuple((f.name, f.python_value) for f in fields if not passes_through(f))
    new = model.__new__

    def build(rows) -> list:
        out = []
        append = out.append
        for row in rows:
            data = dict(zip(names, row, strict=True))
            for name, python_value in convert:
                value = data[name]
                if value is not None:
                    data[name] = python_value(value)
            obj = new(model)
            obj.__dict__ = {"__data__": data, "_dirty": set(), "__rel__": {}, "is_stored": True}
            append(obj)
        return out

    return build


class Slot(NamedTuple):
    """Where argument ``index`` goes among a built statement's parameters, and the
    converter Peewee would have applied to a value there (None: none)."""

    index: int
    converter: Any


class Param(peewee.ColumnBase):
    """A placeholder for argument ``index`` of a query whose SQL is built once: its
    :class:`Slot` keeps the converter the SQL context has in force there (``db_value``)."""

    def __init__(self, index: int):
        super().__init__()
        self.index = index

    def __sql__(self, ctx):
        return ctx.value(Slot(self.index, ctx.state.converter), converter=False)


class NullsLow(peewee.Ordering):
    """``node`` ascending or descending with NULL below every value, as SQLite and MariaDB
    sort it: ``NULLS FIRST``/``LAST`` where the database has the clause (PostgreSQL sorts NULL
    high), nothing where it has not (Peewee's CASE stand-in would cost MariaDB its index)."""

    def __init__(self, node, descending: bool):
        super().__init__(node, "DESC" if descending else "ASC")

    def __sql__(self, ctx):
        ctx.sql(self.node).literal(f" {self.direction}")
        if ctx.state.nulls_ordering:
            ctx.literal(" NULLS LAST" if self.direction == "DESC" else " NULLS FIRST")
        return ctx


def discard_connection(database: peewee.Database) -> None:
    """Drop this thread's connection without handing it back to a pool: after a failed
    rollback the server has ended the transaction and the connection is unusable."""
    conn = database._state.conn
    if conn is not None and hasattr(database, "_in_use"):
        database._in_use.pop(database.conn_key(conn), None)
        with contextlib.suppress(Exception):
            conn.close()
    database._state.reset()


class ConnectedHook:
    """Mixed in before a Peewee database class: ``connected(conn)`` sees every driver
    connection ``connect()`` hands out, new or from the pool (Peewee's ``_connect``)."""

    def _connect(self):
        conn = super()._connect()
        self.connected(conn)
        return conn

    def connected(self, conn) -> None:
        pass


def set_field_type(database: peewee.Database, name: str, ddl: str) -> None:
    """Change the DDL of field type ``name`` after the database was built (the
    ``field_types`` constructor argument is copied into a private dict)."""
    database._field_types[name] = ddl


def thread_state(database: peewee.Database):
    """Peewee's per-thread connection state: its ``transactions``, read in a thread, is that
    thread's stack of open transactions (outermost first; savepoints are not on it)."""
    return database._state


def driver_errors():
    """A context manager turning a DB-API error raised inside into Peewee's (what
    ``Database.execute_sql`` does), for driver calls Peewee has no method for (COPY)."""
    return peewee.__exception_wrapper__


class _WatchedSavepoint(peewee._savepoint):
    """Peewee's savepoint, reporting ``begun(db)`` and ``ended(db, released, reopened)``."""

    def __init__(self, db, begun, ended):
        super().__init__(db)
        self._begun, self._ended = begun, ended

    def _build_ctx(self):
        return type(self)(self.db, self._begun, self._ended)

    def __enter__(self):
        super().__enter__()
        self._begun(self.db)
        return self

    def commit(self, begin=True):
        super().commit(begin=False)
        self._ended(self.db, True, begin)
        if begin:
            self._begin()

    def rollback(self, begin=True):
        self._ended(self.db, False, begin)
        super().rollback(begin)


def watch_savepoints(database: peewee.Database, begun, ended) -> None:
    """Make every savepoint of ``database`` (``atomic()`` inside a transaction) call
    ``begun(database)`` once open and ``ended(database, released, reopened)`` on its RELEASE
    (released) or ROLLBACK TO (not); ``reopened``: its block goes on (``commit()`` or
    ``rollback()`` inside it). Peewee keeps savepoints off its transaction stack."""
    database.savepoint = lambda: _WatchedSavepoint(database, begun, ended)
