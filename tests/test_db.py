"""DatabaseManager: binding, pragmas, errors, re-initialisation and reconnection."""

import logging
import os
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

import peewee
import pytest

from cardlink_lite import (
    ConfigurationError,
    ConnectionError,
    DatabaseConfig,
    DatabaseManager,
    Device,
    UnitOfWork,
    init_database,
)
from cardlink_lite.db import database_proxy
from tests import servers


def test_health_check_reports_backend_url_and_revision(manager, backend):
    info = manager.health_check()
    assert info["status"] == "healthy"
    assert info["backend"] == {"sqlite": "SQLite", "mysql": "MySQL",
                               "postgresql": "PostgreSQL"}[backend]
    from cardlink_lite.migrations import get_head_revision

    assert info["revision"] == get_head_revision()
    assert info["url"] == manager.config.safe_url


def test_session_scope_commits_and_rolls_back(manager):
    with manager.session_scope():
        Device.create(id="kept", device_type="phone")
    with pytest.raises(RuntimeError), manager.session_scope():
        Device.create(id="lost", device_type="phone")
        raise RuntimeError("boom")
    assert [d.id for d in Device.select()] == ["kept"]


def test_sqlite_pragmas(sqlite_manager):
    db = sqlite_manager.database
    assert db.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute_sql("PRAGMA foreign_keys").fetchone()[0] == 1
    assert db.execute_sql("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert db.execute_sql("PRAGMA cache_size").fetchone()[0] == -64000
    assert db.execute_sql("PRAGMA busy_timeout").fetchone()[0] >= 5000


def test_sqlite_write_transactions_begin_immediate(sqlite_manager, tmp_path):
    # An open transaction holds the write lock from its first statement, so a
    # second writer is refused at BEGIN instead of failing later mid-transaction.
    other = sqlite3.connect(tmp_path / "cardlink.db", timeout=0, isolation_level=None)
    with sqlite_manager.atomic():
        Device.select().count()  # read only
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
    other.execute("BEGIN IMMEDIATE")
    other.execute("ROLLBACK")
    other.close()


def test_new_sqlite_file_and_directory_are_private(tmp_path):
    os.umask(0o022)
    path = tmp_path / "data" / "bench.db"
    manager = DatabaseManager(DatabaseConfig.from_sqlite_path(path)).initialize(
        check_schema=False)
    try:
        manager.create_tables()
        Device.create(id="x", device_type="phone")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
        for suffix in ("-wal", "-shm"):
            companion = path.with_name(path.name + suffix)
            if companion.exists():
                assert stat.S_IMODE(os.stat(companion).st_mode) == 0o600
    finally:
        manager.close()


def test_refused_connection_names_redacted_url():
    manager = DatabaseManager("postgresql://bench:hunter2@127.0.0.1:1/cardlink")
    with pytest.raises(ConnectionError) as info:
        manager.initialize()
    message = str(info.value)
    assert "postgresql://bench:***@127.0.0.1:1/cardlink" in message
    assert "hunter2" not in message and "server is running" in message


def test_missing_driver_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg2", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'cardlink-lite\[postgresql\]'"):
        DatabaseManager("postgresql://u@127.0.0.1/db").initialize()


def test_unbound_proxy_says_what_to_call(monkeypatch):
    monkeypatch.setattr(database_proxy, "obj", None)
    with pytest.raises(ConfigurationError, match="initialize"):
        Device.select().count()


def test_reinitialising_with_another_url_rebinds_models(tmp_path):
    first = init_database(f"sqlite:///{tmp_path}/a.db")
    Device.create(id="in-a", device_type="phone")
    second = init_database(f"sqlite:///{tmp_path}/b.db")
    Device.create(id="in-b", device_type="modem")
    assert [d.id for d in Device.select()] == ["in-b"]
    first.bind()
    assert [d.id for d in Device.select()] == ["in-a"]
    first.close()
    second.close()


def _server_pid(manager):
    if manager.backend == "postgresql":
        return manager.database.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
    return manager.database.execute_sql("SELECT CONNECTION_ID()").fetchone()[0]


def _kill(backend, pid):
    if backend == "postgresql":
        servers.execute(backend, f"SELECT pg_terminate_backend({pid})")
    else:
        servers.execute(backend, f"KILL {pid}")


@pytest.mark.parametrize("backend", ["mysql", "postgresql"], indirect=True)
def test_dropped_connection_is_replaced_before_the_next_unit_of_work(manager, backend):
    with manager.session_scope():
        Device.create(id="before", device_type="phone")
        pid = _server_pid(manager)
    _kill(backend, pid)
    with manager.session_scope():
        Device.create(id="after", device_type="phone")
    assert sorted(d.id for d in Device.select()) == ["after", "before"]


