"""A MariaDB/MySQL URL gives up on a server that accepts the connection and never answers
(the handshake read is bounded by connect_timeout), yet a long query is never cut short."""

import socket
import threading

import pytest

from cardlink_lite import ConnectionError, DatabaseConfig, DatabaseManager


@pytest.fixture
def silent_server():
    """A real listening socket: the kernel accepts connections, nobody ever answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def test_a_silent_server_fails_with_one_clear_error(silent_server):
    manager = DatabaseManager(DatabaseConfig(
        f"mysql://root@127.0.0.1:{silent_server}/test?connect_timeout=1"))
    outcome = {}

    def connect():
        try:
            manager.initialize()
        except Exception as exc:  # noqa: BLE001 - the test looks at what it was
            outcome["error"] = exc

    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(timeout=60)  # a bound for a hang, far above the 1 s asked for
    assert not worker.is_alive(), "connecting to a silent server never gave up"
    assert isinstance(outcome.get("error"), ConnectionError)
    assert "unable to connect" in str(outcome["error"])


@pytest.mark.parametrize("backend", ["mysql"], indirect=True)
def test_a_query_longer_than_connect_timeout_still_completes(db_url):
    manager = DatabaseManager(DatabaseConfig(f"{db_url}?connect_timeout=1"))
    manager.initialize(check_schema=False)
    try:
        assert manager.database.execute_sql("SELECT SLEEP(2)").fetchone() == (0,)
    finally:
        manager.close()
