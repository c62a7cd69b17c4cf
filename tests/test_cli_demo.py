"""``cardlink-db demo``: the README's first command records a whole bench session."""

from click.testing import CliRunner
from cryptography.fernet import Fernet

from cardlink_lite import CardProfile, CommLog, OTASession, SessionStatus, TestResult
from cardlink_lite.cli import cli


def test_demo_records_a_bench_session_and_prints_status(manager, db_url):
    result = CliRunner().invoke(cli, ["--database", db_url, "demo"])
    assert result.exit_code == 0, result.output
    assert "Recorded OTA session" in result.output and "Database Status" in result.output
    assert "comm_logs: 14 rows" in result.output
    manager.bind()
    session = OTASession.get()
    assert session.status is SessionStatus.COMPLETED and session.duration_ms is not None
    assert CommLog.select().where(CommLog.session == session.id).count() == 14
    assert TestResult.select().count() == 5
    assert not CardProfile.get().has_psk  # no key configured: stored without a PSK


def test_demo_twice_with_key_keeps_one_device_and_card(sqlite_manager, tmp_path, monkeypatch):
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", Fernet.generate_key().decode())
    url = f"sqlite:///{tmp_path}/cardlink.db"
    for _ in range(2):
        result = CliRunner().invoke(cli, ["--database", url, "demo"])
        assert result.exit_code == 0, result.output
    sqlite_manager.bind()
    assert CardProfile.select().count() == 1 and CardProfile.get().has_psk
    assert OTASession.select().count() == 2
