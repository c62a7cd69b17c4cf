"""The check scripts exit non-zero when they measured nothing or missed a target."""

import importlib.util
import json
from pathlib import Path

import pytest

_SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, _SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("results,code", [
    ([], 1),
    ([{"bench": "insert", "ok": True}, {"bench": "read", "ok": False}], 1),
    ([{"bench": "insert", "ok": True}, {"bench": "read"}], 1),
    ([{"bench": "insert", "ok": True}, {"bench": "read", "ok": True}], 0),
])
def test_bench_apdu_exit_code(results, code):
    assert _load("bench_apdu").exit_code(results) == code


def test_kill_loop_that_acknowledged_no_flush_fails(tmp_path):
    # Killed at once: the child cannot even have imported the library, let alone flushed.
    report = _load("kill_loop").kill_loop(str(tmp_path / "k.db"), kills=2, batch=10,
                                          min_s=0, max_s=0, wait_for_flush=False)
    assert report["acknowledged_flushes"] == 0
    assert report["problems"] == [
        "no flush was acknowledged in 2 kills, so nothing was checked; the logging "
        "process was killed or died before its first flush"]


@pytest.mark.parametrize("results,code", [
    ([], 1),
    ([{"bench": "cardlink-db --version", "ok": True},
      {"bench": "cardlink-db --help", "ok": False}], 1),
    ([{"bench": "cardlink-db --version", "ok": True},
      {"bench": "cardlink-db --help", "ok": True}], 0),
])
def test_bench_startup_exit_code(results, code):
    assert _load("bench_startup").exit_code(results) == code


def test_bench_psk_lookup_small_run_passes(monkeypatch, capsys):
    assert _load("bench_psk_lookup").main(["--cards", "20", "--lookups", "20"]) == 0
    assert "OK: p50 <= 1.0 ms" in capsys.readouterr().out


def test_bench_search_hex_small_run_finds_every_install(capsys):
    # A small run checks the answers and that both sides were measured; its timing verdict
    # on 4,000 rows under a loaded CI machine says nothing, so only that may be a problem.
    code = _load("bench_search_hex").main(["--rows", "4000", "--repeat", "1"])
    line = json.loads(capsys.readouterr().out)
    assert line["install_rows"] == 400
    assert line["one_session_ms"] > 0 and line["header_search_ms"] > 0
    assert [p for p in line["problems"] if "target" not in p] == []
    assert code == (1 if line["problems"] else 0)


def test_bench_run_summary_small_run_answers_right(db_url, capsys):
    assert _load("bench_run_summary").main(["--runs", "6", "--tests", "50", "--repeat", "1",
                                            "--url", db_url]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["ok"] is True and line["problems"] == []
    assert line["backend"] == db_url.split(":", 1)[0]


@pytest.mark.parametrize("hook_ms,code", [
    (None, 1), (0.0, 1),   # nothing measured
    (0.12, 0), (0.2, 0),   # within issue 14's 0.2 ms per test (the ratios are not gated)
    (0.21, 1),
])
def test_bench_plugin_gates_on_the_time_per_test(hook_ms, code):
    assert _load("bench_plugin").exit_code(hook_ms) == code


@pytest.mark.parametrize("results,code", [
    ([], 1),
    ([{"read": "a", "mode": "per_call", "target_max_ratio": None, "ok": True}], 1),
    ([{"read": "a", "mode": "in_uow", "target_max_ratio": 2.0, "ok": True},
      {"read": "a", "mode": "per_call", "target_max_ratio": None, "ok": False}], 1),
    ([{"read": "a", "mode": "in_uow", "target_max_ratio": 2.0, "ok": False}], 1),
    ([{"read": "a", "mode": "in_uow", "target_max_ratio": 2.0, "ok": True},
      {"read": "a", "mode": "per_call", "target_max_ratio": None, "ok": True}], 0),
])
def test_bench_reads_exit_code(results, code):
    assert _load("bench_reads").exit_code(results) == code


def test_bench_reads_small_run_measures_every_read_against_the_same_answer(db_url, capsys):
    code = _load("bench_reads").main(["--url", db_url, "--repeat", "2"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    reads = {line["read"] for line in lines}
    assert {"sessions.get_statistics(days=30)", "tests.get_run_summary", "logs.find_errors",
            "devices.paginate(page=1, per_page=20)", "devices.get_by_id",
            "settings.get_value", "logs.find_by_session (200 rows, models)"} <= reads
    assert {line["mode"] for line in lines} == {"in_uow", "per_call"}
    assert all(line["target_max_ratio"] for line in lines
               if line["mode"] == "in_uow" and "session_query" not in line["read"])
    for line in lines:  # every read measured, its answer equal to the raw one's
        assert line["raw_us"] > 0 and line["cardlink_us"] > 0, line
        assert "differs" not in line.get("problem", ""), line
    assert code == (0 if all(line["ok"] for line in lines) else 1)


@pytest.mark.parametrize("results,code", [
    ([], 1),
    ([{"bench": "export", "ok": True}, {"bench": "import", "ok": False}], 1),
    ([{"bench": "export", "ok": True}, {"bench": "import", "problem": "nothing"}], 1),
    ([{"bench": "export", "ok": True}, {"bench": "import", "ok": True}], 0),
])
def test_bench_transfer_exit_code(results, code):
    assert _load("bench_transfer").exit_code(results) == code


def test_bench_transfer_small_run_measures_export_and_import(capsys):
    _load("bench_transfer").main(["--rows", "2000"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["bench"] for line in lines] == ["export", "import"]
    for line in lines:
        assert line["rows"] == 2000 and line["ratio"] > 0 and line["runs"] == 1
        assert "cardlink_lite_rss_growth_mb" in line and isinstance(line["ok"], bool)


def test_bench_apdu_small_run_measures_every_ingest_path(backend, capsys):
    code = _load("bench_apdu").main(["--rows", "2000", "--server-rows", "2000", "--rounds", "1",
                                     "--only", "insert", "--backends", backend])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["bench"].split(": ", 1)[1] for line in lines] == [
        "writer (ApduLogWriter.add)", "guide (add_log_batch + flush_batch)"]
    for line in lines:  # both wrote the raw side's rows, and were timed
        assert "problem" not in line and line["cardlink_rows_per_s"] > 0, line
    assert code == (0 if all(line["ok"] for line in lines) else 1)


class _FakeTarget:
    backend = "sqlite"

    def __init__(self, writer_rows):
        self.writer_rows = writer_rows

    def run(self, side, n):
        rows = self.writer_rows if side == "writer" else n
        return (1.0 if side == "raw" else 0.5, 1.0 if side == "raw" else 0.5), (rows, 7)


def test_bench_apdu_fails_a_path_that_left_other_rows():
    bench = _load("bench_apdu")
    writer, guide = bench.bench_insert(_FakeTarget(writer_rows=99), 100, 3, "cpu")
    assert writer["ok"] is False and "rows differ" in writer["problem"]
    assert guide["ok"] is True and guide["cpu_ratio"] == 2.0
