"""DataExporter / DataImporter on every backend: content, conflict modes, all-or-nothing."""

from __future__ import annotations

import io
import json
import logging
import sqlite3
import tracemalloc

import peewee
import pytest
import yaml

from cardlink_lite import (
    CardProfile,
    CommLog,
    ConflictMode,
    DatabaseConfig,
    DatabaseManager,
    DataExporter,
    DataImporter,
    Device,
    EncryptionError,
    ExportFormat,
    ImportResult,
    OTASession,
    UnitOfWork,
    ValidationError,
)
from cardlink_lite.crypto import decrypt_psk, generate_key
from cardlink_lite.models import ReplayCounter, TraceSource
from cardlink_lite.transfer_format import JsonLines, read_document
from tests.transfer_helpers import (
    PSK,
    SESSION_A,
    TEST_ID,
    checksums,
    edited,
    extra_manager,
    populate,
    without_timestamp,
)

TABLES = ["devices", "card_profiles", "ota_sessions", "trace_sources", "comm_logs", "test_results",
          "settings", "replay_counters", "test_runs"]


@pytest.fixture
def store(manager):
    populate(manager)
    return manager


@pytest.fixture
def target(backend, tmp_path):
    """A second, empty database on the same backend."""
    with extra_manager(backend, tmp_path, schema=False) as manager:
        yield manager


def _doc(manager, **kwargs) -> dict:
    return json.loads(DataExporter(manager).export_all(**kwargs))


def test_export_has_all_six_tables_in_portable_form(store):
    doc = _doc(store)
    assert list(doc) == ["format_version", "exported_at", "closing_record", *TABLES,
                         "row_counts"]
    assert doc["format_version"] == 1
    assert doc["exported_at"].endswith("Z") and len(doc["exported_at"]) == 24
    assert [len(doc[t]) for t in TABLES] == [2, 1, 2, 0, 6, 1, 1, 0, 0]
    device = doc["devices"][0]
    assert device["id"] == "RF8M33XXXXX"
    assert device["device_type"] == "phone"
    assert device["last_seen"] == "2024-11-29T10:00:00.123Z"
    assert device["connection_settings"] == {"adb": {"serial": "RF8M"}, "ports": [1, 2]}
    assert device["is_active"] is True
    session = next(s for s in doc["ota_sessions"] if s["id"] == SESSION_A)
    assert session["status"] == "completed"
    assert session["device_id"] == "RF8M33XXXXX"
    assert session["tls_cipher_suite"] == "TLS_PSK_WITH_AES_128_CBC_SHA256"
    logs = doc["comm_logs"]
    assert [log["id"] for log in logs] == sorted(log["id"] for log in logs)
    assert logs[1]["direction"] == "response" and logs[1]["latency_ms"] == 1.25
    assert logs[1]["timestamp"] == "2024-11-29T10:00:00.124Z"
    assert doc["test_results"][0]["metadata"]["nested"] == {"k": [1, "two", None]}
    setting = doc["settings"][0]
    assert setting.pop("updated_at").endswith("Z")  # save() stamps it
    assert setting == {
        "key": "log_retention_days", "created_at": "2024-11-29T10:00:00.123Z", "value": 90,
        "description": "Days to retain APDU logs", "category": "retention"}


def test_keys_are_never_exported_unless_asked(manager, monkeypatch):
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", generate_key())
    populate(manager, psk=True)
    text = DataExporter(manager).export_all()
    assert "psk_key" not in text
    card = _doc(manager, include_keys=True)["card_profiles"][0]
    assert card["psk_key"] == PSK.hex()
    assert "psk_key_encrypted" not in card


def test_selective_export_accepts_short_and_table_names(store):
    exporter = DataExporter(store)
    short = json.loads(exporter.export_selective(["devices", "cards", "logs"], ExportFormat.JSON))
    # Logs bring the trace sources they name (none here).
    assert list(short)[3:-1] == ["devices", "card_profiles", "trace_sources", "comm_logs"]
    long = json.loads(exporter.export_selective(["comm_logs", "card_profiles"], "json"))
    assert list(long)[3:-1] == ["card_profiles", "trace_sources", "comm_logs"]
    assert long["trace_sources"] == []
    with pytest.raises(ValidationError) as info:
        exporter.export_selective(["devices", "phones"], ExportFormat.JSON)
    assert "'phones'" in str(info.value) and "cards" in str(info.value)


