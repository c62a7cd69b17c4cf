"""Export -> import -> export gives the same bytes, across backends and for random stores."""

from __future__ import annotations

import json
import re
import string
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cardlink_lite import DataExporter, DataImporter, ExportFormat
from cardlink_lite.models import DeviceType, SessionStatus, TestStatus
from tests.transfer_helpers import extra_manager, populate, without_timestamp


def _available(request, backend: str) -> bool:
    return (backend in request.config._cardlink_backends
            and backend not in request.config._cardlink_unavailable)


@pytest.mark.parametrize("fmt", [ExportFormat.JSON, ExportFormat.YAML])
def test_sqlite_postgresql_mariadb_sqlite_chain(request, tmp_path, fmt):
    chain = ["sqlite", "postgresql", "mysql", "sqlite"]
    missing = [b for b in set(chain) if not _available(request, b)]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")
    with extra_manager("sqlite", tmp_path) as first:
        populate(first, logs=40)
        original = DataExporter(first).export_all(fmt)
    text = original
    for backend in chain[1:]:
        with extra_manager(backend, tmp_path) as manager:
            result = DataImporter(manager).import_data(text, format=fmt)
            assert result.created == 47, backend
            text = DataExporter(manager).export_all(fmt)
            assert without_timestamp(text) == without_timestamp(original), backend


_ids = st.text(string.ascii_lowercase + string.digits + "-_.", min_size=1, max_size=12)
_text = st.one_of(st.none(), st.text(
    st.characters(blacklist_categories=("Cs", "Cc")), max_size=20))
_moment = st.datetimes(datetime(2000, 1, 1), datetime(2037, 12, 31)).map(
    lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000, tzinfo=timezone.utc))
_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
              st.text(string.printable, max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(string.ascii_letters, max_size=5), inner,
                                            max_size=3)),
    max_leaves=6)
_hex = st.binary(min_size=1, max_size=40).map(lambda b: b.hex().upper())


def _iso(d: datetime) -> str:
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


@st.composite
def stores(draw) -> dict:
    device_ids = draw(st.lists(_ids, max_size=4, unique_by=str.lower))
    devices = [{"id": d, "device_type": draw(st.sampled_from(DeviceType)).value,
                "name": draw(_text), "connection_settings": draw(_json),
                "last_seen": draw(st.none() | _moment.map(_iso)),
                "is_active": draw(st.booleans()),
                "created_at": _iso(draw(_moment))} for d in device_ids]
    sessions = []
    for _ in range(draw(st.integers(0, 3))):
        sessions.append({
            "id": str(draw(st.uuids(version=4))),
            "device_id": draw(st.none() | st.sampled_from(device_ids)) if device_ids else None,
            "status": draw(st.sampled_from(SessionStatus)).value,
            "duration_ms": draw(st.none() | st.integers(0, 2**31 - 1)),
            "started_at": draw(st.none() | _moment.map(_iso)),
            "error_message": draw(_text)})
    logs = []
    if sessions:
        for i in range(draw(st.integers(0, 8))):
            logs.append({
                "id": i + 1, "session_id": draw(st.sampled_from(sessions))["id"],
                "direction": draw(st.sampled_from(["command", "response"])),
                "raw_data": draw(_hex), "timestamp": _iso(draw(_moment)),
                # Whole microseconds survive every backend's float column exactly.
                "latency_ms": draw(st.none() | st.integers(0, 10**5).map(lambda n: n / 8)),
                "decoded_data": draw(_text)})
    tests = [{"id": str(draw(st.uuids(version=4))), "run_id": draw(_ids),
              "suite_name": "suite", "test_name": draw(_ids),
              "status": draw(st.sampled_from(TestStatus)).value,
              "metadata": draw(_json), "started_at": _iso(draw(_moment))}
             for _ in range(draw(st.integers(0, 3)))]
    setting_keys = draw(st.lists(_ids, max_size=3, unique_by=str.lower))
    settings_rows = [{"key": k, "value": draw(_json), "category": "general"}
                     for k in setting_keys]
    return {"devices": devices, "ota_sessions": sessions, "comm_logs": logs,
            "test_results": tests, "settings": settings_rows}


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(store=stores())
def test_random_stores_round_trip(tmp_path_factory, store):
    tmp = tmp_path_factory.mktemp("rt")
    with extra_manager("sqlite", tmp) as source, extra_manager("sqlite", tmp) as target:
        DataImporter(source).import_data(store)
        first = DataExporter(source).export_all(ExportFormat.JSON)
        exported = json.loads(first)
        # What went in comes out: every given field, same value.
        for table, rows in store.items():
            assert len(exported[table]) == len(rows)
            by_key = {r.get("id", r.get("key")): r for r in exported[table]}
            for row in rows:
                out = by_key[row.get("id", row.get("key"))]
                assert {k: out[k] for k in row} == row
        result = DataImporter(target).import_data(first)
        assert result.created == sum(len(rows) for rows in store.values())
        assert without_timestamp(DataExporter(target).export_all()) == without_timestamp(first)
        yaml_text = DataExporter(target).export_all(ExportFormat.YAML)
        assert DataImporter(source).import_data(yaml_text).skipped == result.created


