"""import_trace into a real store on every backend: rows, kinds, channels, times, names, status
words, sessions, sources, re-import, bad input, nothing half-written."""

import gc
import io
import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path

import peewee
import pytest

from cardlink_lite import (
    CardProfile,
    CommLog,
    DatabaseError,
    Device,
    DeviceType,
    NotFoundError,
    OTASession,
    SessionStatus,
    UnitOfWork,
    apdu,
)
from cardlink_lite.errors import ConnectionError as StoreConnectionError
from cardlink_lite.models import TraceSource
from cardlink_lite.traces import TraceFormatError, import_trace
from tests import servers
from tests.pcapwrite import CaptureWriter

DATA = Path(__file__).parent / "data" / "traces"
T0 = 1_732_874_400_123_456_789  # 2024-11-29 10:00:00.123456789 UTC
UTC = timezone.utc
ATR = "3B9F96801FC78031A073BE21136743200718000001A5"
OPEN_CHANNEL = "D016810301400182028182350702030403041F0239020578"

# (GSMTAP body, command, response, channel, ins, command text, response text, SW meaning)
BENCH = [
    ("00A40004023F006121", "00A40004023F00", "6121", 0, 0xA4, "SELECT 3F00", None,
     "Success: 33 response bytes still available (use GET RESPONSE)"),
    ("01A4040007A00000008710026A82", "01A4040007A0000000871002", "6A82", 1, 0xA4,
     "SELECT AID A0000000871002", None, "File or application not found"),
    ("02B0000002" + "ABCD" + "9000", "02B0000002", "ABCD9000", 2, 0xB0, "READ BINARY", None,
     "Success: normal ending of the command"),
    ("83F2000002" + "0102" + "9000", "83F2000002", "01029000", 3, 0xF2, "STATUS", None,
     "Success: normal ending of the command"),
    ("8012000018" + OPEN_CHANNEL + "9000", "8012000018", OPEN_CHANNEL + "9000", 0, 0x12,
     "FETCH: OPEN CHANNEL", "proactive command OPEN CHANNEL",
     "Success: normal ending of the command"),
    ("801400000C810301400182028281830100910F", "801400000C810301400182028281830100", "910F",
     0, 0x14, "TERMINAL RESPONSE: OPEN CHANNEL, result 00 (command performed successfully)",
     None, "Success: a proactive command of 15 bytes is pending (use FETCH)"),
    ("80C2000009D60799010982028281" + "9000", "80C2000009D60799010982028281", "9000", 0, 0xC2,
     "ENVELOPE: EVENT DOWNLOAD: DATA AVAILABLE", None, "Success: normal ending of the command"),
    ("8012000009D009810301410082028121" + "9000", "8012000009", "D0098103014100820281219000",
     0, 0x12, "FETCH: CLOSE CHANNEL", "proactive command CLOSE CHANNEL",
     "Success: normal ending of the command"),
    ("801400000C810301410082028281830100" + "9000", "801400000C810301410082028281830100",
     "9000", 0, 0x14,
     "TERMINAL RESPONSE: CLOSE CHANNEL, result 00 (command performed successfully)", None,
     "Success: normal ending of the command"),
    ("0020000100" + "63C3", "0020000100", "63C3", 0, 0x20, "VERIFY 01 (retry counter query)",
     None, "3 PIN attempts remaining"),
    ("80E29000000003010203" + "6A80", "80E29000000003010203", "6A80", 0, 0xE2,
     "STORE DATA block 0 (last)", None, "Incorrect parameters in the data field"),
]


def _capture(path, atrs=(0,), container="pcapng", truncate=0, ipv6=False, **options):
    out = io.BytesIO()
    writer = CaptureWriter(out, container, **options)
    for i, row in enumerate(BENCH):
        if i in atrs:
            writer.gsmtap(T0 + i * 2_000_000 - 1_000_000, bytes.fromhex(ATR), sub_type=1,
                          ipv6=ipv6)
        writer.gsmtap(T0 + i * 2_000_000, bytes.fromhex(row[0]), ipv6=ipv6)
    data = out.getvalue()
    path.write_bytes(data[:len(data) - truncate])
    return path


