"""Chunked purges on every backend, and SQLite giving the freed space back."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from peewee import chunked

from cardlink_lite import CommLog, OTASession, TestResult, ValidationError
from cardlink_lite.fields import utc_now
from cardlink_lite.models import TraceSource
from cardlink_lite.retention import (
    count_older_than,
    plan_purge,
    purge,
    purge_older_than,
    reclaim_space,
    resolve_purge_tables,
)
from cardlink_lite.traces import import_trace

OLD = utc_now() - timedelta(days=100)
NEW = utc_now() - timedelta(days=1)
CUTOFF = utc_now() - timedelta(days=30)


def _logs(manager, session_id, count, when, payload="00B0000010"):
    manager.bind()
    rows = [{"session": session_id, "direction": "command", "raw_data": payload,
             "timestamp": when} for _ in range(count)]
    with manager.atomic():
        for chunk in chunked(rows, 100):
            CommLog.insert_many(chunk).execute()


@pytest.fixture
def aged(manager):
    manager.bind()
    old = OTASession.create(created_at=OLD)
    new = OTASession.create(created_at=NEW)
    _logs(manager, old.id, 23, OLD)
    _logs(manager, new.id, 5, OLD)
    _logs(manager, old.id, 4, NEW)   # newer logs of an old session
    _logs(manager, new.id, 7, NEW)
    TestResult.create(run_id="r", suite_name="s", test_name="old", status="passed",
                      created_at=OLD)
    TestResult.create(run_id="r", suite_name="s", test_name="new", status="passed",
                      created_at=NEW)
    return manager, old.id, new.id


def test_count_and_purge_in_chunks(aged):
    manager, _, _ = aged
    database = manager.database
    assert count_older_than(database, CommLog, "timestamp", CUTOFF) == 28
    chunks = []
    deleted = purge_older_than(database, CommLog, CommLog.timestamp, CUTOFF, chunk_size=5,
                               progress=chunks.append)
    assert deleted == 28
    assert chunks == [5, 5, 5, 5, 5, 3]
    assert CommLog.select().count() == 11
    assert CommLog.select().where(CommLog.timestamp < CUTOFF).count() == 0


def test_purging_sessions_takes_their_logs_in_chunks(aged):
    manager, old_id, new_id = aged
    database = manager.database
    plan = plan_purge(database, "sessions,logs", CUTOFF)
    assert plan == {"logs": 28, "sessions": 1, "logs_of_sessions": 4}
    assert plan_purge(database, ["sessions"], CUTOFF)["logs_of_sessions"] == 27
    done = purge(database, "sessions,logs,tests", CUTOFF, chunk_size=3)
    assert done == {"logs": 28, "tests": 1, "sessions": 1, "logs_of_sessions": 4}
    assert [s.id for s in OTASession.select()] == [new_id]
    assert CommLog.select().count() == 7
    assert [t.test_name for t in TestResult.select()] == ["new"]


def test_unknown_tables_and_bad_chunks_are_refused(manager):
    assert resolve_purge_tables("sessions, logs ,comm_logs") == ["logs", "sessions"]
    with pytest.raises(ValidationError, match="cannot purge table 'devices'"):
        resolve_purge_tables("logs,devices")
    with pytest.raises(ValidationError, match="chunk_size"):
        purge_older_than(manager.database, CommLog, "timestamp", CUTOFF, chunk_size=0)
    with pytest.raises(ValidationError, match="no field 'when'"):
        count_older_than(manager.database, CommLog, "when", CUTOFF)


def test_writer_keeps_going_during_a_purge(manager):
    """Each chunk is its own short transaction, so a logging thread gets in between."""
    manager.bind()
    session = OTASession.create()
    _logs(manager, session.id, 3000, OLD)
    chunk_times, write_times, errors = [], [], []
    stop = threading.Event()
    wrote = threading.Condition()

    def writer():
        try:
            while not stop.is_set():
                with manager.atomic():
                    CommLog.create(session=session.id, direction="response", raw_data="9000")
                with wrote:
                    write_times.append(time.monotonic())
                    wrote.notify_all()
                stop.wait(0.002)  # a bench's pace, not a busy loop
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            with wrote:
                wrote.notify_all()
            manager.database.close()

    def between_chunks(n):
        # The purge holds no lock here: the writer must be able to commit a row now.
        chunk_times.append(n)
        with wrote:
            seen = len(write_times)
            wrote.wait_for(lambda: len(write_times) > seen or errors, timeout=30)
            waits.append(len(write_times) > seen)

    waits = []
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        deleted = purge_older_than(manager.database, CommLog, "timestamp", CUTOFF,
                                   chunk_size=300, progress=between_chunks)
    finally:
        stop.set()
        thread.join(30)
    assert not errors
    assert deleted == 3000
    assert chunk_times == [300] * 10
    assert all(waits), waits
    assert CommLog.select().where(CommLog.direction == "response").count() == len(write_times)


def _fill(manager, rows=4000):
    manager.bind()
    session = OTASession.create(created_at=OLD)
    _logs(manager, session.id, rows, OLD, payload="AB" * 200)


def _freelist(database) -> int:
    return database.execute_sql("PRAGMA freelist_count").fetchone()[0]


def test_new_sqlite_files_use_incremental_auto_vacuum(sqlite_manager):
    assert sqlite_manager.database.execute_sql("PRAGMA auto_vacuum").fetchone()[0] == 2


def test_sqlite_space_comes_back(sqlite_manager):
    database = sqlite_manager.database
    # Start from a file made before auto_vacuum was set (as older stores are).
    database.execute_sql("PRAGMA auto_vacuum = NONE")
    database.connection().execute("VACUUM")
    assert database.execute_sql("PRAGMA auto_vacuum").fetchone()[0] == 0
    _fill(sqlite_manager)
    purge(database, "sessions", CUTOFF)
    assert _freelist(database) > 100
    # A database created without auto_vacuum=INCREMENTAL gets one VACUUM that switches it.
    first = reclaim_space(database)
    assert first["method"] == "vacuum"
    assert first["free_pages_after"] == 0
    assert first["bytes_after"] < first["bytes_before"] / 2
    assert database.execute_sql("PRAGMA auto_vacuum").fetchone()[0] == 2
    # From then on the cheap incremental vacuum frees every page (not just one).
    _fill(sqlite_manager)
    purge(database, "logs,sessions", CUTOFF)
    freed = _freelist(database)
    assert freed > 100
    second = reclaim_space(database)
    assert second["method"] == "incremental_vacuum"
    assert second["free_pages_before"] == freed
    assert second["free_pages_after"] == 0
    assert second["bytes_after"] < second["bytes_before"] / 2
    assert reclaim_space(database, full=True)["method"] == "vacuum"


@pytest.mark.parametrize("backend", ["mysql", "postgresql"], indirect=True)
def test_reclaim_is_a_no_op_on_servers(manager):
    assert reclaim_space(manager.database) == {"reclaimed": False, "method": None}


def test_purging_logs_drops_the_trace_sources_left_without_rows(manager, tmp_path):
    manager.bind()
    path = tmp_path / "bench.log"
    path.write_text("00A40004023F00\n6121\n")
    summary = import_trace(manager, path, start=OLD)
    kept = tmp_path / "kept.log"
    kept.write_text("00B0000002\n01029000\n")
    newer = import_trace(manager, kept, start=NEW)
    purge(manager.database, "logs", CUTOFF)
    assert [s.id for s in TraceSource.select()] == [newer.source_id] != [summary.source_id]
    assert import_trace(manager, path).already_imported is False
