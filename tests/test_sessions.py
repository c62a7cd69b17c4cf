"""SessionRepository on every backend: lifecycle, queries, date ranges and statistics."""

from __future__ import annotations

import logging
import uuid
from datetime import date, datetime, timedelta, timezone

import pytest

from cardlink_lite import (
    CardProfile,
    Device,
    DeviceType,
    OTASession,
    SessionStatus,
    UnitOfWork,
    ValidationError,
)
from cardlink_lite.events import EventType
from cardlink_lite.fields import utc_now
from tests.repository_helpers import count_queries

pytest_plugins = ["tests.repository_fixtures"]


def _add_targets(uow, device_id="RF8M33XXXXX", iccid="8901..."):
    uow.devices.create(Device(id=device_id, device_type=DeviceType.PHONE))
    uow.cards.create(CardProfile(iccid=iccid))


def _set(session_id, **values):
    OTASession.update(**values).where(OTASession.id == session_id).execute()


def test_a_session_open_for_a_month_can_still_be_timed_out(manager):
    with UnitOfWork(manager) as uow:
        session = uow.sessions.create_session(session_type="triggered")
        uow.sessions.start_session(session.id)
    _set(session.id, started_at=utc_now() - timedelta(days=30))
    with UnitOfWork(manager) as uow:
        assert uow.sessions.timeout_session(session.id, message="stale session swept")
    with UnitOfWork(manager) as uow:
        swept = uow.sessions.get(session.id)
    assert swept.status is SessionStatus.TIMEOUT
    assert 2_592_000_000 <= swept.duration_ms < 2_592_000_000 + 30_000


def test_lifecycle_sets_times_and_duration_and_emits_after_commit(manager, event_list):
    with UnitOfWork(manager) as uow:
        session = uow.sessions.create_session(session_type="profile_download")
        assert session.status is SessionStatus.PENDING
        assert event_list == []  # nothing before commit
    assert [e.event_type for e in event_list] == [EventType.SESSION_CREATED]
    assert event_list[0].entity_type == "session" and event_list[0].entity_id == session.id

    with UnitOfWork(manager) as uow:
        assert uow.sessions.start_session(session.id) is True
        started = uow.sessions.get(session.id)
        assert started.status is SessionStatus.ACTIVE
        assert abs(started.started_at - utc_now()) < timedelta(seconds=30)
        # Pretend the session began 1.5 s ago to see the duration computed from it.
        _set(session.id, started_at=started.started_at - timedelta(milliseconds=1500))
        assert uow.sessions.complete_session(session.id) is True
        done = uow.sessions.get(session.id)
    assert done.status is SessionStatus.COMPLETED
    assert done.ended_at is not None and done.ended_at >= done.started_at
    assert 1500 <= done.duration_ms < 1500 + 30_000
    assert done.duration_ms == round((done.ended_at - done.started_at).total_seconds() * 1000)
    assert done.updated_at >= started.updated_at
    kinds = [e.event_type for e in event_list[1:]]
    assert kinds == [EventType.SESSION_UPDATED, EventType.SESSION_COMPLETED]
    assert event_list[-1].data["status"] == "completed"
    assert event_list[-1].data["duration_ms"] == done.duration_ms


