"""Import from another store: trace sources and replay counters are the same rows by their
natural keys (sha256; card, keyset and TAR), never by the per-store integer id."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cardlink_lite import CommLog, ConflictMode, DataExporter, DataImporter, ValidationError
from cardlink_lite.cli import cli
from cardlink_lite.models import ALL_MODELS, CardProfile, ReplayCounter, TraceSource
from cardlink_lite.transfer import _NATURAL_KEYS
from tests.transfer_helpers import checksums, edited, extra_manager, populate

CARD_A = "89011234567890123456"   # populate's card
CARD_B = "89990000000000000001"


@pytest.fixture
def bench_a(manager):
    """Bench A: two imported files (ids 1, 2), logs from each, one counter (id 1)."""
    populate(manager)
    TraceSource.insert_many([
        {"id": 1, "path": "scp02.dump", "format": "apdu4j", "sha256": "a" * 64},
        {"id": 2, "path": "multi.dump", "format": "apdu4j", "sha256": "b" * 64}]).execute()
    logs = [log.id for log in CommLog.select().order_by(CommLog.id)]
    CommLog.update(source_id=1).where(CommLog.id.in_(logs[:2])).execute()
    CommLog.update(source_id=2).where(CommLog.id.in_(logs[2:4])).execute()
    ReplayCounter.create(id=1, card=CARD_A, keyset="kic=01,kid=01", tar="000001", counter=7)
    return json.loads(DataExporter(manager).export_all())


@pytest.fixture
def bench_b(backend, tmp_path):
    """Bench B: its own counter under id 1; A's second file imported as its id 1."""
    with extra_manager(backend, tmp_path) as manager:
        manager.bind()
        CardProfile.create(iccid=CARD_B, card_type="USIM")
        ReplayCounter.create(id=1, card=CARD_B, keyset="kic=01,kid=01", tar="000001",
                             counter=5)
        TraceSource.insert_many([
            {"id": 1, "path": "copy-of-multi.dump", "format": "apdu4j", "sha256": "b" * 64},
            {"id": 2, "path": "other.dump", "format": "apdu4j", "sha256": "c" * 64}]).execute()
        yield manager


def _counters(manager) -> dict:
    manager.bind()
    return {(c.card_iccid, c.keyset, c.tar): c.counter for c in ReplayCounter.select()}


def _sources_of_logs(manager) -> dict:
    """Each log's trace file by sha256 (first letter), in the order of the log's data."""
    manager.bind()
    files = {t.id: t.sha256[0] for t in TraceSource.select()}
    return sorted((log.timestamp, files.get(log.source_id))
                  for log in CommLog.select() if log.source_id is not None)


def test_counters_and_sources_from_another_store_are_matched_by_natural_key(
        bench_a, bench_b, manager):
    expected_sources = _sources_of_logs(manager)
    result = DataImporter(bench_b).import_data(bench_a)
    assert result.tables["replay_counters"] == {"created": 1, "updated": 0, "skipped": 0,
                                                "unchanged": 0}
    assert result.tables["trace_sources"] == {"created": 1, "updated": 0, "skipped": 1,
                                              "unchanged": 0}
    # Both counters are kept: A's card goes on from 7, B's from 5.
    assert _counters(bench_b) == {(CARD_A, "kic=01,kid=01", "000001"): 7,
                                  (CARD_B, "kic=01,kid=01", "000001"): 5}
    # A's multi.dump is B's file 1; A's scp02.dump takes a new id (B's 2 is other.dump).
    files = {t.sha256[0]: (t.id, t.path) for t in TraceSource.select()}
    assert files == {"a": (3, "scp02.dump"), "b": (1, "copy-of-multi.dump"),
                     "c": (2, "other.dump")}
    # Imported logs point at the same files as in A.
    assert _sources_of_logs(bench_b) == expected_sources
    # Importing the file again changes nothing; so does importing B's own export.
    before = checksums(bench_b)
    again = DataImporter(bench_b).import_data(bench_a)
    assert (again.created, again.updated) == (0, 0)
    own = DataImporter(bench_b).import_data(DataExporter(bench_b).export_all())
    assert (own.created, own.updated) == (0, 0)
    assert checksums(bench_b) == before
    bench_b.bind()
    assert TraceSource.create(path="d", format="pcap", sha256="d" * 64).id == 4
    assert ReplayCounter.create(card=CARD_B, keyset="k", tar="000002").id == 3


@pytest.mark.parametrize("mode", [ConflictMode.OVERWRITE, ConflictMode.MERGE])
def test_overwrite_and_merge_change_only_the_row_with_the_same_natural_key(
        bench_a, bench_b, mode):
    DataImporter(bench_b).import_data(bench_a)
    bench_a["replay_counters"][0]["counter"] = 9
    bench_a["trace_sources"][1]["path"] = "renamed.dump"
    result = DataImporter(bench_b).import_data(bench_a, conflict_mode=mode)
    assert result.tables["replay_counters"]["updated"] == 1
    assert result.tables["trace_sources"] == {"created": 0, "updated": 1, "skipped": 0,
                                              "unchanged": 1}
    assert _counters(bench_b) == {(CARD_A, "kic=01,kid=01", "000001"): 9,
                                  (CARD_B, "kic=01,kid=01", "000001"): 5}
    assert {t.id: t.path for t in TraceSource.select()} == {
        1: "renamed.dump", 2: "other.dump", 3: "scp02.dump"}


