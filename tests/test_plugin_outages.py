"""The recorder when its store fails mid-run: locked, hung or gone, the tests run on at their
own pace; the results wait for a later attempt or are reported not recorded."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from cardlink_lite import DatabaseConfig, DatabaseManager
from cardlink_lite.models import TestResult

ROOT = Path(__file__).resolve().parent.parent

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


def _rows(url: str) -> dict[str, dict]:
    manager = DatabaseManager(DatabaseConfig(url))
    manager.initialize(check_schema=False)
    try:
        return {row["test_name"]: row
                for row in TestResult.select().dicts().execute(manager.database)}
    finally:
        manager.close()


def _count(url: str) -> int:
    return len(_rows(url))


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


HANGS = """
import time
from pathlib import Path

import pytest

@pytest.mark.parametrize("i", range(5))
def test_fast(i):
    pass

def test_fails_before_the_hang():
    assert 0, "the clue"

def test_hangs():
    Path("hanging").touch()
    time.sleep(600)
"""


def _wait_for(condition, what: str, seconds: float = 60):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_a_run_killed_while_a_test_hangs_keeps_the_results_before_it(db_url, tmp_path, how):
    (tmp_path / "test_hang.py").write_text(HANGS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDLINK")}
    env["PYTHONPATH"] = str(ROOT)  # the child runs this checkout's code
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "-p", "no:xdist", "--cardlink-db", db_url, "test_hang.py"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        _wait_for((tmp_path / "hanging").exists, "the test hangs")
        # The results wait at most a second while nothing else happens.
        _wait_for(lambda: _count(db_url) == 6, "the results before the hang are stored")
    finally:
        proc.send_signal(how)
        proc.wait(timeout=60)
    rows = _rows(db_url)
    assert len(rows) == 6
    assert rows["test_hang.py::test_fails_before_the_hang"]["error_message"].startswith(
        "AssertionError: the clue")


INTERRUPTING = """
import importlib
import threading

import pytest

# The module the plugin uses now (pytester drops modules a run imported, so an attribute
# of the package may be an older copy).
pytest_recorder = importlib.import_module("cardlink_lite.pytest_recorder")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    real = config.real_insert = pytest_recorder.insert_isolating
    calls = []

    def slow_then_ctrl_c(*args, **kwargs):  # Ctrl-C lands while a test's batch is written
        if threading.current_thread() is threading.main_thread():
            calls.append(1)
            if len(calls) == 1:
                raise KeyboardInterrupt
        return real(*args, **kwargs)

    pytest_recorder.insert_isolating = slow_then_ctrl_c


def pytest_unconfigure(config):
    pytest_recorder.insert_isolating = config.real_insert
"""


def test_ctrl_c_during_a_flush_loses_no_result(pytester, db_url):
    pytester.makeconftest(INTERRUPTING)
    pytester.makepyfile(
        "import pytest\n\n@pytest.mark.parametrize('i', range(12))\ndef test_i(i):\n    pass\n")
    result = pytester.runpytest("--cardlink-db", db_url, "--cardlink-batch-size", "5",
                                no_reraise_ctrlc=True)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    out = result.stdout.str()
    assert "not recorded" not in out
    ran = int(re.search(r"\): (\d+) passed, 0 failed", out)[1])
    assert ran >= 5  # the batch the Ctrl-C hit, and any the other thread wrote before
    assert _count(db_url) == ran
