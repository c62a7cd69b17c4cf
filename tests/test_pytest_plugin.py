"""The pytest plugin, end to end with pytester: outcomes, xdist, reruns, summary, failures."""

from __future__ import annotations

import sqlite3

import pytest

from cardlink_lite import DatabaseConfig, DatabaseManager
from cardlink_lite.models import Device, TestResult, TestStatus

OUTCOMES = """
import pytest

def test_pass():
    pass

def test_fail():
    assert 1 == 2, "values differ"

@pytest.fixture
def broken_setup():
    raise RuntimeError("no reader attached")

def test_setup_error(broken_setup):
    pass

@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("reader did not close")

def test_teardown_error(broken_teardown):
    pass

@pytest.mark.skip(reason="needs a card")
def test_skip():
    pass

def test_skip_inside():
    pytest.skip("no SIM today")

@pytest.mark.xfail(reason="firmware bug 12")
def test_xfail():
    assert False

@pytest.mark.xfail(reason="fixed?")
def test_xpass():
    pass

@pytest.mark.xfail(reason="must fail", strict=True)
def test_xpass_strict():
    pass
"""


def _read(url: str) -> dict[str, dict]:
    """The recorded results of ``url`` by test name."""
    manager = DatabaseManager(DatabaseConfig(url))
    manager.initialize(check_schema=False)
    try:
        rows = list(TestResult.select().dicts().execute(manager.database))
    finally:
        manager.close()
    out = {}
    for row in rows:
        assert row["test_name"] not in out, f"{row['test_name']} recorded twice"
        out[row["test_name"]] = row
    return out


@pytest.fixture
def store(tmp_path):
    return f"sqlite:///{tmp_path}/results.db"


def test_plugin_is_installed_and_disabled_by_default(pytester, tmp_path):
    pytester.makepyfile("def test_one():\n    pass\n")
    help_text = pytester.runpytest("--help").stdout.str()
    assert "cardlink" in help_text and "--cardlink-db=URL" in help_text
    assert "--cardlink-flaky-window" in help_text
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    out = result.stdout.str()
    assert "plugins: cardlink-lite" in out  # loaded through the pytest11 entry point
    assert "recording run" not in out and "- cardlink -" not in out
    assert result.ret == 0
    assert not list(pytester.path.glob("*.db"))


def test_each_outcome_maps_to_one_status(pytester, store):
    pytester.makepyfile(test_outcomes=OUTCOMES)
    result = pytester.runpytest("--cardlink-db", store, "--cardlink-run-id", "run-outcomes",
                                "--cardlink-suite", "lab")
    result.assert_outcomes(passed=2, failed=2, skipped=2, xfailed=1, xpassed=1, errors=2)
    out = result.stdout.str()
    assert "cardlink: recording run run-outcomes (suite 'lab')" in out  # at the start
    assert "run run-outcomes (suite 'lab'): 2 passed, 2 failed, 3 skipped, 2 error" in out

    rows = _read(store)
    status = {name.split("::")[1]: row["status"] for name, row in rows.items()}
    assert status == {
        "test_pass": TestStatus.PASSED,
        "test_fail": TestStatus.FAILED,
        "test_setup_error": TestStatus.ERROR,
        "test_teardown_error": TestStatus.ERROR,
        "test_skip": TestStatus.SKIPPED,
        "test_skip_inside": TestStatus.SKIPPED,
        "test_xfail": TestStatus.SKIPPED,
        "test_xpass": TestStatus.PASSED,
        "test_xpass_strict": TestStatus.FAILED,
    }
    by = {name.split("::")[1]: row for name, row in rows.items()}
    assert all(r["run_id"] == "run-outcomes" and r["suite_name"] == "lab" for r in rows.values())
    assert set(rows) == {f"test_outcomes.py::{n}" for n in status}

    fail = by["test_fail"]
    assert fail["error_message"].startswith("AssertionError: values differ")
    assert "\n" not in fail["error_message"]
    assert "assert 1 == 2" in fail["metadata"]["longrepr"]
    assert by["test_setup_error"]["error_message"] == "RuntimeError: no reader attached"
    assert by["test_setup_error"]["metadata"]["outcome"] == "error in setup"
    assert by["test_teardown_error"]["error_message"] == "RuntimeError: reader did not close"
    assert by["test_teardown_error"]["metadata"]["outcome"] == "error in teardown"
    assert by["test_skip"]["error_message"] == "needs a card"
    assert by["test_skip_inside"]["error_message"] == "no SIM today"
    assert by["test_xfail"]["error_message"] == "xfail: firmware bug 12"
    assert by["test_xfail"]["metadata"]["outcome"] == "xfail"
    assert by["test_xpass"]["metadata"]["outcome"] == "xpass"
    assert "XPASS(strict)" in by["test_xpass_strict"]["error_message"]
    assert by["test_pass"]["error_message"] is None
    for row in rows.values():
        assert row["started_at"] <= row["ended_at"]
        assert row["started_at"].tzinfo is not None
        assert row["duration_ms"] >= 0
        assert row["metadata"]["runner"] == "pytest"