def test_ended_sessions_are_final_and_unknown_ids_answer_false(manager, event_list, caplog):
    with UnitOfWork(manager) as uow:
        repo = uow.sessions
        completed = repo.create_session()
        repo.start_session(completed.id)
        assert repo.start_session(completed.id) is False  # already active
        assert repo.complete_session(completed.id) is True
        with caplog.at_level(logging.INFO, logger="cardlink_lite.sessions"):
            assert repo.fail_session(completed.id, "E1", message="late") is False
        assert "already completed" in caplog.text
        assert repo.timeout_session(completed.id) is False
        assert repo.complete_session(completed.id) is False
        assert repo.start_session(completed.id) is False

        failed = repo.create_session()  # never started: no duration to compute
        assert repo.fail_session(failed.id, "E2", error_message="refused") is True
        assert repo.complete_session(failed.id) is False

        timed_out = repo.create_session()
        repo.start_session(timed_out.id)
        assert repo.timeout_session(timed_out.id, message="no answer in 30 s") is True

        unknown = str(uuid.uuid4())
        for call in (repo.start_session, repo.complete_session, repo.timeout_session):
            assert call(unknown) is False
        assert repo.fail_session(unknown, "E3") is False
        assert repo.set_tls_info(unknown, cipher="X") is False
        with pytest.raises(ValidationError, match="UUID"):
            repo.complete_session("not-a-uuid")
        with pytest.raises(ValidationError, match="session_type must be at most 32 characters"):
            repo.create_session(session_type="x" * 33)
        n_events = len(event_list)
    assert n_events == 0

    assert OTASession.get_by_id(completed.id).status is SessionStatus.COMPLETED
    assert OTASession.get_by_id(completed.id).error_message is None
    row = OTASession.get_by_id(failed.id)
    assert (row.status, row.error_code, row.error_message) == (
        SessionStatus.FAILED, "E2", "refused")
    assert row.duration_ms is None and row.ended_at is not None
    row = OTASession.get_by_id(timed_out.id)
    assert (row.status, row.error_code, row.error_message) == (
        SessionStatus.TIMEOUT, "TIMEOUT", "no answer in 30 s")
    ends = [e for e in event_list if e.event_type is EventType.SESSION_COMPLETED]
    assert sorted(e.data["status"] for e in ends) == ["completed", "failed", "timeout"]


def test_fail_session_spellings_and_long_codes(manager):
    with UnitOfWork(manager) as uow:
        repo = uow.sessions
        a, b, c, d = (repo.create_session() for _ in range(4))
        assert repo.fail_session(a.id, error_code="E001", message="Connection timeout")
        assert repo.fail_session(b.id, "E002", error_message="Card mute")
        with pytest.raises(ValidationError, match="message or error_message"):
            repo.fail_session(c.id, "E", message="one", error_message="two")
        # A long exception class name as the code is cut to the column, not refused.
        assert repo.fail_session(c.id, "X" * 40 + "Error", message="boom")
        # PostgreSQL cannot store NUL: every backend keeps the same visible escape.
        assert repo.fail_session(d.id, "E\x00", message="card said \x00\x01")
    assert OTASession.get_by_id(a.id).error_message == "Connection timeout"
    assert OTASession.get_by_id(b.id).error_message == "Card mute"
    assert OTASession.get_by_id(c.id).error_code == "X" * 32
    stored = OTASession.get_by_id(d.id)
    assert (stored.error_code, stored.error_message) == ("E\\x00", "card said \\x00\x01")


def test_set_tls_info_spellings_and_limits(manager, event_list):
    with UnitOfWork(manager) as uow:
        repo = uow.sessions
        session = repo.create_session()
        assert repo.set_tls_info(session.id, cipher="TLS_PSK_WITH_AES_128_CBC_SHA256",
                                 psk_identity="card_001") is True
        # The same values again still find the session (MySQL reports 0 changed rows).
        assert repo.set_tls_info(session.id, cipher_suite="TLS_PSK_WITH_AES_128_CBC_SHA256")
        assert repo.set_tls_info(session.id, psk_identity="card_002") is True
        with pytest.raises(ValidationError, match="cipher_suite"):
            repo.set_tls_info(session.id)
        with pytest.raises(ValidationError, match="at most 64"):
            repo.set_tls_info(session.id, cipher_suite="C" * 65)
        with pytest.raises(ValidationError, match="not both"):
            repo.set_tls_info(session.id, cipher_suite="A", cipher="B")
    stored = OTASession.get_by_id(session.id)
    assert stored.cipher_suite == "TLS_PSK_WITH_AES_128_CBC_SHA256"
    assert stored.psk_identity == "card_002"
    assert stored.status is SessionStatus.PENDING  # TLS info does not move the state
    updates = [e for e in event_list if e.event_type is EventType.SESSION_UPDATED]
    assert len(updates) == 3


