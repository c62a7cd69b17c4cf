"""``cardlink-db runs``: list, show, compare and junit over recorded test runs."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from cardlink_lite.cli import cli
from cardlink_lite.models import TestResult
from cardlink_lite.unit_of_work import UnitOfWork

XSD = Path(__file__).parent / "data" / "junit-10.xsd"  # copy of shared/testdata
T0 = datetime(2024, 11, 29, 10, 0, tzinfo=timezone.utc)


def _record(run_id, statuses, start):
    for i, (name, status) in enumerate(statuses.items()):
        TestResult.create(run_id=run_id, suite_name="integration", test_name=name,
                          status=status, started_at=start + timedelta(seconds=i),
                          ended_at=start + timedelta(seconds=i, milliseconds=250),
                          duration_ms=250,
                          error_message="AssertionError: SW 6A82" if status != "passed"
                          and status != "skipped" else None)


@pytest.fixture
def runs(manager):
    _record("r1", {"t::a": "passed", "t::b": "failed", "t::c": "passed", "t::old": "passed"},
            T0)
    _record("r2", {"t::a": "failed", "t::b": "passed", "t::c": "skipped", "t::new": "error"},
            T0 + timedelta(hours=1))
    return manager


def _run(manager, *args):
    result = CliRunner().invoke(cli, ["--database", manager.config.url, "runs", *args])
    return result


def test_list_shows_runs_newest_first(runs):
    result = _run(runs, "list")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[1].startswith("r2") and lines[2].startswith("r1")
    data = json.loads(_run(runs, "list", "--json", "-n", "1").output)
    assert [r["run_id"] for r in data] == ["r2"]
    assert (data[0]["passed"], data[0]["failed"], data[0]["error"], data[0]["skipped"]) == \
        (1, 1, 1, 1)
    assert json.loads(_run(runs, "list", "--json", "--suite", "nope").output) == []


def test_show_prints_summary_and_failures(runs):
    result = _run(runs, "show", "r2")
    assert result.exit_code == 0, result.output
    assert "run r2: 4 tests, 1 passed, 1 failed, 1 error, 1 skipped (25.0% passed)" in \
        result.output
    assert "FAILED t::a - AssertionError: SW 6A82" in result.output
    assert "ERROR  t::new" in result.output
    assert "t::c" not in result.output
    data = json.loads(_run(runs, "show", "r1", "--json").output)
    assert data["summary"]["total"] == 4
    assert {r["test_name"]: r["status"] for r in data["results"]}["t::b"] == "failed"


def test_unknown_run_is_one_error_line(runs):
    result = _run(runs, "show", "nope")
    assert result.exit_code == 1
    assert result.output.strip() == ("Error: no results recorded for run 'nope'; see the run "
                                     "ids with: cardlink-db runs list")


def test_compare_reports_regressions_and_fixes(runs):
    result = _run(runs, "compare", "r1", "r2")
    assert result.exit_code == 0, result.output
    assert "regressions (passed -> failed/error): 1\n  t::a" in result.output
    assert "fixed (failed/error -> passed): 1\n  t::b" in result.output
    data = json.loads(_run(runs, "compare", "r1", "r2", "--json").output)
    assert data["regressions"] == ["t::a"] and data["fixed"] == ["t::b"]
    assert data["new_tests"] == ["t::new"] and data["removed_tests"] == ["t::old"]
    assert _run(runs, "compare", "r1", "r9").exit_code == 1


def test_junit_to_stdout_and_private_file(runs, tmp_path):
    result = _run(runs, "junit", "r2")
    assert result.exit_code == 0, result.output
    assert 'tests="4"' in result.output and 'failures="1"' in result.output
    out = tmp_path / "results.xml"
    out.write_text("old")
    out.chmod(0o644)
    result = _run(runs, "junit", "r2", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    _validate(out.read_bytes(), tests=4, failures=1, errors=1, skipped=1)


def test_junit_in_a_real_subprocess_validates_against_the_schema(tmp_path):
    url = f"sqlite:///{tmp_path}/runs.db"
    exe = [sys.executable, "-m", "cardlink_lite", "--database", url]
    subprocess.run([*exe, "init"], check=True, capture_output=True)
    from cardlink_lite import init_database

    manager = init_database(url)
    _record("sub", {"x::ok": "passed", "x::bad": "failed", "x::<&>": "skipped"}, T0)
    manager.close()
    out = tmp_path / "junit.xml"
    done = subprocess.run([*exe, "runs", "junit", "sub", "-o", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    _validate(out.read_bytes(), tests=3, failures=1, errors=0, skipped=1)


def _validate(xml: bytes, **counts):
    etree = pytest.importorskip("lxml.etree")
    schema = etree.XMLSchema(etree.parse(str(XSD)))
    doc = etree.fromstring(xml)
    assert schema.validate(doc), schema.error_log
    suite = doc.find("testsuite")
    for key, value in counts.items():
        assert suite.get(key) == str(value), key
    assert len(suite.findall("testcase")) == counts["tests"]


def test_junit_to_a_missing_directory_names_the_users_path_only(runs, tmp_path):
    result = _run(runs, "junit", "r2", "-o", str(tmp_path / "missing" / "x.xml"))
    assert result.exit_code == 2
    error = result.stderr.strip().splitlines()[-1]
    assert error == (f"Error: Invalid value for --output: directory "
                     f"'{tmp_path / 'missing'}' does not exist; create it or choose another path")
    assert ".tmp" not in result.stderr and "Traceback" not in result.output


def test_show_and_logs_show_cross_reference_a_linked_session(runs):
    with UnitOfWork(runs) as uow:
        session = uow.sessions.create_session(session_type="triggered")
    TestResult.create(run_id="r3", suite_name="integration", test_name="t::ota",
                      status="passed", started_at=T0, ended_at=T0, duration_ms=5,
                      session=session.id)
    shown = _run(runs, "show", "r3")
    assert shown.exit_code == 0, shown.output
    assert f"  session {session.id} driven by t::ota" in shown.output
    logs = CliRunner().invoke(cli, ["--database", runs.config.url, "logs", "show", session.id])
    assert logs.exit_code == 0, logs.output
    assert "Driven by test t::ota (run r3)" in logs.output