@pytest.mark.parametrize("how", ["ini", "env"])
def test_enabled_by_ini_option_or_environment(pytester, store, monkeypatch, how):
    pytester.makepyfile("def test_one():\n    pass\n")
    if how == "ini":
        pytester.makeini(f"[pytest]\ncardlink_db = {store}\n")
    else:
        monkeypatch.setenv("CARDLINK_PYTEST_DB", store)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    rows = _read(store)
    assert list(rows) == ["test_enabled_by_ini_option_or_environment.py::test_one"]
    # the default suite is the rootdir's name, the default run id a UUID
    (row,) = rows.values()
    assert row["suite_name"] == pytester.path.name
    assert len(row["run_id"]) == 36 and row["run_id"] in result.stdout.str()


def test_subtests_are_counted_and_fail_the_parent(pytester, store):
    pytester.makepyfile("""
        def test_channels(subtests):
            for i in range(4):
                with subtests.test(channel=i):
                    assert i != 2, "channel 2 closed"

        def test_all_good(subtests):
            for i in range(2):
                with subtests.test(channel=i):
                    pass
    """)
    result = pytester.runpytest("--cardlink-db", store)
    assert result.ret == 1
    rows = _read(store)
    assert len(rows) == 2
    bad = rows["test_subtests_are_counted_and_fail_the_parent.py::test_channels"]
    good = rows["test_subtests_are_counted_and_fail_the_parent.py::test_all_good"]
    assert bad["status"] == TestStatus.FAILED
    assert bad["metadata"]["subtests"] == {"total": 4, "passed": 3, "failed": 1}
    assert good["status"] == TestStatus.PASSED
    assert good["metadata"]["subtests"] == {"total": 2, "passed": 2}


def test_markers_and_options_set_device_and_card(pytester, store):
    manager = DatabaseManager(DatabaseConfig(store))
    manager.initialize(check_schema=False)
    manager.create_tables()
    Device.insert(id="RF8M33", device_type="phone").execute(manager.database)
    manager.close()
    pytester.makepyfile("""
        import pytest

        def test_whole_run():
            pass

        @pytest.mark.cardlink(device="RF8M33")
        def test_marked_device():
            pass

        @pytest.mark.cardlink(card="8901999")
        class TestCard:
            def test_in_class(self):
                pass
    """)
    result = pytester.runpytest("--cardlink-db", store, "--cardlink-device", "BENCH-1",
                                "--cardlink-card", "8901000")
    result.assert_outcomes(passed=3)
    rows = {k.rsplit("::", 1)[1]: v for k, v in _read(store).items()}
    # A device in the store is linked; an unknown one is kept in metadata only.
    assert rows["test_marked_device"]["device"] == "RF8M33"
    assert rows["test_marked_device"]["metadata"]["card_iccid"] == "8901000"
    assert rows["test_whole_run"]["device"] is None
    assert rows["test_whole_run"]["metadata"]["device_id"] == "BENCH-1"
    assert rows["test_in_class"]["metadata"]["card_iccid"] == "8901999"
    assert rows["test_in_class"]["metadata"]["device_id"] == "BENCH-1"
    assert "device 'BENCH-1' is not in the store" in result.stdout.str()