def test_dry_run_predicts_what_the_import_does(bench_a, bench_b):
    # B's only file is A's second: A's file ids 1 and 2 used to be skipped and created.
    TraceSource.delete().where(TraceSource.id == 2).execute()
    before = checksums(bench_b)
    dry = DataImporter(bench_b).import_data(bench_a, dry_run=True)
    assert checksums(bench_b) == before
    real = DataImporter(bench_b).import_data(bench_a)
    assert (dry.tables, dry.created, dry.skipped) == (real.tables, real.created, real.skipped)
    assert real.tables["trace_sources"]["created"] == real.tables["trace_sources"]["skipped"] == 1


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_natural_key_twice_in_the_file_is_refused_before_any_write(bench_b, dry_run):
    doc = {"trace_sources": [
        {"id": 7, "path": "x", "format": "pcap", "sha256": "e" * 63},
        {"id": 8, "path": "y", "format": "pcap", "sha256": "E" * 62 + "\u00e9 "}],
        "replay_counters": [
        {"card_iccid": CARD_B, "keyset": "k", "tar": "00000A"},
        {"card_iccid": CARD_B, "keyset": "K", "tar": "00000A"},  # another keyset
        {"card_iccid": CARD_B, "keyset": "k ", "tar": "00000a"}]}
    before = checksums(bench_b)
    with pytest.raises(ValidationError) as caught:
        DataImporter(bench_b).import_data(doc, dry_run=dry_run)
    assert caught.value.problems == [
        "trace_sources[1].sha256: 'EEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEE'... (64 long) "
        "repeats trace_sources[0]'s (letter case, accents and trailing spaces aside, as MySQL "
        "and MariaDB compare); give each row its own sha256",
        "replay_counters[2].(card_iccid, keyset, tar): '89990000000000000001', 'k', '00000A' "
        "repeats replay_counters[0]'s (keysets trimmed, TARs in upper case, as the counter "
        "functions take them); give each row its own card_iccid, keyset, tar"]
    assert checksums(bench_b) == before


def test_cli_names_a_repeated_natural_key_on_dry_run_and_import(manager, db_url, tmp_path):
    path = tmp_path / "twice.json"
    path.write_text(json.dumps({"trace_sources": [
        {"id": 1, "path": "x", "format": "pcap", "sha256": "f" * 64},
        {"id": 2, "path": "y", "format": "pcap", "sha256": "F" * 64}]}))
    runner = CliRunner()
    for dry in (["--dry-run"], []):
        result = runner.invoke(cli, ["--database", db_url, "import", *dry, str(path)])
        assert result.exit_code == 1
        assert result.stderr.splitlines()[-1] == (
            "Error: import rejected, nothing was changed: 1 problem(s), first: "
            "trace_sources[1].sha256: 'FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF'... (64 long) "
            "repeats trace_sources[0]'s (letter case, accents and trailing spaces aside, as "
            "MySQL and MariaDB compare); give each row its own sha256")
    manager.bind()
    assert TraceSource.select().count() == 0


def test_the_import_knows_every_unique_key_besides_the_primary_keys():
    unique = {}
    for model in ALL_MODELS:
        for f in model._meta.sorted_fields:
            if f.unique and not f.primary_key:
                unique[model] = (f,)
        for index in model._meta.indexes:
            if index._unique:
                unique[model] = tuple(index._expressions)
    assert unique == _NATURAL_KEYS


@pytest.mark.parametrize("mode", [ConflictMode.OVERWRITE, ConflictMode.MERGE])
def test_an_older_export_never_moves_a_replay_counter_back(manager, mode):
    # A counter handed out after the export: importing the export must not hand it out again.
    populate(manager)
    from cardlink_lite import next_counter, set_counter

    set_counter(CARD_A, "kic=01", "B00001", 7, manager=manager)
    old = json.loads(DataExporter(manager).export_all())
    for _ in range(3):
        next_counter(CARD_A, "kic=01", "B00001", manager=manager)
    result = DataImporter(manager).import_data(old, conflict_mode=mode)
    assert result.tables["replay_counters"]["unchanged"] == 1
    assert _counters(manager) == {(CARD_A, "kic=01", "B00001"): 10}
    assert next_counter(CARD_A, "kic=01", "B00001", manager=manager) == 11
    # A file further ahead (another bench used the card since) moves it on.
    old["replay_counters"][0]["counter"] = 40
    result = DataImporter(manager).import_data(old, conflict_mode=mode)
    assert result.tables["replay_counters"]["updated"] == 1
    assert _counters(manager) == {(CARD_A, "kic=01", "B00001"): 40}


