"""Poisoned APDU rows: refused when logged, isolated at flush, never blocking the writer;
a server that goes away while logging (issue 11, sections 1 and 5)."""

import json
import logging
from datetime import datetime, timedelta, timezone

import pytest
import yaml

from cardlink_lite import (
    CommLog,
    ConnectionError,
    DatabaseError,
    OTASession,
    UnitOfWork,
    ValidationError,
)
from cardlink_lite.apdu import ApduLogWriter, apdu_logger
from cardlink_lite.errors import RejectedRowsError
from cardlink_lite.transfer import DataExporter, DataImporter
from tests import servers

GHOST = "123e4567-e89b-12d3-a456-426614174000"
EXTENDED = "6F" + "AB" * 65_536 + "9000"  # a 64 KiB extended-length response


@pytest.fixture
def session(manager):
    return OTASession.create(session_type="test")


def _raws(session_id):
    return [r.raw_data for r in CommLog.select().where(CommLog.session == session_id)
            .order_by(CommLog.timestamp, CommLog.id)]


_BAD_ROWS = {
    "inf latency": dict(latency_ms=float("inf")),
    "nan latency": dict(latency_ms=float("nan")),
    "negative latency": dict(latency_ms=-0.5),
    "bool latency": dict(latency_ms=True),
    "400-digit latency": dict(latency_ms=10**400),
    "ligature hex": dict(raw_data="00\ufb00"),
    "non-ASCII digit hex": dict(raw_data="\u0661\u0662"),
    "NUL in decoded": dict(decoded_data="SELECT\x00ISD"),
    "NUL in status message": dict(status_message="ok\x00"),
    "lone surrogate": dict(decoded_data="bad \ud800 text"),
    "raw too long": dict(raw_data="AB" * 131_073),
    "raw bytes too long": dict(raw_data=b"\xab" * 131_073),
    "decoded too long": dict(decoded_data="x" * 1_048_577),
    "ligature status word": dict(status_word="9\ufb000"),
    "aware year 1": dict(timestamp=datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1)))),
    "aware year 9999": dict(timestamp=datetime(9999, 12, 31, 23, 59, 59, 999000,
                                               tzinfo=timezone(timedelta(hours=-1)))),
    "text year 1": dict(timestamp="0001-01-01T00:00:00+01:00"),
}


@pytest.mark.parametrize("bad", list(_BAD_ROWS), ids=list(_BAD_ROWS))
def test_values_no_backend_can_hold_are_refused_when_logged(manager, session, bad):
    row = {"raw_data": "6A82", **_BAD_ROWS[bad]}
    writer = ApduLogWriter(manager, session_id=session.id, flush_interval=None)
    with pytest.raises(ValidationError) as caught:
        writer.add(session.id, "response", **row)
    assert len(str(caught.value)) < 300  # a short prefix of the value at most
    assert writer.pending == 0
    writer.response("9000")
    assert writer.flush() == 1
    writer.close()
    assert _raws(session.id) == ["9000"]


def test_extended_length_apdus_fit_on_every_backend(manager, session):
    decoded = "Ünïcode " * 100_000  # 800,000 characters, 2 bytes for some
    with apdu_logger(manager, session.id) as log:
        log.command("00B00000000000", "READ BINARY extended")
        log.response(EXTENDED, decoded=decoded, latency_ms=1.5)
    rows = list(CommLog.select().where(CommLog.session == session.id).order_by(CommLog.id))
    assert rows[1].raw_data == EXTENDED and rows[1].decoded_data == decoded
    assert rows[1].status_word == "9000"


def test_boundary_values_are_stored_and_exported(manager, session):
    with apdu_logger(manager, session.id) as log:
        log.response("9000", latency_ms=0, timestamp=datetime(1, 1, 1, 0, 0, 0))
        log.response("9000", latency_ms=1e300,
                     timestamp=datetime(9999, 12, 31, 23, 59, 59, 999000))
    document = json.loads(DataExporter(manager).export_selective("sessions,logs"))
    stamps = [r["timestamp"] for r in document["comm_logs"]]
    assert stamps == ["0001-01-01T00:00:00.000Z", "9999-12-31T23:59:59.999Z"]
    result = DataImporter(manager).import_data(json.dumps(document))
    assert result.created == 0


def test_refused_rows_are_isolated_and_the_others_written(manager, session):
    writer = ApduLogWriter(manager, flush_interval=None)
    for i in range(10):
        writer.add(GHOST if i in (3, 7) else session.id, "command", f"00{i:02X}")
    with pytest.raises(RejectedRowsError, match=GHOST) as caught:
        writer.flush()
    assert [row["raw_data"] for row, _ in caught.value.rejected] == ["0003", "0007"]
    assert all("does not exist" in reason for _, reason in caught.value.rejected)
    assert _raws(session.id) == [f"00{i:02X}" for i in range(10) if i not in (3, 7)]
    assert writer.rows_rejected == 2 and writer.pending == 0
    writer.command("00FF", session_id=session.id)  # the writer is not blocked
    assert writer.flush() == 1
    writer.close()


