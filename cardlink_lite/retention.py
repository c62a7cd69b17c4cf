"""Retention: delete old rows in short primary-key chunks, each its own transaction (a bench
may be logging meanwhile), then give SQLite's space back."""

from __future__ import annotations

import contextlib
import os
from datetime import datetime
from urllib.parse import unquote, urlsplit

import peewee

from .db import bound_models
from .errors import ValidationError, quote
from .fields import to_utc_ms
from .models import ALL_MODELS, CommLog, OTASession, TraceSource

__all__ = ["PURGEABLE", "count_older_than", "database_file_size", "plan_purge", "purge",
           "purge_older_than", "reclaim_space", "resolve_purge_tables"]

# What ``purge --tables`` accepts, and the column that dates each row; purged in this
# order so a session's logs that are old enough go in their own (logs) pass first.
PURGEABLE = {"logs": ("comm_logs", "timestamp"), "tests": ("test_results", "created_at"),
             "sessions": ("ota_sessions", "created_at")}


def count_older_than(database, model, field, cutoff: datetime) -> int:
    """How many rows of ``model`` have ``field`` strictly before ``cutoff``."""
    field = _field(model, field)
    with bound_models(database):
        return model.select().where(field < to_utc_ms(cutoff)).count()


def purge_older_than(database, model, field, cutoff: datetime, chunk_size: int = 5000,
                     progress=None, cascaded=None) -> int:
    """Delete rows of ``model`` whose ``field`` is before ``cutoff``; returns how many went.
    Cascading children go first, in chunks too, so no chunk hides a huge cascade.
    ``progress(n)`` gets each chunk's count, ``cascaded(child_model, n)`` the children's."""
    if chunk_size < 1:
        raise ValidationError(f"chunk_size must be at least 1; got {chunk_size!r}")
    field = _field(model, field)
    cutoff = to_utc_ms(cutoff)
    pk = model._meta.primary_key
    children = [ref for ref in model._meta.backrefs
                if (ref.on_delete or "").upper() == "CASCADE"]
    total = 0
    with bound_models(database):
        while True:
            # A plain read: no write lock is needed to pick the next chunk.
            ids = [row[0] for row in model.select(pk).where(field < cutoff)
                   .order_by(pk).limit(chunk_size).tuples()]
            if not ids:
                break
            for child in children:
                _purge_children(database, child, ids, chunk_size, cascaded)
            with database.atomic():
                deleted = model.delete().where(pk.in_(ids)).execute()
            total += deleted
            if progress is not None:
                progress(deleted)
    return total


def resolve_purge_tables(tables) -> list[str]:
    """The short names (logs, tests, sessions) in purge order; ValidationError if unknown."""
    if isinstance(tables, str):
        tables = tables.split(",")
    by_any = {**{k: k for k in PURGEABLE}, **{v[0]: k for k, v in PURGEABLE.items()}}
    chosen = set()
    for name in tables:
        key = by_any.get(str(name).strip().lower())
        if key is None:
            raise ValidationError(
                f"cannot purge table {quote(name)}; choose from {', '.join(PURGEABLE)}")
        chosen.add(key)
    if not chosen:
        raise ValidationError(f"no table to purge; choose from {', '.join(PURGEABLE)}")
    return [k for k in PURGEABLE if k in chosen]


def _target(name: str):
    table, column = PURGEABLE[name]
    model = next(m for m in ALL_MODELS if m._meta.table_name == table)
    return model, model._meta.fields[column]


def plan_purge(database, tables, cutoff: datetime) -> dict[str, int]:
    """Rows a purge with this cutoff would delete, per short table name; ``logs_of_sessions``
    counts the newer logs that go with purged sessions."""
    names = resolve_purge_tables(tables)
    counts = {name: count_older_than(database, *_target(name), cutoff) for name in names}
    if "sessions" in names:
        with bound_models(database):
            query = (CommLog.select().join(OTASession)
                     .where(OTASession.created_at < to_utc_ms(cutoff)))
            if "logs" in names:
                query = query.where(CommLog.timestamp >= to_utc_ms(cutoff))
            counts["logs_of_sessions"] = query.count()
    return counts


