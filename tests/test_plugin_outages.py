"""The recorder when its store fails mid-run: locked, hung or gone, the tests run on at their
own pace; the results wait for a later attempt or are reported not recorded."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from urllib.parse import urlsplit

import pytest

from cardlink_lite import DatabaseConfig, DatabaseManager
from cardlink_lite.models import TestResult

# Generous: the run takes a few seconds when the recorder backs off, minutes when it waits
# out a timeout (or retries) on every result.
BOUND_SECONDS = 25


class Proxy:
    """A TCP proxy to a test server that a test can cut (connections refused) or freeze
    (connections stay open, nothing answers)."""

    def __init__(self, host: str, port: int):
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.frozen = threading.Event()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.frozen.is_set():
                self.sockets.append(client)  # held open, never answered
                continue
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source, sink):
        try:
            while data := source.recv(65536):
                if self.frozen.is_set():
                    return  # swallowed: the other side waits for an answer
                sink.sendall(data)
        except OSError:
            pass

    def freeze(self):
        self.frozen.set()

    def cut(self):
        for sock in [self.listener, *self.sockets]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the pumps: close() alone would not
            sock.close()

    def url_for(self, url: str) -> str:
        parts = urlsplit(url)
        return parts._replace(netloc=parts.netloc.replace(
            f"{parts.hostname}:{parts.port}", f"127.0.0.1:{self.port}")).geturl()


SUITE = """
import pytest

@pytest.mark.parametrize("i", range(40))
def test_i(i, request):
    if i == 5:
        request.config._trouble()
"""


def _count(url: str) -> int:
    manager = DatabaseManager(DatabaseConfig(url))
    manager.initialize(check_schema=False)
    try:
        return TestResult.select().count(manager.database)
    finally:
        manager.close()


@pytest.fixture
def trouble(backend, db_url):
    """(the URL to record to, what goes wrong at the sixth test)."""
    if backend == "sqlite":
        path = db_url.removeprefix("sqlite:///")
        holder = {}

        def lock():  # another connection holds the write lock until the run ends
            import sqlite3
            holder["conn"] = sqlite3.connect(path, isolation_level=None)
            holder["conn"].execute("BEGIN IMMEDIATE")

        yield db_url, lock
        if "conn" in holder:
            holder["conn"].close()
        return
    parts = urlsplit(db_url)
    proxy = Proxy(parts.hostname, parts.port)
    try:
        # MariaDB: the server hangs (read timeouts bound each attempt); PostgreSQL: it is gone.
        yield proxy.url_for(db_url), proxy.freeze if backend == "mysql" else proxy.cut
    finally:
        proxy.cut()


class _Trouble:
    """Hands the inner suite what breaks the store (``request.config._trouble()``)."""

    def __init__(self, action):
        self.action = action

    def pytest_configure(self, config):
        config._trouble = self.action


def test_a_failing_store_costs_one_attempt_per_backoff_not_one_per_result(
        pytester, trouble, db_url, backend):
    url, break_store = trouble
    if backend == "mysql":
        url += "?connect_timeout=2&read_timeout=2&write_timeout=2"
    pytester.makepyfile(SUITE)
    started = time.monotonic()
    result = pytester.runpytest("--cardlink-db", url, "--cardlink-batch-size", "1",
                                "-p", "no:cacheprovider", plugins=[_Trouble(break_store)])
    elapsed = time.monotonic() - started
    result.assert_outcomes(passed=40)
    assert result.ret == 0
    out = result.stdout.str()
    assert elapsed < BOUND_SECONDS, out
    assert "35 results not recorded (5 recorded)" in out, out
    assert _count(db_url) == 5
