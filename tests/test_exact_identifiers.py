"""Identifiers and names compare exactly on every backend (issue 14 defect 2), and schema 0005
turns existing run ids into test_runs rows."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from cardlink_lite import (
    CardProfile,
    Device,
    DeviceType,
    OTASession,
    ReplayCounter,
    Setting,
    TestResult,
    TestRun,
    TestStatus,
    run_migrations,
)
from cardlink_lite.unit_of_work import UnitOfWork


def _answers(manager) -> dict:
    """The questions whose answers must not depend on the backend."""
    with UnitOfWork(manager) as uow:
        repo = uow.tests
        for run_id in ("Case-Run", "case-run"):
            for name, status in (("t.py::test_case[a]", "passed"), ("t.py::test_case[A]",
                                                                     "failed")):
                repo.create_result(run_id, "Suite", name, status)
        repo.create_result("case-run", "suite", "t.py::test_other", "passed")
    with UnitOfWork(manager) as uow:
        return {
            "runs": sorted((r["run_id"], r["total"]) for r in uow.tests.list_runs()),
            "flaky": uow.tests.flaky_tests("Suite"),
            "in_run": sorted(r.test_name for r in uow.tests.find_by_run("case-run")),
            "one_name": TestResult.select().where(
                TestResult.test_name == "t.py::test_case[a]").count(),
            "suite": [r.test_name for r in uow.tests.find_by_suite("suite")],
            "devices": sorted(d.id for d in Device.select().where(Device.id == "RF8-a")),
            "cards": sorted(c.iccid for c in CardProfile.select().where(
                CardProfile.psk_identity == "Lab-ID")),
            "setting": Setting.get_by_id("lab.Key").value,
            "session_psk": OTASession.select().where(
                OTASession.tls_psk_identity == "lab-id").count(),
            "distinct_names": TestResult.select(TestResult.test_name).distinct().count(),
        }


def test_identifiers_that_differ_in_case_are_different_on_every_backend(manager):
    for key in ("RF8-A", "RF8-a"):
        Device.create(id=key, device_type=DeviceType.PHONE)
    for iccid, identity in (("8949000000000000001F", "Lab-ID"),
                            ("8949000000000000001f", "lab-id")):
        CardProfile.create(iccid=iccid, psk_identity=identity)
        OTASession.create(card=iccid, tls_psk_identity=identity)
    Setting.create(key="lab.key", value=1)
    Setting.create(key="lab.Key", value=2)
    assert _answers(manager) == {
        "runs": [("Case-Run", 2), ("case-run", 3)],
        "flaky": [],  # [a] always passes and [A] always fails: neither is flaky
        "in_run": ["t.py::test_case[A]", "t.py::test_case[a]", "t.py::test_other"],
        "one_name": 2,
        "suite": ["t.py::test_other"],
        "devices": ["RF8-a"],
        "cards": ["8949000000000000001F"],
        "setting": 2,
        "session_psk": 1,
        "distinct_names": 3,
    }


def _frozen_insert(database, run_id, name, status, minute, suite="lab"):
    at = datetime(2026, 1, 1, 10, minute, tzinfo=timezone.utc).replace(tzinfo=None)
    marks = ", ".join([database.param] * 9)
    database.execute_sql(
        "INSERT INTO test_results (id, run_id, suite_name, test_name, started_at, ended_at, "
        f"status, created_at, updated_at) VALUES ({marks})",
        (f"00000000-0000-4000-8000-{minute:012d}", run_id, suite, name, at, at, status, at,
         at))


def test_migration_backfills_runs_from_existing_results(empty_manager):
    run_migrations("0004", manager=empty_manager)
    database = empty_manager.database
    _frozen_insert(database, "Night-1", "a", "passed", 1)
    _frozen_insert(database, "Night-1", "b", "failed", 2)
    _frozen_insert(database, "night-1", "a", "skipped", 3, suite="other")
    run_migrations(manager=empty_manager)
    runs = {r.id: r for r in TestRun.select().order_by(TestRun.id)}
    assert sorted(runs) == ["Night-1", "night-1"]
    first = runs["Night-1"]
    assert (first.suite_name, first.total, first.passed, first.failed, first.skipped,
            first.error) == ("lab", 2, 1, 1, 0, 0)
    assert first.ending.value == "unknown"
    assert first.started_at == datetime(2026, 1, 1, 10, 1, tzinfo=timezone.utc)
    assert first.finished_at == datetime(2026, 1, 1, 10, 2, tzinfo=timezone.utc)
    assert runs["night-1"].suite_name == "other"
    assert TestResult.select().where(TestResult.attempts.is_null()).count() == 3


@pytest.mark.parametrize("status", [TestStatus.PASSED])
def test_run_and_result_link_to_a_session(manager, status):
    session = OTASession.create()
    result = TestResult.create(run_id="r", suite_name="s", test_name="t", status=status,
                               session=session.id, attempts=2)
    assert TestResult.get_by_id(result.id).session_id == session.id
    session.delete_instance()
    assert TestResult.get_by_id(result.id).session_id is None  # ON DELETE SET NULL


def test_keys_that_differ_in_trailing_spaces_are_different_on_every_backend(manager):
    for key in ("X", "X "):
        with UnitOfWork(manager) as uow:
            uow.devices.create(Device(id=key, device_type=DeviceType.PHONE, name=f"[{key}]"))
    with UnitOfWork(manager) as uow:
        assert uow.devices.get_by_id("X ").name == "[X ]"
        assert uow.devices.get_by_id("X").name == "[X]"
        assert uow.devices.get_by_id("X  ") is None
        assert uow.devices.count() == 2
    assert [d.id for d in Device.select().where(Device.id == "X ")] == ["X "]


def test_replay_counter_keysets_and_tars_compare_exactly_on_every_backend(manager):
    CardProfile.create(iccid="8901")
    with UnitOfWork(manager) as uow:
        counters = uow.counters
        assert [counters.next_counter("8901", "kic=01,kid=01", "B00001")
                for _ in range(3)] == [1, 2, 3]
        assert counters.next_counter("8901", "KIC=01,KID=01", "B00001") == 1
        assert counters.next_counter("8901", "kic=01,kid=01", "b00001") == 4  # TAR: hex
        assert len(counters.find_by_card("8901")) == 2
    ReplayCounter.create(card="8901", keyset="kic=01,kid=01", tar="b00001")  # by hand
    assert ReplayCounter.select().where(ReplayCounter.tar == "b00001").count() == 1
