"""One spelling of each table in all output (the guide's); both spellings accepted as input."""

import json
import re

from click.testing import CliRunner

from cardlink_lite.cli import cli

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