def test_find_queries_order_limit_and_status_spellings(manager):
    with UnitOfWork(manager) as uow:
        _add_targets(uow, "DEV1", "8901000000000000001")
        _add_targets(uow, "DEV2", "8901000000000000002")
        repo = uow.sessions
        assert repo.find_by_device("DEV1") == [] and repo.find_active() == []
        ids = []
        base = datetime(2025, 1, 1, tzinfo=timezone.utc)
        for i in range(4):
            s = repo.create_session(device_id="DEV1", card_iccid="8901000000000000001")
            _set(s.id, created_at=base + timedelta(minutes=i))
            ids.append(s.id)
        other = repo.create_session(device_id="DEV2", card_iccid="8901000000000000002")
        repo.start_session(ids[1])
        repo.start_session(other.id)
        repo.fail_session(ids[2], "E")

        assert [s.id for s in repo.find_by_device("DEV1")] == ids[::-1]
        assert [s.id for s in repo.find_by_device("DEV1", limit=2)] == ids[:1:-1]
        assert [s.id for s in repo.find_by_card("8901000000000000002")] == [other.id]
        assert repo.find_by_card("nope") == []
        assert {s.id for s in repo.find_active()} == {ids[1], other.id}
        assert [s.id for s in repo.find_by_status("FAILED")] == [ids[2]]
        assert [s.id for s in repo.find_by_status("pending")] == [ids[3], ids[0]]
        with pytest.raises(ValidationError, match="status must be one of"):
            repo.find_by_status("exploded")
        with pytest.raises(ValidationError, match="limit"):
            repo.find_by_device("DEV1", limit=-1)


def test_find_by_date_range_treats_naive_as_utc_and_converts_aware(manager):
    plus2 = timezone(timedelta(hours=2))
    with UnitOfWork(manager) as uow:
        repo = uow.sessions
        created = {}
        for label, when in {
            "oct31_late": datetime(2024, 10, 31, 23, 30, tzinfo=timezone.utc),
            "nov1_0930": datetime(2024, 11, 1, 9, 30, tzinfo=timezone.utc),
            "nov1_1000": datetime(2024, 11, 1, 10, 0, tzinfo=timezone.utc),
            "nov30_2359": datetime(2024, 11, 30, 23, 59, 59, 999000, tzinfo=timezone.utc),
            "dec1": datetime(2024, 12, 1, 0, 0, tzinfo=timezone.utc),
        }.items():
            s = repo.create_session(session_type=label)
            _set(s.id, created_at=when)
            created[label] = s.id

        def labels(**kw):
            return [s.session_type for s in repo.find_by_date_range(**kw)]

        # Naive datetimes are UTC; bounds are inclusive; newest first.
        assert labels(start=datetime(2024, 11, 1, 10), end=datetime(2024, 12, 1)) == [
            "dec1", "nov30_2359", "nov1_1000"]
        # 12:00 at UTC+2 is 10:00 UTC.
        assert labels(start=datetime(2024, 11, 1, 12, tzinfo=plus2),
                      end=datetime(2024, 11, 2, tzinfo=plus2)) == ["nov1_1000"]
        # An aware start just after midnight in UTC+2 is still October 31 in UTC.
        assert labels(start=datetime(2024, 11, 1, 1, 0, tzinfo=plus2),
                      end=datetime(2024, 11, 1, 9, 30)) == ["nov1_0930", "oct31_late"]
        # Dates are whole UTC days.
        assert labels(start=date(2024, 11, 1), end=date(2024, 11, 30)) == [
            "nov30_2359", "nov1_1000", "nov1_0930"]
        assert labels(start=datetime(2024, 12, 1)) == ["dec1"]
        assert labels(end=datetime(2024, 10, 31, 23, 30)) == ["oct31_late"]
        assert labels(start=datetime(2024, 12, 2), end=datetime(2024, 11, 1)) == []
        assert len(labels()) == 5
        with pytest.raises(ValidationError, match="start must be a datetime"):
            repo.find_by_date_range(start="2024-11-01")


