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
from cardlink_lite.apdu import apdu_logger
from cardlink_lite.events import EventType, get_emitter
from cardlink_lite.traces import import_trace
from tests.repository_helpers import count_queries


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
        # 611A ("26 more bytes") is not an error unless asked for
        assert [r.status_word for r in uow.logs.find_errors(session.id)] == ["6310", "6A82"]
        every = uow.logs.find_errors(session.id, include_success_with_data=True)
        assert [r.status_word for r in every] == ["6310", "6A82", "611A"]
        assert [r.raw_data for r in uow.logs.find_by_status(session.id, "6a82")] == ["6A82"]
        assert len(uow.logs.find_by_direction(session.id, "RESPONSE")) == 4
        assert [r.raw_data for r in uow.logs.search_hex("f2 40", session.id)] == [
            "80F24000024F00"]
        assert len(uow.logs.find_by_session(session.id, limit=2, offset=1)) == 2
        rows = list(uow.logs.session_query(session.id).tuples().iterator())
        assert len(rows) == 7
        uow.commit()


def test_trace_pages_and_search_limits(manager, session):
    with UnitOfWork(manager) as uow:
        _seed(uow, session.id)
        trace = [r.raw_data for r in uow.logs.find_by_session(session.id)]
        assert [r.raw_data for r in uow.logs.find_by_session(session.id, offset=5)] == trace[5:]
        assert [r.raw_data for r in uow.logs.find_by_session(session.id, limit=3)] == trace[:3]
        assert [r.raw_data for r in uow.logs.find_by_session(session.id, offset=0)] == trace
        assert [r.raw_data for r in uow.logs.search_hex("00", session.id, limit=2)] == trace[:2]
        with pytest.raises(ValidationError, match="hex digits"):
            uow.logs.search_hex("0G")
        with pytest.raises(ValidationError, match="hex digits"):
            uow.logs.search_hex(" ")


# A retry-counter query (VERIFY without data) and its normal answer, a failed VERIFY with
# a PIN, a failed SELECT: what each response means and whether it is an error.
PIN_EXCHANGE = [("0020000100", "63C3", "3 PIN attempts remaining", False),
                ("002000010831323334FFFFFFFF", "63C2", "Verification failed: 2 retries left", True),
                ("00A4040008A000000151000000", "6A82", "File or application not found", True)]


def test_pin_retry_count_is_no_error_and_reads_alike_logged_live_or_imported(
        manager, session, tmp_path):
    with apdu_logger(manager, session.id) as log:
        for command, sw, _, _ in PIN_EXCHANGE:
            log.command(command)
            log.response(sw)
    guide = OTASession.create(session_type="profile_download")
    with UnitOfWork(manager) as uow:
        uow.logs.add_log_batch([row for command, sw, _, _ in PIN_EXCHANGE
                                for row in ((guide.id, "command", command),
                                            (guide.id, "response", sw))])
        uow.commit()
    trace = tmp_path / "pin.txt"
    trace.write_text("".join(f"{command}\n{sw}\n" for command, sw, _, _ in PIN_EXCHANGE))
    [imported] = import_trace(manager, trace, "hex-lines").sessions
    with UnitOfWork(manager) as uow:
        for session_id in (session.id, guide.id, imported):
            responses = uow.logs.find_responses(session_id)
            assert [(r.status_word, r.status_message) for r in responses] == [
                (sw, meaning) for _, sw, meaning, _ in PIN_EXCHANGE]
            assert [r.status_word for r in uow.logs.find_errors(session_id)] == [
                sw for _, sw, _, error in PIN_EXCHANGE if error]
            every = uow.logs.find_errors(session_id, include_success_with_data=True)
            assert [r.status_word for r in every] == ["63C3", "63C2", "6A82"]


def test_search_hex_refuses_wildcards(manager, session):
    with UnitOfWork(manager) as uow, pytest.raises(ValidationError, match="pattern"):
        uow.logs.search_hex("A4%")


def test_search_hex_takes_only_ascii_hex_and_quotes_a_short_prefix(manager, session):
    with UnitOfWork(manager) as uow:
        with pytest.raises(ValidationError, match="pattern"):
            uow.logs.search_hex("\ufb00")  # "ﬀ".upper() is "FF"
        with pytest.raises(ValidationError, match="pattern") as info:
            uow.logs.search_hex("Z" * 10_000)
        assert len(str(info.value)) < 200


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
        with count_queries(manager) as statements:  # one row read at its offset
            assert export[7]["raw_data"] == "0007"
        assert len(statements) == 1 and "OFFSET" in statements[0].upper()
        assert export[-1]["raw_data"] == "000B" and export[-12]["raw_data"] == "0000"
        for outside in (12, -13):
            with pytest.raises(IndexError):
                export[outside]
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


