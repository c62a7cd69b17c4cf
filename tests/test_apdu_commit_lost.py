"""A flush whose COMMIT reached the server but whose reply never came back: the rows are
stored, the writer cannot know it from the error. It asks before writing them again."""

from __future__ import annotations

import socket
import threading
from urllib.parse import urlsplit, urlunsplit

import pytest

from cardlink_lite import DatabaseError, DatabaseManager, OTASession
from cardlink_lite.apdu import ApduLogWriter

pytestmark = pytest.mark.parametrize("backend", ["postgresql", "mysql"], indirect=True)


class CommitReplyCutter:
    """A TCP proxy to a database server. Once armed, it forwards the next COMMIT, waits for
    the server's reply (so the commit has happened), drops that reply and cuts both ends.
    While ``refusing`` is set, new connections are closed at once."""

    def __init__(self, host: str, port: int):
        self._target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.armed = threading.Event()
        self.cut = threading.Event()
        self.refusing = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.refusing.is_set():
                client.close()
                continue
            server = socket.create_connection(self._target)
            committing = threading.Event()
            threading.Thread(target=self._upstream, args=(client, server, committing),
                             daemon=True).start()
            threading.Thread(target=self._downstream, args=(server, client, committing),
                             daemon=True).start()

    def _upstream(self, client, server, committing) -> None:
        with contextlib_closing(client, server):
            while data := client.recv(65536):
                if self.armed.is_set() and b"COMMIT" in data.upper():
                    self.armed.clear()
                    committing.set()
                server.sendall(data)

    def _downstream(self, server, client, committing) -> None:
        with contextlib_closing(client, server):
            while data := server.recv(65536):
                if committing.is_set():  # the COMMIT's reply: the commit is done; drop it
                    self.cut.set()
                    return
                client.sendall(data)


class contextlib_closing:  # noqa: N801 - closes both sockets however the pipe ends
    def __init__(self, *socks):
        self._socks = socks

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for sock in self._socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        return isinstance(exc[1], OSError)


@pytest.fixture
def cut_store(db_url):
    """(manager through the proxy, direct manager, proxy, session id)."""
    direct = DatabaseManager(db_url).initialize(check_schema=False)
    direct.create_tables()
    session_id = OTASession.create(session_type="cut").id
    parts = urlsplit(db_url)
    cutter = CommitReplyCutter(parts.hostname, parts.port)
    proxied = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{cutter.port}"))
    manager = DatabaseManager(proxied).initialize(check_schema=False)
    yield manager, direct, cutter, session_id
    manager.close()
    cutter.close()
    direct.close()


def _stored(direct) -> tuple[int, int]:
    return direct.database.execute_sql(
        "SELECT COUNT(*), COUNT(DISTINCT decoded_data) FROM comm_logs").fetchone()


def test_a_commit_whose_reply_was_lost_is_not_written_twice(cut_store):
    manager, direct, cutter, session_id = cut_store
    writer = ApduLogWriter(manager, session_id=session_id, batch_size=10_000,
                           flush_interval=None)
    for i in range(100):
        writer.command("00B00000", f"row {i}")
    cutter.armed.set()
    assert writer.flush() == 100           # asked after reconnecting: stored
    assert cutter.cut.is_set()
    assert writer.flush() == 0 and writer.pending == 0
    writer.command("00B00000", "row 100")
    writer.close()
    assert _stored(direct) == (101, 101)
    assert writer.rows_written == 101


def test_when_the_server_cannot_be_asked_the_next_flush_asks_first(cut_store):
    manager, direct, cutter, session_id = cut_store
    writer = ApduLogWriter(manager, session_id=session_id, batch_size=10_000,
                           flush_interval=None)
    for i in range(50):
        writer.command("00B00000", f"row {i}")
    cutter.armed.set()
    cutter.refusing.set()                  # the reconnect after the cut fails too
    with pytest.raises(DatabaseError):
        writer.flush()
    assert cutter.cut.is_set() and writer.pending == 50
    writer.command("00B00000", "row 50")   # logged while the outcome is unknown
    cutter.refusing.clear()
    assert writer.flush() == 51
    writer.close()
    assert _stored(direct) == (51, 51)
