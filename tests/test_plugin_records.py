"""The plugin's record of a run: storable texts, rows isolated from their batch, run ids that
differ in case, reused run ids, runs as records and comparisons with comparable runs."""

from __future__ import annotations

import json
import subprocess

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


@pytest.mark.parametrize("dry_run", ["--collect-only", "--setup-plan", "--setup-only"])
def test_runs_that_run_no_test_are_never_the_comparison_baseline(pytester, db_url,
                                                                 monkeypatch, dry_run):
    pytester.makepyfile(test_phases=PHASES)
    args = ("--cardlink-db", db_url, "--cardlink-suite", "ota")
    monkeypatch.setenv("PHASE", "1")
    pytester.runpytest(*args, "--cardlink-run-id", "full-1")
    monkeypatch.setenv("PHASE", "2")
    # Nothing ran: not recorded at all (setup-plan/-only used to store 4 "passed" results).
    dry = pytester.runpytest(*args, "--cardlink-run-id", "dry-2", dry_run)
    assert "recording run" not in dry.stdout.str()
    # A complete run of no tests at all (an empty selection of files) is recorded, but is
    # no baseline either.
    pytester.makepyfile(test_empty="X = 1\n")
    pytester.runpytest(*args, "--cardlink-run-id", "none-3", "test_empty.py")
    full = pytester.runpytest(*args, "--cardlink-run-id", "full-4")
    out = full.stdout.str()
    assert "against run full-1 (the latest comparable run: complete" in out
    assert "1 regression, 1 fixed, 0 new tests" in out
    runs = _runs(db_url)
    assert sorted(runs) == ["full-1", "full-4", "none-3"]
    assert (runs["none-3"]["ending"], runs["none-3"]["total"]) == ("complete", 0)
    assert not any(row["run_id"] == "dry-2" for row in _rows(db_url).values())


ENDINGS = """
import os
import pytest

def test_first():
    pass

def test_second():
    if os.environ.get("HOW") == "ctrl-c":
        raise KeyboardInterrupt  # what Ctrl-C raises in the test that is running
    if os.environ.get("HOW") == "exit":
        pytest.exit("bye")
    assert os.environ.get("HOW") not in ("-x", "--maxfail", "xdist -x")

def test_third():
    assert os.environ.get("HOW") != "--maxfail"

def test_fourth():
    pass
"""


@pytest.mark.parametrize("how, ending, status", [
    ("ctrl-c", "interrupted", 2), ("-x", "stopped", 1), ("--maxfail", "stopped", 1),
    ("xdist -x", "stopped", 2), ("exit", "stopped", 2), ("collect", "collection-errors", 2),
    ("none", "complete", 0)])
def test_how_a_run_ended_is_recorded(pytester, db_url, monkeypatch, how, ending, status):
    pytester.makepyfile(test_a=ENDINGS)
    if how == "collect":
        pytester.makepyfile(test_b="this is not python\n")
    monkeypatch.setenv("HOW", how)
    extra = {"-x": ["-x"], "--maxfail": ["--maxfail", "2"], "xdist -x": ["-x", "-n", "2"]}
    # no_reraise_ctrlc: pytester would raise the inner run's KeyboardInterrupt again.
    result = pytester.runpytest("--cardlink-db", db_url, "--cardlink-run-id", "r",
                                "-p", "no:randomly", *extra.get(how, []),
                                no_reraise_ctrlc=True)
    assert result.ret == status
    run = _runs(db_url)["r"]
    assert (run["ending"], run["exit_status"]) == (ending, status)
    assert run["finished_at"] is not None
    if how in ("ctrl-c", "-x", "--maxfail", "exit"):  # nothing after the stop ran
        assert run["total"] < 4 and "test_a.py::test_fourth" not in _rows(db_url)
    if ending != "complete":
        assert f"this run is {ending}: compared only on the tests it ran" in \
            result.stdout.str()


CUT_SHORT = """
import os

def test_steady():
    assert os.environ.get("PHASE") != "cut", "fails only in the run Ctrl-C cuts short"

def test_cut():
    if os.environ.get("PHASE") == "cut":
        raise KeyboardInterrupt
"""


def test_the_flaky_window_skips_interrupted_runs(pytester, db_url, monkeypatch):
    pytester.makepyfile(test_cut=CUT_SHORT)
    args = ("--cardlink-db", db_url, "--cardlink-suite", "s", "-p", "no:randomly")
    monkeypatch.setenv("PHASE", "whole")
    pytester.runpytest(*args, "--cardlink-run-id", "before")
    monkeypatch.setenv("PHASE", "cut")
    cut = pytester.runpytest(*args, "--cardlink-run-id", "cut", no_reraise_ctrlc=True)
    assert cut.ret == pytest.ExitCode.INTERRUPTED
    monkeypatch.setenv("PHASE", "whole")
    after = pytester.runpytest(*args, "--cardlink-run-id", "after")
    out = after.stdout.str()
    assert _runs(db_url)["cut"]["ending"] == "interrupted"
    # test_steady failed in the interrupted run only: neither flaky nor compared with it.
    assert "against run before (the latest comparable run: complete" in out
    assert "flaky candidates" not in out and "FLAKY" not in out
    # The same failure in a run that finished makes it a flaky candidate.
    monkeypatch.setenv("PHASE", "cut")
    pytester.makepyfile(test_cut=CUT_SHORT.replace("raise KeyboardInterrupt", "pass"))
    finished = pytester.runpytest(*args, "--cardlink-run-id", "finished")
    assert "FLAKY test_cut.py::test_steady" in finished.stdout.str()