@pytest.mark.parametrize("workers", [[], ["-n", "2"]])
def test_unknown_marker_key_is_a_usage_error(pytester, store, workers):
    pytester.makepyfile("""
        import pytest

        @pytest.mark.cardlink(device="X", slot=2)
        def test_bad():
            pass
    """)
    result = pytester.runpytest("--cardlink-db", store, *workers)
    # in-process a usage error; an xdist worker reports it as a collection error instead
    assert result.ret == (pytest.ExitCode.TESTS_FAILED if workers else pytest.ExitCode.USAGE_ERROR)
    text = result.stdout.str() + result.stderr.str()
    assert "@pytest.mark.cardlink takes only device=... and card=..., not slot" in text
    assert "INTERNALERROR" not in text


def test_result_fixture_adds_assertions_and_metadata(pytester, store):
    pytester.makepyfile("""
        import pytest

        def test_download(cardlink_result):
            cardlink_result.add_assertion("connected", True)
            cardlink_result.add_assertion("apdu_count", 15)
            cardlink_result.add_metadata(env="staging")
            cardlink_result.metadata["profile"] = "p1"

        def test_not_json(cardlink_result):
            with pytest.raises(TypeError, match="must be JSON-serialisable"):
                cardlink_result.add_metadata(handle=object())
    """)
    result = pytester.runpytest("--cardlink-db", store, "-n", "2")
    result.assert_outcomes(passed=2)
    rows = {k.rsplit("::", 1)[1]: v for k, v in _read(store).items()}
    row = rows["test_download"]
    assert row["assertions"] == {"connected": True, "apdu_count": 15}
    assert row["metadata"]["env"] == "staging" and row["metadata"]["profile"] == "p1"
    assert rows["test_not_json"]["assertions"] is None


def test_unreachable_database_is_a_usage_error_with_redacted_url(pytester):
    pytester.makepyfile("def test_one():\n    pass\n")
    url = "postgresql://lab:s3cret-pw@127.0.0.1:9/results"
    result = pytester.runpytest("--cardlink-db", url)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    text = result.stdout.str() + result.stderr.str()
    assert "cannot record test results" in text
    assert "postgresql://lab:***@127.0.0.1:9/results" in text
    assert "s3cret-pw" not in text
    bad = pytester.runpytest("--cardlink-db", "oracle://x/y")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    assert "unsupported database URL scheme" in bad.stderr.str()


def test_write_failure_mid_run_is_reported_not_raised(pytester, store, tmp_path):
    path = tmp_path / "results.db"
    pytester.makepyfile(f"""
        import sqlite3

        def test_a():
            pass

        def test_drop_the_table():
            conn = sqlite3.connect({str(path)!r})
            conn.execute("DROP TABLE test_results")
            conn.commit()
            conn.close()

        def test_c():
            pass
    """)
    result = pytester.runpytest("--cardlink-db", store, "--cardlink-batch-size", "1")
    result.assert_outcomes(passed=3)
    assert result.ret == 0
    out = result.stdout.str()
    assert "2 results not recorded (1 recorded): no such table: test_results" in out
    assert "3 passed" in out


