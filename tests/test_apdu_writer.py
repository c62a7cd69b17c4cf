"""The batched APDU writer: validation, ordering, flush policy, failures, threads, WAL."""

import gc
import os
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timezone
from types import SimpleNamespace

import peewee
import pytest

from cardlink_lite import CommLog, DatabaseError, OTASession, UnitOfWork, ValidationError, apdu
from cardlink_lite.apdu import ApduLogWriter, apdu_logger, normalize_hex
from cardlink_lite.events import EventType, get_emitter


@pytest.fixture
def session(manager):
    return OTASession.create(session_type="test")


def _trace(session_id):
    return list(CommLog.select().where(CommLog.session == session_id)
                .order_by(CommLog.timestamp, CommLog.id))


def test_logger_writes_commands_and_responses_in_order(manager, session):
    with apdu_logger(manager, session.id) as log:
        log.command("00 a4 04 00 08 a0 00 00 01 51 00 00 00", "SELECT ISD")
        log.response("6F10 8408 A000000151000000 9000", latency_ms=15.2)
        log.response("6A82")
        log.command("00A4...")  # the guide's elided sample
        assert CommLog.select().count() == 0  # still buffered
    rows = _trace(session.id)
    assert [r.raw_data for r in rows] == [
        "00A4040008A000000151000000", "6F108408A0000001510000009000", "6A82", "00A4..."]
    assert rows[0].direction.value == "command" and rows[0].status_word is None
    assert rows[1].status_word == "9000" and rows[1].latency_ms == 15.2
    assert rows[1].status_message.startswith("Success")
    assert rows[2].status_word == "6A82"
    assert rows[2].status_message == "File or application not found"
    assert rows[0].decoded_data == "SELECT ISD"


def test_rows_sharing_a_millisecond_keep_logging_order(manager, session):
    stamp = "2024-11-29T10:00:00.123+00:00"
    with apdu_logger(manager, session.id, batch_size=7) as log:
        for i in range(20):
            log.add(session.id, "command", f"{i:04X}", timestamp=stamp)
    assert [r.raw_data for r in _trace(session.id)] == [f"{i:04X}" for i in range(20)]
    assert {r.timestamp.isoformat() for r in _trace(session.id)} == {
        "2024-11-29T10:00:00.123000+00:00"}


def test_timestamp_is_taken_when_logged_not_when_flushed(manager, session, monkeypatch):
    clock = [1732874400.1239]  # 2024-11-29 10:00:00.1239 UTC
    monkeypatch.setattr(apdu, "time", SimpleNamespace(time=lambda: clock[0],
                                                  monotonic=time.monotonic, sleep=time.sleep))
    with apdu_logger(manager, session.id, flush_interval=None) as log:
        log.command("00B0000000")
        clock[0] += 60  # the flush, a minute later
    (row,) = _trace(session.id)
    assert row.timestamp == datetime(2024, 11, 29, 10, 0, 0, 123000, tzinfo=timezone.utc)


@pytest.mark.parametrize("kwargs, field", [
    ({"direction": "sideways"}, "direction"),
    ({"raw_data": "00A4ZZ"}, "raw_data"),
    ({"raw_data": "00A"}, "raw_data"),
    ({"raw_data": ""}, "raw_data"),
    ({"status_word": "90"}, "status_word"),
    ({"status_word": "90XY"}, "status_word"),
    ({"latency_ms": -1}, "latency_ms"),
    ({"latency_ms": "fast"}, "latency_ms"),
    ({"session_id": "not-a-uuid"}, "session_id"),
])
def test_bad_row_is_refused_naming_the_field_and_poisons_nothing(manager, session, kwargs,
                                                                  field):
    writer = ApduLogWriter(manager, flush_interval=None)
    writer.add(session.id, "command", "00A40400")
    row = {"session_id": session.id, "direction": "response", "raw_data": "9000", **kwargs}
    with pytest.raises(ValidationError, match=field) as info:
        writer.add(**row)
    assert field in info.value.problems
    writer.add(session.id, "response", "9000")
    assert writer.flush() == 2
    assert [r.raw_data for r in _trace(session.id)] == ["00A40400", "9000"]