def test_imported_counter_keys_follow_the_counter_rules(manager):
    populate(manager)
    from cardlink_lite import next_counter

    next_counter(CARD_A, "kic=01", "B00001", manager=manager)  # counter 1
    doc = {"replay_counters": [
        {"card_iccid": CARD_A, "keyset": "kic=01  ", "tar": "b00001", "counter": 5},
        {"card_iccid": CARD_A, "keyset": " kid=02", "tar": "b00002", "counter": 3}]}
    result = DataImporter(manager).import_data(doc, conflict_mode=ConflictMode.MERGE)
    assert (result.tables["replay_counters"]["updated"],
            result.tables["replay_counters"]["created"]) == (1, 1)
    assert _counters(manager) == {(CARD_A, "kic=01", "B00001"): 5,
                                  (CARD_A, "kid=02", "B00002"): 3}
    assert next_counter(CARD_A, " kic=01 ", "b00001", manager=manager) == 6


@pytest.mark.parametrize("row, problem", [
    ({"counter": 1 << 40}, "replay_counters[0].counter: must be an integer from 0 to "
                           "1099511627775 (5 bytes); got '1099511627776'"),
    ({"counter": -1}, "replay_counters[0].counter: must be an integer from 0 to "
                      "1099511627775 (5 bytes); got '-1'"),
    ({"tar": "B0000G"}, "replay_counters[0].tar: must be 3 bytes as 6 hex digits such as "
                        "'B00001'; got 'B0000G'"),
    ({"keyset": "   "}, "replay_counters[0].keyset: must be text of 1 to 32 characters (e.g. "
                        "'kic=01,kid=01') or a key version number; got '   '"),
])
def test_an_imported_counter_outside_the_rules_is_refused(manager, row, problem):
    populate(manager)
    doc = {"replay_counters": [{"card_iccid": CARD_A, "keyset": "kic=01", "tar": "B00001",
                                "counter": 1, **row}]}
    before = checksums(manager)
    with pytest.raises(ValidationError) as caught:
        DataImporter(manager).import_data(doc)
    assert caught.value.problems == [problem]
    assert checksums(manager) == before


def test_counter_keysets_differing_in_case_export_and_import_again(manager, backend, tmp_path):
    # Counter keys are compared exactly (schema 0007): two rows here, two rows anywhere.
    populate(manager)
    from cardlink_lite import next_counter

    next_counter(CARD_A, "kic=01", "b00001", manager=manager)
    for _ in range(2):
        next_counter(CARD_A, "KIC=01", "B00001", manager=manager)
    exported = DataExporter(manager).export_all()
    before = checksums(manager)
    for mode in ConflictMode:
        result = DataImporter(manager).import_data(exported, conflict_mode=mode)
        assert result.created == result.updated == 0
    assert checksums(manager) == before
    with extra_manager(backend, tmp_path) as other:
        result = DataImporter(other).import_data(exported)
        assert result.tables["replay_counters"]["created"] == 2
        assert _counters(other) == {(CARD_A, "kic=01", "B00001"): 1,
                                    (CARD_A, "KIC=01", "B00001"): 2}


def test_an_export_of_logs_carries_the_trace_sources_they_name(bench_a, bench_b, manager):
    TraceSource.create(id=3, path="unused.dump", format="apdu4j", sha256="d" * 64)
    expected_sources = _sources_of_logs(manager)
    doc = json.loads(DataExporter(manager).export_selective(
        ["devices", "cards", "sessions", "logs"]))
    assert [t["sha256"][0] for t in doc["trace_sources"]] == ["a", "b"]  # not the unused one
    assert list(doc)[-3:-1] == ["trace_sources", "comm_logs"]
    result = DataImporter(bench_b).import_data(doc)
    assert result.notes == []
    assert _sources_of_logs(bench_b) == expected_sources


@pytest.mark.parametrize("dry_run", [True, False])
def test_logs_naming_a_trace_source_the_file_lacks_are_imported_without_one(
        bench_a, bench_b, dry_run):
    # An export of logs alone (written before they carried their sources): ids 1 and 2 are
    # bench A's files; in B, 1 and 2 are other files.
    del bench_a["trace_sources"]
    result = DataImporter(bench_b).import_data(bench_a, dry_run=dry_run)
    assert result.notes == ["4 comm_logs rows name a trace source (source_id) that is not "
                            "among the file's trace_sources; they are imported without one"]
    bench_b.bind()
    if not dry_run:
        assert CommLog.select().count() == 6
        assert CommLog.select().where(CommLog.source_id.is_null(False)).count() == 0


def test_cli_import_mentions_logs_left_without_their_trace_source(bench_a, bench_b, tmp_path):
    del bench_a["trace_sources"]
    path = tmp_path / "logs.json"
    path.write_text(json.dumps(edited(bench_a)))
    result = CliRunner().invoke(cli, ["--database", bench_b.config.url, "import", str(path)])
    assert result.exit_code == 0, result.output
    assert ("  4 comm_logs rows name a trace source (source_id) that is not among the file's "
            "trace_sources; they are imported without one") in result.stderr.splitlines()