RERUN = """
from pathlib import Path

def test_passes_on_rerun():
    marker = Path(__file__).with_name("attempted")
    if not marker.exists():
        marker.write_text("1")
        assert False, "first attempt fails"

def test_always_passes():
    pass
"""


def test_a_pass_only_on_rerun_counts_as_flaky(pytester, db_url):
    pytester.makepyfile(test_rerun=RERUN)
    result = pytester.runpytest("--cardlink-db", db_url, "--cardlink-run-id", "once",
                                "-p", "rerunfailures", "--reruns", "2", "-p", "no:randomly")
    assert result.parseoutcomes()["rerun"] == 1
    row = _rows(db_url)["test_rerun.py::test_passes_on_rerun"]
    assert (str(row["status"]), row["attempts"], row["metadata"]["attempts"]) == \
        ("passed", 2, 2)
    out = result.stdout.str()
    assert "flaky candidates (status flipped in the last 5 runs): 1" in out
    assert "FLAKY test_rerun.py::test_passes_on_rerun" in out
    assert "FLAKY test_rerun.py::test_always_passes" not in out


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


LISTED = """
import os

def test_one():
    pass

def test_two():
    if os.environ.get("HOW") == "ctrl-c":
        raise KeyboardInterrupt
    assert os.environ.get("HOW") != "-x"

def test_three():
    pass
"""


def test_runs_list_shows_how_runs_ended_and_show_their_context(pytester, db_url,
                                                              monkeypatch):
    from click.testing import CliRunner

    from cardlink_lite.cli import cli

    pytester.makepyfile(test_listed=LISTED)
    git = ["git", "-c", "user.email=lab@example.org", "-c", "user.name=Lab"]
    for args in (["init", "-q", "-b", "bench-branch"], ["add", "."],
                 ["commit", "-q", "-m", "suite"]):
        subprocess.run([*git, *args], cwd=pytester.path, check=True, capture_output=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=pytester.path, check=True,
                            capture_output=True, text=True).stdout.strip()
    store = ("--cardlink-db", db_url, "-p", "no:randomly")
    for run_id, how, extra in (("whole", "none", ["--cardlink-label", "bench=b2", "-n", "2"]),
                               ("some", "none", ["-k", "three"]),
                               ("cut", "ctrl-c", []), ("stopped", "-x", ["-x"]),
                               ("none", "none", ["-k", "nothing_matches"])):
        monkeypatch.setenv("HOW", how)
        pytester.runpytest(*store, "--cardlink-run-id", run_id, *extra, no_reraise_ctrlc=True)
    runner = CliRunner()
    listing = runner.invoke(cli, ["--database", db_url, "runs", "list"])
    assert listing.exit_code == 0, listing.output
    lines = {line.split()[0]: line.split() for line in listing.output.splitlines()[1:]}
    assert {run: lines[run][4] for run in lines} == {
        "whole": "complete", "some": "partial", "cut": "interrupted", "stopped": "stopped",
        "none": "partial"}
    assert lines["none"][5] == "0"  # a run that recorded no result is listed too
    as_json = runner.invoke(cli, ["--database", db_url, "runs", "list", "--json"])
    assert {r["run_id"]: r["ending"] for r in json.loads(as_json.output)}["cut"] == \
        "interrupted"
    shown = runner.invoke(cli, ["--database", db_url, "runs", "show", "some"]).output
    assert "ended: partial (-k three), exit status 0" in shown
    shown = runner.invoke(cli, ["--database", db_url, "runs", "show", "cut"]).output
    assert "ended: interrupted, exit status 2" in shown
    shown = runner.invoke(cli, ["--database", db_url, "runs", "show", "stopped"]).output
    assert "ended: stopped, exit status 1" in shown
    shown = runner.invoke(cli, ["--database", db_url, "runs", "show", "none"])
    assert shown.exit_code == 0, shown.output
    assert "run none: 0 tests" in shown.output
    assert "ended: partial (-k nothing_matches), exit status 5" in shown.output
    missing = runner.invoke(cli, ["--database", db_url, "runs", "show", "no-such-run"])
    assert missing.exit_code == 1 and "no results recorded for run 'no-such-run'" in \
        missing.output
    shown = runner.invoke(cli, ["--database", db_url, "runs", "show", "whole"]).output
    assert "ended: complete, exit status 0" in shown
    assert "labels: bench=b2" in shown
    context = next(line for line in shown.splitlines() if line.startswith("  context: "))
    assert "host=" in context and "pytest=" in context and "python=" in context
    assert f"git_commit={commit}" in context and "git_branch=bench-branch" in context
    assert "xdist_workers=2" in context


@pytest.mark.parametrize("output, facts", [
    ("0123abc\nmain\n", {"git_commit": "0123abc", "git_branch": "main"}),
    ("", {}),
    ("0123abc\n", {}),
    ("0123abc\nmain\nwarning: odd\n", {}),
])
def test_git_facts_only_from_the_expected_output_never_an_error(monkeypatch, tmp_path,
                                                                 output, facts):
    from types import SimpleNamespace

    from cardlink_lite import pytest_recorder

    done = subprocess.CompletedProcess(["git"], 0, stdout=output, stderr="")
    monkeypatch.setattr(pytest_recorder.subprocess, "run", lambda *args, **kwargs: done)
    config = SimpleNamespace(option=SimpleNamespace(), rootpath=tmp_path)
    context = pytest_recorder._context(config)
    assert {k: v for k, v in context.items() if k.startswith("git_")} == facts
    assert "host" in context and "python" in context