def test_add_many_is_all_or_nothing_before_any_write(manager, session):
    writer = ApduLogWriter(manager, batch_size=2, flush_interval=None)
    rows = [(session.id, "command", "00A4"), (session.id, "response", "9000"),
            (session.id, "response", "nothex")]
    with pytest.raises(ValidationError, match="row 2.*raw_data"):
        writer.add_many(rows)
    assert writer.pending == 0 and CommLog.select().count() == 0
    assert writer.add_many(rows[:2] + [{"session_id": session.id, "direction": "command",
                                         "raw_data": "80CA"}]) == 3
    writer.close()
    assert CommLog.select().count() == 3


def test_normalize_hex():
    assert normalize_hex("00 a4\t04 00") == "00A40400"
    assert normalize_hex(b"\x90\x00") == "9000"
    assert normalize_hex("3B9F9...") == "3B9F9..."  # an elided sample may stop mid-byte
    with pytest.raises(ValidationError):
        normalize_hex("...")


def test_flush_when_batch_is_full(manager, session):
    writer = ApduLogWriter(manager, session_id=session.id, batch_size=5, flush_interval=None)
    for _ in range(4):
        writer.command("00B0")
    assert CommLog.select().count() == 0
    writer.command("00B0")
    assert CommLog.select().count() == 5 and writer.pending == 0
    writer.close()


def test_background_flush_after_interval(manager, session):
    flushed = threading.Event()
    writer = ApduLogWriter(manager, session_id=session.id, flush_interval=0.1,
                           on_flush=lambda entity, data: flushed.set())
    writer.command("00B0")
    assert flushed.wait(30)
    assert writer.pending == 0
    manager.database.close()  # see the other connection's commit on every backend
    assert CommLog.select().count() == 1
    writer.close()


def test_failed_flush_raises_and_keeps_rows_for_retry(manager, session):
    writer = ApduLogWriter(manager, session_id=session.id, flush_interval=None)
    writer.command("00A4")
    writer.response("9000")
    database = manager.database
    database.execute_sql("ALTER TABLE comm_logs RENAME TO comm_logs_away")
    try:
        with pytest.raises(DatabaseError):
            writer.flush()
        assert writer.pending == 2
        writer.command("00B0")  # logged while the table is gone: kept after the others
    finally:
        database.execute_sql("ALTER TABLE comm_logs_away RENAME TO comm_logs")
    assert writer.flush() == 3
    assert [r.raw_data for r in _trace(session.id)] == ["00A4", "9000", "00B0"]


def test_unknown_session_is_named_and_its_rows_rejected(manager, session):
    ghost = "123e4567-e89b-12d3-a456-426614174000"
    writer = ApduLogWriter(manager, flush_interval=None)
    writer.add(ghost, "command", "00A4")
    with pytest.raises(DatabaseError, match=ghost) as caught:
        writer.flush()
    assert writer.pending == 0
    assert caught.value.rejected[0][0]["raw_data"] == "00A4"


def test_one_event_per_flush_with_the_count(manager, session):
    seen = []
    handler = get_emitter().on(EventType.LOG_CREATED, seen.append)
    try:
        with apdu_logger(manager, session.id, batch_size=3) as log:
            for _ in range(7):
                log.command("00B0")
    finally:
        get_emitter().off(EventType.LOG_CREATED, handler)
    assert [e.data["count"] for e in seen] == [3, 3, 1]
    assert seen[0].entity_id == session.id


