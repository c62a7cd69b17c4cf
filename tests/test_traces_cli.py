"""``cardlink-db logs import`` and how ``logs show`` / ``export`` present an imported trace."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import cardlink_lite.traces as traces
from cardlink_lite.cli import cli
from cardlink_lite.db import database_proxy
from cardlink_lite.errors import ValidationError
from cardlink_lite.models import CommLog, OTASession, TraceSource
from tests.pcapwrite import CaptureWriter
from tests.test_traces_import import ATR, BENCH, T0

DATA = Path(__file__).parent / "data" / "traces"


@pytest.fixture
def run(db_url, manager):
    runner = CliRunner()

    def invoke(*args):
        result = runner.invoke(cli, ["--database", db_url, *args])
        database_proxy.initialize(manager.database)  # the CLI unbinds its own on exit
        return result

    return invoke


@pytest.fixture
def capture(tmp_path):
    out = io.BytesIO()
    writer = CaptureWriter(out, "pcapng")
    writer.gsmtap(T0 - 1_000_000, bytes.fromhex(ATR), sub_type=1)
    for i, row in enumerate(BENCH):
        writer.gsmtap(T0 + i * 2_000_000, bytes.fromhex(row[0]))
    path = tmp_path / "bench.pcapng"
    path.write_bytes(out.getvalue())
    return path


def test_import_then_show_folds_bip_and_names_commands(run, capture):
    result = run("logs", "import", str(capture))
    assert result.exit_code == 0, result.output
    session_id = OTASession.get().id
    assert result.output.splitlines() == [
        f"{capture} (pcapng): {len(BENCH)} exchanges, 1 ATRs, 0 resets, "
        f"{1 + 2 * len(BENCH)} rows into {session_id}"]
    shown = run("logs", "show", session_id)
    assert shown.exit_code == 0, shown.output
    assert "-- 2024-11-29 (UTC) --" in shown.output.splitlines()  # the date heads the day
    lines = [line for line in shown.output.splitlines() if not line.startswith("-- 20")]
    assert lines[0].startswith(f"From {capture} (pcapng, imported ")
    assert lines[1] == f"10:00:00.122  **  {ATR}  [ATR: T=0]"
    assert lines[2] == "10:00:00.123  >>  ch0  00A40004023F00  [SELECT 3F00]"
    assert lines[4] == ("10:00:00.125  >>  ch1  01A4040007A0000000871002  "
                        "[SELECT AID A0000000871002]")
    assert lines[5] == ("10:00:00.125  <<  ch1  6A82  SW=6A82 (File or application not found)")
    assert "ch3  83F2000002  [STATUS]" in lines[8]
    start = lines.index("+-- BIP: OPEN CHANNEL")
    end = lines.index("+-- BIP: CLOSE CHANNEL")
    folded = lines[start + 1:end]
    assert len(folded) == 10 and all(line.startswith("|   ") for line in folded)
    assert "[FETCH: OPEN CHANNEL]" in folded[0]
    assert "[TERMINAL RESPONSE: CLOSE CHANNEL, result 00" in folded[-2]
    assert lines[end + 1] == ("10:00:00.141  >>  ch0  0020000100  "
                              "[VERIFY 01 (retry counter query)]")
    assert lines[end + 2].endswith("SW=63C3 (3 PIN attempts remaining)")


def test_show_errors_leaves_out_more_data_and_json_has_channel_and_source(run, capture):
    assert run("logs", "import", str(capture)).exit_code == 0
    session_id = OTASession.get().id
    result = run("logs", "show", session_id, "--errors", "--json")
    rows = json.loads(result.output)
    assert [(r["status_word"], r["status_meaning"], r["channel"]) for r in rows] == [
        ("6A82", "File or application not found", 1),
        ("6A80", "Incorrect parameters in the data field", 0)]
    assert rows[0]["source"] == {"path": str(capture), "format": "pcapng"}


def test_import_json_dry_run_and_reimport(run, capture):
    dry = run("logs", "import", str(capture), "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    [summary] = json.loads(dry.output)
    assert (summary["dry_run"], summary["exchanges"], summary["sessions_created"]) == (
        True, len(BENCH), 1)
    assert OTASession.select().count() == 0
    assert run("logs", "import", str(capture)).exit_code == 0
    again = run("logs", "import", str(capture))
    assert again.exit_code == 0
    assert again.output.strip() == (f"{capture} (pcapng): already imported as trace source "
                                    f"{TraceSource.get().id}; nothing changed")
    assert CommLog.select().count() == 1 + 2 * len(BENCH)


def test_dry_run_into_a_given_session_says_that_session(run, capture):
    session = OTASession.create(session_type="triggered")
    dry = run("logs", "import", str(capture), "--session", session.id, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert dry.output.splitlines() == [
        f"{capture} (pcapng): would import {len(BENCH)} exchanges, 1 ATRs, 0 resets, "
        f"{1 + 2 * len(BENCH)} rows into {session.id}; nothing written (dry run)"]
    [summary] = json.loads(run("logs", "import", str(capture), "--session", session.id,
                               "--dry-run", "--json").output)
    assert (summary["sessions"], summary["sessions_created"]) == ([session.id], 0)
    assert (OTASession.select().count(), CommLog.select().count()) == (1, 0)


def test_another_kind_of_file_is_one_error_line(run, tmp_path):
    path = tmp_path / "export.json"
    path.write_text('{"format": "cardlink-export", "devices": []}\n')
    result = run("logs", "import", str(path))
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: {path}: not a trace this tool can read (a text file); tried: pcapng, pcap, "
        "gppro, apdu4j, pysim-shell, pyscard, tca-loader, hex-lines, pysim-hex. Pass --format "
        "to name it if it is one of them")


def test_truncated_and_damaged_captures_are_reported(run, capture, tmp_path):
    cut = tmp_path / "cut.pcapng"
    cut.write_bytes(capture.read_bytes()[:-9])
    result = run("logs", "import", str(cut))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1].startswith("  truncated: the last ")
    damaged = bytearray(capture.read_bytes())
    at = damaged.index(bytes.fromhex(BENCH[2][0])) - (14 + 20 + 8 + 16) - 28
    damaged[at + 4:at + 8] = b"\xf0\xff\xff\x7f"  # a block length no block has
    bad = tmp_path / "damaged.pcapng"
    bad.write_bytes(bytes(damaged))
    result = run("logs", "import", str(bad))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1:] == [
        f"  damaged: offset {at}: pcapng block length 2147483632 makes no sense; "
        "100 bytes unreadable"]
    assert f"{len(BENCH) - 1} exchanges" in result.output.splitlines()[0]


def test_session_and_split_exclude_each_other(run, capture):
    result = run("logs", "import", str(capture), "--session",
                 "123e4567-e89b-12d3-a456-426614174000", "--split-on-reset")
    assert result.exit_code == 2
    assert "use either --session or --split-on-reset, not both" in result.output


def test_unknown_session_is_one_error_line(run, capture):
    missing = "123e4567-e89b-12d3-a456-426614174000"
    result = run("logs", "import", str(capture), "--session", missing)
    assert result.exit_code == 1
    assert result.output.strip().startswith(f"Error: session {missing} not found")
    assert OTASession.select().count() == 0


def test_import_show_export_in_a_real_process(db_url, manager, tmp_path, backend):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDLINK")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    dump = DATA / "apdu4j-gp-scp02-session.dump"

    def cardlink(*args):
        return subprocess.run(["cardlink-db", "--database", db_url, *args],
                              capture_output=True, text=True, env=env, timeout=120,
                              cwd=tmp_path)

    imported = cardlink("logs", "import", str(dump), "--json")
    assert imported.returncode == 0, imported.stderr
    [summary] = json.loads(imported.stdout)
    assert (summary["format"], summary["exchanges"], summary["atrs"]) == ("apdu4j", 9, 1)
    shown = cardlink("logs", "show", summary["sessions"][0])
    assert shown.returncode == 0, shown.stderr
    lines = [line for line in shown.stdout.splitlines() if not line.startswith("-- 20")]
    assert lines[0].startswith(f"From {dump} (apdu4j")
    assert lines[2] == "17:11:03.000  >>  ch0  00A4040000  [SELECT]"
    assert lines[3].endswith("SW=9000 (Success: normal ending of the command)  40.0 ms")
    assert any("[PUT KEY version 01 key 01]" in line for line in lines)
    exported = cardlink("export", "--tables", "logs", "-o", str(tmp_path / "out.json"))
    assert exported.returncode == 0, exported.stderr
    logs = json.loads((tmp_path / "out.json").read_text())
    text = json.dumps(logs)
    assert "INITIALIZE UPDATE key version 00" in text and "84D80181" in text


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # one terminal run is enough
def test_progress_bar_on_a_terminal_only(db_url, manager, tmp_path):
    pty = pytest.importorskip("pty")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDLINK")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    out = io.BytesIO()
    writer = CaptureWriter(out)
    for i in range(1000):
        writer.gsmtap(T0 + i, bytes.fromhex(BENCH[2][0]))
    path = tmp_path / "big.pcapng"
    path.write_bytes(out.getvalue())
    master, slave = pty.openpty()
    process = subprocess.Popen(["cardlink-db", "--database", db_url, "logs", "import",
                                str(path)], stdin=slave, stdout=slave, stderr=slave, env=env,
                               cwd=tmp_path)
    os.close(slave)
    shown = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    assert process.wait(timeout=120) == 0
    text = shown.decode(errors="replace")
    assert "big.pcapng  [####################################]  100%" in text
    assert "1,000 exchanges" in text
    piped = subprocess.run(["cardlink-db", "--database", db_url, "logs", "import", str(path)],
                           capture_output=True, text=True, env=env, timeout=120)
    assert "%" not in piped.stdout + piped.stderr  # not a terminal: no bar


def test_a_packet_time_out_of_range_is_a_damaged_line(run, tmp_path):
    out = io.BytesIO()
    writer = CaptureWriter(out, "pcapng")
    writer.gsmtap(T0, bytes.fromhex(ATR), sub_type=1)
    at = len(out.getvalue())
    writer.gsmtap(2**63 * 1000, bytes.fromhex(BENCH[0][0]))
    writer.gsmtap(T0 + 2_000_000, bytes.fromhex(BENCH[2][0]))
    path = tmp_path / "huge_ts.pcapng"
    path.write_bytes(out.getvalue())
    result = run("logs", "import", str(path))
    assert result.exit_code == 0, result.output
    session_id = OTASession.get().id
    assert result.output.splitlines() == [
        f"{path} (pcapng): 1 exchanges, 1 ATRs, 0 resets, 3 rows into {session_id}",
        f"  damaged: offset {at}: enhanced packet block with a time outside "
        "0001-01-01..9999-12-31"]


def test_apdu4j_times_past_9999_are_one_error_line(run, tmp_path):
    path = tmp_path / "late.dump"
    path.write_text("# Generated on Fri, 31 Dec 9999 23:59:59 +0000 by apdu4j\n00A4040000\n"
                    "# Received in 2000ms\n9000\n")
    result = run("logs", "import", str(path))
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"Error: {path}: a row's time falls outside 0001-01-01..9999-12-31 (UTC); check the "
        "apdu4j 'Generated on' and 'Received in' lines"]
    assert OTASession.select().count() == 0


def test_an_error_on_one_file_names_it(run, capture, tmp_path, monkeypatch):
    real = traces.import_trace

    def failing(manager, path, *args, **kwargs):
        if str(path).endswith("second.log"):
            raise ValidationError("1 log row(s) rejected, none of this batch was buffered")
        return real(manager, path, *args, **kwargs)

    monkeypatch.setattr(traces, "import_trace", failing)
    second = tmp_path / "second.log"
    second.write_text("00A40004023F00\n9000\n")
    result = run("logs", "import", str(capture), str(second))
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (
        f"Error: {second}: 1 log row(s) rejected, none of this batch was buffered "
        "(1 file(s) before it imported)")


# The import as a console script, with a real SIGINT sent to itself while the second batch
# of rows is being written (inside the import's transaction).
_INTERRUPTED_IMPORT = """
import os, signal, sys
from cardlink_lite import apdu
from cardlink_lite.cli import main

