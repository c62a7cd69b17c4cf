"""Operator checks on a store: statistics, an online SQLite backup, and a health check."""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import peewee
from peewee import fn

from . import migrations
from .apdu import command_header
from .db import bound_models
from .errors import DatabaseError, SchemaVersionMismatch, ValidationError
from .fields import utc_now
from .models import (
    ALL_MODELS,
    EXPECTED_INDEXES,
    CommDirection,
    CommLog,
    OTASession,
    SessionStatus,
    TestResult,
)
from .repositories.sessions import SessionRepository
from .retention import database_file_size
from .table_names import display_name

__all__ = ["backup_database", "check_database", "collect_stats", "database_size",
           "repair_database"]

_SHORT = {display_name(model._meta.table_name): model for model in ALL_MODELS}
_FINISHED = (SessionStatus.COMPLETED, SessionStatus.FAILED, SessionStatus.TIMEOUT)


def database_size(manager) -> int:
    """Bytes the database takes: the file on SQLite, the server's own figure otherwise."""
    database = manager.database
    if isinstance(database, peewee.SqliteDatabase):
        return database_file_size(database)
    if isinstance(database, peewee.PostgresqlDatabase):
        sql = "SELECT pg_database_size(current_database())"
    else:
        sql = ("SELECT COALESCE(SUM(data_length + index_length), 0) "
               "FROM information_schema.tables WHERE table_schema = DATABASE()")
    return int(database.execute_sql(sql).fetchone()[0] or 0)


def collect_stats(manager, hours: int = 24) -> dict:
    """Row counts, size, recent activity and the session success rate (the guide's keys)."""
    manager.ensure_connection()
    with bound_models(manager.database):
        since = utc_now() - timedelta(hours=hours)
        tables = {name: model.select().count() for name, model in _SHORT.items()}
        finished = OTASession.select().where(OTASession.status.in_(_FINISHED)).count()
        completed = OTASession.select().where(OTASession.status == SessionStatus.COMPLETED).count()
        size = database_size(manager)
        return {
            "tables": tables,
            "database_size_mb": round(size / (1024 * 1024), 2),
            "database_size_bytes": size,
            "recent_activity": {
                f"sessions_last_{hours}h": OTASession.select()
                .where(OTASession.created_at >= since).count(),
                f"tests_last_{hours}h": TestResult.select()
                .where(TestResult.created_at >= since).count(),
            },
            "session_success_rate": round(100.0 * completed / finished, 1) if finished else 0.0,
            # Failed and timed-out sessions by TLS alert, PoR status, admin script status...
            "session_failures_by_cause":
                SessionRepository().get_statistics(days=None)["failures_by_cause"],
        }