def test_a_row_the_database_refuses_costs_only_itself(pytester, store, tmp_path):
    path = tmp_path / "results.db"
    pytester.makepyfile(f"""
        import sqlite3

        def test_refuse_one():
            conn = sqlite3.connect({str(path)!r})
            conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON test_results "
                         "WHEN NEW.test_name LIKE '%test_b' "
                         "BEGIN SELECT RAISE(ABORT, 'refused test_b'); END")
            conn.commit()
            conn.close()

        def test_a():
            pass

        def test_b():
            pass

        def test_c():
            pass
    """)
    result = pytester.runpytest("--cardlink-db", store, "--cardlink-batch-size", "10")
    result.assert_outcomes(passed=4)
    assert "1 results not recorded (3 recorded): refused test_b" in result.stdout.str()
    assert sorted(name.rsplit("::", 1)[1] for name in _read(store)) == [
        "test_a", "test_c", "test_refuse_one"]


def test_reruns_record_the_final_outcome_and_attempts(pytester, store, tmp_path):
    pytester.makepyfile(f"""
        from pathlib import Path

        COUNTER = Path({str(tmp_path / "count")!r})

        def test_flaky():
            n = int(COUNTER.read_text()) if COUNTER.exists() else 0
            COUNTER.write_text(str(n + 1))
            assert n >= 1, "first attempt fails"

        def test_broken():
            assert False, "always"
    """)
    result = pytester.runpytest("--cardlink-db", store, "--reruns", "2", "-p", "rerunfailures")
    outcomes = result.parseoutcomes()
    assert (outcomes["passed"], outcomes["failed"], outcomes["rerun"]) == (1, 1, 3)
    rows = {k.rsplit("::", 1)[1]: v for k, v in _read(store).items()}
    assert len(rows) == 2
    assert rows["test_flaky"]["status"] == TestStatus.PASSED
    assert rows["test_flaky"]["metadata"]["attempts"] == 2
    assert rows["test_broken"]["status"] == TestStatus.FAILED
    assert rows["test_broken"]["metadata"]["attempts"] == 3
    assert rows["test_broken"]["error_message"].startswith("AssertionError: always")


@pytest.mark.parametrize("workers", ["2", "4"])
def test_xdist_records_every_test_exactly_once_under_one_run_id(pytester, store, workers):
    pytester.makepyfile(**{
        f"test_mod{m}": "\n".join(
            f"def test_{i}():\n    assert {i} % 7 != 3\n" for i in range(15))
        for m in range(4)
    })
    result = pytester.runpytest("--cardlink-db", store, "-n", workers,
                                "--cardlink-batch-size", "5")
    result.assert_outcomes(passed=52, failed=8)
    rows = _read(store)  # raises on a duplicate name
    assert len(rows) == 60
    assert len({r["run_id"] for r in rows.values()}) == 1
    assert sum(r["status"] == TestStatus.FAILED for r in rows.values()) == 8
    assert {r["metadata"]["worker"] for r in rows.values()} <= {f"gw{i}" for i in range(4)}
    assert "not recorded" not in result.stdout.str()
    assert "database is locked" not in result.stdout.str()


def test_summary_shows_regressions_fixes_and_flaky_candidates(pytester, store, monkeypatch):
    pytester.makepyfile("""
        import os

        def test_stable():
            pass

        def test_goes_bad():
            assert os.environ.get("PHASE") != "2"

        def test_gets_fixed():
            assert os.environ.get("PHASE") == "2"
    """)
    args = ("--cardlink-db", store, "--cardlink-suite", "ota")
    monkeypatch.setenv("PHASE", "1")
    first = pytester.runpytest(*args, "--cardlink-run-id", "r1")
    assert "against run" not in first.stdout.str()  # nothing earlier to compare with
    monkeypatch.setenv("PHASE", "2")
    second = pytester.runpytest(*args, "--cardlink-run-id", "r2")
    out = second.stdout.str()
    assert "against run r1 (the latest comparable run: complete, started " in out
    assert "UTC): 1 regression, 1 fixed, 0 new tests" in out
    second.stdout.fnmatch_lines([
        "*REGRESSION test_summary_shows_regressions_fixes_and_flaky_candidates.py::"
        "test_goes_bad*",
        "*FIXED test_summary_shows_regressions_fixes_and_flaky_candidates.py::"
        "test_gets_fixed*",
        "*flaky candidates (status flipped in the last 5 runs): 2*",
        "run id: r2",
    ])
    monkeypatch.setenv("PHASE", "1")
    narrow = pytester.runpytest(*args, "--cardlink-run-id", "r3", "--cardlink-flaky-window",
                                "2")
    assert "against run r2 (the latest comparable run" in narrow.stdout.str()
    assert "flaky candidates (status flipped in the last 2 runs): 2" in narrow.stdout.str()


