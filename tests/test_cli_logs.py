"""``cardlink-db logs show``: the readable trace, --errors and --json."""

import json
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from cardlink_lite import OTASession
from cardlink_lite.apdu import apdu_logger
from cardlink_lite.cli import cli
from cardlink_lite.config import redact_url


@pytest.fixture
def traced(manager, db_url):
    session = OTASession.create(session_type="profile_download")
    with apdu_logger(manager, session.id) as log:
        log.command("00A4040008A000000151000000", "SELECT ISD")
        log.response("6A82", latency_ms=12.25)
        log.command("00A4040008A000000151000001", "SELECT ISD")
        log.response("6F00849000", latency_ms=8)
    return db_url, session.id


def test_show_prints_a_readable_trace(traced):
    url, sid = traced
    result = CliRunner().invoke(cli, ["--database", url, "logs", "show", sid])
    assert result.exit_code == 0, result.output
    assert re.fullmatch(r"-- \d{4}-\d\d-\d\d \(UTC\) --", result.output.splitlines()[0])
    lines = [line for line in result.output.splitlines() if not line.startswith("-- ")]
    assert len(lines) == 4
    # Commands carry their logical channel (schema 0003).
    assert ">>  ch0  00A4040008A000000151000000  [SELECT ISD]" in lines[0]
    assert "<<  6A82  SW=6A82 (File or application not found)  12.2 ms" in lines[1]
    assert "SW=9000 (Success: normal ending of the command)" in lines[3]


def test_errors_only_as_json(traced):
    url, sid = traced
    result = CliRunner().invoke(cli, ["--database", url, "logs", "show", sid, "--errors",
                                      "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [(r["status_word"], r["status_meaning"]) for r in rows] == [
        ("6A82", "File or application not found")]
    assert rows[0]["direction"] == "response" and rows[0]["latency_ms"] == 12.25


def test_unknown_session_is_one_error_line(manager, db_url):
    missing = "123e4567-e89b-12d3-a456-426614174000"
    result = CliRunner().invoke(cli, ["--database", db_url, "logs", "show", missing])
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: session {missing} not found in {redact_url(db_url)}; check the id and the "
        "--database URL")


def test_malformed_session_id_is_a_usage_error(manager, db_url):
    result = CliRunner().invoke(cli, ["--database", db_url, "logs", "show", "not-a-uuid"])
    assert result.exit_code == 2
    assert "'not-a-uuid' is not a session id" in result.output


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # one real subprocess is enough
def test_show_in_a_real_process(traced):
    url, sid = traced
    out = subprocess.run([sys.executable, "-m", "cardlink_lite", "--database", url, "logs",
                          "show", sid, "--errors"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "SW=6A82 (File or application not found)" in out.stdout
