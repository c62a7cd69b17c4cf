"""Stores for the report tests, filled through the public API only."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from cardlink_lite import (
    CardProfile,
    DeviceType,
    OTASession,
    SessionStatus,
    TestResult,
    TestStatus,
    UnitOfWork,
    apdu_logger,
)

T0 = datetime(2024, 11, 1, 8, 0, tzinfo=timezone.utc)


def add_device(manager, device_id: str, name: str | None = None) -> None:
    with UnitOfWork(manager) as uow:
        uow.devices.register(device_id, device_type=DeviceType.PHONE, name=name)


def add_card(manager, iccid: str) -> None:
    with UnitOfWork(manager) as uow:
        uow.cards.create(CardProfile(iccid=iccid))


def add_run(manager, run_id: str, outcomes: dict, *, suite: str = "nightly", day: int = 0,
            device: str | None = None, card: str | None = None,
            duration_ms: int = 100) -> None:
    """One run: ``outcomes`` maps test names to a status value."""
    start = T0 + timedelta(days=day)
    with UnitOfWork(manager) as uow:
        for i, (name, status) in enumerate(outcomes.items()):
            uow.tests.create_result(run_id=run_id, suite_name=suite, test_name=name,
                                    status=status, started_at=start + timedelta(seconds=i),
                                    duration_ms=duration_ms, device_id=device,
                                    card_iccid=card,
                                    error_message=None if status == "passed" else "boom")


def add_big_run(manager, run_id: str, count: int, *, suite: str = "nightly", day: int = 0,
                failing_every: int = 0) -> None:
    """``count`` results in one run, inserted with the repository's bulk create."""
    start = T0 + timedelta(days=day)
    rows = []
    for i in range(count):
        failed = failing_every and i % failing_every == 0
        rows.append(TestResult(run_id=run_id, suite_name=suite, test_name=f"test_{i:05d}",
                               status=TestStatus.FAILED if failed else TestStatus.PASSED,
                               started_at=start + timedelta(milliseconds=i),
                               ended_at=start + timedelta(milliseconds=i + i % 500),
                               duration_ms=i % 500))
    with UnitOfWork(manager) as uow:
        uow.tests.create_all(rows)


def add_session(manager, *, device=None, card=None, status="completed", day=0,
                error_code=None, exchanges=(), session_type="remote_management") -> str:
    """A session created on ``T0 + day`` with ``exchanges`` of (command hex, name,
    response hex, latency ms); ended as ``status``."""
    start = T0 + timedelta(days=day)
    with UnitOfWork(manager) as uow:
        session = uow.sessions.create(OTASession(
            device_id=device, card_iccid=card, session_type=session_type,
            status=SessionStatus.PENDING, created_at=start, updated_at=start))
        uow.sessions.start_session(session.id)
    at = start
    if exchanges:
        with apdu_logger(manager, session.id, flush_interval=None) as log:
            for command, name, response, latency in exchanges:
                log.command(command, name, timestamp=at)
                at += timedelta(milliseconds=latency or 1)
                log.response(response, latency_ms=latency, timestamp=at)
    with UnitOfWork(manager) as uow:
        if status == "completed":
            uow.sessions.complete_session(session.id)
        elif status == "failed":
            uow.sessions.fail_session(session.id, error_code=error_code, message="failed")
        elif status == "timeout":
            uow.sessions.timeout_session(session.id, message="no answer")
    return str(session.id)