def purge(database, tables, cutoff: datetime, chunk_size: int = 5000,
          progress=None) -> dict[str, int]:
    """Delete rows older than ``cutoff`` in chunks; counts per :func:`plan_purge` key.
    ``progress(key, n)`` sees every deleted row, the logs of purged sessions included."""
    names = resolve_purge_tables(tables)
    done = dict.fromkeys(names, 0)
    if "sessions" in names:
        done["logs_of_sessions"] = 0

    def count(key: str, n: int) -> None:
        done[key] += n
        if progress is not None:
            progress(key, n)

    def cascade(child, n: int) -> None:
        if child is CommLog:
            count("logs_of_sessions", n)

    for name in names:
        purge_older_than(database, *_target(name), cutoff, chunk_size,
                         progress=lambda n, name=name: count(name, n), cascaded=cascade)
    if done.get("logs") or done.get("logs_of_sessions"):
        _drop_unused_sources(database)
    return done


def _drop_unused_sources(database) -> None:
    """Forget the trace files no log row comes from any more: importing one again imports it."""
    used = CommLog.select(peewee.SQL("1")).where(CommLog.source_id == TraceSource.id)
    with bound_models(database), database.atomic():
        TraceSource.delete().where(~peewee.fn.EXISTS(used)).execute()


def reclaim_space(database, full: bool = False) -> dict:
    """Return freed SQLite pages to the file system; a no-op on server backends. A file
    made without ``auto_vacuum=INCREMENTAL`` (or ``full=True``) needs one VACUUM."""
    if not isinstance(database, peewee.SqliteDatabase):
        return {"reclaimed": False, "method": None}
    before = database_file_size(database)
    free_before = _pragma(database, "freelist_count")
    conn = database.connection()
    if full or _pragma(database, "auto_vacuum") != 2:
        # Takes effect at the VACUUM: auto_vacuum cannot change on a populated file otherwise.
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("VACUUM")
        method = "vacuum"
    else:
        # executescript steps the pragma to completion; execute() frees one page only.
        conn.executescript("PRAGMA incremental_vacuum;")
        method = "incremental_vacuum"
    # In WAL mode the file only shrinks once the log is checkpointed.
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    return {"reclaimed": True, "method": method, "free_pages_before": free_before,
            "free_pages_after": _pragma(database, "freelist_count"),
            "bytes_before": before, "bytes_after": database_file_size(database)}


def database_file_size(database) -> int:
    """Size in bytes of a SQLite database file with its WAL (0 for an in-memory one)."""
    name = database.database
    if name == ":memory:" or name.startswith("file::memory"):
        return 0
    if name.startswith("file:"):  # a URI filename (read-only or ?mode=... opens)
        name = unquote(urlsplit(name).path)
    size = 0
    for suffix in ("", "-wal"):
        with contextlib.suppress(OSError):  # no WAL file, or it went at a checkpoint
            size += os.path.getsize(name + suffix)
    return size


def _purge_children(database, fk, parent_ids, chunk_size: int, cascaded=None) -> None:
    child = fk.model
    pk = child._meta.primary_key
    while True:
        with database.atomic():
            ids = [row[0] for row in child.select(pk).where(fk.in_(parent_ids))
                   .order_by(pk).limit(chunk_size).tuples()]
            if not ids:
                break
            deleted = child.delete().where(pk.in_(ids)).execute()
        if cascaded is not None:
            cascaded(child, deleted)


def _pragma(database, name: str):
    return database.connection().execute(f"PRAGMA {name}").fetchone()[0]


def _field(model, field):
    if not isinstance(field, str):
        return field
    if field not in model._meta.fields:
        raise ValidationError(f"{model.__name__} has no field {field!r}; use one of "
                              f"{', '.join(model._meta.sorted_field_names)}")
    return model._meta.fields[field]