def _varied_rows(session_id):
    """Rows with every column's kinds: NULLs, floats, upper/lower hex, both directions."""
    base = datetime(2024, 11, 29, 10, 0, 0, 0, timezone.utc)
    rows = []
    for i in range(9):
        rows.append({"session_id": session_id, "direction": "command" if i % 2 else "response",
                     "raw_data": f"00a4{i:04x}", "timestamp": base + timedelta(milliseconds=i // 2),
                     "decoded_data": None if i % 3 else f"step {i}",
                     "status_word": None if i % 2 else "9000",
                     "latency_ms": None if i % 4 == 0 else i * 1.25})
    return rows


def _peewee_query(session_id):
    # Peewee's own select and row building, for comparison with the repository's.
    return (CommLog.select().where(CommLog.session == session_id)
            .order_by(CommLog.timestamp, CommLog.id))


def test_fast_row_building_gives_peewees_values(manager, session):
    with UnitOfWork(manager) as uow:
        logs = uow.logs
        logs.add_log_batch(_varied_rows(session.id))
        logs.flush_batch()
        expected = list(_peewee_query(session.id))
        got = logs.find_by_session(session.id)
        assert [m.__data__ for m in got] == [m.__data__ for m in expected]
        assert [type(v) for m in got for v in m.__data__.values()] == \
            [type(v) for m in expected for v in m.__data__.values()]
        first = got[0]
        assert first.timestamp.tzinfo is timezone.utc
        assert first.direction is CommDirection.RESPONSE
        assert first._dirty == set() and first.__rel__ == {}
        assert first.session_id == session.id and first.session.id == session.id  # lazy FK
        first.decoded_data = "edited"  # a loaded row saves like any Peewee row
        assert first._dirty == {"decoded_data"}
        first.save()
        assert CommLog.get_by_id(first.id).decoded_data == "edited"
        expected = list(_peewee_query(session.id))

        query = logs.session_query(session.id)
        assert list(query.tuples()) == list(_peewee_query(session.id).tuples())
        assert list(query.dicts()) == list(_peewee_query(session.id).dicts())
        assert list(query.namedtuples()) == list(_peewee_query(session.id).namedtuples())
        # The same calls, in the same order, on Peewee's query and on ours.
        for ours, theirs in ((query, _peewee_query(session.id)),
                             (logs.session_query(session.id), _peewee_query(session.id))):
            if ours is query:
                assert [m.__data__ for m in ours.iterator()] == \
                    [m.__data__ for m in theirs.iterator()]
            assert [m.id for m in ours] == [m.id for m in theirs]
            assert len(ours) == len(theirs)
        query = logs.session_query(session.id)
        lazy = iter(query)  # partial iteration, then indexing and len
        assert next(lazy).id == expected[0].id
        assert query[1].id == expected[1].id and len(query) == 9
        assert [m.id for m in lazy] == [m.id for m in expected[1:]]
        # Refined queries are Peewee's SQL again; rows still right.
        assert [m.id for m in query.limit(3).offset(2)] == [m.id for m in expected[2:5]]
        assert [m.id for m in logs.find_by_session(session.id, limit=2, offset=1)] == \
            [m.id for m in expected[1:3]]
        assert [m.id for m in logs.find_responses(session.id)] == \
            [m.id for m in expected if m.direction is CommDirection.RESPONSE]
        assert query.where(CommLog.status_word == "9000").count() == 5
        # A select with an expression: the non-field column lands where Peewee puts it.
        odd = logs._select(CommLog.session == session.id).select(
            CommLog.id, CommLog.raw_data.alias("hex")).order_by(CommLog.id).first()
        assert odd.hex == "00A40000" and "hex" not in odd.__data__
        # session_rows: the same values, directions as text.
        assert logs.session_rows(session.id) == [
            tuple(v.value if isinstance(v, CommDirection) else v for v in m.__data__.values())
            for m in expected]
        assert logs.session_rows(session.id, as_dicts=True)[0]["direction"] == "response"
        uow.commit()


def test_peewee_built_models_keep_their_semantics(manager, session):
    # BaseModel's constructor fast path for rows Peewee reads (no checks, no setattr).
    log = CommLog.create(session=session, direction="command", raw_data="00B0")
    read = CommLog.select().where(CommLog.id == log.id).get()
    assert read._dirty == set() and read.direction is CommDirection.COMMAND
    assert read.session_id == session.id
    joined = (CommLog.select(CommLog, OTASession).join(OTASession)
              .where(CommLog.id == log.id).get())
    assert joined.session.id == session.id and "session" in joined.__rel__
    with pytest.raises(ValidationError, match="no field 'nope'"):
        CommLog(nope=1)
    assert OTASession(cipher_suite="X").tls_cipher_suite == "X"


def test_stream_export_uses_a_small_sqlite_page_cache(sqlite_manager):
    from cardlink_lite.db import small_page_cache

    session = OTASession.create()
    database = sqlite_manager.database
    with UnitOfWork(sqlite_manager) as uow:
        uow.logs.add_log_batch([(session.id, "command", "00B0")] * 3)
        uow.logs.flush_batch()
        cache = database.execute_sql("PRAGMA cache_size").fetchone()[0]
        assert cache == -64000
        rows = uow.logs.iter_logs()
        next(rows)
        assert database.execute_sql("PRAGMA cache_size").fetchone()[0] == -2048
        assert len(list(rows)) == 2
        assert database.execute_sql("PRAGMA cache_size").fetchone()[0] == cache
        with small_page_cache(database, kib=100_000):  # never grows a cache
            assert database.execute_sql("PRAGMA cache_size").fetchone()[0] == cache
        uow.commit()
