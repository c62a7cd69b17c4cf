"""Stored text reaches the terminal escaped: an OSC title/clipboard sequence, a C1 control or
a bidi override in an imported name cannot drive the operator's terminal; --json stays exact."""

import json
import re
from datetime import datetime, timezone

import pytest
from click.testing import CliRunner

from cardlink_lite import CommLog, Device, OTASession, TestResult, TestRun
from cardlink_lite.cli import cli

T0 = datetime(2024, 11, 29, 10, 0, tzinfo=timezone.utc)
TITLE = "\x1b]0;pwned\x07"
CLIPBOARD = "\x1b]52;c;ZXZpbA==\x07"
# Every control a terminal acts on, but the CLI's own newlines and tabs.
_RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


@pytest.fixture
def hostile(manager):
    Device.create(id=f"dev{TITLE}", device_type="phone", name=f"n{CLIPBOARD}")
    session = OTASession.create(device=f"dev{TITLE}", status="failed", trigger="sms-pp",
                                session_type=f"t{CLIPBOARD}", tls_psk_identity="id\x9b31m",
                                created_at=T0)
    CommLog.create(session=session.id, direction="response", raw_data="6A82", timestamp=T0,
                   status_word="6A82", status_message=f"gone{TITLE}")
    for run in ("r1", f"r2{TITLE}"):
        TestRun.create(id=run, suite_name=f"suite{CLIPBOARD}", labels={"dut": "x\u202eevil"})
        TestResult.create(run_id=run, suite_name=f"suite{CLIPBOARD}",
                          test_name=f"test_a{TITLE}", status="failed" if run != "r1" else "passed",
                          error_message="boom\x1b[2J\u202e", session=session.id)
    return manager, session.id


def _run(manager, *args):
    result = CliRunner().invoke(cli, ["--database", manager.config.url, *args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("args", [["sessions", "list"], ["logs", "show", "{sid}"],
                                  ["runs", "list"], ["runs", "show", f"r2{TITLE}"],
                                  ["runs", "compare", "r1", f"r2{TITLE}"]])
def test_text_output_shows_controls_as_escapes(hostile, args):
    manager, sid = hostile
    output = _run(manager, *[a.format(sid=sid) for a in args])
    assert not _RAW.search(output), repr(output)
    assert "\\x1b" in output


def test_json_output_stays_exact(hostile):
    manager, sid = hostile
    for args, pick in ((["sessions", "list"], lambda d: d[0]["session_type"]),
                       (["runs", "show", f"r2{TITLE}"], lambda d: d["results"][0]["test_name"])):
        output = _run(manager, *args, "--json")
        assert not _RAW.search(output)
        assert pick(json.loads(output)).endswith(("ZXZpbA==\x07", "pwned\x07"))


def test_error_lines_show_controls_as_escapes(manager, tmp_path):
    # A capture file named by someone else: its name is in the one-line error.
    path = tmp_path / f"cap{CLIPBOARD}.pcap"
    path.write_bytes(b"not a trace at all")
    result = CliRunner().invoke(cli, ["--database", manager.config.url, "logs", "import",
                                      str(path)])
    assert result.exit_code == 1
    assert not _RAW.search(result.output) and "\\x1b]52" in result.output
