"""Peewee internals cardlink_lite relies on, each pinned by tests/test_peewee_internals.py.

Nothing else in the package touches Peewee's private attributes; ``pyproject.toml`` pins
the Peewee minor version those tests pass on.
"""

from __future__ import annotations

import contextlib

import peewee

__all__ = ["ROW_FLAG", "discard_connection", "field_values", "mark_clean"]

# The keyword Peewee's cursor wrappers pass to a model's constructor when building it
# from a fetched row (the values are already converted: nothing to check).
ROW_FLAG = "__no_default__"


def field_values(obj: peewee.Model) -> dict:
    """The instance's field values as stored on it (foreign keys as their raw id), without
    a query for a related row."""
    return obj.__data__


def mark_clean(obj: peewee.Model) -> None:
    """Forget the instance's pending changes (its row was just written another way)."""
    obj._dirty.clear()


def discard_connection(database: peewee.Database) -> None:
    """Drop this thread's connection without handing it back to a pool: after a failed
    rollback the server has ended the transaction and the connection is unusable."""
    conn = database._state.conn
    if conn is not None and hasattr(database, "_in_use"):
        database._in_use.pop(database.conn_key(conn), None)
        with contextlib.suppress(Exception):
            conn.close()
    database._state.reset()