def test_lab_fixtures_get_their_own_store_while_recording(pytester, store):
    # Flushing after every result proves the recorder never rebinds the tests' models.
    pytester.makepyfile("""
        import pytest
        from cardlink_lite.models import Device, TestResult

        @pytest.mark.parametrize("n", range(3))
        def test_fresh_store_each_time(cardlink_uow, n):
            uow = cardlink_uow
            uow.devices.create(id=f"DEV-{n}", device_type="phone")
            uow.commit()
            assert [d.id for d in Device.select()] == [f"DEV-{n}"]
            assert TestResult.select().count() == 0

        def test_manager_is_migrated(cardlink_manager):
            assert cardlink_manager.health_check()["status"] == "healthy"
            assert cardlink_manager.table_counts()["test_results"] == 0
    """)
    result = pytester.runpytest("--cardlink-db", store, "--cardlink-batch-size", "1")
    result.assert_outcomes(passed=4)
    assert len(_read(store)) == 4
    conn = sqlite3.connect(store.removeprefix("sqlite:///"))
    assert conn.execute("SELECT COUNT(*) FROM devices").fetchone() == (0,)
    conn.close()


def test_collection_errors_are_recorded_like_junitxml(pytester, store):
    pytester.makepyfile(test_ok="def test_ok():\n    pass\n",
                        test_broken="import no_such_module_here\n")
    result = pytester.runpytest("--cardlink-db", store, "--continue-on-collection-errors")
    result.assert_outcomes(passed=1, errors=1)
    rows = _read(store)
    assert rows["test_broken.py"]["status"] == TestStatus.ERROR
    assert "no_such_module_here" in rows["test_broken.py"]["error_message"]


def test_records_to_each_backend(pytester, db_url, backend):
    pytester.makepyfile(test_outcomes=OUTCOMES + """

def test_with_store(cardlink_uow):
    cardlink_uow.devices.create(id="D1", device_type="phone")
""")
    args = ["--cardlink-db", db_url, "--cardlink-run-id", f"on-{backend}"]
    if backend != "sqlite":
        args += ["--cardlink-test-db", db_url]  # a fresh sibling database per test
    result = pytester.runpytest(*args)
    result.assert_outcomes(passed=3, failed=2, skipped=2, xfailed=1, xpassed=1, errors=2)
    rows = _read(db_url)
    assert len(rows) == 10
    assert {r["run_id"] for r in rows.values()} == {f"on-{backend}"}
    assert rows["test_outcomes.py::test_setup_error"]["status"] == TestStatus.ERROR
    assert rows["test_outcomes.py::test_xfail"]["status"] == TestStatus.SKIPPED
    assert rows["test_outcomes.py::test_fail"]["started_at"].tzinfo is not None
    assert "not recorded" not in result.stdout.str()


def test_long_node_ids_are_shortened_with_the_full_id_in_metadata(pytester, store):
    pytester.makepyfile("""
        import pytest

        @pytest.mark.parametrize("payload", [1, 2], ids=["A" * 600, "B" * 600])
        def test_long(payload):
            pass
    """)
    pytester.runpytest("--cardlink-db", store).assert_outcomes(passed=2)
    rows = _read(store)
    assert len(rows) == 2
    for name, row in rows.items():
        assert len(name) <= 512
        assert len(row["metadata"]["nodeid"]) > 600
