"""The CLI imports what a command needs when it runs: click only for --version and --help,
and never a server driver for a SQLite URL (checked in fresh interpreters)."""

import json
import subprocess
import sys

import pytest

HEAVY = ("peewee", "playhouse", "pymysql", "psycopg2", "cryptography", "yaml", "jinja2")
DRIVERS = ("pymysql", "psycopg2", "MySQLdb", "psycopg")

_PROBE = """
import json, sys
from cardlink_lite.cli import main
args = json.loads(sys.argv[1])
try:
    if args is not None:
        main(args)
except SystemExit:
    pass
print(json.dumps(sorted(m.split(".")[0] for m, v in sys.modules.items() if v is not None)),
      file=sys.stderr)
"""


def _loaded(args, env_extra=None) -> set[str]:
    done = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(args)],
                          capture_output=True, text=True, timeout=120)
    return set(json.loads(done.stderr.strip().splitlines()[-1]))


@pytest.mark.parametrize("args", [None, ["--version"], ["--help"], ["logs", "--help"]],
                         ids=["import", "--version", "--help", "logs --help"])
def test_start_up_imports_nothing_heavy(args):
    loaded = _loaded(args)
    assert "click" in loaded
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_a_sqlite_command_loads_no_server_driver(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    subprocess.run([sys.executable, "-m", "cardlink_lite", "--database", url, "init"],
                   check=True, capture_output=True, timeout=120)
    loaded = _loaded(["--database", url, "status"])
    assert "peewee" in loaded  # the command did run
    assert not loaded & set(DRIVERS), sorted(loaded & set(DRIVERS))


def test_a_mysql_url_loads_no_postgresql_driver():
    loaded = _loaded(["--database", "mysql://root@127.0.0.1:1/none", "status"])
    assert "pymysql" in loaded
    assert not loaded & {"psycopg2", "psycopg"}