def test_rejections_seen_by_log_calls_are_reported_by_close(manager, session):
    writer = ApduLogWriter(manager, batch_size=4, flush_interval=None)
    for i in range(8):
        writer.add(GHOST if i == 1 else session.id, "command", f"00{i:02X}")
    assert writer.rows_rejected == 1 and writer.pending == 0  # log.* did not raise
    with pytest.raises(RejectedRowsError, match="1 APDU log row"):
        writer.close()
    assert len(_raws(session.id)) == 7
    assert writer.rejected[0][0]["raw_data"] == "0001"


def test_rejected_rows_inside_a_unit_of_work_fail_it_whole(manager, session):
    with pytest.raises(RejectedRowsError), UnitOfWork(manager) as uow:
        uow.logs.add_log_batch([(session.id, "command", "00A4"),
                                (GHOST, "command", "00B0")])
    assert CommLog.select().count() == 0


def test_infinite_latency_of_an_old_sqlite_store_exports_as_null(sqlite_manager):
    session = OTASession.create()
    with apdu_logger(sqlite_manager, session.id) as log:
        log.response("9000", latency_ms=2.0)
        log.response("6A82", latency_ms=3.0)
    sqlite_manager.database.execute_sql(
        "UPDATE comm_logs SET latency_ms = 9e999 WHERE raw_data = '9000'")
    exporter = DataExporter(sqlite_manager)
    document = json.loads(exporter.export_all())
    assert [r["latency_ms"] for r in document["comm_logs"]] == [None, 3.0]
    text = exporter.export_all(format="yaml")
    assert [r["latency_ms"] for r in yaml.safe_load(text)["comm_logs"]] == [None, 3.0]
    assert DataImporter(sqlite_manager).import_data(text, format="yaml").created == 0


# -- the server goes away ------------------------------------------------------------
def _server_pid(manager):
    if manager.backend == "postgresql":
        return manager.database.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
    return manager.database.execute_sql("SELECT CONNECTION_ID()").fetchone()[0]


def _kill(backend, pid):
    if backend == "postgresql":
        servers.execute(backend, f"SELECT pg_terminate_backend({pid})")
    else:
        servers.execute(backend, f"KILL {pid}")


class _Away:
    """The server unreachable for this manager: its connection killed, reconnects refused."""

    def __init__(self, manager, backend):
        self.database = manager.database
        self.port = self.database.connect_params.get("port")
        pid = _server_pid(manager)
        self.database.connect_params["port"] = 1  # nothing listens there
        _kill(backend, pid)

    def back(self):
        self.database.connect_params["port"] = self.port


@pytest.mark.parametrize("backend", ["mysql", "postgresql"], indirect=True)
def test_logging_while_the_server_is_away_neither_raises_nor_waits(
        manager, session, backend, caplog):
    writer = ApduLogWriter(manager, session_id=session.id, batch_size=5,
                           flush_interval=None, max_pending=20)
    writer.command("00A4")
    assert writer.flush() == 1
    away = _Away(manager, backend)
    caplog.set_level(logging.WARNING)
    for i in range(14):  # fills the batch twice: two flush attempts by log.*
        writer.command(f"00{i:02X}")
    assert writer.pending == 14
    assert isinstance(writer.last_error, ConnectionError)
    # log.* tried once each time, never the manager's reconnect with its back-off sleeps
    assert not [r for r in caplog.records if "reconnecting" in r.getMessage()]
    with pytest.raises(ConnectionError):
        writer.flush()
    assert writer.pending == 14
    away.back()
    assert writer.flush() == 14
    assert len(_raws(session.id)) == 15
    writer.close()


@pytest.mark.parametrize("backend", ["mysql", "postgresql"], indirect=True)
def test_a_full_buffer_refuses_the_next_row_with_the_flush_error(manager, session, backend):
    writer = ApduLogWriter(manager, session_id=session.id, batch_size=5,
                           flush_interval=None, max_pending=10)
    writer.command("00A4")
    writer.flush()
    away = _Away(manager, backend)
    for i in range(10):
        writer.command(f"00{i:02X}")
    with pytest.raises(ConnectionError):
        writer.command("00FF")  # the bound: this row is not buffered
    assert writer.pending == 10
    away.back()
    writer.close()
    assert len(_raws(session.id)) == 11


@pytest.mark.parametrize("backend", ["mysql", "postgresql"], indirect=True)
def test_connection_lost_inside_a_unit_of_work_reports_the_loss(manager, session, backend):
    with pytest.raises(DatabaseError) as caught, UnitOfWork(manager) as uow:
        uow.logs.add_log_batch([(session.id, "command", "00A4")] * 3)
        uow.logs.flush_batch()
        _kill(backend, _server_pid(manager))
        with pytest.raises(ConnectionError):
            uow.devices.count()  # the caller sees the loss, and logs on
        uow.logs.add_log_batch([(session.id, "command", "00B0")] * 3)
        uow.logs.flush_batch()
    assert isinstance(caught.value, ConnectionError), caught.value
    assert "(0, '')" not in str(caught.value)
    assert "connection" in str(caught.value)
    manager.ensure_connection()
    assert CommLog.select().count() == 0
