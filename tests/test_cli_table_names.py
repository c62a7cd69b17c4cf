"""One spelling of each table in all output (the guide's); both spellings accepted as input."""

import json
import re

from click.testing import CliRunner

from cardlink_lite.cli import cli
from cardlink_lite.table_names import TABLE_NAMES

SQL_NAMES = re.compile(
    r"\b(card_profiles|ota_sessions|comm_logs|test_results|trace_sources|replay_counters"
    r"|test_runs)\b")


def test_output_uses_the_guides_table_names_and_input_takes_both(db_url, tmp_path):
    runner = CliRunner()

    def run(*args):
        result = runner.invoke(cli, ["--database", db_url, *args])
        assert result.exit_code == 0, result.output
        return result

    run("demo")
    dump = tmp_path / "dump.json"
    shown = [
        run("status", "--verbose").output,
        run("status", "--json", "--verbose").stdout,
        run("stats").output,
        run("stats", "--json").stdout,
        run("export", "-o", str(dump)).stderr,
        run("import", str(dump), "--dry-run").stderr,
        run("import", str(dump), "--dry-run", "--json").output,
        run("purge", "--older-than", "0", "--tables", "sessions,logs", "--dry-run").output,
        run("check").output,
    ]
    for text in shown:
        assert not SQL_NAMES.search(text), text
    status = json.loads(run("status", "--json", "--verbose").stdout)
    assert set(status["tables"]) == {"devices", "cards", "sessions", "logs", "tests", "settings",
                                     "traces", "counters", "runs"}
    assert "  cards: " in run("status", "--verbose").output
    by_sql = json.loads(run("export", "--tables", "card_profiles,comm_logs").stdout)
    by_guide = json.loads(run("export", "--tables", "cards,logs").stdout)
    assert by_sql["card_profiles"] == by_guide["card_profiles"]
    assert by_sql["comm_logs"] == by_guide["comm_logs"]
    assert run("purge", "--older-than", "0", "--tables", "comm_logs,ota_sessions",
               "--dry-run").exit_code == 0


ALL_NAMES = ("devices, cards, sessions, traces, logs, tests, settings, counters, runs, "
             "card_profiles, ota_sessions, trace_sources, comm_logs, test_results, "
             "replay_counters, test_runs")


def test_every_table_name_output_prints_is_taken_as_input(db_url, tmp_path):
    runner = CliRunner()

    def run(*args):
        return runner.invoke(cli, ["--database", db_url, *args])

    run("demo")
    dump = tmp_path / "dump.json"
    printed = run("export", "-o", str(dump)).stderr  # Exported 373 rows (devices 2, ...)
    names = re.findall(r"(\w+) [\d,]+", printed.partition("(")[2])
    assert sorted(names) == sorted(TABLE_NAMES.values())
    for name, sql in zip(TABLE_NAMES.values(), TABLE_NAMES, strict=True):
        exported = run("export", "--tables", name)
        assert exported.exit_code == 0, exported.output
        assert list(json.loads(exported.stdout))[-2] == sql  # then the row counts
    # A document keyed by the printed names imports like one keyed by the SQL names.
    document = json.loads(dump.read_text())
    renamed = tmp_path / "renamed.json"
    renamed.write_text(json.dumps({TABLE_NAMES.get(k, k): v for k, v in document.items()}))
    by_sql = run("import", str(dump), "--dry-run", "--json")
    by_display = run("import", str(renamed), "--dry-run", "--json")
    assert by_display.exit_code == 0, by_display.output
    assert json.loads(by_display.stdout) == json.loads(by_sql.stdout)

    refused = run("export", "--tables", "devices,phones")
    assert refused.exit_code == 2
    assert refused.stderr.splitlines()[-1] == (
        f"Error: Invalid value for --tables: unknown table 'phones'; use any of {ALL_NAMES}")
    (tmp_path / "phones.json").write_text('{"format_version": 1, "phones": []}')
    refused = run("import", str(tmp_path / "phones.json"))
    assert refused.exit_code == 1
    assert f"phones: unknown table; use any of {ALL_NAMES}" in refused.stderr
