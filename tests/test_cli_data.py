"""export, import, purge, stats, backup and check through the real CLI, on every backend."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from datetime import timedelta

import pytest
import yaml
from click.testing import CliRunner

from cardlink_lite import migrations as mig
from cardlink_lite.cli import cli
from cardlink_lite.crypto import generate_key
from cardlink_lite.fields import utc_now
from cardlink_lite.models import CommLog, OTASession, TestResult
from tests.transfer_helpers import PSK, checksums, extra_manager, populate, without_timestamp


@pytest.fixture
def run(db_url):
    runner = CliRunner()

    def invoke(*args, input=None):
        return runner.invoke(cli, ["--database", db_url, *args], input=input)

    return invoke


@pytest.fixture
def bench(manager):
    populate(manager)
    return manager


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_export_to_stdout_is_pipeable(bench, run):
    result = run("export")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert len(doc["comm_logs"]) == 6 and len(doc["test_results"]) == 1
    assert "Exported 13 rows" in result.stderr
    only = run("export", "--tables", "devices,cards", "--format", "yaml")
    assert list(yaml.safe_load(only.stdout))[3:-1] == ["devices", "card_profiles"]


def test_export_to_file_is_0600_and_format_follows_extension(bench, run, tmp_path):
    target = tmp_path / "backup.yaml"
    result = run("export", "-o", str(target))
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert _mode(target) == 0o600
    assert yaml.safe_load(target.read_text())["format_version"] == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".backup")] == []


def test_failed_export_leaves_no_file(manager, run, tmp_path, monkeypatch):
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", generate_key())
    populate(manager, psk=True)
    monkeypatch.delenv("CARDLINK_ENCRYPTION_KEY")
    target = tmp_path / "keys.json"
    target.write_text("previous backup")
    result = run("export", "--include-keys", "-o", str(target))
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1].startswith("Error: CARDLINK_ENCRYPTION_KEY")
    assert "Traceback" not in result.output
    assert target.read_text() == "previous backup"
    assert sorted(p.name for p in tmp_path.iterdir() if "keys.json" in p.name) == ["keys.json"]


def test_include_keys_warns(manager, run, tmp_path, monkeypatch):
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", generate_key())
    populate(manager, psk=True)
    result = run("export", "--include-keys", "--tables", "cards")
    assert result.exit_code == 0, result.output
    assert "holds decrypted PSK keys" in result.stderr
    assert json.loads(result.stdout)["card_profiles"][0]["psk_key"] == PSK.hex()


def test_export_unknown_table_is_a_usage_error(bench, run):
    result = run("export", "--tables", "devices,phones")
    assert result.exit_code == 2
    assert "unknown table 'phones'" in result.stderr


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_import_dry_run_then_import_then_skip(bench, run, backend, tmp_path, fmt):
    exported = tmp_path / f"dump.{fmt}"  # the format follows the extension both ways
    assert run("export", "-o", str(exported)).exit_code == 0
    if fmt == "jsonl":
        assert json.loads(exported.read_text().splitlines()[0])["format"] == "jsonl"
    with extra_manager(backend, tmp_path) as target:
        runner = CliRunner()
        url = target.config.url

        def imp(*args):
            return runner.invoke(cli, ["--database", url, "import", *args])

        dry = imp("--dry-run", str(exported))
        assert dry.exit_code == 0, dry.output
        assert "Would import" in dry.stderr and "13 created" in dry.stderr
        assert "Dry run: nothing was changed." in dry.stderr
        target.bind()
        assert sum(target.table_counts().values()) == 0
        done = imp("--json", str(exported))
        assert done.exit_code == 0, done.output
        assert json.loads(done.stdout)["tables"]["logs"]["created"] == 6
        before = checksums(target)
        again = imp("--conflict", "skip", str(exported))
        assert "0 created, 0 updated, 0 unchanged, 13 skipped" in again.stderr
        assert checksums(target) == before
        merged = imp("--conflict", "merge", "--yes", "--format", fmt, str(exported))
        # The store holds exactly the file's rows: nothing to change, all reported unchanged.
        assert "0 updated, 13 unchanged" in merged.stderr, merged.output
        over = imp("--conflict", "overwrite", "--yes", str(exported))
        assert over.exit_code == 0
        again = runner.invoke(cli, ["--database", url, "export", "--format", fmt])
        assert without_timestamp(again.stdout) == without_timestamp(exported.read_text())


def test_import_yaml_by_extension_and_content(bench, run, tmp_path):
    text = run("export", "--format", "yaml").stdout
    for name in ("dump.yml", "dump.txt"):
        path = tmp_path / name
        path.write_text(text)
        result = run("import", str(path))
        assert result.exit_code == 0, result.output
        assert "13 skipped" in result.stderr


@pytest.mark.parametrize("content, expected", [
    ("", "the import document is empty"),
    ('{"devices": [}', "not valid JSON"),
    ("[1, 2, 3]", "must be a mapping"),
    ('{"ota_sessions": [{"status": "exploded"}]}', "ota_sessions[0].status: must be one of"),
])
def test_broken_import_file_exits_1_and_changes_nothing(bench, run, tmp_path, content,
                                                        expected):
    path = tmp_path / "broken.json"
    path.write_text(content)
    before = checksums(bench)
    result = run("import", str(path))
    assert result.exit_code == 1
    assert expected in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("Error: ")
    assert "Traceback" not in result.output
    assert checksums(bench) == before


def _age(manager, days=100):
    """Everything recent, except logs 1-4, the test result and the failed session."""
    manager.bind()
    now, old = utc_now(), utc_now() - timedelta(days=days)
    CommLog.update(timestamp=now).execute()
    OTASession.update(created_at=now).execute()
    CommLog.update(timestamp=old).where(CommLog.id <= 4).execute()
    TestResult.update(created_at=old).execute()
    OTASession.update(created_at=old).where(OTASession.status == "failed").execute()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # one terminal run is enough
@pytest.mark.parametrize("answer,left", [("n", 6), ("y", 2)])
def test_purge_asks_on_a_terminal(bench, db_url, answer, left):
    from tests.test_cli_import_confirm import _on_a_terminal

    _age(bench)
    screen, code = _on_a_terminal(["--database", db_url, "purge", "--older-than", "30"],
                                  answer, question=b"Delete these rows? [y/N]")
    assert code == (1 if answer == "n" else 0), screen
    assert "logs: 4" in screen and ("Aborted!" in screen) == (answer == "n")
    assert CommLog.select().count() == left


def test_purge_prompts_and_honours_dry_run_and_yes(bench, run):
    _age(bench)
    dry = run("purge", "--older-than", "30", "--tables", "logs,sessions,tests", "--dry-run")
    assert dry.exit_code == 0
    assert "logs: 4" in dry.stdout and "sessions: 1" in dry.stdout and "tests: 1" in dry.stdout
    bench.bind()  # the CLI closed its own manager, which unbinds the models
    assert CommLog.select().count() == 6
    refused = run("purge", "--older-than", "30", "--tables", "logs")  # no terminal
    assert refused.exit_code == 1
    assert "logs: 4" in refused.stderr
    assert refused.stderr.splitlines()[-1] == (
        "Error: purge would delete 4 rows and there is no terminal to confirm it; rerun with "
        "--yes (or --dry-run to look first)")
    bench.bind()
    assert CommLog.select().count() == 6
    accepted = run("purge", "--older-than", "30", "--tables", "logs", "--yes")
    assert accepted.exit_code == 0, accepted.output
    assert "Deleted 4 rows (logs 4)" in accepted.stdout
    bench.bind()
    assert CommLog.select().count() == 2
    done = run("purge", "--older-than", "30", "--tables", "sessions,tests", "--yes", "--json")
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert report["deleted"] == {"tests": 1, "sessions": 1, "logs_of_sessions": 1}
    assert (report["space"] is not None) == bench.config.is_sqlite
    nothing = run("purge", "--older-than", "30", "--tables", "logs", "--vacuum")
    assert "Nothing to purge." in nothing.stdout
    bad = run("purge", "--older-than", "30", "--tables", "devices")
    assert bad.exit_code == 2 and "cannot purge table 'devices'" in bad.stderr


def test_stats(bench, run):
    _age(bench)
    result = run("stats", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["tables"] == {"devices": 2, "cards": 1, "sessions": 2, "traces": 0, "logs": 6,
                              "tests": 1, "settings": 1, "counters": 0, "runs": 0}
    assert info["recent_activity"] == {"sessions_last_24h": 1, "tests_last_24h": 0}
    assert info["session_success_rate"] == 50.0
    assert info["database_size_mb"] > 0
    text = run("stats")
    assert "logs: 6" in text.stdout and "Session success rate: 50.0%" in text.stdout
    assert "  runs: 0" in text.stdout and "  counters: 0" in text.stdout


@pytest.mark.parametrize("backend", ["mysql", "postgresql"], indirect=True)
def test_backup_on_a_server_names_its_dump_tool(bench, run, tmp_path, backend):
    result = run("backup", str(tmp_path / "copy.db"))
    assert result.exit_code == 1
    tool = "pg_dump" if backend == "postgresql" else "mariadb-dump"
    assert tool in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "copy.db").exists()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_backup_of_a_sqlite_file(bench, run, tmp_path):
    target = tmp_path / "copy.db"
    result = run("backup", str(target))
    assert result.exit_code == 0, result.output
    assert _mode(target) == 0o600
    copy = sqlite3.connect(target)
    assert copy.execute("SELECT COUNT(*) FROM comm_logs").fetchone() == (6,)
    assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    copy.close()
    again = run("backup", str(target))
    assert again.exit_code == 1 and "already exists" in again.stderr
    os.chmod(target, 0o644)
    forced = run("backup", "--force", "--json", str(target))
    assert json.loads(forced.stdout)["bytes"] > 0 and _mode(target) == 0o600


def test_check_passes_then_finds_a_missing_index(bench, run):
    ok = run("check")
    assert ok.exit_code == 0, ok.output
    assert "passed every check" in ok.stdout
    bench.bind()
    if bench.backend == "mysql":
        bench.database.execute_sql("DROP INDEX idx_log_direction ON comm_logs")
    else:
        bench.database.execute_sql("DROP INDEX idx_log_direction")
    bad = run("check", "--json")
    assert bad.exit_code == 1
    report = json.loads(bad.stdout)
    assert report["checks"]["missing_indexes"] == ["idx_log_direction"]
    assert any("idx_log_direction" in p for p in report["problems"])


def test_real_subprocess_export_import(bench, db_url, backend, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDLINK")}
    dump = tmp_path / "sub.json"
    exported = subprocess.run(
        [sys.executable, "-m", "cardlink_lite", "--database", db_url, "export", "-o",
         str(dump)], capture_output=True, text=True, env=env, timeout=120)
    assert exported.returncode == 0, exported.stderr
    assert _mode(dump) == 0o600
    broken = tmp_path / "broken.yaml"
    broken.write_text("devices: !!python/object/apply:os.system ['touch pwned']\n")
    failed = subprocess.run(
        [sys.executable, "-m", "cardlink_lite", "--database", db_url, "import", str(broken)],
        capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert failed.returncode == 1
    assert failed.stderr.startswith("Error: not valid YAML")
    assert not (tmp_path / "pwned").exists()
    imported = subprocess.run(
        [sys.executable, "-m", "cardlink_lite", "--database", db_url, "import", str(dump)],
        capture_output=True, text=True, env=env, timeout=120)
    assert imported.returncode == 0 and "13 skipped" in imported.stderr


def test_export_include_keys_without_a_key_writes_nothing_to_stdout(manager, run, monkeypatch):
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", generate_key())
    populate(manager, psk=True)
    monkeypatch.delenv("CARDLINK_ENCRYPTION_KEY")
    result = run("export", "--include-keys")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.strip().splitlines()[-1].startswith("Error: CARDLINK_ENCRYPTION_KEY")


def test_export_include_keys_with_a_wrong_key_writes_nothing_to_stdout(manager, run,
                                                                         monkeypatch):
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", generate_key())
    populate(manager, psk=True)
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", generate_key())
    result = run("export", "--include-keys")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: 1 PSK(s) cannot be opened with the configured keys; add the old key to "
        "CARDLINK_ENCRYPTION_KEYS (see cardlink-db keys check)")


PURGE_KEYS = ["cutoff", "dry_run", "would_delete", "deleted", "space"]


def test_purge_of_sessions_counts_and_shows_the_logs_that_go_with_them(bench, run):
    _age(bench)  # the failed session is old; its logs 3 and 5 are not (1 is)
    bench.bind()
    logs_of_old_session = (CommLog.select().join(OTASession)
                           .where(OTASession.status == "failed").count())
    assert logs_of_old_session == 3
    dry = json.loads(run("purge", "--older-than", "30", "--tables", "sessions", "--dry-run",
                         "--json").stdout)
    assert list(dry) == PURGE_KEYS
    assert dry["would_delete"] == {"sessions": 1, "logs_of_sessions": 3}
    assert dry["deleted"] == {"sessions": 0, "logs_of_sessions": 0}
    text = run("purge", "--older-than", "30", "--tables", "sessions", "--yes")
    assert text.exit_code == 0, text.output
    assert "Deleted 4 rows (sessions 1, logs of those sessions 3)." in text.stdout
    bench.bind()
    assert CommLog.select().count() == 3
    nothing = json.loads(run("purge", "--older-than", "30", "--tables", "sessions",
                             "--json").stdout)
    assert list(nothing) == PURGE_KEYS
    assert nothing["deleted"] == {"sessions": 0, "logs_of_sessions": 0}
    assert nothing["space"] is None


def test_purge_progress_counts_every_deleted_row(bench, db_url):
    from cardlink_lite import retention

    _age(bench)
    seen = {}
    bench.bind()
    done = retention.purge(bench.database, "logs,sessions", utc_now() - timedelta(days=30),
                           chunk_size=1,
                           progress=lambda key, n: seen.__setitem__(key, seen.get(key, 0) + n))
    assert done == seen == {"logs": 4, "sessions": 1, "logs_of_sessions": 1}


def test_backup_copies_a_store_a_newer_tool_migrated(sqlite_manager, tmp_path):
    # A backup before upgrading the tool is exactly when one is wanted: a copy needs no schema.
    mig._runner(sqlite_manager).History.create(name="9999_newer")
    copy = tmp_path / "before-upgrade.db"
    result = CliRunner().invoke(cli, ["--database", sqlite_manager.config.url, "backup",
                                      str(copy)])
    assert result.exit_code == 0, result.output
    assert sqlite3.connect(copy).execute(
        "SELECT count(*) FROM cardlink_migrations WHERE name = '9999_newer'").fetchone() == (1,)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_backup_force_keeps_the_old_backup_when_the_disk_is_full(bench, run, tmp_path,
                                                                 monkeypatch):
    from cardlink_lite import maintenance

    target = tmp_path / "copy.db"
    assert run("backup", str(target)).exit_code == 0
    before = target.read_bytes()
    real_connect = sqlite3.connect

    def small_disk(path, *args, **kwargs):  # SQLite's own "database or disk is full"
        copy = real_connect(path, *args, **kwargs)
        copy.execute("PRAGMA max_page_count = 2")
        return copy

    monkeypatch.setattr(maintenance.sqlite3, "connect", small_disk)
    full = run("backup", "--force", str(target))
    assert full.exit_code == 1
    assert full.stderr == (f"Error: cannot write the backup {str(target)!r}: the disk is full; "
                           "free some space or choose another path\n")
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".copy")) == []


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_backup_force_refuses_what_is_not_a_regular_file(bench, run, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    result = run("backup", "--force", str(fifo))
    assert result.exit_code == 1
    assert result.stderr == (f"Error: {fifo} is not a regular file; backup replaces only a "
                             "file: choose a file path\n")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
