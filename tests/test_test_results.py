"""TestRepository on every backend: results, summaries, comparisons, run lists, JUnit XML."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from cardlink_lite import (
    TestResult,
    TestRun,
    TestStatus,
    UnitOfWork,
    ValidationError,
)
from cardlink_lite.events import EventType
from cardlink_lite.junit import build_junit_xml, xml_safe
from tests.repository_helpers import count_queries

pytest_plugins = ["tests.repository_fixtures"]

XSD = Path(__file__).parent / "data" / "junit-10.xsd"  # copy of shared/testdata
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
NASTY = "assert '<a & b>' == \"c\"\x00\x07\x1b\x0b\ufffe tab\tcr\r nl\n é ✓ 💳 ]]>"


@pytest.fixture(scope="module")
def schema():
    return etree.XMLSchema(etree.parse(str(XSD)))






def _record(repo, run_id, name, status, minute=0, suite="suite_a", **kw):
    kw.setdefault("duration_ms", 1000)
    return repo.create_result(run_id, suite, name, status,
                              started_at=T0 + timedelta(minutes=minute), **kw)


def _parse(xml: str, schema) -> etree._Element:
    root = etree.fromstring(xml.encode("utf-8"))
    assert schema.validate(root), schema.error_log
    return root


# -- creating ---------------------------------------------------------------------
def test_create_result_fills_in_timing_and_emits_after_commit(manager, event_list):
    with UnitOfWork(manager) as uow:
        repo = uow.tests
        both = repo.create_result("r1", "s", "both", TestStatus.PASSED, started_at=T0,
                                  ended_at=T0 + timedelta(seconds=2.5))
        start_dur = repo.create_result("r1", "s", "start_dur", "PASSED", started_at=T0,
                                       duration_ms=750)
        only_dur = repo.create_result("r1", "s", "only_dur", "failed", duration_ms=120.4)
        aware = repo.create_result(
            "r1", "s", "aware", "skipped",
            started_at=datetime(2025, 3, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))),
            ended_at=datetime(2025, 3, 1, 12, 0, 1))  # naive: UTC
        assert event_list == []
    assert both.duration_ms == 2500
    assert start_dur.ended_at == T0 + timedelta(milliseconds=750)
    assert only_dur.duration_ms == 120
    assert only_dur.ended_at - only_dur.started_at == timedelta(milliseconds=120)
    assert (aware.started_at, aware.duration_ms) == (T0, 1000)
    stored = TestResult.get_by_id(start_dur.id)
    assert stored.status is TestStatus.PASSED and stored.ended_at == start_dur.ended_at
    assert [e.event_type for e in event_list] == [EventType.TEST_RESULT_CREATED] * 4
    assert event_list[0].entity_type == "test_result"
    assert event_list[0].data == {"run_id": "r1", "suite_name": "s", "test_name": "both",
                              "status": "passed"}


def test_create_result_refuses_bad_input(manager, event_list):
    with UnitOfWork(manager) as uow:
        repo = uow.tests
        with pytest.raises(ValidationError, match="status must be one of"):
            repo.create_result("r", "s", "t", "exploded")
        with pytest.raises(ValidationError, match="before started_at"):
            repo.create_result("r", "s", "t", "passed", started_at=T0,
                               ended_at=T0 - timedelta(seconds=1))
        with pytest.raises(ValidationError, match="duration_ms"):
            repo.create_result("r", "s", "t", "passed", duration_ms=-5)
        with pytest.raises(ValidationError, match="test_name must be a non-empty"):
            repo.create_result("r", "s", "", "passed")
        with pytest.raises(ValidationError, match="suite_name must not contain NUL"):
            repo.create_result("r", "s\x00", "t", "passed")
        with pytest.raises(ValidationError, match="test_name must be at most 512 characters"):
            repo.create_result("r", "s", "x" * 513, "passed")
        assert repo.count() == 0
    assert event_list == []


def test_durations_beyond_a_32_bit_integer_are_stored(manager):
    with UnitOfWork(manager) as uow:
        month = uow.tests.create_result("r", "s", "soak", "passed", started_at=T0,
                                        duration_ms=30 * 86_400_000)
        big = uow.tests.create_result("r", "s", "big", "passed", duration_ms=2**31)
    with UnitOfWork(manager) as uow:
        assert uow.tests.get_by_id(month.id).duration_ms == 2_592_000_000
        assert uow.tests.get_by_id(month.id).ended_at == T0 + timedelta(days=30)
        assert uow.tests.get_by_id(big.id).duration_ms == 2**31


@pytest.mark.parametrize(("duration", "message"), [
    (2**63, "duration_ms must be a number of milliseconds from 0 to 315,537,897,599,999 "
            "(0001-01-01 to 9999-12-31); got 9223372036854775808"),
    (float("inf"), "duration_ms must be a number of milliseconds from 0 to 315,537,897,599,999 "
                   "(0001-01-01 to 9999-12-31); got inf"),
    (315_537_897_599_999, "duration_ms 315,537,897,599,999 puts the test's start or end "
                          "outside 0001-01-01..9999-12-31"),
])
def test_a_duration_out_of_range_is_one_validation_error(manager, duration, message):
    with UnitOfWork(manager) as uow:
        with pytest.raises(ValidationError) as info:
            uow.tests.create_result("r", "s", "t", "passed", started_at=T0, duration_ms=duration)
        assert str(info.value) == message
        assert uow.tests.count() == 0


def test_find_queries(manager):
    with UnitOfWork(manager) as uow:
        repo = uow.tests
        assert repo.find_by_run("r1") == [] and repo.find_failures() == []
        c = _record(repo, "r1", "c", "passed", minute=2)
        a = _record(repo, "r1", "a", "failed", minute=0)
        b = _record(repo, "r1", "b", "error", minute=1)
        d = _record(repo, "r1", "d", "skipped", minute=3, suite="suite_b")
        e = _record(repo, "r2", "a", "failed", minute=10)

        assert [r.id for r in repo.find_by_run("r1")] == [a.id, b.id, c.id, d.id]
        assert [r.id for r in repo.find_by_suite("suite_a")] == [e.id, c.id, b.id, a.id]
        assert [r.id for r in repo.find_by_suite("suite_a", limit=2)] == [e.id, c.id]
        assert [r.id for r in repo.find_by_status("FAILED")] == [a.id, e.id]
        assert [r.id for r in repo.find_by_status(TestStatus.FAILED, run_id="r2")] == [e.id]
        # Failures are failed and error results.
        assert [r.id for r in repo.find_failures("r1")] == [a.id, b.id]
        assert [r.id for r in repo.find_failures()] == [a.id, b.id, e.id]
        assert repo.find_failures("nope") == []


# -- summaries ---------------------------------------------------------------------
def test_run_summary_is_one_query_with_percent_rates(manager):
    with UnitOfWork(manager) as uow:
        repo = uow.tests
        for i, status in enumerate(["passed"] * 5 + ["failed", "failed", "error", "skipped"]):
            _record(repo, "r1", f"t{i}", status, minute=i, duration_ms=100 * (i + 1))
        _record(repo, "other", "t0", "failed", minute=99)
        with count_queries(manager) as statements:
            summary = repo.get_run_summary("r1")
    assert len(statements) == 1 and "GROUP BY" in statements[0].upper()
    assert {k: summary[k] for k in ("passed", "failed", "skipped", "error", "total")} == {
        "passed": 5, "failed": 2, "skipped": 1, "error": 1, "total": 9}
    assert summary["duration_ms"] == 100 * sum(range(1, 10))
    assert summary["started_at"] == T0
    assert summary["ended_at"] == T0 + timedelta(minutes=8, milliseconds=900)
    assert summary["success_rate"] == summary["pass_rate"] == pytest.approx(500 / 9)
    assert summary["run_id"] == "r1"


def test_run_summary_of_unknown_run_is_zeros(manager):
    with UnitOfWork(manager) as uow:
        summary = uow.tests.get_run_summary("never-ran")
    assert summary == {"run_id": "never-ran", "passed": 0, "failed": 0, "skipped": 0,
                       "error": 0, "total": 0, "duration_ms": 0, "started_at": None,
                       "ended_at": None, "success_rate": 0.0, "pass_rate": 0.0}
    assert f"{summary['success_rate']:.1f}%" == "0.0%"


def test_compare_runs_categories_in_three_queries(manager):
    before = {"stays_green": "passed", "breaks": "passed", "errors_now": "passed",
              "gets_fixed": "failed", "error_fixed": "error", "skip_to_fail": "skipped",
              "still_red": "failed", "dropped": "passed", "flaky_rerun": "failed"}
    after = {"stays_green": "passed", "breaks": "failed", "errors_now": "error",
             "gets_fixed": "passed", "error_fixed": "passed", "skip_to_fail": "failed",
             "still_red": "failed", "brand_new": "failed", "flaky_rerun": "failed"}
    with UnitOfWork(manager) as uow:
        repo = uow.tests
        for i, (name, status) in enumerate(before.items()):
            _record(repo, "run_1", name, status, minute=i)
        for i, (name, status) in enumerate(after.items()):
            _record(repo, "run_2", name, status, minute=100 + i)
        # A rerun later in run_2 passes: the last result of a name counts.
        _record(repo, "run_2", "flaky_rerun", "passed", minute=200)
        with count_queries(manager) as statements:
            diff = repo.compare_runs("run_1", "run_2")
        same = repo.compare_runs("run_1", "run_1")
        none = repo.compare_runs("x", "y")
    # The failed tests' names, their results in both runs, the names only one run has.
    assert len(statements) == 3
    assert diff["regressions"] == diff["new_failures"] == ["breaks", "errors_now"]
    assert diff["improvements"] == diff["fixed"] == ["error_fixed", "flaky_rerun",
                                                     "gets_fixed"]
    assert diff["new_tests"] == ["brand_new"]
    assert diff["removed_tests"] == ["dropped"]
    diff["new_failures"].append("x")
    assert diff["regressions"] == ["breaks", "errors_now"]  # separate lists
    for result in (same, none):
        assert all(result[k] == [] for k in ("regressions", "new_failures", "improvements",
                                             "fixed", "new_tests", "removed_tests"))


def test_a_rerun_in_the_same_millisecond_counts_with_its_last_result(manager):
    # Same started_at, created in one millisecond: the key made later decides.
    with UnitOfWork(manager) as uow:
        repo = uow.tests
        _record(repo, "base", "t", "passed", minute=0)
        for i in range(30):
            for status in ("failed", "passed"):
                repo.create_result(run_id=f"r{i}", suite_name="s", test_name="t",
                                   status=status, started_at=T0)
        wrong = [i for i in range(30) if repo.compare_runs("base", f"r{i}")["new_failures"]]
    assert wrong == []


def test_compare_runs_with_more_failed_tests_than_one_name_list(manager):
    # 1,200 names fail in run_1: their results are read in several IN (...) lists.
    names = [f"t{i:04d}" for i in range(1200)]
    with UnitOfWork(manager) as uow:
        uow.tests.create_all(
            [TestResult(run_id="run_1", suite_name="s", test_name=n, status="failed",
                        started_at=T0) for n in names]
            + [TestResult(run_id="run_2", suite_name="s", test_name=n,
                          status="error" if n == "t0007" else "passed",
                          started_at=T0 + timedelta(hours=1)) for n in names[1:]])
        diff = uow.tests.compare_runs("run_1", "run_2")
    assert diff["fixed"] == names[1:7] + names[8:]
    assert diff["regressions"] == [] and diff["new_tests"] == []
    assert diff["removed_tests"] == ["t0000"]


def test_results_through_the_api_keep_their_run_record(manager):
    with UnitOfWork(manager) as uow:
        repo = uow.tests
        _record(repo, "api-run", "b", "failed", minute=5)
        _record(repo, "api-run", "a", "passed", minute=1, duration_ms=500)
        _record(repo, "api-run", "c", "passed", minute=9, duration_ms=2000)
        _record(repo, "other-run", "a", "error", minute=20)
    with UnitOfWork(manager) as uow:
        run = TestRun.get_by_id("api-run")
        # Nobody said how it ended: "unknown", like the runs recorded before run records.
        assert (run.suite_name, run.ending.value, run.exit_status) == ("suite_a", "unknown",
                                                                      None)
        assert (run.total, run.passed, run.failed, run.skipped, run.error) == (3, 2, 1, 0, 0)
        assert run.started_at == T0 + timedelta(minutes=1)
        assert run.finished_at == T0 + timedelta(minutes=9, seconds=2)
        assert TestRun.get_by_id("other-run").error == 1
        assert uow.tests.finish_run("api-run", "complete", 1, None) == 1
        assert uow.tests.finish_run("no-such-run", "complete", 0) == 0
    run = TestRun.get_by_id("api-run")
    assert (run.ending.value, run.exit_status, run.total, run.failed) == ("complete", 1, 3, 1)
    assert run.finished_at > T0 + timedelta(minutes=9)


def test_flaky_tests_of_results_without_a_run_record(manager):
    # Results inserted through the models (or imported) have no test_runs row: the window
    # then comes from the results, with the same answer as from the records.
    history = [{"x": "passed", "y": "failed"}, {"x": "failed", "y": "failed"},
               {"x": "passed", "y": "failed", "z": "passed"}]
    for n, run in enumerate(history):
        for name, status in run.items():
            TestResult.create(run_id=f"raw_{n}", suite_name="raw", test_name=name,
                              status=status, started_at=T0 + timedelta(hours=n))
    with UnitOfWork(manager) as uow:
        assert TestRun.select().count() == 0
        assert uow.tests.flaky_tests("raw") == ["x"]
        assert uow.tests.flaky_tests("raw", window=1) == []
        for n, run in enumerate(history):
            for name, status in run.items():
                _record(uow.tests, f"api_{n}", name, status, minute=600 + n, suite="api")
        assert uow.tests.flaky_tests("api") == ["x"]
        assert uow.tests.flaky_tests("api", window=1) == []


def test_flaky_window_skips_runs_cut_short(manager):
    with UnitOfWork(manager) as uow:
        repo = uow.tests
        for n in range(6):
            _record(repo, f"run_{n}", "steady", "failed" if n in (2, 4) else "passed",
                    minute=n * 10)
            _record(repo, f"run_{n}", "retried", "passed", minute=n * 10 + 1)
        # A pass at the second attempt (pytest-rerunfailures), in the oldest run only.
        TestResult.update(attempts=2).where(
            (TestResult.run_id == "run_0") & (TestResult.test_name == "retried")).execute()
        assert repo.flaky_tests("suite_a") == ["steady"]  # run_0 is out of the window
        assert repo.flaky_tests("suite_a", window=6) == ["retried", "steady"]
        TestRun.update(ending="interrupted").where(TestRun.id == "run_2").execute()
        TestRun.update(ending="unfinished").where(TestRun.id == "run_4").execute()
        assert repo.flaky_tests("suite_a", window=6) == ["retried"]
        TestRun.update(ending="stopped").where(TestRun.id == "run_4").execute()
        # Five runs that were not cut short reach back to run_0.
        assert repo.flaky_tests("suite_a") == ["retried", "steady"]


def test_list_runs_newest_first_in_one_query(manager):
    with UnitOfWork(manager) as uow:
        repo = uow.tests
        assert repo.list_runs() == []
        for day, statuses in enumerate([["passed", "failed"], ["passed", "passed", "skipped"],
                                        ["error"]]):
            for i, status in enumerate(statuses):
                _record(repo, f"run_{day}", f"t{i}", status, minute=day * 1440 + i,
                        duration_ms=10)
        _record(repo, "run_1", "other_suite_test", "failed", minute=1440 + 30,
                suite="suite_b")
        # A run with a record and no results (nothing selected): listed with its ending.
        TestRun.create(id="empty", suite_name="suite_a", started_at=T0 + timedelta(days=1.5),
                       finished_at=T0 + timedelta(days=1.5, seconds=2), ending="partial",
                       selection="-k nothing", exit_status=5)
        with count_queries(manager) as statements:
            runs = repo.list_runs()
        suite_runs = repo.list_runs(suite_name="suite_b")
        latest = repo.list_runs(limit=1)
        suite_a = [r["run_id"] for r in repo.list_runs(suite_name="suite_a", limit=2)]
    assert len(statements) == 1
    assert [r["run_id"] for r in runs] == ["run_2", "empty", "run_1", "run_0"]
    empty = runs[1]
    assert (empty["ending"], empty["selection"], empty["total"], empty["passed"]) == (
        "partial", "-k nothing", 0, 0)
    assert empty["started_at"] == T0 + timedelta(days=1.5)
    assert empty["ended_at"] == T0 + timedelta(days=1.5, seconds=2)
    assert (empty["suite_name"], empty["success_rate"]) == ("suite_a", 0.0)
    assert suite_a == ["run_2", "empty"]
    runs.pop(1)
    run1 = runs[1]
    assert {k: run1[k] for k in ("passed", "failed", "skipped", "error", "total")} == {
        "passed": 2, "failed": 1, "skipped": 1, "error": 0, "total": 4}
    assert run1["suite_name"] == "suite_a" and run1["suites"] == 2
    assert run1["started_at"] == T0 + timedelta(days=1)
    assert run1["ended_at"] == T0 + timedelta(days=1, minutes=30, seconds=1)
    assert run1["duration_ms"] == 3 * 10 + 1000
    assert run1["success_rate"] == run1["pass_rate"] == 50.0
    assert [(r["run_id"], r["total"], r["failed"]) for r in suite_runs] == [("run_1", 1, 1)]
    assert [r["run_id"] for r in latest] == ["run_2"]


def test_flaky_tests_within_the_window(manager):
    history = [  # oldest run first
        {"steady": "passed", "old_flip": "failed", "recent_flip": "passed", "erratic": "error"},
        {"steady": "passed", "old_flip": "passed", "recent_flip": "passed", "erratic": "passed"},
        {"steady": "passed", "old_flip": "passed", "recent_flip": "passed", "erratic": "error"},
        {"steady": "passed", "old_flip": "passed", "recent_flip": "failed", "erratic": "passed",
         "skips": "skipped"},
        {"steady": "passed", "old_flip": "passed", "recent_flip": "passed", "skips": "failed"},
    ]
    with UnitOfWork(manager) as uow:
        repo = uow.tests
        assert repo.flaky_tests("suite_a") == []
        for n, run in enumerate(history):
            for i, (name, status) in enumerate(run.items()):
                _record(repo, f"run_{n}", name, status, minute=n * 100 + i)
        _record(repo, "run_4", "rerun_in_one_run", "failed", minute=450)
        _record(repo, "run_4", "rerun_in_one_run", "passed", minute=451)
        _record(repo, "other_suite_run", "steady", "failed", minute=999, suite="suite_b")
        with count_queries(manager) as statements:
            last_five = repo.flaky_tests("suite_a", window=5)
        last_three = repo.flaky_tests("suite_a", window=3)
        with pytest.raises(ValidationError, match="window"):
            repo.flaky_tests("suite_a", window=0)
    assert len(statements) == 3  # the window, the tests that failed in it, their passes
    assert last_five == ["erratic", "old_flip", "recent_flip", "rerun_in_one_run"]
    assert last_three == ["erratic", "recent_flip", "rerun_in_one_run"]


# -- JUnit XML ------------------------------------------------------------------------
def test_junit_export_validates_and_carries_messages(manager, schema):
    with UnitOfWork(manager) as uow:
        repo = uow.tests
        _record(repo, "r1", "test_ok", "passed", minute=0, duration_ms=1234)
        _record(repo, "r1", "test_<bad> & \"quoted\"", "failed", minute=1, duration_ms=5,
                error_message=NASTY)
        _record(repo, "r1", "test_crash", "error", minute=2, duration_ms=0,
                error_message="RuntimeError: card removed\nTraceback line")
        _record(repo, "r1", "test_skip", "skipped", minute=3, error_message="no eUICC")
        _record(repo, "r1", "test_💳", "failed", minute=4, suite="suite <b>",
                duration_ms=61_000)
        xml = repo.export_junit_xml("r1")
        empty = repo.export_junit_xml("no-such-run")

    assert xml.isascii()  # non-ASCII goes as character references: any file encoding works
    root = _parse(xml, schema)
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("5", "2", "1")
    assert root.get("time") == "63.239"
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["suite_a", "suite <b>"]
    first = suites[0]
    assert {k: first.get(k) for k in ("tests", "failures", "errors", "skipped", "time")} == {
        "tests": "4", "failures": "1", "errors": "1", "skipped": "1", "time": "2.239"}
    assert first.get("timestamp").startswith("2025-03-01T12:00:00")
    cases = {c.get("name"): c for c in first.iter("testcase")}
    assert cases["test_ok"].get("time") == "1.234" and len(cases["test_ok"]) == 0
    failure = cases["test_<bad> & \"quoted\""].find("failure")
    assert failure.get("message").startswith("assert '<a & b>' == \"c\"\\x00\\x07\\x1b\\x0b")
    assert "é ✓ 💳 ]]>" in failure.text and "\\ufffe" in failure.text
    error = cases["test_crash"].find("error")
    assert error.get("message") == "RuntimeError: card removed"
    assert error.text == "RuntimeError: card removed\nTraceback line"
    assert cases["test_skip"].find("skipped").get("message") == "no eUICC"
    assert suites[1].find("testcase").get("name") == "test_💳"
    assert suites[1].find("testcase").get("time") == "61.000"

    empty_root = _parse(empty, schema)
    assert empty_root.get("tests") == "0" and len(empty_root) == 0


_any_text = st.text(st.characters(codec="utf-8"), max_size=40)


@settings(max_examples=60, deadline=None)
@given(names=st.lists(st.tuples(_any_text, _any_text, _any_text), min_size=1, max_size=4),
       statuses=st.lists(st.sampled_from(list(TestStatus)), min_size=4, max_size=4),
       durations=st.lists(st.none() | st.integers(0, 10**9), min_size=4, max_size=4))
def test_junit_builder_is_valid_for_any_text(schema, names, statuses, durations):
    rows = [SimpleNamespace(suite_name=suite, test_name=test, error_message=message,
                            status=statuses[i], duration_ms=durations[i], started_at=T0)
            for i, (suite, test, message) in enumerate(names)]
    root = _parse(build_junit_xml("run", rows), schema)
    assert sum(int(s.get("tests")) for s in root) == len(rows)


def test_xml_safe_keeps_legal_text():
    assert xml_safe(None) == ""
    assert xml_safe("tab\tnl\ncr\r é 💳") == "tab\tnl\ncr\r é 💳"
    assert xml_safe("a\x00b\x1fc\ud800") == "a\\x00b\\x1fc\\ud800"


def test_names_are_checked_by_their_fields(manager):
    with UnitOfWork(manager) as uow:
        with pytest.raises(ValidationError, match=r"^test_name must not contain NUL"):
            uow.tests.create_result("r1", "s", "a\x00b", TestStatus.PASSED)
        with pytest.raises(ValidationError, match=r"^run_id must be at most 64 "):
            uow.tests.create_result("r" * 65, "s", "t", TestStatus.PASSED)
        with pytest.raises(ValidationError, match=r"^suite_name must be a non-empty string"):
            uow.tests.create_result("r1", "", "t", TestStatus.PASSED)
    assert TestResult.select().count() == 0
