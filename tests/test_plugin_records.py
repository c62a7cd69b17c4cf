"""The plugin's record of a run: storable texts, rows isolated from their batch, run ids that
differ in case, reused run ids, runs as records and comparisons with comparable runs."""

from __future__ import annotations

import pytest

from cardlink_lite import DatabaseConfig, DatabaseManager
from cardlink_lite.models import TestResult, TestRun
from cardlink_lite.pytest_recorder import storable

BAD_TEXT = r'''
import os
import pytest

@pytest.mark.parametrize("n", range(40))
def test_plain(n):
    pass

def test_surrogate():
    name = os.fsdecode(b"card-\xff.bin")   # a lone surrogate, as for a non-UTF-8 file name
    assert False, f"cannot open {name}"

def test_nul():
    assert False, "decoded data: 90\x0000"

def test_long_traceback():
    def deep(n):
        if n == 0:
            raise ValueError("the real cause at the bottom")
        return deep(n - 1)
    deep(400)

@pytest.mark.parametrize("name", ["a\udcffb", "nul\x00id"])
def test_odd_ids(name):
    pass
'''


def _rows(url: str) -> dict[str, dict]:
    manager = DatabaseManager(DatabaseConfig(url))
    manager.initialize(check_schema=False)
    try:
        rows = list(TestResult.select().dicts().execute(manager.database))
    finally:
        manager.close()
    return {row["test_name"]: row for row in rows}


def _runs(url: str) -> dict[str, dict]:
    manager = DatabaseManager(DatabaseConfig(url))
    manager.initialize(check_schema=False)
    try:
        runs = {r["id"]: r for r in TestRun.select().dicts().execute(manager.database)}
    finally:
        manager.close()
    for run in runs.values():
        run["ending"] = str(run["ending"])
    return runs



def test_storable_replaces_nul_and_surrogates_and_cuts_visibly():
    assert storable("a\x00b\udcffc") == "a\\x00b\\udcffc"
    assert storable("x" * 10, 5) == "xxxx…"
    cut = storable("HEAD" + "m" * 5000 + "E   ValueError: end", 1000, keep_end=True)
    assert len(cut) == 1000 and cut.startswith("HEAD") and cut.endswith("E   ValueError: end")
    assert "characters cut" in cut
    assert storable(None) is None


def test_one_bad_text_never_drops_its_batch(pytester, db_url):
    pytester.makepyfile(test_bad=BAD_TEXT)
    result = pytester.runpytest("--cardlink-db", db_url, "--cardlink-run-id", "bad-text",
                                "-p", "no:randomly")
    result.assert_outcomes(passed=42, failed=3)
    out = result.stdout.str()
    assert "not recorded" not in out
    rows = _rows(db_url)
    assert len(rows) == 45
    assert rows["test_bad.py::test_surrogate"]["error_message"].startswith(
        "AssertionError: cannot open card-\\udcff.bin")
    assert "90\\x0000" in rows["test_bad.py::test_nul"]["error_message"]
    longrepr = rows["test_bad.py::test_long_traceback"]["metadata"]["longrepr"]
    assert "characters cut" in longrepr
    assert "E           ValueError: the real cause at the bottom" in longrepr[-400:]
    assert {n for n in rows if "odd_ids" in n} == {
        "test_bad.py::test_odd_ids[a\\udcffb]", "test_bad.py::test_odd_ids[nul\\x00id]"}


PHASES = """
import os

def test_stable():
    pass

def test_goes_bad():
    assert os.environ.get("PHASE") != "2"

def test_gets_fixed():
    assert os.environ.get("PHASE") == "2"

def test_other():
    pass
"""


