"""Bad option values are one ``Error:`` line naming the option, quoting a short prefix of the
value, exit 2: dates, table lists and ids longer than their column."""

import pytest
from click.testing import CliRunner

from cardlink_lite.cli import cli
from tests.test_cli_table_names import ALL_NAMES

LONG = "x" * 5000
QUOTED = "'" + "x" * 40 + "'... (5,000 long)"
NOT_A_DATE = f"{QUOTED} is not a date or time; use 2024-11-29 or 2024-11-29T08:00 (UTC)"
ID = "y" * 70


def _too_long(limit: int, value: str) -> str:
    return f"must be at most {limit} characters; got {len(value)} ({value[:20] + '...'!r})"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("args", "error"), [
    (["sessions", "list", "--since", LONG], f"Invalid value for '--since': {NOT_A_DATE}"),
    (["report", "--since", LONG], f"Invalid value for '--since': {NOT_A_DATE}"),
    (["export", "--tables", LONG],
     f"Invalid value for --tables: unknown table {QUOTED}; use any of {ALL_NAMES}"),
    (["purge", "--older-than", "1", "--tables", LONG],
     f"Invalid value for --tables: cannot purge table {QUOTED}; choose from logs, tests, "
     "sessions"),
    (["runs", "show", ID], f"Invalid value for 'RUN_ID': {_too_long(64, ID)}"),
    (["runs", "junit", ID], f"Invalid value for 'RUN_ID': {_too_long(64, ID)}"),
    (["runs", "compare", "a", ID], f"Invalid value for 'RUN_B': {_too_long(64, ID)}"),
    (["runs", "list", "--suite", LONG], f"Invalid value for '--suite' / '-s': "
                                        f"{_too_long(128, LONG)}"),
    (["report", "--suite", LONG], f"Invalid value for '--suite' / '-s': "
                                  f"{_too_long(128, LONG)}"),
    (["sessions", "list", "--device", ID], f"Invalid value for '--device': {_too_long(64, ID)}"),
    (["sessions", "list", "--card", "8" * 23], "Invalid value for '--card': "
                                               f"{_too_long(22, '8' * 23)}"),
    (["logs", "import", "--device", ID, "trace.log"],
     f"Invalid value for '--device': {_too_long(64, ID)}"),
    (["logs", "import", "--card", "8" * 23, "trace.log"],
     f"Invalid value for '--card': {_too_long(22, '8' * 23)}"),
    (["demo", "--device-id", ID], f"Invalid value for '--device-id': {_too_long(64, ID)}"),
])
def test_a_bad_value_is_one_short_error_line(manager, db_url, tmp_path, monkeypatch, args,
                                             error):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "trace.log").write_text("00A4040000\n9000\n")
    result = CliRunner().invoke(cli, ["--database", db_url, *args])
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines()[-1] == f"Error: {error}"
    assert len(result.stderr) < 1000


# click's own errors (and a library error) quote the value whole: cut like errors.quote.
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("args", "error"), [
    (["import", "--conflict", LONG, "x.json"],
     f"Invalid value for '--conflict': {QUOTED} is not one of 'skip', 'overwrite', 'merge'."),
    (["import", "--format", LONG, "x.json"],
     f"Invalid value for '--format' / '-f': {QUOTED} is not one of 'json', 'jsonl', 'yaml'."),
    (["import", LONG], f"Invalid value for 'FILE': File {QUOTED} does not exist."),
    (["purge", "--older-than", LONG],
     f"Invalid value for '--older-than': {QUOTED} is not a valid integer range."),
    ([LONG], f"No such command {QUOTED}."),
    (["logs", LONG], f"No such command {QUOTED}."),
    (["--" + LONG], "No such option '--" + "x" * 38 + "'... (5,002 long)."),
    (["import", "--conflict", "a'b" * 100, "x.json"],
     "Invalid value for '--conflict': \"" + ("a'b" * 14)[:40] + "\"... (300 long) is not one "
     "of 'skip', 'overwrite', 'merge'."),
])
def test_clicks_own_errors_quote_a_short_prefix(manager, db_url, tmp_path, monkeypatch, args,
                                                error):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["--database", db_url, *args])
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines()[-1] == f"Error: {error}"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_library_error_quotes_a_short_prefix(manager, db_url):
    result = CliRunner().invoke(cli, ["--database", db_url, "migrate", "--revision", LONG])
    assert result.exit_code == 2, result.output  # bad input: a usage error
    assert result.stderr.splitlines()[-1].startswith(
        f"Error: Invalid value for '--revision' / '-r': Target revision not found: {QUOTED}; "
        "known revisions: 0001_initial, ")


def test_a_path_of_up_to_100_characters_is_shown_whole(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = "d" * 90 + ".json"
    result = CliRunner().invoke(cli, ["--database", "sqlite:///x.db", "import", path])
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == \
        f"Error: Invalid value for 'FILE': File '{path}' does not exist."


BIGINT = 2**63 - 1


@pytest.mark.parametrize(("args", "error"), [
    (["sessions", "list", "-n", "99999999999999999999999"],
     f"Invalid value for '--limit' / '-n': 99999999999999999999999 is not in the range "
     f"1<=x<={BIGINT}."),
    (["runs", "list", "-n", str(BIGINT + 1)],
     f"Invalid value for '--limit' / '-n': {BIGINT + 1} is not in the range 1<=x<={BIGINT}."),
    (["purge", "--older-than", "1", "--chunk-size", "99999999999999999999"],
     "Invalid value for '--chunk-size': 99999999999999999999 is not in the range "
     "1<=x<=30000."),
    (["purge", "--older-than", "1" + "0" * 40],
     f"Invalid value for '--older-than': {'1' + '0' * 40} is not in the range 0<=x<={BIGINT}."),
])
def test_an_integer_past_its_bound_is_one_error_line(manager, db_url, args, error):
    result = CliRunner().invoke(cli, ["--database", db_url, *args])
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines()[-1] == f"Error: {error}"


@pytest.mark.parametrize("args", [
    ["sessions", "list", "-n", str(BIGINT)], ["runs", "list", "-n", str(BIGINT)],
    ["purge", "--older-than", "3000000", "--dry-run"],
    ["purge", "--older-than", str(BIGINT), "--chunk-size", "30000", "--yes"],
])
def test_the_largest_integers_work_on_every_backend(manager, db_url, args):
    result = CliRunner().invoke(cli, ["--database", db_url, *args])
    assert result.exit_code == 0, result.output
    if args[0] == "purge":  # more days than the calendar has: everything stored
        assert result.stdout.startswith("Rows older than 0001-01-01 ")
