"""Database errors a user can act on say what to do: a held write lock, missing tables, a
WAL store in a read-only directory."""

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

import cardlink_lite
from cardlink_lite.cli import cli


def _invoke(url, *args):
    return CliRunner().invoke(cli, ["--database", url, *args])


def test_a_held_write_lock_says_retry_or_raise_timeout(tmp_path):
    path = tmp_path / "bench.db"
    assert _invoke(f"sqlite:///{path}", "init").exit_code == 0
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process writing
    try:
        result = _invoke(f"sqlite:///{path}?timeout=0.1", "demo")
    finally:
        holder.close()
    assert result.exit_code == 1
    assert "database is locked; another process holds the write lock; retry, or raise " \
           "?timeout=" in result.output


def test_a_missing_table_says_how_to_create_it(manager):
    manager.database.execute_sql("DROP TABLE comm_logs")
    for args in (["stats"], ["export"]):
        result = _invoke(manager.config.url, *args)
        assert result.exit_code == 1, result.output
        assert "comm_logs" in result.output and "cardlink-db check --repair" in result.output


@pytest.mark.skipif(sys.platform == "win32" or not shutil.which("setpriv"),
                    reason="needs POSIX permissions (and setpriv to drop root)")
def test_a_wal_store_in_a_read_only_directory_points_at_immutable(tmp_path):
    assert _invoke(f"sqlite:///{tmp_path}/x.db", "init").exit_code == 0
    top = Path(tempfile.mkdtemp(prefix="cardlink-ro-"))
    try:
        store = top / "ro"
        store.mkdir()
        shutil.copy(tmp_path / "x.db", store / "bench.db")
        os.chmod(top, 0o755)
        os.chmod(store / "bench.db", 0o644)
        os.chmod(store, 0o555)
        as_user = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"] \
            if os.geteuid() == 0 else []
        env = {**os.environ, "PYTHONPATH": str(Path(cardlink_lite.__file__).parents[1])}

        def status(url):
            return subprocess.run([*as_user, sys.executable, "-m", "cardlink_lite", "--database",
                                   url, "status"], capture_output=True, text=True, env=env,
                                  cwd=top, timeout=120)

        failed = status(f"sqlite:///{store}/bench.db")
        assert failed.returncode == 1
        assert "readonly database" in failed.stderr and "?immutable=1" in failed.stderr
        assert status(f"sqlite:///{store}/bench.db?immutable=1").returncode == 0
    finally:
        os.chmod(top / "ro", 0o755)
        shutil.rmtree(top)
