"""DatabaseConfig: URL resolution, spellings, backend detection and redaction."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cardlink_lite import ConfigurationError, DatabaseConfig, DatabaseManager, init_database
from cardlink_lite.config import redact_url


@pytest.mark.parametrize(
    ("url", "kind", "database"),
    [
        ("sqlite:///rel.db", "sqlite", "rel.db"),
        ("sqlite:////abs/dir/x.db", "sqlite", "/abs/dir/x.db"),
        ("sqlite:///:memory:", "sqlite", ":memory:"),
        ("mysql://u:p@h:3306/cardlink", "mysql", "cardlink"),
        ("mysql+pymysql://u@h/cardlink", "mysql", "cardlink"),
        ("mariadb://u@h/cardlink", "mysql", "cardlink"),
        ("postgresql://u:p@h:5432/cardlink", "postgresql", "cardlink"),
        ("postgres://u@h/cardlink", "postgresql", "cardlink"),
        ("postgresql+psycopg2://u@h/cardlink", "postgresql", "cardlink"),
    ],
)
def test_accepted_url_spellings(url, kind, database):
    config = DatabaseConfig(url)
    assert config.backend == kind
    assert config.database_name == database
    assert config.url == config.database_url == url
    assert [config.is_sqlite, config.is_mysql, config.is_postgresql].count(True) == 1


def test_default_is_sqlite_in_data_dir():
    config = DatabaseConfig()
    assert config.database_url == "sqlite:///data/cardlink.db"
    assert config.is_sqlite
    assert str(config.sqlite_path) == "data/cardlink.db"


def test_argument_beats_environment(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://env@h/db")
    assert DatabaseConfig().is_postgresql
    assert DatabaseConfig("sqlite:///arg.db").is_sqlite
    assert DatabaseConfig(url="mysql://u@h/d").is_mysql


def test_component_variables(monkeypatch):
    monkeypatch.setenv("CARDLINK_DB_DRIVER", "mysql")
    monkeypatch.setenv("CARDLINK_DB_HOST", "db.lab")
    monkeypatch.setenv("CARDLINK_DB_PORT", "3307")
    monkeypatch.setenv("CARDLINK_DB_NAME", "cardlink")
    monkeypatch.setenv("CARDLINK_DB_USER", "bench")
    monkeypatch.setenv("CARDLINK_DB_PASSWORD", "p@ss:w/rd")
    config = DatabaseConfig()
    assert config.is_mysql
    kwargs = config.connect_kwargs()
    assert kwargs["host"] == "db.lab" and kwargs["port"] == 3307
    assert kwargs["user"] == "bench" and kwargs["password"] == "p@ss:w/rd"
    assert "p@ss" not in repr(config) and "***" in config.safe_url


def test_database_url_env_beats_components(monkeypatch):
    monkeypatch.setenv("CARDLINK_DB_DRIVER", "mysql")
    monkeypatch.setenv("DATABASE_URL", "sqlite:///x.db")
    assert DatabaseConfig().is_sqlite


def test_query_string_options_pass_through():
    config = DatabaseConfig("postgresql://u@h/db?connect_timeout=3&sslmode=disable")
    kwargs = config.connect_kwargs()
    assert kwargs["connect_timeout"] == 3
    assert kwargs["sslmode"] == "disable"


def test_from_sqlite_path_keeps_relative_and_absolute(tmp_path):
    assert DatabaseConfig.from_sqlite_path("my_database.db").database_name == "my_database.db"
    absolute = tmp_path / "bench.db"
    assert DatabaseConfig.from_sqlite_path(absolute).sqlite_path == absolute


def test_pool_settings_and_echo():
    config = DatabaseConfig("postgresql://u@h/db", pool_size=10, max_overflow=20,
                            pool_timeout=30, echo=True)
    assert (config.pool_size, config.max_overflow, config.pool_timeout) == (10, 20, 30)
    assert config.echo


@pytest.mark.parametrize("url", ["oracle://u@h/db", "http://x/y", "nonsense", ""])
def test_unusable_scheme_names_accepted_schemes(url, monkeypatch):
    if url == "":
        monkeypatch.setenv("DATABASE_URL", "ftp://x/y")
    with pytest.raises(ConfigurationError) as info:
        DatabaseConfig(url or None)
    assert "sqlite:///" in str(info.value) and "postgresql://" in str(info.value)


def test_server_url_without_database_name_is_refused():
    with pytest.raises(ConfigurationError, match="names no database"):
        DatabaseConfig("postgresql://u:secret@h")


def test_sqlite_url_with_host_explains_slashes():
    with pytest.raises(ConfigurationError, match="three"):
        DatabaseConfig("sqlite://data/cardlink.db")


def test_password_never_in_repr_or_errors():
    config = DatabaseConfig("mysql://bench:hunter2@127.0.0.1:1/db")
    assert "hunter2" not in repr(config)
    assert config.safe_url == "mysql://bench:***@127.0.0.1:1/db"
    with pytest.raises(ConfigurationError) as info:
        DatabaseConfig("oracle://bench:hunter2@h/db")
    assert "hunter2" not in str(info.value)


def test_redact_url_leaves_passwordless_urls_alone():
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert redact_url("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"


def test_echo_logs_sql_through_peewee_logger(tmp_path, caplog):
    manager = DatabaseManager(DatabaseConfig(f"sqlite:///{tmp_path}/e.db", echo=True))
    manager.initialize(check_schema=False)
    try:
        with caplog.at_level(logging.DEBUG, logger="peewee"):
            manager.database.execute_sql("SELECT 42")
        assert any("SELECT 42" in r.getMessage() for r in caplog.records if r.name == "peewee")
    finally:
        manager.close()


def test_echo_prints_sql_when_the_script_configured_no_logging(tmp_path):
    # caplog would hide the bug: Peewee's own NullHandler must not count as a handler.
    code = ("from cardlink_lite import DatabaseConfig, DatabaseManager\n"
            f"m = DatabaseManager(DatabaseConfig('sqlite:///{tmp_path}/e.db', echo=True))\n"
            "m.initialize(check_schema=False)\n"
            "m.database.execute_sql('SELECT 4242')\n")
    root = Path(__file__).resolve().parent.parent  # the package under test
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(root)}, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert any(line.startswith("SQL: ") and "SELECT 4242" in line
               for line in done.stderr.splitlines()), done.stderr[-2000:]


ENCODE = "percent-encode special characters in a password (# as %23, / as %2F, ? as %3F, @ as %40)"


@pytest.mark.parametrize(("url", "message"), [
    ("postgresql://app:pa#Secret@127.0.0.1/test",
     "cannot parse database URL 'postgresql://app:***@127.0.0.1/test': give the port as a "
     f"number, and {ENCODE}"),
    ("mysql://root:Secret?x@127.0.0.1/test",
     "cannot parse database URL 'mysql://root:***@127.0.0.1/test': give the port as a "
     f"number, and {ENCODE}"),
    # digits before the '/' parse as a port: host 'app', database '34@127.0.0.1/test'
    ("postgresql://app:12/Secret@127.0.0.1/test",
     f"database URL 'postgresql://app:***@127.0.0.1/test' has an '@' after its host; {ENCODE}"),
    ("mysql://root:12?Secret@127.0.0.1/test",
     f"database URL 'mysql://root:***@127.0.0.1/test' has an '@' after its host; {ENCODE}"),
    ("postgresql://app@127.0.0.1/test?password=Secret",
     "unsupported option 'password' in the PostgreSQL URL "
     "'postgresql://app@127.0.0.1/test?password=***'; accepted: connect_timeout, sslmode, "
     "sslrootcert, sslcert, sslkey, application_name, options, keepalives, keepalives_idle, "
     "keepalives_interval, keepalives_count, tcp_user_timeout, target_session_attrs"),
    ("sqlite:///runs/bench#2.db",
     "database URL 'sqlite:///runs/bench#2.db' has a '#'; write it as %23 in a password or "
     "file name"),
])
def test_a_url_that_does_not_parse_names_the_fix_and_hides_the_password(url, message):
    with pytest.raises(ConfigurationError) as info:
        DatabaseConfig(url)
    assert str(info.value) == message


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://app:pa#ss@h/db", "postgresql://app:***@h/db"),
    ("postgresql://app:12/34@h/db", "postgresql://app:***@h/db"),
    ("mysql://root:a@b?c@h/db", "mysql://root:***@h/db"),
    ("mysql://:pw@h/db", "mysql://:***@h/db"),
    ("postgresql://u@h/db?sslmode=disable&PASSWORD=pw&x=1",
     "postgresql://u@h/db?sslmode=disable&PASSWORD=***&x=1"),
    ("garbage:pw@h", "garbage:pw@h"),  # no '://': nothing is a password
])
def test_redact_url_needs_no_successful_parse(url, shown):
    assert redact_url(url) == shown


def test_an_encoded_password_with_special_characters_connects_as_given():
    config = DatabaseConfig("postgresql://app:pa%23s%2Fs%3F%40@127.0.0.1/test")
    assert config.connect_kwargs()["password"] == "pa#s/s?@"
    assert config.safe_url == "postgresql://app:***@127.0.0.1/test"


@pytest.mark.parametrize("name", ["bench#2.db", "what?.db", "a%41.db", "x y.db"])
def test_from_sqlite_path_opens_exactly_that_file(tmp_path, name):
    config = DatabaseConfig.from_sqlite_path(tmp_path / name)
    assert config.sqlite_path == tmp_path / name
    manager = init_database(config.url)
    manager.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
