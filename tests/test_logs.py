"""LogRepository: batched writes in a unit of work, trace queries, plans, export, purge."""

import io
import json
from datetime import datetime, timedelta, timezone

import pytest

from cardlink_lite import (
    CommDirection,
    CommLog,
    OTASession,
    UnitOfWork,
    ValidationError,
)
from cardlink_lite.events import EventType, get_emitter


@pytest.fixture
def session(manager):
    return OTASession.create(session_type="profile_download")


def _seed(uow, session_id):
    uow.logs.add_log_batch([
        (session_id, CommDirection.COMMAND, "00A4040008A000000151000000", "SELECT ISD"),
        (session_id, CommDirection.RESPONSE, "6F108408A0000001510000009000", "FCI"),
        (session_id, "command", "80 F2 40 00 02 4F 00", "GET STATUS"),
        (session_id, "response", "6310"),
        (session_id, "command", "00C0000010"),
        (session_id, "response", "6A82"),
        {"session_id": session_id, "direction": "response", "raw_data": "611A"},
    ])
    return uow.logs.flush_batch()


def test_guide_sample_runs(manager, session):
    with UnitOfWork(manager) as uow:
        log = uow.logs.add_log(session_id=session.id, direction=CommDirection.COMMAND,
                               raw_data="00A4040008A000000151000000", decoded_data="SELECT ISD")
        assert log.id is not None and log.direction is CommDirection.COMMAND
        logs = [(session.id, CommDirection.COMMAND, "00A4...", "SELECT"),
                (session.id, CommDirection.RESPONSE, "9000", "Success")]
        uow.logs.add_log_batch(logs)
        assert uow.logs.flush_batch() == 2
        assert len(uow.logs.find_by_session(session.id)) == 3
        assert len(uow.logs.find_commands(session.id)) == 2
        assert len(uow.logs.find_responses(session.id)) == 1
        assert len(uow.logs.find_by_status(session.id, "9000")) == 1
        assert uow.logs.find_errors(session.id) == []
        assert len(uow.logs.search_hex("A4", session_id=session.id)) == 2
        assert uow.logs.purge_old(days=90) == 0
        log_data = uow.logs.export_session_logs(session.id)
        assert len(log_data) == 3
        uow.commit()


def test_design_single_row_form_and_queries_flush_first(manager, session):
    with UnitOfWork(manager) as uow:
        uow.logs.add_log_batch(session_id=session.id, direction="command", raw_data="00B0")
        assert uow.logs.pending == 1
        assert uow.logs.count_by_session(session.id) == 1  # flushed before counting
        assert uow.logs.pending == 0
        uow.commit()
    assert CommLog.select().count() == 1


def test_trace_queries(manager, session):
    with UnitOfWork(manager) as uow:
        assert _seed(uow, session.id) == 7
        trace = uow.logs.find_by_session(session.id)
        assert [r.raw_data[:4] for r in trace] == ["00A4", "6F10", "80F2", "6310", "00C0",
                                                  "6A82", "611A"]
        assert [r.status_word for r in uow.logs.find_errors(session.id)] == [
            "6310", "6A82", "611A"]
        strict = uow.logs.find_errors(session.id, include_success_with_data=False)
        assert [r.status_word for r in strict] == ["6310", "6A82"]
        assert [r.raw_data for r in uow.logs.find_by_status(session.id, "6a82")] == ["6A82"]
        assert len(uow.logs.find_by_direction(session.id, "RESPONSE")) == 4
        assert [r.raw_data for r in uow.logs.search_hex("f2 40", session.id)] == [
            "80F24000024F00"]
        assert len(uow.logs.find_by_session(session.id, limit=2, offset=1)) == 2
        rows = list(uow.logs.session_query(session.id).tuples().iterator())
        assert len(rows) == 7
        uow.commit()


def test_search_hex_refuses_wildcards(manager, session):
    with UnitOfWork(manager) as uow, pytest.raises(ValidationError, match="pattern"):
        uow.logs.search_hex("A4%")


def test_bad_row_in_a_batch_buffers_none_of_it(manager, session):
    with UnitOfWork(manager) as uow:
        with pytest.raises(ValidationError, match="row 1"):
            uow.logs.add_log_batch([(session.id, "command", "00A4"),
                                    (session.id, "upward", "9000")])
        assert uow.logs.pending == 0
        with pytest.raises(ValidationError, match="status_word"):
            uow.logs.add_log(session.id, "response", "9000", status_word="9")


def test_one_log_created_event_per_flush_after_commit(manager, session):
    seen = []
    handler = get_emitter().on(EventType.LOG_CREATED, seen.append)
    try:
        with UnitOfWork(manager) as uow:
            uow.logs.add_log_batch([(session.id, "command", "00B0")] * 5)
            uow.logs.flush_batch()
            assert seen == []  # not before commit
            uow.commit()
        assert [e.data["count"] for e in seen] == [5]
        seen.clear()
        with UnitOfWork(manager) as uow:
            uow.logs.add_log_batch([(session.id, "command", "00B0")] * 5)
            uow.logs.flush_batch()
            uow.rollback()
        assert seen == []
    finally:
        get_emitter().off(EventType.LOG_CREATED, handler)
    assert CommLog.select().count() == 5  # the rolled-back flush is gone


def test_export_streams_dicts_in_design_format(manager, session):
    with UnitOfWork(manager) as uow:
        uow.logs.add_log_batch([
            {"session_id": session.id, "direction": "command", "raw_data": f"{i:04X}",
             "timestamp": datetime(2024, 11, 29, 10, 0, 0, 0, timezone.utc)}
            for i in range(12)])
        export = uow.logs.export_session_logs(session.id)
        first = export[0]
        assert list(first) == ["timestamp", "direction", "raw_data", "decoded_data",
                               "status_word", "status_message", "latency_ms"]
        assert first["timestamp"] == "2024-11-29T10:00:00+00:00"
        model = uow.logs.find_by_session(session.id)[0]
        assert first["timestamp"] == model.timestamp.isoformat()
        # Pages of 5 (keyset on timestamp, id) still give every row once, in order.
        rows = list(uow.logs.iter_logs(session.id, page_size=5))
        assert [r["raw_data"] for r in rows] == [f"{i:04X}" for i in range(12)]
        assert export == rows
        out = io.StringIO()
        assert uow.logs.write_jsonl(out) == 12
        assert json.loads(out.getvalue().splitlines()[3])["raw_data"] == "0003"
        uow.commit()


def test_purge_old_in_chunks(manager, session):
    old = datetime.now(timezone.utc) - timedelta(days=100)
    with UnitOfWork(manager) as uow:
        uow.logs.add_log_batch([{"session_id": session.id, "direction": "command",
                                 "raw_data": "00B0", "timestamp": old}] * 7)
        uow.logs.add_log_batch([(session.id, "command", "00B0")] * 2)
        uow.logs.flush_batch()
        uow.commit()
    with UnitOfWork(manager) as uow:
        assert uow.logs.purge_old(days=90, chunk_size=3) == 7
        uow.commit()
    assert CommLog.select().count() == 2


def test_session_trace_uses_the_composite_index(sqlite_manager):
    session = OTASession.create()
    with UnitOfWork(sqlite_manager) as uow:
        query = uow.logs.session_query(session.id)
        sql, params = query.sql()
        plan = " | ".join(row[3] for row in sqlite_manager.database.execute_sql(
            "EXPLAIN QUERY PLAN " + sql, params).fetchall())
    assert "USING INDEX idx_log_session_time" in plan
    assert "TEMP B-TREE" not in plan  # rows come back in (timestamp, id) order from the index
