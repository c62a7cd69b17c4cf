"""Processes started together on a store that needs migrating: one migrates, the others wait
for it and go on (parallel CI jobs sharing one results store)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cardlink_lite import DatabaseConfig, DatabaseManager, get_pending_revisions, run_migrations
from cardlink_lite.models import TestResult, TestRun

ROOT = Path(__file__).resolve().parent.parent
PROCESSES = 4

# Every process waits here until all have arrived, so they reach the store together.
BARRIER = textwrap.dedent("""
    import os, time
    from pathlib import Path

    def barrier(directory, parties):
        Path(directory, f"arrived-{os.getpid()}").touch()
        deadline = time.monotonic() + 60
        while len(list(Path(directory).glob("arrived-*"))) < parties:
            if time.monotonic() > deadline:
                raise SystemExit("barrier: the other processes never arrived")
            time.sleep(0.005)
""")

LIBRARY = BARRIER + textwrap.dedent("""
    import sys
    from cardlink_lite import init_database
    barrier(sys.argv[2], int(sys.argv[3]))
    init_database(sys.argv[1]).close()
""")

CONFTEST = BARRIER + textwrap.dedent("""
    import pytest

    @pytest.hookimpl(tryfirst=True)
    def pytest_configure(config):  # before the recorder opens (and migrates) the store
        barrier(os.environ["BARRIER_DIR"], int(os.environ["BARRIER_PARTIES"]))
""")


def _prepare(db_url: str, state: str) -> None:
    manager = DatabaseManager(DatabaseConfig(db_url))
    manager.initialize(check_schema=False)
    try:
        if state == "older":
            run_migrations(target="0003", manager=manager)
    finally:
        manager.close()


def _env(tmp_path: Path) -> dict:
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDLINK")}
    # The children run this checkout's code, as the test process does.
    return {**env, "PYTHONPATH": str(ROOT), "BARRIER_DIR": str(barrier),
            "BARRIER_PARTIES": str(PROCESSES)}


def _wait_all(procs) -> list[tuple[int, str]]:
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=180)
        results.append((proc.returncode, out))
    return results


def _head_reached(db_url: str) -> DatabaseManager:
    manager = DatabaseManager(DatabaseConfig(db_url))
    manager.initialize(check_schema=False)
    assert get_pending_revisions(manager=manager) == []
    return manager


@pytest.mark.parametrize("state", ["fresh", "older"])
def test_processes_migrating_together_all_succeed(db_url, backend, tmp_path, state):
    _prepare(db_url, state)
    env = _env(tmp_path)
    procs = [subprocess.Popen([sys.executable, "-c", LIBRARY, db_url, env["BARRIER_DIR"],
                               str(PROCESSES)], env=env, cwd=tmp_path, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for _ in range(PROCESSES)]
    for rc, out in _wait_all(procs):
        assert rc == 0, out
    _head_reached(db_url).close()


def test_parallel_pytest_jobs_on_a_fresh_store_all_record(db_url, backend, tmp_path):
    env = _env(tmp_path)
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_job.py").write_text("def test_one():\n    pass\n")
    procs = [subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               "-p", "no:xdist", "--cardlink-db", db_url,
                               "--cardlink-run-id", f"job-{n}", "test_job.py"],
                              env=env, cwd=tmp_path, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for n in range(PROCESSES)]
    for rc, out in _wait_all(procs):
        assert rc == 0, out
        assert "not recorded" not in out
    manager = _head_reached(db_url)
    try:
        runs = sorted(r.id for r in TestRun.select().execute(manager.database))
        results = TestResult.select().count(manager.database)
    finally:
        manager.close()
    assert runs == [f"job-{n}" for n in range(PROCESSES)]
    assert results == PROCESSES


RACING = """
import importlib

import pytest

from cardlink_lite import MigrationError

# The module the plugin uses now (pytester drops modules a run imported, so an attribute
# of the package may be an older copy).
pytest_recorder = importlib.import_module("cardlink_lite.pytest_recorder")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):  # before the recorder opens the store
    real = config.real_migrations = pytest_recorder.run_migrations

    def racing(**kwargs):  # another job migrates first; ours then fails on what it created
        real(**kwargs)
        raise MigrationError('migration failed and was rolled back: table "devices" exists')

    pytest_recorder.run_migrations = racing


def pytest_unconfigure(config):
    pytest_recorder.run_migrations = config.real_migrations
"""


def test_a_migration_another_job_finished_first_is_no_failure(pytester, db_url, backend):
    pytester.makeconftest(RACING)
    pytester.makepyfile("def test_one():\n    pass\n")
    result = pytester.runpytest("--cardlink-db", db_url)
    result.assert_outcomes(passed=1)
    assert "not recorded" not in result.stdout.str()
    _head_reached(db_url).close()