def test_statistics_on_empty_database_are_zeros_that_format(manager):
    with UnitOfWork(manager) as uow:
        stats = uow.sessions.get_statistics(days=30)
    assert stats["total"] == stats["total_sessions"] == 0
    assert stats["by_status"] == {s.value: 0 for s in SessionStatus}
    assert stats["avg_duration_ms"] == 0 and stats["success_rate"] == 0
    assert stats["period_days"] == 30
    assert f"{stats['success_rate']:.1f}% {stats['avg_duration_ms']:.0f}ms" == "0.0% 0ms"


def test_statistics_are_one_grouped_query_with_percent_rates(manager):
    with UnitOfWork(manager) as uow:
        repo = uow.sessions
        outcomes = ["completed"] * 3 + ["failed", "timeout", "active", "pending"]
        for i, outcome in enumerate(outcomes):
            s = repo.create_session()
            if outcome != "pending":
                repo.start_session(s.id)
            if outcome == "completed":
                repo.complete_session(s.id)
                _set(s.id, duration_ms=100 * (i + 1))  # 100, 200, 300
            elif outcome == "failed":
                repo.fail_session(s.id, "E")
            elif outcome == "timeout":
                repo.timeout_session(s.id)
        old = repo.create_session()
        repo.complete_session(old.id)
        _set(old.id, created_at=utc_now() - timedelta(days=10), duration_ms=99_999)

        with count_queries(manager) as statements:
            week = repo.get_statistics(days=7)
        everything = repo.get_statistics(days=None)
    assert len(statements) == 1 and "GROUP BY" in statements[0].upper()
    assert week["total"] == week["total_sessions"] == 7
    assert week["by_status"] == {"pending": 1, "active": 1, "completed": 3, "failed": 1,
                                 "timeout": 1}
    # completed / (completed + failed + timeout), as a percentage.
    assert week["success_rate"] == pytest.approx(60.0)
    assert week["avg_duration_ms"] == pytest.approx(200.0)
    assert everything["total"] == 8 and everything["period_days"] is None
    assert everything["success_rate"] == pytest.approx(100.0 * 4 / 6)
    with pytest.raises(ValidationError, match="days"):
        repo.get_statistics(days=-1)


def test_rollback_discards_the_session_and_its_events(manager, event_list):
    with pytest.raises(RuntimeError), UnitOfWork(manager) as uow:
        session = uow.sessions.create_session()
        uow.sessions.start_session(session.id)
        raise RuntimeError("lab script crashed")
    with UnitOfWork(manager) as uow:
        assert uow.sessions.count() == 0
        assert uow.sessions.complete_session(session.id) is False
    assert event_list == []


def test_too_long_or_nul_text_is_refused_at_the_call_by_the_field(manager):
    """The repository asks the field (one rule for repositories, writer and import): the
    error names the column and nothing reaches the database."""
    with UnitOfWork(manager) as uow:
        session = uow.sessions.create_session()
        with pytest.raises(ValidationError, match=r"^tls_version must be at most 16 "):
            uow.sessions.set_tls_info(session.id, version="TLSv1.2-" + "x" * 20)
        with pytest.raises(ValidationError, match=r"^tls_psk_identity must not contain NUL"):
            uow.sessions.set_tls_info(session.id, psk_identity="card\x00")
        with pytest.raises(ValidationError, match=r"^session_type must be at most 32 "):
            uow.sessions.create_session(session_type="t" * 33)
    assert OTASession.get_by_id(session.id).tls_version is None