def _ms(ns: int) -> datetime:
    return datetime.fromtimestamp(ns // 1_000_000 / 1000, UTC)


def _rows(session_id):
    return [(r.direction.value, r.channel, r.ins, r.raw_data, r.decoded_data, r.status_word,
             r.status_message, r.latency_ms, r.timestamp)
            for r in CommLog.select().where(CommLog.session == session_id)
            .order_by(CommLog.timestamp, CommLog.id)]


def _expected_rows():
    out = [("atr", None, None, ATR, "ATR: T=0", None, None, None, _ms(T0 - 1_000_000))]
    for i, (_, cmd, rsp, ch, ins, text, rtext, meaning) in enumerate(BENCH):
        when = _ms(T0 + i * 2_000_000)
        out.append(("command", ch, ins, cmd, text, None, None, None, when))
        out.append(("response", ch, None, rsp, rtext, rsp[-4:], meaning, None, when))
    return out


def test_gsmtap_capture_rows_exactly(manager, tmp_path):
    path = _capture(tmp_path / "bench.pcapng")
    summary = import_trace(manager, path)
    assert (summary.format, summary.exchanges, summary.atrs, summary.rows,
            summary.sessions_created, summary.skipped, summary.leftover_bytes) == (
        "pcapng", len(BENCH), 1, 1 + 2 * len(BENCH), 1, {}, 0)
    [session_id] = summary.sessions
    assert _rows(session_id) == _expected_rows()
    session = OTASession.get_by_id(session_id)
    assert (session.session_type, session.status, session.started_at, session.ended_at,
            session.duration_ms) == (
        "trace-import", SessionStatus.COMPLETED, _ms(T0 - 1_000_000),
        _ms(T0 + (len(BENCH) - 1) * 2_000_000), 2 * (len(BENCH) - 1) + 1)
    source = TraceSource.get()
    assert (source.path, source.format, source.size_bytes, source.sha256) == (
        str(path), "pcapng", path.stat().st_size, summary.sha256)
    assert source.summary["exchanges"] == len(BENCH) and summary.source_id == source.id
    assert {r.source_id for r in CommLog.select()} == {source.id}


def test_find_errors_leaves_out_more_data(manager, tmp_path):
    summary = import_trace(manager, _capture(tmp_path / "bench.pcapng"))
    with UnitOfWork(manager) as uow:
        errors = uow.logs.find_errors(summary.sessions[0])
    assert [r.status_word for r in errors] == ["6A82", "6A80"]


@pytest.mark.parametrize("container", ["pcap", "pcapng"])
def test_truncated_capture_imports_what_is_complete(manager, tmp_path, container):
    summary = import_trace(manager, _capture(tmp_path / "cut", container=container,
                                             truncate=5))
    assert summary.exchanges == len(BENCH) - 1 and summary.leftover_bytes > 0
    assert TraceSource.get().summary["leftover_bytes"] == summary.leftover_bytes
    assert len(_rows(summary.sessions[0])) == 1 + 2 * (len(BENCH) - 1)


def test_apdu4j_latency_and_times(manager):
    summary = import_trace(manager, DATA / "apdu4j-gp-scp02-session.dump")
    rows = _rows(summary.sessions[0])
    start = datetime(2015, 1, 25, 17, 11, 3, tzinfo=UTC)
    assert rows[0][:5] == ("atr", None, None, "3BF91300008131FE454A434F503234325232A3",
                           "ATR: T=1")
    assert rows[1] == ("command", 0, 0xA4, "00A4040000", "SELECT", None, None, None, start)
    assert rows[2][0] == "response" and rows[2][7] == 40.0
    assert rows[2][8] == start + timedelta(milliseconds=40)
    assert rows[3][3:5] == ("80500000088D767EAB341C1E1A", "INITIALIZE UPDATE key version 00")
    assert rows[3][8] == start + timedelta(milliseconds=40)
    names = [r[4] for r in rows if r[0] == "command"]
    assert names == ["SELECT", "INITIALIZE UPDATE key version 00",
                     "EXTERNAL AUTHENTICATE (C-MAC)", "GET STATUS issuer security domain",
                     "GET STATUS applications", "GET STATUS load files",
                     "GET STATUS load files and modules", "GET DATA",
                     "PUT KEY version 01 key 01"]
    assert [r[7] for r in rows if r[0] == "response"] == [40.0, 50.0, 49.0, 37.0, 33.0, 37.0,
                                                         40.0, 35.0, 166.0]
    not_found = [r for r in rows if r[5] == "6A88"]
    assert [r[6] for r in not_found] == ["Referenced data or reference data not found"]


def test_apdu4j_without_header_time_uses_start(manager):
    start = datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    summary = import_trace(manager, DATA / "apdu4j-multi-channel.dump", start=start)
    rows = _rows(summary.sessions[0])
    assert [(r[0], r[8]) for r in rows] == [("atr", start), ("command", start),
                                           ("response", start)]
    assert rows[2][7] is None  # no latency line, no latency


def test_reimporting_the_same_file_changes_nothing(manager, tmp_path):
    path = _capture(tmp_path / "bench.pcapng")
    first = import_trace(manager, path)
    copy = tmp_path / "copy.pcapng"
    copy.write_bytes(path.read_bytes())
    again = import_trace(manager, copy)
    assert again.already_imported and again.source_id == first.source_id
    assert again.sessions == first.sessions
    assert (OTASession.select().count(), CommLog.select().count(),
            TraceSource.select().count()) == (1, 1 + 2 * len(BENCH), 1)


def test_reimport_from_a_stream_is_detected_too(manager, tmp_path):
    data = _capture(tmp_path / "bench.pcapng").read_bytes()

    class Pipe(io.BytesIO):
        def seekable(self):
            return False

    import_trace(manager, Pipe(data))
    again = import_trace(manager, Pipe(data))
    assert again.already_imported
    assert (OTASession.select().count(), TraceSource.select().count()) == (1, 1)


def test_append_to_an_existing_session(manager, tmp_path):
    session = OTASession.create(session_type="triggered", status=SessionStatus.ACTIVE)
    summary = import_trace(manager, _capture(tmp_path / "b.pcapng"), session_id=session.id)
    assert summary.sessions == [session.id] and summary.sessions_created == 0
    assert OTASession.select().count() == 1
    assert OTASession.get_by_id(session.id).status == SessionStatus.ACTIVE
    assert len(_rows(session.id)) == 1 + 2 * len(BENCH)


def test_split_on_reset_starts_a_session_at_each_atr(manager, tmp_path):
    summary = import_trace(manager, _capture(tmp_path / "b.pcapng", atrs=(0, 4, 9)),
                           split_on_reset=True)
    assert summary.sessions_created == 3 and summary.atrs == 3
    firsts = [_rows(s)[0][0] for s in summary.sessions]
    assert firsts == ["atr", "atr", "atr"]
    assert [len(_rows(s)) for s in summary.sessions] == [1 + 8, 1 + 10, 1 + 4]


def test_device_and_card_are_linked(manager, tmp_path):
    Device.create(id="RF8M33", device_type=DeviceType.PHONE)
    CardProfile.create(iccid="8988211000000000001")
    summary = import_trace(manager, _capture(tmp_path / "b.pcapng"), device_id="RF8M33",
                           card_iccid="8988211000000000001")
    session = OTASession.get_by_id(summary.sessions[0])
    assert (session.device_id, session.card_iccid) == ("RF8M33", "8988211000000000001")


def test_unknown_device_writes_nothing(manager, tmp_path):
    with pytest.raises(NotFoundError, match="device 'nope' is not in the store"):
        import_trace(manager, _capture(tmp_path / "b.pcapng"), device_id="nope")
    assert (OTASession.select().count(), TraceSource.select().count()) == (0, 0)


def test_dry_run_writes_nothing(manager, tmp_path):
    summary = import_trace(manager, _capture(tmp_path / "b.pcapng"), dry_run=True)
    assert (summary.exchanges, summary.rows, summary.sessions_created) == (
        len(BENCH), 1 + 2 * len(BENCH), 1)
    assert (OTASession.select().count(), CommLog.select().count(),
            TraceSource.select().count()) == (0, 0, 0)


def test_a_trace_ending_mid_exchange_fails_its_session(manager, tmp_path):
    path = tmp_path / "log.txt"
    path.write_text("00A40004023F00\n9000\n00B0000010\n")
    summary = import_trace(manager, path)
    assert summary.ends_mid_exchange
    session = OTASession.get_by_id(summary.sessions[0])
    assert (session.status, session.error_code) == (SessionStatus.FAILED,
                                                    "TRACE_ENDS_MID_EXCHANGE")
    assert [r[0] for r in _rows(session.id)] == ["command", "response", "command"]


def test_another_kind_of_file_writes_nothing(manager, tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(300))
    with pytest.raises(TraceFormatError, match=r"tried: pcapng, pcap, gppro, apdu4j"):
        import_trace(manager, path)
    assert (OTASession.select().count(), TraceSource.select().count()) == (0, 0)


def test_a_read_error_midway_leaves_nothing_half_written(manager, tmp_path):
    data = _capture(tmp_path / "b.pcapng").read_bytes() * 1

    class Failing(io.BytesIO):
        served = 0

        def seekable(self):
            return False

        def read(self, n=-1):
            if self.served > 300:
                raise OSError("device went away")
            chunk = super().read(min(n, 200) if n and n > 0 else 200)
            self.served += len(chunk)
            return chunk

    with pytest.raises(OSError, match="went away"):
        import_trace(manager, Failing(data))
    assert (OTASession.select().count(), CommLog.select().count(),
            TraceSource.select().count()) == (0, 0, 0)


def test_hex_log_with_timestamps_and_channels(manager, tmp_path):
    path = tmp_path / "shell.log"
    path.write_text(
        "2024-11-29 10:00:00.100 -> 0070000001 \n"
        "2024-11-29 10:00:00.150 <- 9000: 01\n"
        "2024-11-29 10:00:00.200 -> 01A4000C022F00\n"
        "2024-11-29 10:00:00.250 <- 9000: \n"
        "2024-11-29 10:00:00.300 -> 0070800100 \n"
        "2024-11-29 10:00:00.350 <- 9000: \n")
    summary = import_trace(manager, path)
    assert summary.format == "pysim-shell"
    rows = _rows(summary.sessions[0])
    base = datetime(2024, 11, 29, 10, 0, 0, tzinfo=UTC)
    assert [(r[0], r[1], r[3], r[4], r[8]) for r in rows] == [
        ("command", 0, "0070000001", "MANAGE CHANNEL open", base + timedelta(milliseconds=100)),
        ("response", 0, "019000", "channel 1 opened", base + timedelta(milliseconds=150)),
        ("command", 1, "01A4000C022F00", "SELECT 2F00", base + timedelta(milliseconds=200)),
        ("response", 1, "9000", None, base + timedelta(milliseconds=250)),
        ("command", 0, "0070800100", "MANAGE CHANNEL close 1",
         base + timedelta(milliseconds=300)),
        ("response", 0, "9000", None, base + timedelta(milliseconds=350)),
    ]


def test_every_capture_variant_imports_the_same_rows(manager, tmp_path):
    # pcap/pcapng x five link types x us/ns x both byte orders, IPv6 under two link types:
    # one store, one import each (different bytes, so none is taken for a re-import).
    expected = _expected_rows()
    for container in ("pcap", "pcapng"):
        for link in ("ethernet", "sll", "sll2", "raw", "null"):
            for nanoseconds in (False, True):
                for big_endian in (False, True):
                    path = _capture(tmp_path / f"{container}-{link}-{nanoseconds}-{big_endian}",
                                    container=container, link=link, nanoseconds=nanoseconds,
                                    big_endian=big_endian, ipv6=link in ("sll2", "null"))
                    summary = import_trace(manager, path)
                    assert summary.format == container and summary.skipped == {}
                    assert _rows(summary.sessions[0]) == expected, path.name
    assert TraceSource.select().count() == 40


def test_pyscard_reconnect_is_a_reset_row(manager, tmp_path):
    path = tmp_path / "observer.log"
    path.write_text("connecting to Reader 0\n> 00 A4 00 04 02 3F 00\n< 90 00\n"
                    "reconnecting to Reader 0\n> 00 B0 00 00 01\n< 42 90 00\n")
    start = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    summary = import_trace(manager, path, start=start, split_on_reset=True)
    assert (summary.format, summary.resets, summary.sessions_created) == ("pyscard", 1, 2)
    second = _rows(summary.sessions[1])
    assert [(r[0], r[3], r[4]) for r in second] == [
        ("reset", "", "card reset"), ("command", "00B0000001", "READ BINARY"),
        ("response", "429000", None)]


def test_progress_sees_every_byte(manager, tmp_path):
    path = _capture(tmp_path / "b.pcapng")
    seen = []
    import_trace(manager, path, progress=seen.append)
    assert sum(seen) == path.stat().st_size


def test_a_packet_time_out_of_range_is_reported_and_the_rest_imports(manager, tmp_path):
    out = io.BytesIO()
    writer = CaptureWriter(out, "pcapng")
    writer.gsmtap(T0, bytes.fromhex(ATR), sub_type=1)
    at = len(out.getvalue())
    writer.gsmtap(2**63 * 1000, bytes.fromhex(BENCH[0][0]))  # 2^63 µs: year 294247
    writer.gsmtap(T0 + 2_000_000, bytes.fromhex(BENCH[2][0]))
    path = tmp_path / "huge_ts.pcapng"
    path.write_bytes(out.getvalue())
    summary = import_trace(manager, path)
    assert summary.corrupt == [
        f"offset {at}: enhanced packet block with a time outside 0001-01-01..9999-12-31"]
    assert [(r[0], r[3], r[8]) for r in _rows(summary.sessions[0])] == [
        ("atr", ATR, _ms(T0)), ("command", BENCH[2][1], _ms(T0 + 2_000_000)),
        ("response", BENCH[2][2], _ms(T0 + 2_000_000))]


def test_lines_timed_out_of_range_are_reported_and_the_first_and_last_times_import(
        manager, tmp_path):
    path = tmp_path / "edges.log"
    path.write_text("0001-01-01 00:00:00 > 00 A4 00 00 02 3F 00\n"
                    "9999-12-31 23:59:59-05:00 < 90 00\n"
                    "0001-01-01 00:00:00.001 < 90 00\n"
                    "0001-01-01 00:00:00+05:00 > 00 B0 00 00 01\n"
                    "9999-12-31 23:59:59.999 > 00 B0 00 00 01\n"
                    "9999-12-31 23:59:59.999999999+00:00 < 01 90 00\n")
    summary = import_trace(manager, path)
    assert summary.corrupt == [
        "line 2: timestamp '9999-12-31 23:59:59-05:00' is not a date and time inside "
        "0001-01-01..9999-12-31 (UTC)",
        "line 4: timestamp '0001-01-01 00:00:00+05:00' is not a date and time inside "
        "0001-01-01..9999-12-31 (UTC)"]
    first, last = datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999000, UTC)
    assert [(r[0], r[3], r[8]) for r in _rows(summary.sessions[0])] == [
        ("command", "00A40000023F00", first),
        ("response", "9000", first + timedelta(milliseconds=1)),
        ("command", "00B0000001", last), ("response", "019000", last)]
    session = OTASession.get_by_id(summary.sessions[0])
    assert (session.started_at, session.ended_at, session.duration_ms) == (
        first, last, (last - first) // timedelta(milliseconds=1))


@pytest.mark.parametrize("header, latency", [("Fri, 31 Dec 9999 23:59:59 +0000", "2000"),
                                             ("Sun, 25 Jan 2015 19:11:03 +0200", "9" * 19),
                                             ("Mon, 1 Jan 0001 00:00:00 +0100", "1")])
def test_apdu4j_times_past_9999_are_refused_and_nothing_is_written(manager, tmp_path,
                                                                   header, latency):
    path = tmp_path / "late.dump"
    path.write_text(f"# Generated on {header} by apdu4j\n00A4040000\n"
                    f"# Received in {latency}ms\n9000\n00B0000001\n019000\n")
    with pytest.raises(TraceFormatError) as info:
        import_trace(manager, path)
    assert str(info.value) == (
        "a row's time falls outside 0001-01-01..9999-12-31 (UTC); check the apdu4j "
        "'Generated on' and 'Received in' lines")
    assert (OTASession.select().count(), CommLog.select().count(),
            TraceSource.select().count()) == (0, 0, 0)


def test_a_trace_spanning_months_keeps_its_duration(manager, tmp_path):
    # Past duration_ms's old 32 bits (2^31 ms is 24.8 days): a BIGINT since schema 0007
    path = tmp_path / "long.log"
    path.write_text("2024-01-01 10:00:00 00A40004023F00\n2024-01-01 10:00:00 9000\n"
                    "2024-03-01 10:00:00 00B0000001\n2024-03-01 10:00:00.040 019000\n")
    summary = import_trace(manager, path)
    session = OTASession.get_by_id(summary.sessions[0])
    assert (session.status, session.duration_ms) == (SessionStatus.COMPLETED,
                                                     60 * 86_400_000 + 40)
    assert (session.started_at, session.ended_at) == (
        datetime(2024, 1, 1, 10, tzinfo=UTC), datetime(2024, 3, 1, 10, 0, 0, 40_000, tzinfo=UTC))



def test_apdu4j_with_a_byte_order_mark_keeps_its_header_time(manager, tmp_path):
    path = tmp_path / "bom.dump"
    path.write_bytes(b"\xef\xbb\xbf" + (DATA / "apdu4j-gp-scp02-session.dump").read_bytes())
    summary = import_trace(manager, path)
    assert (summary.format, summary.corrupt, summary.skipped) == ("apdu4j", [], {})
    rows = _rows(summary.sessions[0])
    assert rows[1][8] == datetime(2015, 1, 25, 17, 11, 3, tzinfo=UTC)



def test_an_apdu4j_header_in_another_language_is_reported(manager, tmp_path):
    path = tmp_path / "de.dump"
    path.write_bytes((DATA / "apdu4j-gp-scp02-session.dump").read_bytes().replace(
        b"Sun, 25 Jan 2015", b"So., 25 Jan. 2015"))
    start = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    summary = import_trace(manager, path, start=start)
    assert summary.corrupt == [
        "line 1: 'Generated on' date not in apdu4j's English form ('Mon, 4 May 2020 17:31:15 "
        "+0200'); rows are timed at the file's modification time instead: 'So., 25 Jan. "
        "2015 19:11:03 +0200'"]
    assert summary.exchanges == 9 and _rows(summary.sessions[0])[1][8] == start


@pytest.mark.parametrize("backend", ["mysql", "postgresql"], indirect=True)
def test_a_connection_killed_mid_import_stops_it_at_once(manager, backend, caplog):
    # A hex log read in 64 KiB pieces: rows are written while the file is still being read.
    data = b"00B0000010\n" + b"11" * 16 + b"9000\n"
    data *= 12_000
    sql = ("SELECT pg_backend_pid()" if backend == "postgresql" else "SELECT CONNECTION_ID()")
    pid = manager.database.execute_sql(sql).fetchone()[0]

    class Killing(io.BytesIO):
        after_kill = None

        def seekable(self):
            return False

        def read(self, n=-1):
            if self.after_kill is None and self.tell() >= 200_000:
                servers.execute(backend, f"SELECT pg_terminate_backend({pid})"
                                if backend == "postgresql" else f"KILL {pid}")
                self.after_kill = 0
            chunk = super().read(n)
            if self.after_kill is not None:
                self.after_kill += len(chunk)
            return chunk

    caplog.set_level(logging.WARNING)
    source = Killing(data)
    with pytest.raises(StoreConnectionError, match="^lost the database connection") as caught:
        import_trace(manager, source, "hex-lines")
    assert "\n" not in str(caught.value) and "(0, '')" not in str(caught.value)
    assert source.after_kill <= 2 * 65_536  # not read on to the end, rows held in memory
    assert not [r for r in caplog.records if "kept for retry" in r.getMessage()]
    manager.database.close()
    assert (OTASession.select().count(), CommLog.select().count(),
            TraceSource.select().count()) == (0, 0, 0)


def test_a_file_that_imports_nothing_is_not_recorded_and_imports_later(manager, tmp_path):
    path = tmp_path / "bench.log"
    path.write_text("00A40004023F00\n6121\n00C0000021\n9000\n")
    wrong = import_trace(manager, path, "pyscard")
    assert (wrong.rows, wrong.source_id, wrong.already_imported) == (0, None, False)
    assert TraceSource.select().count() == 0
    right = import_trace(manager, path)
    assert (right.rows, right.already_imported) == (4, False)
    assert TraceSource.select().count() == 1


def test_a_file_whose_rows_are_gone_imports_again(manager, tmp_path):
    path = _capture(tmp_path / "bench.pcapng")
    first = import_trace(manager, path)
    CommLog.delete().execute()  # what purge --tables logs does to an old import
    again = import_trace(manager, path)
    assert not again.already_imported and again.rows == first.rows
    assert [s.id for s in TraceSource.select()] == [again.source_id]
    assert CommLog.select().where(CommLog.source_id == again.source_id).count() == again.rows


@pytest.mark.parametrize("stream", [False, True], ids=["file", "stream"])
def test_two_imports_of_one_file_at_once_the_second_is_already_imported(
        manager, tmp_path, monkeypatch, stream):
    from cardlink_lite.traces import load

    data = _capture(tmp_path / "bench.pcapng").read_bytes()

    class Pipe(io.BytesIO):
        def seekable(self):
            return not stream

    first = import_trace(manager, Pipe(data))
    # The other import checked before the first one committed: it found no source.
    monkeypatch.setattr(load, "_imported", lambda sha: None)
    again = import_trace(manager, Pipe(data))
    assert again.already_imported and again.source_id == first.source_id
    assert (OTASession.select().count(), CommLog.select().count(),
            TraceSource.select().count()) == (1, 1 + 2 * len(BENCH), 1)


def test_a_session_ends_with_its_last_response(manager):
    summary = import_trace(manager, DATA / "apdu4j-gp-scp02-session.dump")
    session = OTASession.get_by_id(summary.sessions[0])
    times = [row[8] for row in _rows(session.id)]
    assert session.ended_at == max(times) > times[-2]
    assert session.duration_ms == (max(times) - min(times)) // timedelta(milliseconds=1)


def _big_capture(path, exchanges):
    out = io.BytesIO()
    writer = CaptureWriter(out)
    for i in range(exchanges):
        writer.gsmtap(T0 + i * 1_000_000, bytes.fromhex(BENCH[2][0]))
    path.write_bytes(out.getvalue())
    return path


@pytest.mark.parametrize("failure", ["database error", "Ctrl-C"])
def test_a_failure_mid_import_leaves_no_rows_behind(manager, tmp_path, monkeypatch, failure):
    session = OTASession.create(session_type="triggered", status=SessionStatus.ACTIVE)
    path = _big_capture(tmp_path / "big.pcapng", 3000)  # 6,000 rows: three batches
    real_insert, calls = apdu.insert, []

    def failing_insert(plan, flat):
        calls.append(len(flat))
        if failure == "Ctrl-C" and len(calls) == 2:  # during the second batch
            raise KeyboardInterrupt
        if failure == "database error" and len(calls) >= 2:  # from the second batch on
            raise peewee.OperationalError("disk I/O error")
        return real_insert(plan, flat)

    monkeypatch.setattr(apdu, "insert", failing_insert)
    with pytest.raises(KeyboardInterrupt if failure == "Ctrl-C" else DatabaseError):
        import_trace(manager, path, session_id=session.id)
    monkeypatch.setattr(apdu, "insert", real_insert)
    gc.collect()  # a writer left with rows of the rolled-back import must not write them now
    assert (CommLog.select().count(), TraceSource.select().count()) == (0, 0)
    summary = import_trace(manager, path, session_id=session.id)
    assert summary.rows == 6000 and len(_rows(session.id)) == 6000
    assert CommLog.select().where(CommLog.source_id != summary.source_id).count() == 0

def test_a_globalplatformpro_debug_log_imports_with_latency(manager, tmp_path):
    # written by hand after apdu4j's LoggingCardTerminal (see tests/test_traces_readers.py)
    path = tmp_path / "gp-d.log"
    path.write_text(
        'SCardConnect("Reader 0", T=*) -> T=1, 3B8A800150564A434F503453494471\n'
        "ATR: 3B8A800150564A434F503453494471\n"
        "A>> T=1 (4+0000) 00A40400 00\n"
        "A<< (0018+2) (26ms) 6F108408A000000151000000A5049F6501FF 9000\n"
        "[DEBUG] GlobalPlatform - Auto-detected ISD: A000000151000000\n"
        "A>> T=1 (4+0008) 80500000 08 1122334455667788 00\n"
        "A<< (0028+2) (1s204ms) " + "00" * 28 + " 9000\n"
        "A>> T=1 (4+0002) 80F24000 02 4F00 00\n"
        "A<< (0000+2) 6A88\n")
    start = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    summary = import_trace(manager, path, start=start)
    assert (summary.format, summary.atrs, summary.exchanges) == ("gppro", 1, 3)
    rows = _rows(summary.sessions[0])
    ms = timedelta(milliseconds=1)
    # no time in the format: the start, advanced by each latency, keeps the rows in order
    assert [(r[0], r[3][:10], r[4], r[7], r[8]) for r in rows] == [
        ("atr", "3B8A800150", "ATR: T=0, T=1", None, start),
        ("command", "00A4040000", "SELECT", None, start),
        ("response", "6F108408A0", None, 26.0, start + 26 * ms),
        ("command", "8050000008", "INITIALIZE UPDATE key version 00", None, start + 26 * ms),
        ("response", "0000000000", None, 1204.0, start + 1230 * ms),
        ("command", "80F2400002", "GET STATUS applications", None, start + 1230 * ms),
        ("response", "6A88", None, None, start + 1230 * ms)]
    assert TraceSource.get().format == "gppro"