@pytest.mark.parametrize("backend", ["mysql", "postgresql"], indirect=True)
@pytest.mark.parametrize("pooled", [False, True], ids=["held", "pooled"])
def test_dropped_idle_connection_is_replaced_by_the_next_unit_of_work(manager, backend,
                                                                     pooled):
    # held: the thread keeps its connection open between units of work; pooled: each unit
    # of work takes one from the pool and gives it back.
    if pooled:
        manager.database.close()
    else:
        manager.ensure_connection()
    with UnitOfWork(manager) as uow:
        uow.devices.create(Device(id="before", device_type="phone"))
        pid = _server_pid(manager)
    assert manager.database.is_closed() is pooled
    _kill(backend, pid)
    with UnitOfWork(manager) as uow:
        assert uow.devices.get_by_id("before") is not None
        uow.devices.create(Device(id="after", device_type="phone"))
    assert sorted(d.id for d in Device.select()) == ["after", "before"]


@pytest.mark.parametrize("backend", ["mysql", "postgresql"], indirect=True)
def test_connection_lost_inside_a_transaction_is_not_silently_retried(manager, backend):
    with pytest.raises(peewee.PeeweeException), manager.session_scope():
        Device.create(id="first", device_type="phone")
        _kill(backend, _server_pid(manager))
        Device.create(id="second", device_type="phone")
    manager.ensure_connection()
    assert Device.select().count() == 0


def test_threads_get_their_own_connections(manager):
    errors = []

    def work(n):
        try:
            for i in range(10):
                with manager.session_scope():
                    Device.create(id=f"t{n}-{i}", device_type="phone")
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)
        finally:
            if not manager.database.is_closed():
                manager.database.close()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert Device.select().count() == 30


def test_initialize_keeps_no_connection_a_worker_thread_needs(db_url, backend):
    init_database(db_url).close()
    manager = DatabaseManager(DatabaseConfig(db_url, pool_size=1, max_overflow=0,
                                             pool_timeout=2))
    manager.initialize()  # the schema check runs a query on this thread's connection
    outcomes = []

    def worker(n):
        try:
            with UnitOfWork(manager) as uow:
                uow.devices.create(Device(id=f"w{n}", device_type="phone"))
            outcomes.append(True)
        except Exception as exc:  # noqa: BLE001 - the outcome under test
            outcomes.append(exc)

    try:
        for n in range(2):
            thread = threading.Thread(target=worker, args=(n,))
            thread.start()
            thread.join()
        assert outcomes == [True, True]
        if backend != "sqlite":  # SQLite keeps its (unpooled) connection open
            assert manager.database.is_closed()
        manager.database.connect(reuse_if_open=True)
        manager.initialize()  # a connection open before is left open
        assert not manager.database.is_closed()
    finally:
        manager.close()


def test_slow_query_logging_names_the_query(tmp_path, caplog):
    manager = DatabaseManager(DatabaseConfig(f"sqlite:///{tmp_path}/s.db", slow_query_ms=0.0001))
    manager.initialize(check_schema=False)
    try:
        with caplog.at_level(logging.WARNING, logger="cardlink_lite.slow_query"):
            manager.database.execute_sql("SELECT 12345")
        assert any("SELECT 12345" in r.getMessage() for r in caplog.records)
    finally:
        manager.close()


ROOT = Path(__file__).resolve().parent.parent  # the package under test, not an installed one

# Each runs in a fresh interpreter with only the guide's import, DATABASE_URL set: no code
# has imported cardlink_lite.manager, so the default manager must come from the package.
_DEFAULT_MANAGER_SAMPLES = {
    "migrations": (
        "from cardlink_lite import (run_migrations, downgrade, get_current_revision,\n"
        "                           get_pending_revisions)\n"
        "run_migrations()\n"
        "downgrade(steps=1)\n"
        "print(get_current_revision() is not None, len(get_pending_revisions()))\n"
        "run_migrations()\n"
        "print(get_pending_revisions())\n",
        "True 1\n[]\n"),
    "unit of work": (
        "from cardlink_lite import UnitOfWork\n"
        "with UnitOfWork() as uow:\n"
        "    print(uow.devices.count())\n",
        "0\n"),
    "counters": (
        "from cardlink_lite import peek_counter\n"
        "print(peek_counter('8901410000000000001', 1, 'B00010'))\n",
        "None\n"),
    "record_session": (
        "from cardlink_lite import record_session\n"
        "with record_session(session_type='triggered') as s:\n"
        "    s.command('00A40400', 'SELECT')\n"
        "print('recorded')\n",
        "recorded\n"),
}


@pytest.mark.parametrize("sample", sorted(_DEFAULT_MANAGER_SAMPLES))
def test_optional_manager_defaults_to_database_url_with_only_the_public_import(
        sample, db_url, tmp_path):
    code, expected = _DEFAULT_MANAGER_SAMPLES[sample]
    if sample != "migrations":
        setup = DatabaseManager(DatabaseConfig(db_url))
        setup.initialize(check_schema=False)
        setup.create_tables()
        setup.close()
    env = {**os.environ, "DATABASE_URL": db_url, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=120)
    assert (done.returncode, done.stdout) == (0, expected), done.stderr[-2000:]