def test_threads_share_one_writer(manager, session):
    writer = ApduLogWriter(manager, session_id=session.id, batch_size=50, flush_interval=0.05)

    def work(n):
        for i in range(200):
            writer.command(f"{n:02X}{i:04X}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.close()
    rows = _trace(session.id)
    assert len(rows) == 800
    for n in range(4):  # each thread's rows in its own logging order
        mine = [r.raw_data for r in rows if r.raw_data.startswith(f"{n:02X}")]
        assert mine == [f"{n:02X}{i:04X}" for i in range(200)]


def test_context_exit_after_an_error_still_writes_the_log(manager, session):
    with pytest.raises(RuntimeError), apdu_logger(manager, session.id) as log:
        log.command("00A4")
        raise RuntimeError("card removed")
    assert len(_trace(session.id)) == 1
    with pytest.raises(DatabaseError, match="closed"):
        log.command("00A4")


def test_large_flush_leaves_no_big_wal(sqlite_manager):
    session = OTASession.create()
    writer = ApduLogWriter(sqlite_manager, session_id=session.id, batch_size=100_000,
                           flush_interval=None)
    for i in range(25_000):
        writer.command("00D6000080" + "AB" * 128, f"UPDATE BINARY #{i}")
    writer.close()
    wal = sqlite_manager.database.database + "-wal"
    assert CommLog.select().count() == 25_000
    assert not os.path.exists(wal) or os.path.getsize(wal) < 1_000_000


def test_atexit_flushes_a_writer_left_open(tmp_path):
    url = f"sqlite:///{tmp_path}/exit.db"
    script = textwrap.dedent(f"""
        from cardlink_lite import DatabaseManager, OTASession
        from cardlink_lite.apdu import ApduLogWriter
        m = DatabaseManager({url!r}); m.initialize(check_schema=False); m.create_tables()
        s = OTASession.create()
        w = ApduLogWriter(m, session_id=s.id, flush_interval=None)
        for i in range(10):
            w.command("00B0")
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    db = peewee.SqliteDatabase(f"{tmp_path}/exit.db")
    assert db.execute_sql("SELECT COUNT(*) FROM comm_logs").fetchone()[0] == 10


def test_none_session_is_refused_and_does_not_block_later_rows(manager):
    from cardlink_lite import OTASession, ValidationError
    from cardlink_lite.apdu import ApduLogWriter

    session = OTASession.create()
    writer = ApduLogWriter(manager, flush_interval=None)
    with pytest.raises(ValidationError, match="session_id"):
        writer.add(None, "command", "00A4")
    writer.add(session.id, "command", "00A4")
    assert writer.flush() == 1
    writer.close()


def _gated_ticks(writer):
    """(go, ticks): the writer's timer ticks wait for ``go``; ``ticks`` is released after each."""
    go, ticks = threading.Event(), threading.Semaphore(0)
    tick = writer._background_flush

    def gated_tick():
        go.wait()
        tick()
        ticks.release()

    writer._background_flush = gated_tick
    return go, ticks


def _counted_flushes():
    """(on_flush, wait): ``wait(n)`` returns once flushes have written ``n`` rows in all."""
    written, done = [], threading.Condition()

    def on_flush(entity, data):
        with done:
            written.append(data["count"])
            done.notify_all()

    def wait(n):
        with done:
            return done.wait_for(lambda: sum(written) >= n, timeout=30)

    return on_flush, wait


def test_timer_does_not_write_rows_logged_inside_a_unit_of_work(manager):
    with UnitOfWork(manager) as uow:
        session = uow.sessions.create_session()
    writer = ApduLogWriter(manager, flush_interval=0.05)
    go, ticks = _gated_ticks(writer)
    with UnitOfWork(manager) as uow:
        uow.devices.count()
        writer.add(session.id, "command", "00A4")
        go.set()
        for _ in range(3):  # several timer ticks while the transaction is open
            assert ticks.acquire(timeout=30)
        uow.rollback()
        writer.discard()
    writer.close()
    assert CommLog.select().count() == 0


def test_timer_never_waits_for_the_callers_lock(manager, session, backend):
    writer = ApduLogWriter(manager, session_id=session.id, flush_interval=0.05)
    go, ticks = _gated_ticks(writer)
    writer.command("00A4")  # logged outside any transaction: the timer may write it
    with UnitOfWork(manager) as uow:
        # The lock the timer's INSERT would wait for (SQLite: the write lock; MariaDB: the
        # session row's; PostgreSQL's foreign key check waits only for FOR UPDATE).
        uow.sessions.set_tls_info(session.id, cipher_suite="TLS_PSK_WITH_AES_128_CBC_SHA256")
        if backend == "postgresql":
            list(OTASession.select().where(OTASession.id == session.id).for_update())
        writer.response("9000")
        go.set()
        for _ in range(2):  # each tick meets the lock and gives up at once
            assert ticks.acquire(timeout=10)
        started = time.monotonic()
        assert writer.flush() == 2  # in the caller's transaction
        assert time.monotonic() - started < 5
    writer.close()
    assert [r.raw_data for r in _trace(session.id)] == ["00A4", "9000"]


def test_rows_logged_in_an_open_transaction_wait_for_its_commit(manager, session):
    on_flush, wait = _counted_flushes()
    writer = ApduLogWriter(manager, flush_interval=0.05, on_flush=on_flush)
    go, ticks = _gated_ticks(writer)
    writer.command("00A4", session_id=session.id)
    with UnitOfWork(manager) as uow:  # a second card arrives
        second = uow.sessions.create_session(session_type="second card").id
        writer.command("80E60C00", session_id=second)
        writer.response("9000", session_id=second)
        go.set()
        for _ in range(3):  # ticks while the session is not committed yet
            assert ticks.acquire(timeout=10)
        assert writer.pending >= 2 and writer.rows_rejected == 0
    assert wait(3)  # the next tick writes them
    writer.close()
    assert [r.raw_data for r in _trace(second)] == ["80E60C00", "9000"]
    assert writer.rows_rejected == 0


def test_timer_writes_the_rows_of_a_finished_transaction(manager, session):
    on_flush, wait = _counted_flushes()
    with apdu_logger(manager, session.id, flush_interval=0.05, on_flush=on_flush) as log:
        with UnitOfWork(manager) as uow:
            uow.sessions.start_session(session.id)
            log.command("00A4040008A000000151000000", "SELECT ISD")  # inside the unit of work
        for _ in range(5):
            log.response("9000", latency_ms=1.0)
            log.command("80CA00CF00")
        assert wait(11)  # the timer, not the exit
    assert len(_trace(session.id)) == 11


def test_a_thread_that_flushes_keeps_no_connection(manager, session):
    writer = ApduLogWriter(manager, session_id=session.id, flush_interval=None)
    closed = []

    def work():
        writer.command("00A4")
        writer.flush()
        closed.append(manager.database.is_closed())

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert closed == [True]
    assert len(_trace(session.id)) == 1


def test_status_message_answers_the_sessions_own_last_command(manager, session):
    other = OTASession.create(session_type="other card")
    writer = ApduLogWriter(manager, flush_interval=None)
    writer.command("0020000100", session_id=session.id)  # VERIFY without data: retries left?
    writer.command("00A4040008A000000151000000", session_id=other.id)  # another card meanwhile
    writer.response("63C3", session_id=session.id)
    writer.response("63C3", session_id=other.id)
    writer.close()
    messages = {r.session_id: r.status_message
                for r in CommLog.select().where(CommLog.status_word == "63C3")}
    assert messages[session.id] == "3 PIN attempts remaining"
    assert messages[other.id] != "3 PIN attempts remaining"


def test_a_collected_writer_without_flush_at_exit_writes_nothing(manager, session, caplog):
    writer = ApduLogWriter(manager, session_id=session.id, flush_interval=None,
                           flush_at_exit=False)
    writer.command("00A4")
    del writer
    gc.collect()
    assert CommLog.select().count() == 0
    assert "1 unwritten rows of a transaction or without flush_at_exit; dropping them" \
        in caplog.text


def test_a_collected_writer_never_commits_rows_of_a_rolled_back_transaction(manager, session):
    writer = ApduLogWriter(manager, session_id=session.id, flush_interval=None)
    with pytest.raises(KeyboardInterrupt), manager.database.atomic():
        writer.command("00A4")
        raise KeyboardInterrupt
    del writer
    gc.collect()
    assert CommLog.select().count() == 0
