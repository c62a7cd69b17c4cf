"""Each test gets its own database on the backend under test: a temp SQLite file, or a
fresh database on the local MariaDB/PostgreSQL servers, dropped afterwards.

Server backends that do not answer are skipped locally; with CI=true they fail.
"""

from __future__ import annotations

import logging
import os
import uuid

import pytest

from cardlink_lite import DatabaseConfig, DatabaseManager
from tests import servers

BACKENDS = ["sqlite", "mysql", "postgresql"]


def pytest_addoption(parser):
    parser.addoption(
        "--backends",
        default=os.environ.get("CARDLINK_TEST_BACKENDS", ",".join(BACKENDS)),
        help="Comma-separated backends to run database tests on (default: all three).",
    )


def pytest_configure(config):
    wanted = [b.strip() for b in config.getoption("--backends").split(",") if b.strip()]
    config._cardlink_backends = wanted
    config._cardlink_unavailable = {}
    for backend in wanted:
        if backend == "sqlite":
            continue
        problem = servers.probe(backend)
        if problem:
            config._cardlink_unavailable[backend] = problem
    if os.environ.get("CI", "").lower() == "true" and config._cardlink_unavailable:
        raise pytest.UsageError(
            "CI requires every server backend; unreachable: "
            + "; ".join(f"{b}: {p}" for b, p in config._cardlink_unavailable.items())
        )


def pytest_generate_tests(metafunc):
    explicit = any(
        "backend" in str(m.args[0]) for m in metafunc.definition.iter_markers("parametrize")
    )
    if "backend" in metafunc.fixturenames and not explicit:
        metafunc.parametrize("backend", metafunc.config._cardlink_backends, indirect=True)


@pytest.fixture
def backend(request):
    name = request.param
    problem = request.config._cardlink_unavailable.get(name)
    if problem:
        pytest.skip(f"{name} server not reachable: {problem}")
    return name


@pytest.fixture
def db_url(backend, tmp_path):
    """A URL of a new, empty database on ``backend``; dropped after the test."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path}/cardlink.db"
        return
    name = f"cl_{uuid.uuid4().hex[:12]}"
    servers.create_database(backend, name)
    try:
        yield servers.url(backend, name)
    finally:
        servers.drop_database(backend, name)


@pytest.fixture
def empty_manager(db_url):
    """An initialised manager on a database with no tables."""
    manager = DatabaseManager(DatabaseConfig(db_url))
    manager.initialize(check_schema=False)
    yield manager
    manager.close()


@pytest.fixture
def manager(empty_manager):
    """An initialised manager with the newest schema."""
    empty_manager.create_tables()
    return empty_manager


@pytest.fixture
def sqlite_manager(tmp_path):
    """A manager on a fresh SQLite file, for tests about SQLite itself."""
    manager = DatabaseManager(DatabaseConfig(f"sqlite:///{tmp_path}/cardlink.db"))
    manager.initialize(check_schema=False)
    manager.create_tables()
    yield manager
    manager.close()


@pytest.fixture(autouse=True)
def _peewee_logger_restored():
    """echo=True and the CLI's --verbose turn Peewee's SQL log on for the whole process:
    each test leaves that logger as it found it."""
    sql_logger = logging.getLogger("peewee")
    level, handlers = sql_logger.level, list(sql_logger.handlers)
    yield
    sql_logger.setLevel(level)
    sql_logger.handlers[:] = handlers


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """Tests never see the developer's database or keys unless they set them."""
    for var in ("DATABASE_URL", "CARDLINK_DB_DRIVER", "CARDLINK_ENCRYPTION_KEY",
                "CARDLINK_ENCRYPTION_KEYS", "CARDLINK_ENCRYPTION_KEY_FILE",
                "CARDLINK_PYTEST_DB"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
