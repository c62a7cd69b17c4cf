"""Operator checks on a store: statistics, an online SQLite backup, and a health check."""

from __future__ import annotations

import os
import sqlite3
from datetime import timedelta
from pathlib import Path

import peewee

from .errors import DatabaseError, ValidationError
from .fields import utc_now
from .models import (
    ALL_MODELS,
    EXPECTED_INDEXES,
    CardProfile,
    CommLog,
    Device,
    OTASession,
    SessionStatus,
    Setting,
    TestResult,
)
from .retention import database_file_size

__all__ = ["backup_database", "check_database", "collect_stats", "database_size"]

_SHORT = {"devices": Device, "cards": CardProfile, "sessions": OTASession, "logs": CommLog,
          "tests": TestResult, "settings": Setting}
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
    since = utc_now() - timedelta(hours=hours)
    tables = {name: model.select().count() for name, model in _SHORT.items()}
    finished = (OTASession.select().where(OTASession.status.in_(_FINISHED)).count())
    completed = (OTASession.select()
                 .where(OTASession.status == SessionStatus.COMPLETED).count())
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
    }


def backup_database(manager, path, overwrite: bool = False) -> dict:
    """Copy a live SQLite database to ``path`` (mode 0600) with SQLite's online backup.

    The copy is one consistent snapshot; in WAL mode writers carry on meanwhile.
    """
    database = manager.database
    if not isinstance(database, peewee.SqliteDatabase):
        raise DatabaseError(_dump_hint(manager, path))
    target = Path(path)
    source = Path(database.database).resolve()
    if target.exists() and target.resolve() == source:
        raise ValidationError(f"{path} is the database itself; give another backup path")
    flags = os.O_CREAT | os.O_WRONLY | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(target, flags, 0o600)
    except FileExistsError:
        raise ValidationError(f"{path} already exists; choose another path or pass "
                              "--force to replace it") from None
    os.close(fd)
    os.chmod(target, 0o600)  # an existing file keeps its mode through O_TRUNC
    manager.ensure_connection()
    copy = sqlite3.connect(str(target))
    try:
        database.connection().backup(copy)
        status = copy.execute("PRAGMA quick_check").fetchone()[0]
        # A self-contained file: no -wal next to it.
        copy.execute("PRAGMA journal_mode = DELETE").fetchall()
    except BaseException:
        copy.close()
        target.unlink(missing_ok=True)
        raise
    copy.close()
    if status != "ok":
        raise DatabaseError(f"the backup at {path} failed its check ({status}); run "
                            "cardlink-db check on the source database")
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


def check_database(manager) -> dict:
    """Integrity (SQLite), expected indexes, schema revision; ``problems`` lists failures."""
    from .migrations import get_current_revision, get_head_revision

    manager.ensure_connection()
    database = manager.database
    problems = []
    checks = {}
    if isinstance(database, peewee.SqliteDatabase):
        rows = [r[0] for r in database.execute_sql("PRAGMA integrity_check").fetchall()]
        checks["integrity_check"] = rows
        if rows != ["ok"]:
            problems.extend(f"integrity_check: {r}" for r in rows[:20])
        fk = database.execute_sql("PRAGMA foreign_key_check").fetchall()
        checks["foreign_key_check"] = len(fk)
        problems.extend(f"foreign_key_check: {r[0]} row {r[1]} refers to a missing {r[2]} row"
                        for r in fk[:20])
    existing = set(database.get_tables())
    missing_indexes = []
    for model in ALL_MODELS:
        table = model._meta.table_name
        if table not in existing:
            problems.append(f"table {table} is missing; run cardlink-db migrate")
            continue
        have = {index.name for index in database.get_indexes(table)}
        for name in EXPECTED_INDEXES.get(table, []):
            if name not in have:
                missing_indexes.append(name)
                problems.append(f"index {name} on {table} is missing; run cardlink-db migrate")
    checks["missing_indexes"] = missing_indexes
    current, head = get_current_revision(manager=manager), get_head_revision()
    checks["revision"] = {"current": current, "head": head}
    if current != head:
        problems.append(f"schema revision is {current or '(none)'} but this cardlink_lite "
                        f"expects {head}; run cardlink-db migrate")
    return {"ok": not problems, "backend": manager.config.backend_name,
            "problems": problems, "checks": checks}