def test_yaml_export_is_the_same_data(store):
    exporter = DataExporter(store)
    from_yaml = yaml.safe_load(exporter.export_all(ExportFormat.YAML))
    from_json = json.loads(exporter.export_all(ExportFormat.JSON))
    from_yaml.pop("exported_at"), from_json.pop("exported_at")
    assert from_yaml == from_json


def _export_peak(manager) -> tuple[int, int]:
    class Sink(io.TextIOBase):
        size = 0

        def write(self, text):
            self.size += len(text)
            return len(text)

    sink = Sink()
    tracemalloc.start()
    try:
        DataExporter(manager).write(sink, tables=["logs"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, sink.size


@pytest.mark.slow
def test_export_streams_with_flat_memory(manager):
    populate(manager, logs=3000)
    small_peak, small_size = _export_peak(manager)
    manager.bind()
    rows = [{"session": SESSION_A, "direction": "command", "raw_data": "00B0000010"}] * 100
    with manager.atomic():
        for _ in range(90):
            CommLog.insert_many(rows).execute()
    big_peak, big_size = _export_peak(manager)
    assert big_size > 3 * small_size
    # One page of rows at a time: four times the rows, about the same peak memory.
    assert big_peak < 1.5 * small_peak, (small_peak, big_peak)
    assert big_peak < big_size / 3, (big_peak, big_size)


def test_import_into_empty_database_then_skip_changes_nothing(store, target):
    text = DataExporter(store).export_all()
    target.create_tables()
    result = DataImporter(target).import_data(text)
    assert isinstance(result, ImportResult)
    assert (result.created, result.updated, result.skipped, result.errors) == (13, 0, 0, [])
    assert result.tables["comm_logs"] == {"created": 6, "updated": 0, "skipped": 0,
                                          "unchanged": 0}
    before = checksums(target)
    again = DataImporter(target).import_data(text, conflict_mode=ConflictMode.SKIP)
    assert (again.created, again.updated, again.skipped) == (0, 0, 13)
    assert checksums(target) == before
    assert without_timestamp(DataExporter(target).export_all()) == without_timestamp(text)
    # Explicit log ids moved the id sequence on (PostgreSQL needs a setval for that).
    target.bind()
    new = CommLog.create(session=SESSION_A, direction="command", raw_data="00")
    assert new.id == 7


def test_overwrite_and_merge(store):
    doc = _doc(store)
    doc["devices"] = [{"id": "RF8M33XXXXX", "device_type": "modem", "name": None,
                       "notes": "moved"}]
    merged = DataImporter(store).import_data(
        {"devices": doc["devices"]}, conflict_mode=ConflictMode.MERGE)
    assert merged.updated == 1
    store.bind()
    device = Device.get_by_id("RF8M33XXXXX")
    assert (device.device_type.value, device.name, device.notes) == ("modem", "Galaxy", "moved")
    assert device.manufacturer == "Samsung"
    over = DataImporter(store).import_data(
        json.dumps({"devices": doc["devices"]}), conflict_mode="overwrite")
    assert (over.created, over.updated) == (0, 1)
    device = Device.get_by_id("RF8M33XXXXX")
    assert (device.name, device.notes, device.manufacturer) == (None, "moved", None)
    assert device.created_at.year == 2024  # kept: not in the input


def test_dry_run_reports_and_changes_nothing(store):
    doc = _doc(store)
    doc["devices"].append({"id": "new-device", "device_type": "phone"})
    before = checksums(store)
    result = DataImporter(store).import_data(doc, conflict_mode="overwrite", dry_run=True)
    assert result.dry_run
    # The store's own rows come back identical: unchanged, not updated.
    assert result.tables["devices"] == {"created": 1, "updated": 0, "skipped": 0,
                                        "unchanged": 2}
    assert (result.created, result.updated, result.unchanged) == (1, 0, 13)
    assert checksums(store) == before


def test_psk_key_is_encrypted_on_the_way_in(store, monkeypatch):
    row = {"iccid": "89000000000000000001", "psk_key": PSK.hex()}
    before = checksums(store)
    with pytest.raises(EncryptionError):
        DataImporter(store).import_data({"card_profiles": [row]})
    assert checksums(store) == before
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", generate_key())
    DataImporter(store).import_data({"card_profiles": [row]})
    store.bind()
    card = CardProfile.get_by_id("89000000000000000001")
    assert decrypt_psk(card.psk_key_encrypted) == PSK


def test_guide_sample_inside_a_unit_of_work(store):
    with UnitOfWork(store) as uow:
        data = DataExporter(uow).export_all(ExportFormat.JSON)
    store.drop_tables()
    store.create_tables()
    with UnitOfWork(store) as uow:
        result = DataImporter(uow).import_data(data, format=ExportFormat.JSON,
                                               conflict_mode=ConflictMode.SKIP)
        uow.commit()
    assert result.created == 13
    store.bind()
    assert OTASession.select().count() == 2


def _large_logs_document(store, count=3000) -> dict:
    logs = [{"id": 1000 + i, "session_id": SESSION_A, "direction": "command",
             "raw_data": "00B0000010", "timestamp": "2024-11-29T10:00:00.123Z"}
            for i in range(count)]
    logs[-1]["direction"] = "sideways"
    return {"format_version": 1, "comm_logs": logs}


BROKEN = {
    "bad json": ('{"devices": [', "not valid JSON"),
    "bad yaml": ("devices:\n  - id: [unclosed\n", "not valid YAML"),
    "python object yaml": ("devices: !!python/object/apply:os.system ['true']\n",
                           "not valid YAML"),
    "empty file": ("   \n", "is empty"),
    "not a mapping": ("[1, 2, 3]", "must be a mapping"),
    "scalar yaml": ("just text", "must be a mapping"),
    "wrong types": ({"devices": [{"id": 5, "device_type": "phone", "is_active": "yes"}]},
                    "devices[0].id: must be text"),
    "unknown enum": ({"ota_sessions": [{"id": SESSION_A, "status": "exploded"}]},
                     "ota_sessions[0].status: must be one of"),
    "dangling fk": ({"comm_logs": [{"session_id": "99999999-9999-4999-8999-999999999999",
                                    "direction": "command", "raw_data": "00"}]},
                    "comm_logs[0].session_id: no ota_sessions row"),
    "missing required": ({"test_results": [{"run_id": "r", "suite_name": "s",
                                            "status": "passed"}]},
                         "test_results[0].test_name: required field is missing"),
    "bad hex": ({"comm_logs": [{"session_id": SESSION_A, "direction": "command",
                                "raw_data": "zz"}]},
                "comm_logs[0].raw_data: must be whole bytes of hex"),
    "status word not hex": ({"comm_logs": [{"session_id": SESSION_A, "direction": "response",
                                            "raw_data": "9000", "status_word": "0x90"}]},
                            "comm_logs[0].status_word: must be four hex digits"),
    "encrypted key": ({"card_profiles": [{"iccid": "1", "psk_key_encrypted": "gAAA"}]},
                      "card_profiles[0].psk_key_encrypted: unknown field"),
    "unknown table": ({"phones": []}, "phones: unknown table"),
    "newer format": ({"format_version": 99}, "format_version"),
}


def test_broken_documents_change_nothing(store):
    before = checksums(store)
    importer = DataImporter(store)
    cases = dict(BROKEN)
    cases["bad record at the end of a large file"] = (
        json.dumps(_large_logs_document(store)), "comm_logs[2999].direction: must be one of")
    for name, (data, expected) in cases.items():
        with pytest.raises(ValidationError) as info:
            importer.import_data(data, conflict_mode="overwrite")
        message = str(info.value)
        assert expected in message or any(expected in p for p in info.value.problems), \
            (name, message)
        assert "\n" not in message, name
        assert checksums(store) == before, name


def test_every_problem_is_listed_with_table_index_and_field(store):
    doc = {"devices": [{"id": "a", "device_type": "tablet"},
                       {"id": "b", "device_type": "phone", "last_seen": "yesterday"},
                       {"id": "a", "device_type": "phone"}],
           "ota_sessions": [{"id": "not-a-uuid"}]}
    with pytest.raises(ValidationError) as info:
        DataImporter(store).import_data(doc)
    problems = info.value.problems
    assert any(p.startswith("devices[0].device_type: must be one of") for p in problems)
    assert any(p.startswith("devices[1].last_seen: must be an ISO-8601") for p in problems)
    assert any(p.startswith("devices[2].id: 'a' appears twice") for p in problems)
    assert any(p.startswith("ota_sessions[0].id: must be a UUID") for p in problems)
    assert "4 problem(s)" in str(info.value)


def test_format_detection_and_yaml_datetimes(store):
    yaml_text = ("devices:\n- id: yaml-device\n  device_type: MODEM\n"
                 "  last_seen: 2024-11-29 10:00:00.5\n")
    result = DataImporter(store).import_data(yaml_text)
    assert result.created == 1
    store.bind()
    device = Device.get_by_id("yaml-device")
    assert device.last_seen.isoformat() == "2024-11-29T10:00:00.500000+00:00"
    with pytest.raises(ValidationError, match="not valid JSON"):
        DataImporter(store).import_data(yaml_text, format="json")
    assert TEST_ID in DataExporter(store).export_selective("tests", "yaml")


def test_rows_without_their_integer_key_get_one_from_the_database(store):
    doc = {"trace_sources": [
        {"id": 7, "path": "a.pcap", "format": "pcap", "sha256": "a" * 64},
        {"path": "b.pcap", "format": "pcap", "sha256": "b" * 64, "size_bytes": 10}]}
    result = DataImporter(store).import_data(doc)
    assert result.tables["trace_sources"]["created"] == 2
    store.bind()
    keyed = TraceSource.get(TraceSource.path == "a.pcap")
    given = TraceSource.get(TraceSource.path == "b.pcap")
    assert (keyed.id, keyed.size_bytes, given.size_bytes) == (7, None, 10)
    assert given.id not in (None, 7) and given.imported_at is not None


def test_imported_integer_keys_leave_room_for_new_rows(store):
    # PostgreSQL's serial sequences do not see explicit ids: new rows, in the same import
    # or created afterwards, must not be handed an id the import already used.
    doc = {"trace_sources": [
        {"id": 1, "path": "a.pcap", "format": "pcap", "sha256": "a" * 64},
        {"id": 2, "path": "b.pcap", "format": "pcap", "sha256": "b" * 64},
        {"path": "c.pcap", "format": "pcap", "sha256": "c" * 64}],
        "replay_counters": [
        {"id": 1, "card_iccid": "89011234567890123456", "keyset": "k1", "tar": "B00010"}]}
    result = DataImporter(store).import_data(doc)
    assert result.tables["trace_sources"]["created"] == 3
    store.bind()
    new = TraceSource.create(path="d.pcap", format="pcap", sha256="d" * 64)
    counter = ReplayCounter.create(card="89011234567890123456", keyset="k2", tar="B00010")
    ids = [t.id for t in TraceSource.select().order_by(TraceSource.path)]
    assert len(set(ids)) == 4 and ids[:2] == [1, 2] and new.id > 2
    assert counter.id > 1


# -- streamed import of the export's own layout -----------------------------------------

def _import_peak(manager, data) -> tuple[int, ImportResult]:
    # An earlier test's echo=True may have left Peewee's logger at DEBUG, and captured
    # records of every statement would count here.
    peewee_logger = logging.getLogger("peewee")
    level = peewee_logger.level
    peewee_logger.setLevel(logging.WARNING)
    try:
        return _traced_import(manager, data)
    finally:
        peewee_logger.setLevel(level)


def _traced_import(manager, data) -> tuple[int, ImportResult]:
    tracemalloc.start()
    try:
        result = DataImporter(manager).import_data(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, result


@pytest.mark.slow
def test_import_streams_a_jsonl_export_with_bounded_memory(store, backend, tmp_path):
    files = []
    store.bind()
    rows = [{"session": SESSION_A, "direction": "command", "raw_data": "00B0000010"}] * 100
    for size in (2000, 8000):
        with store.atomic():
            while CommLog.select().count() < size:
                CommLog.insert_many(rows).execute()
        files.append(tmp_path / f"{size}.jsonl")
        files[-1].write_text(DataExporter(store).export_all(ExportFormat.JSONL))
        store.bind()
    with open(files[1], "rb") as fh:
        document = read_document(fh)
        assert isinstance(document, JsonLines)  # read line by line, not parsed whole
        assert sum(1 for table, row in document if table == "comm_logs" and row) == 8006
    peaks = []
    for path in files:
        with extra_manager(backend, tmp_path) as target, open(path, "rb") as fh:
            peak, result = _import_peak(target, fh)
            peaks.append(peak)
            assert result.tables["comm_logs"]["created"] == CommLog.select().count()
            assert without_timestamp(DataExporter(target).export_all(ExportFormat.JSONL)) == \
                without_timestamp(path.read_text())
            store.bind()
    # A chunk of rows at a time: four times the rows, about the same peak memory, and
    # well under what merely parsing the whole file takes.
    tracemalloc.start()
    try:
        [json.loads(line) for line in files[1].read_bytes().splitlines()]
        _, parse_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peaks[1] < 1.3 * peaks[0], peaks
    assert peaks[1] < parse_peak / 2, (peaks, parse_peak)


def test_streamed_import_refuses_a_bad_last_row_and_changes_nothing(store, target):
    target.create_tables()
    lines = DataExporter(store).export_all().splitlines()
    last = max(i for i, line in enumerate(lines) if '"direction": "response"' in line)
    lines[last] = lines[last].replace('"direction": "response"', '"direction": "sideways"')
    text = "\n".join(lines) + "\n"
    before = checksums(target)
    with pytest.raises(ValidationError) as info:
        DataImporter(target).import_data(text.encode())
    assert info.value.problems == [
        "comm_logs[5].direction: must be one of command, response, atr, reset; got 'sideways'"]
    assert checksums(target) == before


def test_streamed_import_lists_dangling_keys_up_to_the_limit(store):
    bad = "99999999-9999-4999-8999-999999999999"
    logs = ",\n".join(
        "    " + json.dumps({"id": 5000 + i, "session_id": SESSION_A if i % 3 else bad,
                             "direction": "command", "raw_data": "00B0"})
        for i in range(900))
    text = f'{{\n  "format_version": 1,\n  "comm_logs": [\n{logs}\n  ]\n}}\n'
    before = checksums(store)
    with pytest.raises(ValidationError) as info:
        DataImporter(store).import_data(text)
    problems = info.value.problems
    assert "300 problem(s)" in str(info.value)
    assert problems[0] == (f"comm_logs[0].session_id: no ota_sessions row '{bad}' in the "
                           "file or the database")
    assert problems[1].startswith("comm_logs[3].session_id")
    assert problems[-1] == "... and 100 more problems"
    assert checksums(store) == before


class _Pipe(io.RawIOBase):
    """A binary stream that cannot seek, like stdin."""

    def __init__(self, data: bytes):
        self._data = io.BytesIO(data)

    def readable(self):
        return True

    def readinto(self, buffer):
        chunk = self._data.read(len(buffer))
        buffer[:len(chunk)] = chunk
        return len(chunk)


def test_every_input_kind_and_layout_gives_the_same_import(store, target):
    text = DataExporter(store).export_all()
    doc = json.loads(text)
    parts = []  # the export's layout, tables in reverse (children before parents)
    for key, value in reversed(list(doc.items())):
        if isinstance(value, list) and value:
            parts.append(f"  {json.dumps(key)}: [\n"
                         + ",\n".join("    " + json.dumps(r) for r in value) + "\n  ]")
        else:
            parts.append(f"  {json.dumps(key)}: {json.dumps(value)}")
    inputs = {
        "text": text, "bytes": text.encode(), "binary file": io.BytesIO(text.encode()),
        "pipe": io.BufferedReader(_Pipe(text.encode())), "text file": io.StringIO(text),
        "indented json": json.dumps(doc, indent=2), "compact json": json.dumps(doc),
        "with BOM and CRLF": ("\ufeff" + text.replace("\n", "\r\n")).encode(),
        "reordered": "{\n" + ",\n".join(parts) + "\n}\n", "mapping": doc,
    }
    for name, data in inputs.items():
        target.drop_tables()
        target.create_tables()
        result = DataImporter(target).import_data(data)
        assert (result.created, result.skipped) == (13, 0), name
        assert without_timestamp(DataExporter(target).export_all()) == \
            without_timestamp(text), name
        again = DataImporter(target).import_data(text, dry_run=True)
        assert (again.created, again.skipped) == (0, 13), name


# -- concurrent writers -------------------------------------------------------------------

def test_import_decides_and_writes_in_one_transaction(store, backend, monkeypatch):
    """A writer racing the import cannot make its decisions stale: on SQLite it waits for
    the import's write lock; on a server the clash is a translated IntegrityError and the
    import keeps nothing."""
    from playhouse.db_url import connect

    from cardlink_lite import IntegrityError
    from cardlink_lite.transfer import _Import

    other = connect(store.config.url, **({"timeout": 0.2} if backend == "sqlite" else {}))
    p = other.param
    raced = []
    original = _Import._insert

    def race(plan, *args):
        # The other writer strikes after the import looked up which keys exist, just
        # before its insert. SQLite: the import's write lock is already held.
        try:
            other.execute_sql(
                f"INSERT INTO devices (id, device_type, is_active, created_at, updated_at) "
                f"VALUES ({p}, {p}, {p}, {p}, {p})",
                ["raced", "phone", True, "2024-01-01 00:00:00", "2024-01-01 00:00:00"])
            raced.append("inserted")
        except peewee.OperationalError as exc:
            raced.append(str(exc))
        original(plan, *args)

    monkeypatch.setattr(_Import, "_insert", race)
    doc = {"devices": [{"id": "new-device", "device_type": "phone"},
                       {"id": "raced", "device_type": "modem"}]}
    try:
        if backend == "sqlite":
            result = DataImporter(store).import_data(doc)
            assert raced == ["database is locked"]
            assert result.tables["devices"] == {"created": 2, "updated": 0, "skipped": 0,
                                                "unchanged": 0}
            store.bind()
            assert Device.get_by_id("raced").device_type == "modem"
        else:
            with pytest.raises(IntegrityError, match=r"^duplicate devices row") as info:
                DataImporter(store).import_data(doc)
            assert isinstance(info.value.__cause__, peewee.IntegrityError)
            assert raced == ["inserted"]
            store.bind()
            assert Device.get_or_none(Device.id == "new-device") is None
            assert Device.get_by_id("raced").device_type == "phone"
    finally:
        other.close()


def test_dry_run_needs_no_write_lock(tmp_path):
    """A dry run reads from a snapshot: it works while another writer holds the lock."""
    manager = DatabaseManager(DatabaseConfig(f"sqlite:///{tmp_path}/dry.db"))
    manager.initialize(check_schema=False)
    manager.create_tables()
    populate(manager)
    doc = _doc(manager)
    doc["devices"].append({"id": "new-device", "device_type": "phone"})
    writer = sqlite3.connect(tmp_path / "dry.db", isolation_level=None, timeout=0.2)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("UPDATE devices SET name = 'locked' WHERE id = 'modem-1'")
        result = DataImporter(manager).import_data(doc, dry_run=True)
        assert result.tables["devices"] == {"created": 1, "updated": 0, "skipped": 2,
                                            "unchanged": 0}
        writer.execute("ROLLBACK")
        manager.bind()
        assert Device.get_or_none(Device.id == "new-device") is None
    finally:
        writer.close()
        manager.close()


def test_logs_from_another_store_are_added_not_merged(backend, db_url, tmp_path):
    """Log ids are per-store counters: store B's log 1 is not store A's log 1."""
    from cardlink_lite import (
        CommLog,
        ConflictMode,
        DatabaseManager,
        DataExporter,
        DataImporter,
        OTASession,
        UnitOfWork,
    )

    other = DatabaseManager(f"sqlite:///{tmp_path}/other.db").initialize(check_schema=False)
    other.create_tables()
    with UnitOfWork(other) as uow:
        s1 = uow.sessions.create_session(session_type="from_a")
        uow.logs.add_log_batch([(s1.id, "command", "00A40400", "A1"),
                                (s1.id, "response", "9000", "A2")])
    with UnitOfWork(other) as uow:
        document = DataExporter(uow).export_all("json")
    other.close()

    target = DatabaseManager(db_url).initialize(check_schema=False)
    target.create_tables()
    try:
        with UnitOfWork(target) as uow:
            s2 = uow.sessions.create_session(session_type="own")
            uow.logs.add_log_batch([(s2.id, "command", "00B00000", "B1"),
                                    (s2.id, "response", "6A82", "B2")])
        counts = []
        for mode in (ConflictMode.SKIP, ConflictMode.OVERWRITE):
            with UnitOfWork(target) as uow:
                result = DataImporter(uow).import_data(document, conflict_mode=mode)
            counts.append(result.tables["comm_logs"])
        # First import: A's logs are new rows (their ids clash with B's). Second: the same
        # two rows are found again, identical (unchanged, not rewritten); B's are untouched.
        assert counts == [{"created": 2, "updated": 0, "skipped": 0, "unchanged": 0},
                          {"created": 0, "updated": 0, "skipped": 0, "unchanged": 2}]
        target.bind()
        by_session = {s.id: sorted(log.decoded_data for log in
                                   CommLog.select().where(CommLog.session == s.id))
                      for s in OTASession.select()}
        # The first import added A's two logs; the second recognised them as the same rows.
        assert by_session == {s1.id: ["A1", "A2"], s2.id: ["B1", "B2"]}
        with UnitOfWork(target) as uow:
            uow.logs.add_log_batch([(s2.id, "command", "00C00000", "B3")])  # ids still free
        assert CommLog.select().count() == 5
    finally:
        target.close()


def test_insert_writes_rows_of_one_field_and_fills_defaults_whatever_the_row_holds():
    from cardlink_lite.transfer import _Import

    database = peewee.SqliteDatabase(":memory:")

    class Note(peewee.Model):
        text = peewee.CharField()

        class Meta:
            table_name = "notes"

    class Tagged(peewee.Model):
        name = peewee.CharField()
        tag = peewee.CharField(default="plain")

        class Meta:
            table_name = "tagged"

    with database.bind_ctx([Note, Tagged]):
        database.create_tables([Note, Tagged])
        importer = _Import(database, ConflictMode.SKIP, ImportResult(), write=True)
        with database.atomic():
            # Left to the database, a note's key leaves it a single field to write.
            importer._insert(Note, [{"text": "hello"}, {"id": 7, "text": "kept"}])
            # A row as long as the field list may still leave a field out.
            importer._insert(Tagged, [{"name": "a", "line": 3, "note": "x"}])
        assert list(Note.select(Note.id, Note.text).order_by(Note.id).tuples()) == [
            (7, "kept"), (8, "hello")]
        assert list(Tagged.select(Tagged.name, Tagged.tag).tuples()) == [("a", "plain")]
    database.close()


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_logs_without_channel_and_ins_get_them_from_the_command(store, backend, tmp_path, fmt):
    # An export written before schema 0003 has no channel/ins: derived as the writer does.
    lines = []
    for line in DataExporter(store).export_all(format="jsonl").splitlines():
        row = json.loads(line)
        if "row_counts" in row:  # the closing record: a file written before it had none
            continue
        if "raw_data" in row:
            row = {k: v for k, v in row.items() if k not in ("channel", "ins")}
            if row["direction"] == "command" and row["id"] == 3:
                row["raw_data"] = "81E2910003"  # channel 1, STORE DATA
        lines.append(json.dumps(row))
    lines[0] = json.dumps(edited(json.loads(lines[0])))
    text = "\n".join(lines) + "\n"
    if fmt == "json":
        doc = {}
        for row in map(json.loads, lines[1:]):
            if "table" in row:
                table = doc.setdefault(row["table"], [])
            else:
                table.append(row)
        text = json.dumps(doc)
    with extra_manager(backend, tmp_path) as other:
        DataImporter(other).import_data(text, format=fmt)
        other.bind()
        headers = sorted((log.direction.value, log.raw_data[:4], log.channel, log.ins)
                         for log in CommLog.select())
        assert headers == [("command", "00A4", 0, 0xA4), ("command", "00A4", 0, 0xA4),
                           ("command", "81E2", 1, 0xE2)] + [("response", "9000", None, None)] * 3
        with UnitOfWork(other) as uow:
            assert len(uow.logs.search_hex("00A404", header=True)) == 2
            assert len(uow.logs.search_hex("81E2", header=True)) == 1


def test_export_and_import_on_a_store_with_pending_migrations_say_so(empty_manager, db_url,
                                                                    tmp_path):
    from click.testing import CliRunner

    from cardlink_lite import MigrationError
    from cardlink_lite.cli import cli
    from cardlink_lite.migrations import run_migrations

    run_migrations("0004", manager=empty_manager)
    message = ("the database is at schema revision 0004_wide_apdu_columns, 3 pending: run "
               "`cardlink-db migrate` before an export or import")
    for attempt in (lambda: DataExporter(empty_manager).export_all(),
                    lambda: DataExporter(empty_manager).count_rows(),
                    lambda: DataImporter(empty_manager).import_data({"devices": []}),
                    lambda: DataImporter(empty_manager).import_data({}, dry_run=True)):
        with pytest.raises(MigrationError) as caught:
            attempt()
        assert str(caught.value) == message
    path = tmp_path / "in.json"
    path.write_text('{"devices": []}')
    for args in (["export"], ["export", "-o", str(tmp_path / "out.json")],
                 ["import", str(path)]):
        result = CliRunner().invoke(cli, ["--database", db_url, *args])
        assert (result.exit_code, result.stdout) == (1, ""), args
        assert result.stderr.splitlines() == [f"Error: {message}"], args
    assert not (tmp_path / "out.json").exists()


_CUT = ("import rejected, nothing was changed: 1 problem(s), first: the file ends before its "
        "closing record (row_counts): it was cut short; export it again (or, for a file edited "
        "on purpose, remove its closing_record)")


@pytest.mark.parametrize("fmt", ["jsonl", "yaml"])
def test_an_export_cut_at_a_line_boundary_is_refused(store, target, fmt):
    text = DataExporter(store).export_all(format=fmt)
    lines = text.splitlines(keepends=True)
    closing = json.loads(lines[-1]) if fmt == "jsonl" else yaml.safe_load(lines[-1])
    assert closing == {"row_counts": dict(zip(TABLES, [2, 1, 2, 0, 6, 1, 1, 0, 0], strict=True))}
    target.create_tables()
    before = checksums(target)
    logs = next(i for i, line in enumerate(lines) if "comm_logs" in line)
    for keep in (len(lines) - 1, logs, logs + (2 if fmt == "jsonl" else 9)):  # between rows
        with pytest.raises(ValidationError) as caught:
            DataImporter(target).import_data("".join(lines[:keep]), format=fmt)
        assert str(caught.value) == _CUT, keep
        assert checksums(target) == before
    # A row taken out of the middle: the counts differ.
    at = next(i for i, line in enumerate(lines) if "9000" in line)
    if fmt == "yaml":  # a row is a block of lines
        at = next(i for i in range(at, 0, -1) if lines[i].startswith("- "))
    end = next(i for i in range(at + 1, len(lines)) if not lines[i].startswith(" "))
    with pytest.raises(ValidationError) as caught:
        DataImporter(target).import_data("".join(lines[:at] + lines[end:]), format=fmt)
    assert caught.value.problems == [
        "row_counts: the file holds 5 comm_logs rows, its closing record says 6: it was cut "
        "short or edited; export it again (or, for a file edited on purpose, remove its "
        "closing_record)"]
    assert checksums(target) == before
    # Whole, it imports; a line after the closing record is refused.
    assert DataImporter(target).import_data(text, format=fmt).created == 13
    if fmt == "jsonl":
        with pytest.raises(ValidationError, match=r"line \d+: comes after the closing record"):
            DataImporter(target).import_data(text + '{"table": "devices"}\n')


def test_a_json_export_ends_with_its_row_counts_and_edits_need_the_promise_removed(store):
    text = DataExporter(store).export_all()
    doc = json.loads(text)
    assert doc["closing_record"] is True
    assert list(doc)[-1] == "row_counts" and doc["row_counts"]["comm_logs"] == 6
    del doc["comm_logs"][0]
    with pytest.raises(ValidationError, match="the file holds 5 comm_logs rows"):
        DataImporter(store).import_data(json.dumps(doc))
    assert DataImporter(store).import_data(doc).skipped == 12  # a program's mapping: no end
    del doc["closing_record"]
    assert DataImporter(store).import_data(json.dumps(doc)).skipped == 12


def test_cli_refuses_a_json_lines_export_cut_by_head(store, db_url, tmp_path):
    from click.testing import CliRunner

    from cardlink_lite.cli import cli

    path = tmp_path / "all.jsonl"
    path.write_text(DataExporter(store).export_all(format="jsonl"))
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(path.read_text().splitlines(keepends=True)[:10]))
    store.drop_tables()
    store.create_tables()
    before = checksums(store)
    result = CliRunner().invoke(cli, ["--database", db_url, "import", str(cut)])
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == f"Error: {_CUT}"
    assert checksums(store) == before
