"""Commands carry their logical channel and INS (schema 0003), so "every INSTALL in the store"
is an index lookup."""

from __future__ import annotations

import pytest

from cardlink_lite.apdu import MAX_RAW_HEX, command_header, normalize_hex
from cardlink_lite.recording import record_session
from cardlink_lite.unit_of_work import UnitOfWork


@pytest.mark.parametrize("raw, header", [
    ("00A40400", (0, 0xA4)), ("03B0", (3, 0xB0)), ("80E60C00", (0, 0xE6)),
    ("4FB0", (19, 0xB0)), ("A0A40000", (0, 0xA4)), ("FFFF", (None, 0xFF)),
    ("00A4...", (0, 0xA4)), ("00A", (None, None)), ("00", (None, None)), ("", (None, None)),
])
def test_command_header(raw, header):
    assert command_header(raw) == header


def _trace(manager, commands) -> str:
    with record_session(manager) as s:
        for raw in commands:
            s.command(raw)
            s.response("9000")
    return s.session_id


def test_writer_and_add_log_store_channel_and_ins_of_commands(manager):
    session_id = _trace(manager, ["00A4040007A0000000871002", "01B0000008"])
    with UnitOfWork(manager) as uow:
        uow.logs.add_log(session_id, "command", "80E60C00")
        uow.logs.add_log(session_id, "response", "6A82")
        uow.logs.add_log_batch([{"session_id": session_id, "direction": "command",
                                 "raw_data": "00B00000", "channel": 2, "ins": 0xB0}])
        rows = [(r.raw_data, r.channel, r.ins) for r in uow.logs.find_by_session(session_id)]
    assert rows == [("00A4040007A0000000871002", 0, 0xA4), ("9000", None, None),
                    ("01B0000008", 1, 0xB0), ("9000", None, None), ("80E60C00", 0, 0xE6),
                    ("6A82", None, None), ("00B00000", 2, 0xB0)]  # given values win


def test_search_hex_header_finds_commands_across_sessions(manager):
    first = _trace(manager, ["80E60C0012", "00A4040000", "80E6020015"])
    second = _trace(manager, ["84E60C00", "80E60C0099", "00E60C00"])
    with UnitOfWork(manager) as uow:
        uow.logs.add_log(first, "response", "80E60C0012")  # a response with the same bytes
        found = uow.logs.search_hex("80 e6 0c", header=True)
        assert [(r.session_id, r.raw_data) for r in found] == [
            (first, "80E60C0012"), (second, "80E60C0099")]
        assert [r.raw_data for r in uow.logs.search_hex("80E6", second, header=True)] == [
            "80E60C0099"]
        assert len(uow.logs.search_hex("80E60C")) == 3  # anywhere: the response too
        assert [r.raw_data for r in uow.logs.search_hex("84", header=True)] == ["84E60C00"]


def test_search_hex_header_uses_the_ins_index(sqlite_manager):
    _trace(sqlite_manager, ["80E60C00"])
    seen = []
    database = sqlite_manager.database
    database.query_hooks.append(seen.append)
    try:
        with UnitOfWork(sqlite_manager) as uow:
            assert len(uow.logs.search_hex("80E60C", header=True)) == 1
    finally:
        database.query_hooks.remove(seen.append)
    (event,) = [e for e in seen if "FROM" in e.sql.upper() and "comm_logs" in e.sql]
    plan = database.execute_sql(f"EXPLAIN QUERY PLAN {event.sql}", event.params).fetchall()
    assert any("idx_log_ins" in str(row) for row in plan), plan


def test_bytes_are_taken_as_they_are_within_the_stored_limit():
    assert normalize_hex(b"") == "" and normalize_hex(bytearray(b"\x00\xa4")) == "00A4"
    assert normalize_hex(memoryview(b"\xab" * (MAX_RAW_HEX // 2))) == "AB" * (MAX_RAW_HEX // 2)
