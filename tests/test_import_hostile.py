"""Hostile import files and exact re-imports (issue 11, sections 2 and 3): every broken
file is one ``Error:`` line and a cardlink error, the store unchanged; a store's own
export re-imports as "nothing changed"; a dry run fails whenever the import fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings

from cardlink_lite import CommLog, OTASession
from cardlink_lite.apdu import apdu_logger
from cardlink_lite.cli import cli
from cardlink_lite.errors import DatabaseError, ValidationError
from cardlink_lite.transfer import DataExporter, DataImporter
from tests.import_fuzz import check_case, export_lines, jsonl_lines, malformed
from tests.transfer_helpers import SESSION_A, checksums, edited, extra_manager, populate


@pytest.fixture
def store(manager):
    populate(manager)
    return manager


@pytest.fixture
def base(store) -> dict:
    """The store's export as a mapping to edit (without the closing record it promises)."""
    return edited(json.loads(DataExporter(store).export_all()))


def _lines(document: dict) -> str:
    return "\n".join(export_lines(document))


def _set(document: dict, table: str, index: int, column: str, raw: str) -> str:
    """The export's line layout with one value replaced by raw JSON text."""
    lines = export_lines(document)
    start = lines.index(f"  {json.dumps(table)}: [")
    row = dict(document[table][index])
    row[column] = "@@VALUE@@"
    text = json.dumps(row).replace('"@@VALUE@@"', raw)
    comma = "," if lines[start + 1 + index].endswith(",") else ""
    lines[start + 1 + index] = "    " + text + comma
    return "\n".join(lines)


def _cli_import(db_url, tmp_path, text: str, suffix: str = "json", *extra):
    path = tmp_path / f"doc.{suffix}"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    return CliRunner().invoke(cli, ["--database", db_url, "import", str(path), *extra])


def _refused(store, db_url, tmp_path, text, suffix="json", match=None):
    """The document is refused by DataImporter (a cardlink error) and by the CLI (one
    Error: line, no traceback); the store is unchanged. Returns the Error: line."""
    before = checksums(store)
    with pytest.raises(DatabaseError) as caught:
        DataImporter(store).import_data(text, format=suffix)
    assert len(str(caught.value)) < 1000
    if match:
        assert match in str(caught.value) or any(match in p for p in
                                                 getattr(caught.value, "problems", []))
    for extra in (("--dry-run",), ()):
        result = _cli_import(db_url, tmp_path, text, suffix, *extra)
        assert result.exit_code == 1, result.output
        assert isinstance(result.exception, SystemExit), result.exception
        errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1, result.output[-2000:]
        assert "Traceback" not in result.output and len(result.output) < 20_000
    assert checksums(store) == before
    return errors[0]


@pytest.mark.parametrize("where", ["table", "row"])
def test_control_character_in_a_key_of_the_line_layout(store, base, db_url, tmp_path, where):
    if where == "table":
        text = _lines(base).replace('  "devices": [', '  "devi\x01ces": [', 1)
    else:
        text = _lines(base).replace('{"id": "RF8M33XXXXX"', '{"i\x01d": "RF8M33XXXXX"', 1)
    assert "\x01" in text
    line = _refused(store, db_url, tmp_path, text)
    assert "Invalid control character" in line


@pytest.mark.parametrize("layout", ["lines", "whole"])
def test_nesting_100k_deep_in_a_json_field(store, base, db_url, tmp_path, layout):
    deep = "[" * 100_000 + "]" * 100_000
    text = _set(base, "devices", 0, "connection_settings", deep)
    if layout == "whole":
        text = text.replace("\n", " ")
    _refused(store, db_url, tmp_path, text, match="nested")


def test_json_field_nesting_and_size_are_capped(store, base, db_url, tmp_path):
    text = _set(base, "devices", 0, "connection_settings", "[" * 40 + "]" * 40)
    _refused(store, db_url, tmp_path, text, match="nested more than 32 levels")
    text = _set(base, "test_results", 0, "metadata", json.dumps({"k": "x" * 1_100_000}))
    _refused(store, db_url, tmp_path, text, match="at most 1,048,576")


def test_400_digit_integer_in_latency(store, base, db_url, tmp_path):
    text = _set(base, "comm_logs", 0, "latency_ms", "1" + "0" * 400)
    line = _refused(store, db_url, tmp_path, text, match="comm_logs[0].latency_ms")
    assert "0" * 60 not in line


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+01:00",
                                   "9999-12-31T23:59:59.999-01:00"])
def test_timestamps_outside_the_utc_range(store, base, db_url, tmp_path, stamp):
    text = _set(base, "comm_logs", 1, "timestamp", json.dumps(stamp))
    _refused(store, db_url, tmp_path, text, match="outside 0001-01-01..9999-12-31")