real_insert, calls = apdu.insert, []

def insert(plan, flat):
    calls.append(len(flat))
    if len(calls) == 2:
        os.kill(os.getpid(), signal.SIGINT)  # KeyboardInterrupt is raised right here
    return real_insert(plan, flat)

apdu.insert = insert
main(sys.argv[1:])
"""


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # one real subprocess is enough
def test_ctrl_c_during_an_import_leaves_no_rows_behind(db_url, manager, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDLINK")}
    session = OTASession.create(session_type="triggered")
    out = io.BytesIO()
    writer = CaptureWriter(out)
    for i in range(3000):  # 6,000 rows: three batches of 2,000
        writer.gsmtap(T0 + i * 1_000_000, bytes.fromhex(BENCH[2][0]))
    path = tmp_path / "big.pcapng"
    path.write_bytes(out.getvalue())
    args = ["--database", db_url, "logs", "import", str(path), "--session", session.id]
    interrupted = subprocess.run([sys.executable, "-c", _INTERRUPTED_IMPORT, *args],
                                 capture_output=True, text=True, env=env, timeout=120,
                                 cwd=tmp_path)
    assert interrupted.returncode == 1 and interrupted.stderr.strip() == "Aborted!"
    assert (CommLog.select().count(), TraceSource.select().count()) == (0, 0)
    imported = subprocess.run([sys.executable, "-m", "cardlink_lite", *args],
                              capture_output=True, text=True, env=env, timeout=120)
    assert imported.returncode == 0, imported.stderr
    source = TraceSource.get()
    assert CommLog.select().where(CommLog.source_id == source.id).count() == 6000
    assert CommLog.select().count() == 6000
