"""Failures a user meets: each is one clear error, and nothing is left broken behind it."""

import threading

import pytest
from click.testing import CliRunner

from cardlink_lite import (
    ConnectionError,
    DatabaseConfig,
    DatabaseManager,
    Device,
    DeviceType,
    EncryptionError,
    UnitOfWork,
)
from cardlink_lite.apdu import ApduLogWriter
from cardlink_lite.cli import cli
from cardlink_lite.crypto import encrypt_psk
from cardlink_lite.errors import PoolExhaustedError
from tests import servers


def test_keys_variable_with_only_separators_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEYS", " , ,")
    with pytest.raises(EncryptionError, match="holds no key"):
        encrypt_psk(b"0123456789abcdef")
    result = CliRunner().invoke(cli, ["--database", f"sqlite:///{tmp_path}/k.db", "keys",
                                      "rotate"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith("Error: CARDLINK_ENCRYPTION_KEYS")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--database", "sqlite:////proc/no/such/dir.db", "init"],
         "Error: cannot create SQLite database"),
        (["export", "--output", "/nonexistent/dir/x.json"],
         "directory '/nonexistent/dir' does not exist"),
        (["backup", "/nonexistent/dir/x.db"], "Error: cannot use '/nonexistent/dir/x.db'"),
    ],
)
def test_unusable_paths_give_one_line_errors(args, expected, tmp_path):
    if args[0] != "--database":
        args = ["--database", f"sqlite:///{tmp_path}/ok.db", *args]
        assert CliRunner().invoke(cli, [*args[:2], "init"]).exit_code == 0
    result = CliRunner().invoke(cli, args)
    assert result.exit_code != 0
    assert expected in result.output and "Traceback" not in result.output
    assert ".tmp" not in result.output


def test_commands_on_an_empty_database_say_to_init(tmp_path):
    (tmp_path / "new.db").touch()  # an empty SQLite file: no tables yet
    result = CliRunner().invoke(cli, ["--database", f"sqlite:///{tmp_path}/new.db", "export"])
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: sqlite:///{tmp_path}/new.db has no cardlink schema yet; create it with: "
        "cardlink-db init")


def test_not_a_database_file_gets_a_sqlite_hint(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("these are not the pages you are looking for")
    result = CliRunner().invoke(cli, ["--database", f"sqlite:///{path}", "status"])
    assert result.exit_code == 1
    assert "file is not a database" in result.output and "server is running" not in result.output


@pytest.mark.parametrize("backend", ["mysql", "postgresql"], indirect=True)
def test_connection_killed_inside_a_unit_of_work(manager, backend):
    from tests.test_db import _kill, _server_pid

    with pytest.raises(ConnectionError), UnitOfWork(manager) as uow:
        uow.devices.create(Device(id="a", device_type=DeviceType.PHONE))
        _kill(backend, _server_pid(manager))
        uow.devices.create(Device(id="b", device_type=DeviceType.PHONE))
    # Nothing half-written, and plain Peewee calls work again on this thread.
    assert Device.select().count() == 0
    manager.drop_tables()
    assert servers.probe(backend) is None


@pytest.mark.parametrize("backend", ["mysql", "postgresql"], indirect=True)
def test_a_full_pool_says_how_to_get_a_connection(db_url, backend):
    manager = DatabaseManager(DatabaseConfig(db_url, pool_size=1, max_overflow=0,
                                             pool_timeout=0.2))
    manager.initialize(check_schema=False)
    manager.database.connect(reuse_if_open=True)  # this thread holds the only connection
    writer = ApduLogWriter(manager, flush_interval=None, flush_at_exit=False)
    writer.command("00A4", session_id="123e4567-e89b-12d3-a456-426614174000")
    failures = []

    def other_thread():
        for attempt in (lambda: UnitOfWork(manager).__enter__(),  # the guide's way
                        lambda: Device.select().count(),            # plain Peewee
                        writer.flush):                              # the APDU writer
            with pytest.raises(Exception) as caught:
                attempt()
            failures.append(caught.value)

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    manager.close()
    assert [type(f) for f in failures] == [PoolExhaustedError] * 3
    assert isinstance(failures[0], ConnectionError) and writer.pending == 1
    assert {str(f) for f in failures} == {
        "no free database connection for this thread: every connection of the pool is in use "
        "and none came back in time; raise DatabaseConfig's pool_size or max_overflow, or "
        "close the connections of threads that are done (manager.database.close())"}


@pytest.mark.parametrize("command", [["status"], ["stats"], ["check"], ["export"],
                                     ["runs", "list"]])
def test_read_only_commands_never_create_a_database(tmp_path, command):
    path = tmp_path / "sub" / "missing.db"
    result = CliRunner().invoke(cli, ["--database", f"sqlite:///{path}", *command])
    assert result.exit_code == 1
    assert "no database at" in result.output and "cardlink-db --database" in result.output
    assert not path.exists() and not path.parent.exists()


def test_keys_check_failure_ends_with_an_error_line(tmp_path, monkeypatch):
    from cryptography.fernet import Fernet

    from cardlink_lite import CardProfile, DatabaseManager, UnitOfWork

    url = f"sqlite:///{tmp_path}/k.db"
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", Fernet.generate_key().decode())
    manager = DatabaseManager(url).initialize(check_schema=False)
    manager.create_tables()
    with UnitOfWork(manager) as uow:
        uow.cards.create_with_psk(CardProfile(iccid="8901"), b"0123456789abcdef")
    manager.close()
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", Fernet.generate_key().decode())
    result = CliRunner().invoke(cli, ["--database", url, "keys", "check"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith(
        "Error: 1 PSK(s) cannot be opened with the configured keys")


def test_quote_keeps_error_messages_short():
    from cardlink_lite.errors import quote

    assert [quote(v) for v in (None, True, 1.5, -(2**128) + 1, b"ab")] == [
        "None", "True", "1.5", repr(-(2**128) + 1), "b'ab'"]
    assert quote(2**200) == "a 201-bit integer"
    assert quote("x" * 50) == repr("x" * 40) + "... (50 long)"
    assert quote({"a": 1}) == "a dict of 1 items"
    assert quote(object()).startswith("<object object at")