def test_partial_run_never_poisons_the_next_comparison(pytester, db_url, monkeypatch):
    pytester.makepyfile(test_phases=PHASES)
    args = ("--cardlink-db", db_url, "--cardlink-suite", "ota")
    monkeypatch.setenv("PHASE", "1")
    pytester.runpytest(*args, "--cardlink-run-id", "full-1")
    partial = pytester.runpytest(*args, "--cardlink-run-id", "part-2", "-k", "stable")
    assert "this run is partial" in partial.stdout.str()
    monkeypatch.setenv("PHASE", "2")
    full = pytester.runpytest(*args, "--cardlink-run-id", "full-3")
    out = full.stdout.str()
    assert "against run full-1 (the latest comparable run: complete" in out
    assert "1 regression, 1 fixed, 0 new tests" in out
    runs = _runs(db_url)
    assert runs["part-2"]["ending"] == "partial" and runs["part-2"]["selection"] == "-k stable"
    assert runs["full-1"]["ending"] == "complete" and runs["full-1"]["exit_status"] == 1
    assert (runs["full-3"]["total"], runs["full-3"]["passed"], runs["full-3"]["failed"]) == \
        (4, 3, 1)
    assert runs["full-3"]["exit_status"] == 1 and runs["full-3"]["finished_at"] is not None
    context = runs["full-3"]["context"]
    assert {"host", "python", "pytest"} <= set(context)


@pytest.mark.parametrize("how, ending", [("-x", "stopped"), ("exit", "stopped"),
                                         ("collect", "collection-errors")])
def test_how_a_run_ended_is_recorded(pytester, store_url, how, ending):
    pytester.makepyfile(test_a=PHASES.replace('!= "2"', '== "never"'))
    if how == "exit":
        pytester.makepyfile(test_b="import pytest\n\ndef test_stop():\n    pytest.exit('bye')\n")
    if how == "collect":
        pytester.makepyfile(test_b="this is not python\n")
    extra = ["-x"] if how == "-x" else []
    pytester.runpytest("--cardlink-db", store_url, "--cardlink-run-id", "r", *extra)
    assert _runs(store_url)["r"]["ending"] == ending


def test_reused_run_id_is_refused_unless_appending(pytester, db_url):
    pytester.makepyfile(test_one="def test_one():\n    pass\n")
    args = ("--cardlink-db", db_url, "--cardlink-run-id", "Nightly-7")
    assert pytester.runpytest(*args).ret == 0
    again = pytester.runpytest(*args)
    assert again.ret == pytest.ExitCode.USAGE_ERROR
    assert "run id 'Nightly-7' is recorded already; pass --cardlink-append" in \
        again.stderr.str()
    assert pytester.runpytest(*args, "--cardlink-append").ret == 0
    # A run id differing only in case is another run, on every backend.
    assert pytester.runpytest("--cardlink-db", db_url, "--cardlink-run-id", "nightly-7").ret \
        == 0
    runs = _runs(db_url)
    assert sorted(runs) == ["Nightly-7", "nightly-7"]
    assert runs["Nightly-7"]["total"] == 2 and runs["nightly-7"]["total"] == 1


def test_labels_are_kept_with_the_run(pytester, store_url):
    pytester.makepyfile(test_one="def test_one():\n    pass\n")
    pytester.runpytest("--cardlink-db", store_url, "--cardlink-run-id", "lab",
                       "--cardlink-device", "RF8", "--cardlink-firmware", "1.2.3",
                       "--cardlink-label", "bench=b2", "--cardlink-label", "site=Lab A")
    assert _runs(store_url)["lab"]["labels"] == {
        "device": "RF8", "firmware": "1.2.3", "bench": "b2", "site": "Lab A"}


@pytest.fixture
def store_url(tmp_path):
    return f"sqlite:///{tmp_path}/runs.db"


def test_runs_list_shows_how_runs_ended_and_show_their_context(pytester, store_url):
    from click.testing import CliRunner

    from cardlink_lite.cli import cli

    pytester.makepyfile(test_phases=PHASES)
    pytester.runpytest("--cardlink-db", store_url, "--cardlink-run-id", "whole",
                       "--cardlink-label", "bench=b2")
    pytester.runpytest("--cardlink-db", store_url, "--cardlink-run-id", "some", "-k", "other")
    runner = CliRunner()
    listing = runner.invoke(cli, ["--database", store_url, "runs", "list"])
    assert listing.exit_code == 0, listing.output
    lines = {line.split()[0]: line for line in listing.output.splitlines()[1:]}
    assert " partial " in lines["some"] and " complete " in lines["whole"]
    shown = runner.invoke(cli, ["--database", store_url, "runs", "show", "some"])
    assert "ended: partial (-k other), exit status 0" in shown.output
    assert "context: host=" in shown.output and "pytest=" in shown.output
    shown = runner.invoke(cli, ["--database", store_url, "runs", "show", "whole"])
    assert "labels: bench=b2" in shown.output
