"""One time format in every JSON output: ISO 8601 UTC with ``T``, milliseconds and ``Z``."""

import json
import re

import pytest
from click.testing import CliRunner

from cardlink_lite.cli import cli

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
LOOKS_LIKE_TIME = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d")


def _times(value, path="$"):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _times(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _times(item, f"{path}[{i}]")
    elif isinstance(value, str) and LOOKS_LIKE_TIME.search(value):
        yield path, value


@pytest.fixture
def store(db_url):
    runner = CliRunner()

    def run(*args):
        result = runner.invoke(cli, ["--database", db_url, *args])
        assert result.exit_code == 0, result.output
        return result.stdout

    run("demo")
    return run


def test_every_json_output_has_one_time_format(store):
    doc = json.loads(store("export"))
    session_id = doc["ota_sessions"][0]["id"]
    run_id = json.loads(store("runs", "list", "--json"))[0]["run_id"]
    outputs = {
        "export": doc,
        "status": json.loads(store("status", "--json")),
        "stats": json.loads(store("stats", "--json")),
        "runs list": json.loads(store("runs", "list", "--json")),
        "runs show": json.loads(store("runs", "show", run_id, "--json")),
        "logs show": json.loads(store("logs", "show", session_id, "--json")),
        "purge": json.loads(store("purge", "--older-than", "0", "--dry-run", "--json")),
        "sessions list": json.loads(store("sessions", "list", "--json")),
    }
    seen = 0
    for command, payload in outputs.items():
        for path, value in _times(payload):
            seen += 1
            assert STAMP.match(value), f"{command} {path} = {value!r}"
    assert seen > 20
    assert {name for name, payload in outputs.items() if list(_times(payload))} >= {
        "export", "runs list", "runs show", "logs show", "purge", "sessions list"}


def test_migrate_dry_run_prints_times_in_the_same_format(db_url):
    result = CliRunner().invoke(cli, ["--database", db_url, "migrate", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "datetime.datetime(" not in result.output
    stamps = re.findall(r"'(\d{4}-\d\d-\d\d[^']*)'", result.output)
    assert stamps and all(STAMP.match(s) for s in stamps), stamps
