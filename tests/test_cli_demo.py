"""``cardlink-db demo``: the README's first command records a whole bench session."""

import json
from datetime import timedelta

from click.testing import CliRunner
from cryptography.fernet import Fernet

from cardlink_lite import CardProfile, CommLog, OTASession, SessionStatus, TestResult, TestRun
from cardlink_lite.cli import cli
from cardlink_lite.fields import utc_now


def test_demo_records_a_bench_session_and_prints_status(manager, db_url):
    result = CliRunner().invoke(cli, ["--database", db_url, "demo"])
    assert result.exit_code == 0, result.output
    assert "Recorded OTA session" in result.output and "Database Status" in result.output
    manager.bind()
    session_id = result.output.split("Recorded OTA session ")[1].split()[0]
    session = OTASession.get_by_id(session_id)
    assert session.status is SessionStatus.COMPLETED and session.duration_ms is not None
    assert CommLog.select().where(CommLog.session == session.id).count() == 24
    # A week of history: eight runs of ten tests, earlier sessions on two devices.
    assert TestResult.select().count() == 80
    assert OTASession.select().count() > 20
    assert not CardProfile.get().has_psk  # no key configured: stored without a PSK


def test_demo_twice_with_key_keeps_one_device_and_card(sqlite_manager, tmp_path, monkeypatch):
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", Fernet.generate_key().decode())
    url = f"sqlite:///{tmp_path}/cardlink.db"
    for _ in range(2):
        result = CliRunner().invoke(cli, ["--database", url, "demo"])
        assert result.exit_code == 0, result.output
    sqlite_manager.bind()
    # The bench card (with its PSK) and the history's second card, each once.
    assert CardProfile.select().count() == 2
    assert CardProfile.get_by_id("89014103211118510720").has_psk
    # The second demo adds one session and one run; the history is recorded once.
    assert TestResult.select().count() == 90
    assert OTASession.select().count() == 2 + OTASession.select().where(
        OTASession.session_type == "remote_management").count()


def test_demo_history_is_dated_in_the_past_and_its_runs_ended(manager, db_url):
    assert CliRunner().invoke(cli, ["--database", db_url, "demo"]).exit_code == 0
    stats = CliRunner().invoke(cli, ["--database", db_url, "stats", "--json"])
    assert json.loads(stats.stdout)["recent_activity"] == {"sessions_last_24h": 1,
                                                          "tests_last_24h": 10}
    runs = json.loads(CliRunner().invoke(cli, ["--database", db_url, "runs", "list",
                                               "--json"]).stdout)
    assert len(runs) == 8 and {run["ending"] for run in runs} == {"complete"}
    manager.bind()
    assert TestRun.select().where(TestRun.finished_at < utc_now() - timedelta(hours=20)
                                  ).count() == 7  # the history's runs ended days ago
    assert all(run.exit_status == (1 if run.failed or run.error else 0)  # pytest's
               for run in TestRun.select())
    assert TestResult.select().where(TestResult.created_at != TestResult.started_at).count() == 0