def backup_database(manager, path, overwrite: bool = False) -> dict:
    """Copy a live SQLite database to ``path`` (mode 0600) through SQLite's online backup:
    one consistent snapshot while writers carry on."""
    database = manager.database
    if not isinstance(database, peewee.SqliteDatabase):
        raise DatabaseError(_dump_hint(manager, path))
    target = Path(path)
    source = Path(database.database).resolve()
    if target.exists() and target.resolve() == source:
        raise ValidationError(f"{path} is the database itself; give another backup path")
    if os.path.lexists(target):
        if not target.is_file():
            raise ValidationError(f"{path} is not a regular file; backup replaces only a "
                                  "file: choose a file path")
        if not overwrite:
            raise ValidationError(f"{path} already exists; choose another path or pass "
                                  "--force to replace it")
    # Into a temporary file next to it, renamed over PATH once complete and checked: a
    # failure (a full disk) leaves an earlier backup as it was.
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp",
                                   dir=target.parent)
    except OSError as exc:  # name the user's path, not the temporary one
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    os.close(fd)
    manager.ensure_connection()
    try:
        with contextlib.closing(sqlite3.connect(tmp)) as copy:
            database.connection().backup(copy)
            status = copy.execute("PRAGMA quick_check").fetchone()[0]
            # A self-contained file: no -wal next to it.
            copy.execute("PRAGMA journal_mode = DELETE").fetchall()
        if status != "ok":
            raise DatabaseError(f"the backup at {path} failed its check ({status}); run "
                                "cardlink-db check on the source database")
        os.replace(tmp, target)
    except sqlite3.Error as exc:
        if "disk is full" not in str(exc):
            raise DatabaseError(f"cannot write the backup {str(path)!r}: {exc}") from None
        raise DatabaseError(f"cannot write the backup {str(path)!r}: the disk is full; free "
                            "some space or choose another path") from None
    finally:
        for leftover in (tmp, tmp + "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
    return {"path": str(target), "bytes": target.stat().st_size}


def _dump_hint(manager, path) -> str:
    kwargs = manager.config.connect_kwargs()
    name = kwargs.get("database", "cardlink")
    host, port, user = kwargs.get("host", "localhost"), kwargs.get("port"), kwargs.get("user")
    if manager.backend == "postgresql":
        tool = (f"pg_dump --host {host}{f' --port {port}' if port else ''}"
                f"{f' --username {user}' if user else ''} --format custom --file {path} {name}")
    else:
        tool = (f"mariadb-dump --host {host}{f' --port {port}' if port else ''}"
                f"{f' --user {user}' if user else ''} --single-transaction {name} > {path}")
    return (f"backup copies SQLite files only; for {manager.config.backend_name} use the "
            f"server's dump tool, e.g. {tool} (or cardlink-db export)")


def check_database(manager, quick: bool = False) -> dict:
    """Integrity (SQLite; ``quick``: ``quick_check``), tables, indexes, schema revision, time;
    each entry of ``problems`` ends with the command or statement that fixes it."""
    start = time.perf_counter()
    manager.ensure_connection()
    database = manager.database
    problems: list[str] = []
    checks: dict = {"mode": "quick" if quick else "full"}
    if isinstance(database, peewee.SqliteDatabase):
        _check_sqlite_file(database, quick, checks, problems)
    revision_problem = _check_revision(manager, checks)
    missing_models, missing_indexes = _missing(database)
    checks["missing_tables"] = [model._meta.table_name for model in missing_models]
    checks["missing_indexes"] = [name for _, name in missing_indexes]
    if revision_problem:
        problems.append(revision_problem)
    elif checks["revision"]["current"] is not None:
        # At the code's revision: a missing table or index is damage migrate cannot see.
        problems.extend(f"table {display_name(t)} is missing; recreate it with: cardlink-db "
                        "check --repair" for t in checks["missing_tables"])
        problems.extend(f"index {name} on {display_name(table)} is missing; recreate it with: "
                        f"cardlink-db check --repair (or run: {_index_sql(database, name)})"
                        for table, name in missing_indexes)
        if "comm_logs" not in checks["missing_tables"]:
            checks["unfilled_headers"] = _unfilled_headers(database)
        if checks.get("unfilled_headers"):
            problems.append(f"{checks['unfilled_headers']:,} command rows in logs have no "
                            "channel and INS though their raw_data has a header (0003's "
                            "backfill did not finish); fill them with: cardlink-db migrate")
    return {"ok": not problems, "backend": manager.config.backend_name,
            "problems": problems, "checks": checks,
            "seconds": round(time.perf_counter() - start, 3)}


def repair_database(manager) -> list[str]:
    """Recreate what ``check`` finds missing (a dropped table's data is gone); what was made.
    Only at the newest revision: an older store's missing tables are migrate's to make."""
    manager.ensure_connection()
    problem = _check_revision(manager, {})
    if problem:
        raise DatabaseError("check --repair repairs only a store at the newest schema "
                            f"revision: {problem}")
    database = manager.database
    missing_models, missing_indexes = _missing(database)
    created = []
    for model in missing_models:
        with bound_models(database):
            model.create_table(safe=True)
        created.append(f"table {display_name(model._meta.table_name)}")
    for _table, name in missing_indexes:
        database.execute_sql(_index_sql(database, name))
        created.append(f"index {name}")
    return created


def _missing(database) -> tuple[list, list]:
    """The models whose table is missing, and (table, name) of missing expected indexes."""
    existing = set(database.get_tables())
    models, indexes = [], []
    for model in ALL_MODELS:
        table = model._meta.table_name
        if table not in existing:
            models.append(model)
            continue
        have = {index.name for index in database.get_indexes(table)}
        indexes.extend((table, name) for name in EXPECTED_INDEXES.get(table, [])
                       if name not in have)
    return models, indexes


def _unfilled_headers(database) -> int:
    """Command rows without channel/INS whose raw_data starts with a header."""
    if "ins" not in {column.name for column in database.get_columns("comm_logs")}:
        return 0  # a half-applied 0003 recorded as applied: its index is reported missing
    with bound_models(database):
        query = (CommLog.select(fn.SUBSTR(CommLog.raw_data, 1, 4))
                 .where((CommLog.direction == CommDirection.COMMAND) & CommLog.ins.is_null()))
        return sum(command_header((head or "").upper())[1] is not None
                   for (head,) in query.tuples().iterator())


def _check_sqlite_file(database, quick: bool, checks: dict, problems: list) -> None:
    pragma = "quick_check" if quick else "integrity_check"
    rows = [r[0] for r in database.execute_sql(f"PRAGMA {pragma}").fetchall()]
    checks[pragma] = rows
    if rows != ["ok"]:
        problems.extend(f"{pragma}: {r}; the file is damaged: restore the newest backup, or "
                        "save what can be read with cardlink-db export -o rescue.json and "
                        "import it into a new store" for r in rows[:20])
    fk = database.execute_sql("PRAGMA foreign_key_check").fetchall()
    checks["foreign_key_check"] = len(fk)
    problems.extend(
        f"foreign_key_check: {display_name(r[0])} row {r[1]} refers to a missing "
        f"{display_name(r[2])} "
        f"row; delete it with: DELETE FROM {r[0]} WHERE rowid = {r[1]}" for r in fk[:20])


def _check_revision(manager, checks: dict) -> str | None:
    current, head = migrations.get_current_revision(manager), migrations.get_head_revision()
    checks["revision"] = {"current": current, "head": head}
    try:
        migrations.check_schema_version(manager)
    except SchemaVersionMismatch:
        return (f"the store is at schema revision {current}, newer than this cardlink_lite "
                f"knows ({head}); upgrade the package: pip install --upgrade cardlink-lite")
    stuck = migrations.half_applied(manager)
    if stuck:
        return (f"migration {stuck[0]['name']} is half-applied; fix it by hand, then run: "
                f"cardlink-db migrate --resolve {stuck[0]['name']} --as applied|rolled-back")
    if current is None:
        return "the store has no cardlink schema; create it with: cardlink-db init"
    if current != head:
        return (f"schema revision is {current} but this cardlink_lite expects {head}; "
                "run: cardlink-db migrate")
    return None


def _index_sql(database, name: str) -> str:
    """The CREATE INDEX statement of expected index ``name`` on this backend."""
    for model in ALL_MODELS:
        for index in model._meta.fields_to_index():
            sql, _ = database.get_sql_context().sql(index).query()
            sql = sql.replace(" IF NOT EXISTS", "")
            if re.search(rf"INDEX [`\"]?{re.escape(name)}[`\"]? ", sql):
                return sql
    raise ValidationError(f"{name} is not an index cardlink_lite creates")
