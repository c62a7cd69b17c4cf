"""``cardlink-db sessions list``: find a session id by device, card, status and date."""

import json
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner

from cardlink_lite import CardProfile, CommLog, Device, OTASession
from cardlink_lite.cli import cli

T0 = datetime(2024, 11, 29, 10, 0, tzinfo=timezone.utc)


@pytest.fixture
def bench(manager):
    Device.create(id="phone-1", device_type="phone")
    Device.create(id="modem-2", device_type="modem")
    CardProfile.create(iccid="8901", card_type="USIM")
    made = {}
    for i, (device, card, status) in enumerate([("phone-1", "8901", "completed"),
                                                ("phone-1", None, "failed"),
                                                ("modem-2", "8901", "failed")]):
        session = OTASession.create(device=device, card=card, status=status,
                                    session_type="profile_download",
                                    created_at=T0 + timedelta(days=i))
        made[i] = session.id
    CommLog.create(session=made[2], direction="command", raw_data="00A4", timestamp=T0)
    CommLog.create(session=made[2], direction="response", raw_data="9000", timestamp=T0)
    return manager, made


def _list(manager, *args):
    return CliRunner().invoke(cli, ["--database", manager.config.url, "sessions", "list", *args])


def test_lists_newest_first_with_date_and_apdu_count(bench):
    manager, made = bench
    result = _list(manager)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("SESSION ID")
    assert lines[1].startswith(f"{made[2]}  2024-12-01 10:00:00  failed")
    assert lines[1].rstrip().endswith("  2") and lines[3].startswith(made[0])


def test_filters_combine_and_json_uses_one_time_format(bench):
    manager, made = bench
    rows = json.loads(_list(manager, "--device", "phone-1", "--status", "FAILED",
                            "--json").stdout)
    assert [r["id"] for r in rows] == [made[1]]
    assert rows[0]["created_at"] == "2024-11-30T10:00:00.000Z"
    by_card = json.loads(_list(manager, "--card", "8901", "--since", "2024-11-30",
                               "--json").stdout)
    assert [r["id"] for r in by_card] == [made[2]]
    assert by_card[0]["logs"] == 2 and by_card[0]["device_id"] == "modem-2"
    assert json.loads(_list(manager, "-n", "1", "--json").stdout)[0]["id"] == made[2]
    assert _list(manager, "--device", "nobody").output == "No sessions match.\n"


def test_an_unknown_status_is_a_usage_error(bench):
    manager, _ = bench
    result = _list(manager, "--status", "done")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: Invalid value for --status: 'done' is not a session status; use one of "
        "pending, active, completed, failed, timeout")
