"""Read-only commands open a SQLite store read-only: its bytes and journal mode stay as
they were (a DELETE-mode archive is not turned into WAL), and no -wal file appears."""

import hashlib
import sqlite3

import pytest
from click.testing import CliRunner

from cardlink_lite.cli import cli

SESSION = "3f2c9a1e-8b7d-4c1a-9e2f-0a1b2c3d4e5f"


@pytest.fixture
def archive(tmp_path):
    path = tmp_path / "archive.db"
    url = f"sqlite:///{path}"
    runner = CliRunner()
    assert runner.invoke(cli, ["--database", url, "demo"]).exit_code == 0
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = DELETE").fetchall()
    conn.close()
    return path, url


@pytest.mark.parametrize("args", [
    ["status"], ["stats"], ["check"], ["check", "--quick"], ["export"], ["sessions", "list"],
    ["runs", "list"], ["logs", "show", SESSION], ["keys", "check"],
], ids=lambda a: " ".join(a[:2]))
def test_read_only_commands_leave_the_file_as_it_was(archive, args):
    path, url = archive
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    result = CliRunner().invoke(cli, ["--database", url, *args])
    assert result.exit_code in (0, 1), result.output  # logs show: an unknown session is fine
    assert "readonly" not in result.output
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert not path.with_name(path.name + "-wal").exists()
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()