def test_yaml_billion_laughs_is_refused_at_once(store, db_url, tmp_path):
    lines = ['    l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"    l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 10)]
    text = ("format_version: 1\ndevices:\n- id: laughs\n  device_type: phone\n"
            "  connection_settings:\n" + "\n".join(lines) + "\n")
    assert len(text) < 1200
    line = _refused(store, db_url, tmp_path, text, "yaml", match="aliases")
    assert "line 7" in line


def test_ten_megabyte_string_in_an_int_field_is_quoted_short(store, base, db_url, tmp_path):
    text = _set(base, "ota_sessions", 0, "duration_ms", json.dumps("9" * 10_000_000))
    line = _refused(store, db_url, tmp_path, text, match="ota_sessions[0].duration_ms")
    assert len(line) < 400


@pytest.mark.parametrize("layout", ["lines", "whole", "yaml"])
def test_duplicate_key_in_a_row_names_the_row(store, base, db_url, tmp_path, layout):
    if layout == "yaml":
        text = ("format_version: 1\ndevices:\n- id: d1\n  device_type: phone\n"
                "- id: d2\n  device_type: phone\n  name: a\n  name: b\n")
        _refused(store, db_url, tmp_path, text, "yaml", match="appears twice")
        return
    text = _lines(base).replace('{"id": "modem-1"', '{"id": "modem-1", "name": "x", "name": "y"',
                                1)
    if layout == "whole":
        text = text.replace("\n", " ")
    _refused(store, db_url, tmp_path, text, match="devices[1]: field name appears twice")


def test_duplicate_table_is_refused(store, base, db_url, tmp_path):
    text = _lines(base).rstrip().rstrip("}") + ',\n  "devices": []\n}\n'
    _refused(store, db_url, tmp_path, text, match="appears twice")


def test_yaml_duplicate_table_is_refused(store, db_url, tmp_path):
    text = "format_version: 1\ndevices: []\ndevices: []\n"
    _refused(store, db_url, tmp_path, text, "yaml", match="appears twice")


# -- JSON Lines: read a line at a time, each line checked on its own --------------------
def _jsonl(document: dict, replace: dict | None = None) -> str:
    """The JSON Lines layout, with whole lines replaced (line number -> text)."""
    lines = jsonl_lines(document)
    for number, text in (replace or {}).items():
        lines[number - 1] = text
    return "\n".join(lines) + "\n"


def _row_number(document: dict, table: str, index: int) -> int:
    return jsonl_lines(document).index(json.dumps({"table": table})) + 2 + index


@pytest.mark.parametrize("case, match", [
    ("control character", "Invalid control character"),
    ("deep nesting", "nested too deeply"),
    ("400 digits", "too many digits"),
    ("key twice", "comm_logs[0]: field id appears twice"),
    ("not UTF-8", "is not UTF-8 text"),
    ("row before a table line", "a row before any"),
    ("unknown header field", "unknown header field"),
    ("newer version", "format_version"),
])
def test_hostile_json_lines(store, base, db_url, tmp_path, case, match):
    row = _row_number(base, "comm_logs", 0)
    line = json.dumps(base["comm_logs"][0])
    replace = {
        "control character": {row: line.replace('"id"', '"i\x01d"', 1)},
        "deep nesting": {row: '{"id": ' + "[" * 100_000 + "]" * 100_000 + "}"},
        "400 digits": {row: line.replace('"latency_ms": ', '"latency_ms": 1' + "0" * 5000
                                         + ', "x": ', 1)},
        "key twice": {row: line.replace('{"id": ', '{"id": 7, "id": ', 1)},
        "not UTF-8": {row: line.replace("command", "comm\udcffand", 1)},
        "row before a table line": {2: line},
        "unknown header field": {1: '{"format_version": 1, "format": "jsonl", "x": 1}'},
        "newer version": {1: '{"format_version": 2, "format": "jsonl"}'},
    }[case]
    if case == "not UTF-8":  # only the file is bytes (a str holds a lone surrogate)
        line = _refused(store, db_url, tmp_path, _jsonl(base, replace), "jsonl")
        assert match in line and f"line {row} " in line
        return
    _refused(store, db_url, tmp_path, _jsonl(base, replace), "jsonl", match=match)


def test_json_lines_over_long_line_is_skipped_not_read(store, base, db_url, tmp_path):
    from cardlink_lite.transfer_format import MAX_LINE_CHARS

    row = _row_number(base, "devices", 0)
    long = '{"notes": "' + "x" * MAX_LINE_CHARS + '"}'
    line = _refused(store, db_url, tmp_path, _jsonl(base, {row: long}), "jsonl",
                    match="is longer than")
    assert f"line {row} is longer than" in line


def test_json_lines_problems_name_table_row_and_field_in_every_section(store, base):
    """Rows of one table split over two sections keep counting; a dangling reference in
    a later section is found against the keys met before it."""
    lines = jsonl_lines(base)
    bad = dict(base["comm_logs"][1], session_id="99999999-9999-4999-8999-999999999999",
               id=999)
    text = "\n".join(lines + [json.dumps({"table": "comm_logs"}), json.dumps(bad)]) + "\n"
    with pytest.raises(ValidationError) as info:
        DataImporter(store).import_data(text, format="jsonl")
    assert info.value.problems == [
        "comm_logs[6].session_id: no ota_sessions row '99999999-9999-4999-8999-999999999999' "
        "in the file or the database"]


# -- exact re-import -------------------------------------------------------------------
def _twins(manager) -> str:
    """A session holding identical APDUs in one millisecond (a repeated GET RESPONSE)."""
    stamp = datetime(2024, 11, 29, 10, 0, 0, 123000, tzinfo=timezone.utc)
    with apdu_logger(manager, SESSION_A) as log:
        for _ in range(3):
            log.add(SESSION_A, "command", "00C0000010", timestamp=stamp)
            log.add(SESSION_A, "response", "9000", timestamp=stamp + timedelta(milliseconds=1))
    return DataExporter(manager).export_all()


def test_own_export_with_twin_apdus_reimports_unchanged(store):
    text = _twins(store)
    before = checksums(store)
    for dry_run in (True, False):
        result = DataImporter(store).import_data(text, dry_run=dry_run)
        assert result.created == 0 and result.updated == 0, result.tables
    assert checksums(store) == before
    overwrite = DataImporter(store).import_data(text, conflict_mode="overwrite")
    assert overwrite.created == 0 and overwrite.tables["comm_logs"]["unchanged"] == 12
    assert overwrite.updated == 0  # identical rows are unchanged, not rewritten


def test_twin_apdus_into_another_store_twice(store, backend, tmp_path):
    text = _twins(store)
    with extra_manager(backend, tmp_path) as other:
        OTASession.create(id=SESSION_A)
        with apdu_logger(other, SESSION_A) as log:  # other's ids 1..3 hold other APDUs
            for i in range(3):
                log.command(f"80F2{i:04X}")
        first = DataImporter(other).import_data(text)
        assert first.tables["comm_logs"]["created"] == 12
        other.bind()
        assert CommLog.select().count() == 15
        before = checksums(other)
        for dry_run in (True, False):
            again = DataImporter(other).import_data(text, dry_run=dry_run)
            assert again.created == 0, again.tables
        assert checksums(other) == before
    store.bind()


def test_new_log_ids_never_collide_with_later_rows_of_the_file(store, backend, tmp_path):
    """Rows whose id is taken get new ids after every id in the file (no auto ids that a
    later chunk's explicit id could hit), in a dry run as in the import."""
    document = edited(json.loads(DataExporter(store).export_all()))
    stored_max = max(r["id"] for r in document["comm_logs"])
    extra = [dict(document["comm_logs"][0], id=stored_max + 1 + i, raw_data=f"80CA{i:04X}")
             for i in range(1200)]
    document["comm_logs"] = [dict(r, raw_data="80E2" + r["raw_data"])
                             for r in document["comm_logs"]] + extra
    text = _lines(document)
    before = checksums(store)
    dry = DataImporter(store).import_data(text, dry_run=True)
    assert checksums(store) == before
    real = DataImporter(store).import_data(text)
    assert dry.tables["comm_logs"] == real.tables["comm_logs"]
    assert real.tables["comm_logs"]["created"] == 1206
    store.bind()
    assert CommLog.select().count() == 1212


# -- the property: any malformed document ----------------------------------------------
_EXAMPLES = int(os.environ.get("CARDLINK_FUZZ_EXAMPLES", "0")) or None


def test_malformed_documents_never_get_through(store, base, db_url, tmp_path, backend):
    before = checksums(store)
    failures = []
    cases = []

    @settings(max_examples=_EXAMPLES or (300 if backend == "sqlite" else 100), deadline=None,
              suppress_health_check=list(HealthCheck), derandomize=True, database=None)
    @given(malformed(base))
    def check(case):
        cases.append(case.name.split(" ")[0])
        outcome = check_case(case, db_url, tmp_path, store, before)
        if outcome.problems:
            failures.append((case.name, outcome.problems))
            if len(failures) == 1:
                print("FIRST FAILURE", case.name, outcome.problems, case.text[:500])
        assert not outcome.problems, (case.name, outcome.problems, case.text[:300])

    try:
        check()
    finally:
        assert not failures, failures[:2]  # the first ones, before shrinking replays
    assert len(cases) >= 50, cases  # hypothesis ran the documents, not a handful


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize("case", ["billion laughs", "deep nesting"])
def test_hostile_files_through_the_real_command(store, base, db_url, tmp_path, case):
    if case == "billion laughs":
        path = tmp_path / "laughs.yaml"
        lines = ['    l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
        lines += [f"    l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]"
                  for i in range(1, 12)]
        path.write_text("format_version: 1\nsettings:\n- key: laughs\n  value:\n"
                        + "\n".join(lines) + "\n")
    else:
        path = tmp_path / "deep.json"
        path.write_text(_set(base, "devices", 0, "connection_settings",
                             "[" * 100_000 + "]" * 100_000))
    before = checksums(store)
    result = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "cardlink-db"), "--database", db_url,
         "import", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr[-2000:]
    assert [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len([line for line in result.stderr.splitlines() if line.startswith("Error:")]) == 1
    assert "Traceback" not in result.stderr
    assert checksums(store) == before


def test_validation_error_is_the_cardlink_class(store, base):
    text = _set(base, "comm_logs", 0, "latency_ms", "1" + "0" * 400)
    with pytest.raises(ValidationError):
        DataImporter(store).import_data(text)