def test_key_order_and_text_survive_each_backend(tmp_path, backend):
    """Keys whose order differs between collations, and awkward text, on every backend."""
    now = datetime(2024, 2, 29, 23, 59, 59, 999000, tzinfo=timezone.utc)
    doc = {"devices": [{"id": "Zeta", "device_type": "modem", "name": "ü ✓ 'quoted' \"x\""},
                       {"id": "alpha.1", "device_type": "phone"},
                       {"id": "_under", "device_type": "phone"}],
           "settings": [{"key": "b.key", "value": {"z": [1, {"y": None}]}},
                        {"key": "a_key", "value": "text"}, {"key": "A-key", "value": 1.5}],
           "ota_sessions": [{"id": "00000000-0000-4000-8000-000000000001",
                             "started_at": _iso(now), "ended_at": _iso(now + timedelta(0, 1))}]}
    with extra_manager("sqlite", tmp_path) as source, extra_manager(backend, tmp_path) as other:
        DataImporter(source).import_data(doc)
        text = DataExporter(source).export_all()
        DataImporter(other).import_data(text)
        assert without_timestamp(DataExporter(other).export_all()) == without_timestamp(text)


def test_two_identical_apdus_in_one_millisecond_import_again_as_skipped(tmp_path):
    """Found by the random round trip: the same APDU twice at one timestamp is two rows."""
    session = "e3e70682-c209-4cac-a29f-6fbed82c07cd"
    log = {"session_id": session, "direction": "command", "raw_data": "00",
           "timestamp": "2000-01-01T00:00:00.000Z"}
    store = {"ota_sessions": [{"id": session, "status": "pending"}],
             "comm_logs": [{"id": 1, **log}, {"id": 2, **log}]}
    with extra_manager("sqlite", tmp_path) as source:
        DataImporter(source).import_data(store)
        text = DataExporter(source).export_all()
        assert DataImporter(source).import_data(text).skipped == 3


_OLD_EXPORTS = Path(__file__).resolve().parent / "data" / "transfer"


@pytest.mark.parametrize("name", ["old_export.json", "old_export.yaml"])
def test_an_export_written_before_jsonl_still_imports(backend, tmp_path, name):
    """Files the exporter wrote before JSON Lines (JSON with one row per line, and YAML)
    import on every backend and export again to the same bytes, read as a file or as text."""
    path = _OLD_EXPORTS / name
    fmt = ExportFormat.JSON if name.endswith(".json") else ExportFormat.YAML
    for source in ("file", "text"):
        with extra_manager(backend, tmp_path) as manager:
            if source == "file":
                with open(path, "rb") as fh:
                    result = DataImporter(manager).import_data(fh)
            else:
                result = DataImporter(manager).import_data(path.read_text())
            assert result.created == 18 and not result.errors, source
            assert {t: c["created"] for t, c in result.tables.items()} == {
                "devices": 2, "card_profiles": 1, "ota_sessions": 2, "trace_sources": 1,
                "comm_logs": 8, "test_results": 1, "settings": 1, "replay_counters": 1,
                "test_runs": 1}, source
            again = DataExporter(manager).export_all(fmt)
            # The same bytes, but for the closing record newer exports promise and end with.
            again = re.sub(r'\n  "closing_record": true,|\nclosing_record: true|'
                           r',\n  "row_counts": \{.*\}|\nrow_counts: \{.*\}', "", again)
            assert without_timestamp(again) == without_timestamp(path.read_text()), source
