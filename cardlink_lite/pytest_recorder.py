"""The pytest plugin's recorder: a session's reports as TestResult rows (loaded by
``cardlink_lite.pytest_plugin`` only once a store is configured or a store fixture is used)."""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import platform
import re
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from datetime import datetime, timezone

import peewee
import pytest

from . import db as _db
from ._peewee import discard_connection
from .batch_insert import insert_isolating, plan_for
from .config import DatabaseConfig
from .db import database_proxy
from .errors import (
    DatabaseError,
    MigrationError,
    SchemaVersionMismatch,
    first_line,
    is_transient,
)
from .fields import new_uuid
from .manager import DatabaseManager
from .migrations import get_pending_revisions, run_migrations
from .models import CardProfile, Device, OTASession, RunEnding, TestResult, TestRun, TestStatus
from .pytest_keys import ENV_VAR, RESULT_PROPERTY, SESSION_PROPERTY, TARGET_PROPERTY
from .unit_of_work import UnitOfWork

try:  # pytest >= 9 ships subtests
    from _pytest.subtests import SubtestReport as _SubtestReport
except ImportError:  # pragma: no cover - older pytest
    _SubtestReport = None

__all__ = ["CardlinkRecorder", "fresh_manager"]

_FLUSH_SECONDS = 1.0
_AT_ONCE = frozenset({TestStatus.FAILED, TestStatus.ERROR})
_FINAL_WAIT_SECONDS = 60.0  # at the end, for a flush under way in the other thread
_RETRY_SECONDS = 30.0  # after the store itself failed, one attempt per this long
_MAX_PENDING = 10_000  # results kept meanwhile; beyond that the oldest are not recorded
# The recorder's connections give up soon (the URL may set its own): a hung, locked or
# unreachable store must not stall the run.
_SQLITE_BUSY_SECONDS = 1.0
_SHORT_TIMEOUTS = {"mysql": {"connect_timeout": 5, "read_timeout": 10, "write_timeout": 10},
                   "postgresql": {"connect_timeout": 5, "keepalives_idle": 10,
                                  "keepalives_interval": 5, "keepalives_count": 3}}
_MAX_MESSAGE = 500
_MAX_LONGREPR = 20_000
_MAX_TEST_NAME = 512
_MAX_CAPTURE = 10_000  # per stream; the end of the output is kept


@contextlib.contextmanager
def fresh_manager(server: str | None, tmp_path_factory):
    """A DatabaseManager on a fresh, migrated database (SQLite, or new on ``server``), dropped
    afterwards."""
    with _fresh_database(server, tmp_path_factory) as url:
        manager = DatabaseManager(DatabaseConfig(url))
        manager.initialize(check_schema=False)
        try:
            run_migrations(manager=manager)
            yield manager
        finally:
            manager.close()


@contextlib.contextmanager
def _fresh_database(server: str | None, tmp_path_factory):
    if not server:
        yield f"sqlite:///{tmp_path_factory.mktemp('cardlink')}/cardlink.db"
        return
    config = DatabaseConfig(server)
    if config.is_sqlite:
        raise pytest.UsageError("--cardlink-test-db wants a MariaDB/MySQL or PostgreSQL URL; "
                                "leave it out to use a temporary SQLite file")
    kwargs = config.connect_kwargs()
    server_class = peewee.MySQLDatabase if config.is_mysql else peewee.PostgresqlDatabase
    admin = server_class(kwargs.pop("database"), **kwargs)
    admin.connect()
    if config.is_postgresql:
        admin.connection().autocommit = True  # CREATE DATABASE refuses transactions
    name = f"cl_test_{uuid.uuid4().hex[:12]}"
    quote = "`" if config.is_mysql else '"'
    admin.execute_sql(f"CREATE DATABASE {quote}{name}{quote}")
    try:
        yield config.url.partition("?")[0].rsplit("/", 1)[0] + "/" + name
    finally:
        admin.execute_sql(f"DROP DATABASE IF EXISTS {quote}{name}{quote}")
        admin.close()


class _Item:
    """What the reports of one test item said so far."""

    __slots__ = ("start", "stop", "duration", "status", "message", "longrepr", "detail",
                 "extra", "subtests", "attempts", "props", "location", "worker", "superseded",
                 "captured")

    def __init__(self):
        self.start = self.stop = self.duration = 0.0
        self.status = self.message = self.longrepr = self.detail = self.subtests = None
        self.location = self.worker = self.superseded = self.captured = None
        self.extra: dict = {}
        self.attempts = 1
        self.props = ()


class CardlinkRecorder:
    """Turns the reports of a session into TestResult rows, committed in batches."""

    def __init__(self, config: pytest.Config, url: str):
        self.config = config
        self.run_id = config.getoption("cardlink_run_id") or str(uuid.uuid4())
        self.suite = config.getoption("cardlink_suite") or config.rootpath.name
        self.device = config.getoption("cardlink_device")
        self.card = config.getoption("cardlink_card")
        self.flaky_window = max(2, config.getoption("cardlink_flaky_window") or 5)
        self.batch_size = max(1, config.getoption("cardlink_batch_size") or 200)
        self.capture = not config.getoption("cardlink_no_capture", False)
        if len(self.run_id) > 64 or len(self.suite) > 128:
            raise pytest.UsageError(
                "--cardlink-run-id must be at most 64 characters and --cardlink-suite at most "
                f"128; got {len(self.run_id)} and {len(self.suite)}"
            )
        self.labels = _labels(config)
        self.manager = _open_store(url)
        self.collection_errors = self.deselected = 0
        self.interruption: str | None = None
        self.ending: RunEnding | None = None
        self.started = time.time()
        try:
            with _borrowed_binding(self.manager):
                self._start_run(bool(config.getoption("cardlink_append", False)))
        except BaseException:
            with contextlib.suppress(Exception):
                self.manager.close()
            raise
        self.counts: Counter = Counter()
        self.recorded = self.not_recorded = 0
        self.write_errors: list[str] = []
        self.unknown_targets: set[tuple[str, str]] = set()
        self._items: dict[str, _Item] = {}
        # Appended here, taken by flush() in this thread or the waiting-rows thread.
        self._rows: collections.deque[tuple] = collections.deque()
        self._last_flush = time.monotonic()
        self._retry_at = 0.0
        self._down = False  # the store itself failed at the last attempt
        self._writing = threading.Lock()
        self._stopping = threading.Event()
        threading.Thread(target=self._flush_waiting, args=(self.manager.database,),
                         name="cardlink-recorder", daemon=True).start()
        self._known: dict[tuple, bool] = {}  # (model, key): in the store
        self._collect_seen: set[str] = set()

    def pytest_report_header(self, config):
        return [f"cardlink: recording run {self.run_id} (suite {self.suite!r}) "
                f"to {self.manager.config.safe_url}"]

    def pytest_collectreport(self, report):
        # Like junitxml, a module that failed to import or skipped whole is one testcase.
        if report.passed or report.nodeid in self._collect_seen:
            return
        self._collect_seen.add(report.nodeid)
        item = _Item()
        item.start = item.stop = time.time()
        item.message = _short_reason(report)
        if report.failed:
            self.collection_errors += 1
            item.status, item.detail = TestStatus.ERROR, "collection error"
            item.message = _syntax_error(report.longreprtext) or item.message
            item.longrepr = _long_repr(report)
        else:
            item.status, item.detail = TestStatus.SKIPPED, "skipped module"
        self._finish_safely(report.nodeid, item)

    def pytest_runtest_logreport(self, report):
        nodeid = report.nodeid
        item = self._items.get(nodeid)
        if item is None:
            item = self._items[nodeid] = _Item()
            item.start = getattr(report, "start", 0) or time.time()
            item.location = report.location
            node = getattr(report, "node", None)  # the xdist worker that ran it
            item.worker = getattr(getattr(node, "gateway", None), "id", None)
        if _SubtestReport is not None and isinstance(report, _SubtestReport):
            self._subtest(item, report)
            return
        when = report.when
        item.duration += report.duration
        attempt = getattr(report, "rerun", None)  # pytest-rerunfailures' attempt index
        if report.outcome == "rerun":  # this attempt is superseded by another one
            item.superseded = attempt
            return
        if attempt is not None and attempt == item.superseded:
            if when == "teardown":  # the end of a superseded attempt: start afresh
                item.status = item.message = item.longrepr = item.detail = None
                item.subtests, item.extra, item.superseded = None, {}, None
            return
        if report.failed:
            self._failed(item, report, when)
        elif report.skipped:
            if item.status in (None, TestStatus.PASSED):
                item.status = TestStatus.SKIPPED
                xfail = getattr(report, "wasxfail", None)
                item.detail = "xfail" if xfail is not None else "skipped"
                item.message = f"xfail: {xfail}" if xfail else _short_reason(report)
                if xfail is not None and item.message.startswith("_pytest.outcomes.XFailed"):
                    item.message = "expected failure"  # @unittest.expectedFailure
        elif when == "call":
            if item.status is None:
                item.status = TestStatus.PASSED
            if hasattr(report, "wasxfail"):
                item.detail = "xpass"
        elif item.status is None and when == "setup":
            item.status = TestStatus.PASSED
        if when not in ("setup", "call"):  # teardown, or a report of its own (a crash)
            item.props = report.user_properties
            item.stop = getattr(report, "stop", 0) or time.time()
            item.attempts = (attempt or 0) + 1
            if self.capture and item.status in (TestStatus.FAILED, TestStatus.ERROR):
                # the last report holds the sections of every phase
                item.captured = {"stdout": report.capstdout, "stderr": report.capstderr,
                                 "log": report.caplog}
            del self._items[nodeid]
            self._finish_safely(nodeid, item)

    def pytest_deselected(self, items):
        self.deselected += len(items)

    def pytest_keyboard_interrupt(self, excinfo):
        # pytest.exit() and xdist's "stopping after N failures" come through here too.
        text = str(excinfo.value)
        if "during collection" in text:
            return  # pytest's own stop after collection errors: counted as those
        stopped = excinfo.typename == "Exit" or "stopping after" in text
        self.interruption = "stopped" if stopped else "interrupted"

    def pytest_sessionfinish(self, session, exitstatus):
        self.flush(final=True)
        if self._down:
            return  # not again: each attempt costs a timeout
        try:
            with _borrowed_binding(self.manager):
                ending, selection = self._ending(session)
                finish_run(self.manager, self.run_id, ending, int(exitstatus),
                           storable(selection, 255))
                self.ending = ending
        except Exception as exc:  # noqa: BLE001 - recording must never break the user's run
            self._note_error(exc)

    def pytest_terminal_summary(self, terminalreporter):
        self.flush(final=True)
        tr = terminalreporter
        tr.write_sep("-", "cardlink")
        counts = ", ".join(f"{self.counts.get(s.value, 0)} {s.value}" for s in TestStatus)
        tr.write_line(f"run {self.run_id} (suite {self.suite!r}): {counts}")
        if self.not_recorded:
            tr.write_line(f"{self.not_recorded} results not recorded ({self.recorded} recorded): "
                          f"{'; '.join(self.write_errors[:3])}", red=True, bold=True)
        for kind, key in sorted(self.unknown_targets):
            tr.write_line(f"{kind} {key!r} is not in the store; its id is kept in the results' "
                          "metadata only (add it to link the results)", yellow=True)
        if self.recorded == 0 or self._down:
            return
        try:
            with _borrowed_binding(self.manager):
                base, comparison, flaky = run_history(self.manager, self.suite, self.run_id,
                                                      self.flaky_window)
        except Exception as exc:  # noqa: BLE001 - the summary must not break the run
            tr.write_line(f"cannot compare with earlier runs: {first_line(exc)}", yellow=True)
            return
        if self.ending not in (None, RunEnding.COMPLETE):
            tr.write_line(f"this run is {self.ending.value}: compared only on the tests it ran",
                          yellow=True)
        if base:
            regressions, fixed = comparison["regressions"], comparison["fixed"]
            started = base.started_at.strftime("%Y-%m-%d %H:%M") if base.started_at else "?"
            plural = "" if len(regressions) == 1 else "s"
            tr.write_line(f"against run {base.id} (the latest comparable run: "
                          f"{base.ending.value}, started {started} UTC): {len(regressions)} "
                          f"regression{plural}, {len(fixed)} fixed, "
                          f"{len(comparison['new_tests'])} new tests")
            for entry in regressions[:20]:
                tr.write_line(f"  REGRESSION {entry}", red=True)
            for entry in fixed[:20]:
                tr.write_line(f"  FIXED {entry}", green=True)
        if flaky:
            tr.write_line(f"flaky candidates (status flipped in the last {self.flaky_window} "
                          f"runs): {len(flaky)}")
            for entry in flaky[:20]:
                tr.write_line(f"  FLAKY {entry}", yellow=True)
        tr.write_line(f"run id: {self.run_id}")

    def _failed(self, item: _Item, report, when: str) -> None:
        reason = _short_reason(report)
        if when == "call":
            if item.status != TestStatus.ERROR:
                item.status, item.message = TestStatus.FAILED, reason
                item.longrepr, item.detail = _long_repr(report), "failed"
        elif item.status in (TestStatus.FAILED, TestStatus.ERROR) and when == "teardown":
            item.extra["teardown_error"] = reason  # keep the test's own failure first
            item.extra["teardown_longrepr"] = _long_repr(report)
        else:
            item.status, item.message = TestStatus.ERROR, reason
            item.longrepr = _long_repr(report)
            item.detail = f"error in {when}" if when in ("setup", "teardown") else "crashed"

    def _subtest(self, item: _Item, report) -> None:
        if item.subtests is None:
            item.subtests = Counter()
        item.subtests["total"] += 1
        item.subtests[report.outcome] += 1
        if report.failed and "first_subtest_failure" not in item.extra:
            item.extra["first_subtest_failure"] = _short_reason(report)

    def _finish_safely(self, nodeid: str, item: _Item) -> None:
        try:
            self._finish(nodeid, item)
        except Exception as exc:  # noqa: BLE001 - recording must never break the user's run
            self.not_recorded += 1
            self._note_error(exc)

    def _note_error(self, exc: BaseException) -> None:
        text = first_line(exc)
        if text not in self.write_errors:
            self.write_errors.append(text)

    def _finish(self, nodeid: str, item: _Item) -> None:
        status = item.status or TestStatus.ERROR
        message = item.message
        metadata: dict = {"runner": "pytest"}
        if item.subtests:
            metadata["subtests"] = dict(item.subtests)
            failed = item.subtests.get("failed", 0)
            if failed and status == TestStatus.PASSED:
                status = TestStatus.FAILED
                message = f"{failed} subtest{'s' if failed > 1 else ''} failed: " \
                          f"{item.extra.get('first_subtest_failure', '')}".rstrip(": ")
        if item.location:
            metadata["file"], metadata["line"] = item.location[0], item.location[1]
        for key, value in (("outcome", item.detail), ("longrepr", item.longrepr),
                           ("worker", item.worker)):
            if value:
                metadata[key] = value
        if item.attempts > 1:
            metadata["attempts"] = item.attempts
        for key, text in (item.captured or {}).items():
            if text:
                metadata[key] = storable(text, _MAX_CAPTURE, keep_end=True)
        metadata.update((k, v) for k, v in item.extra.items() if k.startswith("teardown_"))
        device, card, assertions, sessions = self.device, self.card, None, []
        for name, value in item.props:
            if name == SESSION_PROPERTY:
                sessions.append(storable(value))
            elif name == TARGET_PROPERTY:
                device, card = value.get("device", device), value.get("card", card)
            elif name == RESULT_PROPERTY:
                assertions = value.get("assertions") or None
                metadata.update(value.get("metadata") or {})
        if sessions:  # all in metadata; the first that is in this store is the FK
            metadata["sessions"] = sessions
        test_name = nodeid = storable(nodeid)
        if len(nodeid) > _MAX_TEST_NAME:
            digest = hashlib.sha1(nodeid.encode()).hexdigest()[:16]
            test_name = f"{nodeid[:_MAX_TEST_NAME - 18]}~{digest}"
            metadata["nodeid"] = nodeid
        ended = _utc(item.stop or item.start)
        self.counts[status.value] += 1
        row = {
            "id": new_uuid(),
            "run_id": self.run_id,
            "suite_name": self.suite,
            "test_name": test_name,
            "device": self._target("device", storable(device), metadata),
            "card": self._target("card", storable(card), metadata),
            "started_at": _utc(item.start),
            "ended_at": ended,
            "duration_ms": int(round(item.duration * 1000)),
            "status": status.value,
            "error_message": storable(message or None, _MAX_MESSAGE),
            "assertions": _json(assertions),
            "metadata": _json(metadata),
            "attempts": item.attempts,
            "session": next((sid for sid in sessions if self._in_store(OTASession, sid)), None),
            "created_at": ended,
            "updated_at": ended,
        }
        self._rows.append(tuple(row[name] for name in _COLUMNS))
        # A failure is written at once: if the run is killed next (a test hangs), it is kept.
        if len(self._rows) >= self.batch_size or status in _AT_ONCE \
                or time.monotonic() - self._last_flush >= _FLUSH_SECONDS:
            self.flush()

    def _target(self, kind: str, key: str | None, metadata: dict):
        """The FK value when that device/card is in the store, else None (the id goes in
        metadata)."""
        if not key or self._in_store(Device if kind == "device" else CardProfile, key):
            return key or None
        metadata["device_id" if kind == "device" else "card_iccid"] = key
        self.unknown_targets.add((kind, key))
        return None

    def _in_store(self, model, key: str) -> bool:
        known = self._known.get((model, key))
        if known is None and self._down:
            return False  # not now: each attempt costs a timeout
        if known is None:
            try:
                query = model.select().where(model._meta.primary_key == key)
                known = query.exists(self.manager.database)
            except Exception:  # noqa: BLE001 - an unreadable store is reported at flush
                known = False
            # A session may be stored after an earlier test named it: only found is final.
            if known or model is not OTASession:
                self._known[(model, key)] = known
        return known

    def _start_run(self, append: bool) -> None:
        database = self.manager.database
        with database.atomic():
            known = TestRun.select().where(TestRun.id == self.run_id).exists(database) or \
                TestResult.select().where(TestResult.run_id == self.run_id).exists(database)
            if known and not append:
                raise pytest.UsageError(
                    f"run id {self.run_id!r} is recorded already; pass --cardlink-append to "
                    "add these results to it, or choose another --cardlink-run-id")
            values = {"suite_name": self.suite, "ending": RunEnding.UNFINISHED,
                      "finished_at": None, "labels": self.labels or None,
                      "context": _context(self.config)}
            insert = TestRun.insert(id=self.run_id, started_at=_utc(self.started), **values)
            if not known:  # a plain INSERT: a run started meanwhile under this id fails it
                insert.execute(database)
            else:  # appending (to results imported without a record, too): it runs again
                insert.on_conflict_ignore().execute(database)
                TestRun.update(**values).where(TestRun.id == self.run_id).execute(database)

    def _ending(self, session) -> tuple[RunEnding, str | None]:
        selection = _selection(self.config, self.deselected)
        if self.interruption == "interrupted":
            return RunEnding.INTERRUPTED, selection
        if self.interruption == "stopped" or getattr(session, "shouldfail", False) \
                or getattr(session, "shouldstop", False):
            return RunEnding.STOPPED, selection
        if self.collection_errors:
            return RunEnding.COLLECTION_ERRORS, selection
        return (RunEnding.PARTIAL, selection) if selection else (RunEnding.COMPLETE, None)

    def flush(self, final: bool = False) -> None:
        """Commit the buffered results; a row the database refuses is counted and noted
        (insert_isolating bisects the batch), never raised. After the store itself failed
        they wait: one attempt per _RETRY_SECONDS, and a last one at the end (``final``).
        A test's flush never waits for the other thread's: its rows go with the next one."""
        if final:
            self._stopping.set()
            # A store that hung the other thread's flush is waited for once, not again at
            # the summary and at close.
            if not self._writing.acquire(timeout=1.0 if self._down else _FINAL_WAIT_SECONDS):
                self._keep(self._take(), final=True)
                self._note_error(RuntimeError("the store did not answer in time"))
                return
        elif not self._writing.acquire(blocking=False):
            return
        try:
            self._flush(final)
        finally:
            self._writing.release()

    def _flush(self, final: bool) -> None:
        self._last_flush = now = time.monotonic()
        if not self._rows or (now < self._retry_at and not final):
            return
        rows = self._take()
        try:
            written, refused = self._write(rows)
        except Exception as exc:  # noqa: BLE001 - the store itself failed: none written
            self._note_error(exc)
            self._keep(rows, final)
            return
        except BaseException:  # Ctrl-C while writing: rolled back, the rows wait for the end
            self._rows.extendleft(reversed(rows))
            raise
        self._down, self._retry_at = False, 0.0
        self.recorded += written
        self.not_recorded += len(refused)
        for exc in refused:
            self._note_error(exc)

    def _take(self) -> list:
        """The buffered rows (those another thread appends meanwhile stay)."""
        return [self._rows.popleft() for _ in range(len(self._rows))]

    def _keep(self, rows: list, final: bool) -> None:
        """Rows the store could not take now: kept for a later attempt (not at the end)."""
        self._down = True
        if final:
            self.not_recorded += len(rows)
            return
        self._retry_at = time.monotonic() + _RETRY_SECONDS
        self._rows.extendleft(reversed(rows))
        for _ in range(len(self._rows) - _MAX_PENDING):
            self._rows.popleft()
            self.not_recorded += 1

    def _flush_waiting(self, database) -> None:
        """Thread: commit results that waited a second (its own connection), so a test that
        hangs, and a run then killed, keep them."""
        while not self._stopping.wait(_FLUSH_SECONDS / 4):
            if self._rows and time.monotonic() - self._last_flush >= _FLUSH_SECONDS:
                self.flush()
        with contextlib.suppress(Exception):
            database.close()  # this thread's connection

    def _write(self, rows: list) -> tuple[int, list]:
        """(rows written, errors of the rows refused); raises when the store itself fails."""
        database = self.manager.database
        server = not self.manager.config.is_sqlite
        # A connection kept since the last flush may have gone stale: then one more try on
        # a new one, no wait. Never more: each attempt at a dead server costs a timeout.
        tries = 2 if server and not database.is_closed() else 1
        with _db.bound_models(database):
            for left in range(tries - 1, -1, -1):
                try:
                    return _insert(database, rows)
                except Exception as exc:
                    if not (server and is_transient(exc)):
                        raise
                    discard_connection(database)  # the next attempt connects afresh
                    if not left:
                        raise
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        self.flush(final=True)
        with _borrowed_binding(self.manager):
            self.manager.close()


_FIELDS = list(TestResult._meta.sorted_fields)  # the order of a row's values
_COLUMNS = tuple(f.name for f in _FIELDS)

_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")
_CUT = "\n[... {count} characters cut ...]\n"


def _insert(database, rows: list) -> tuple[int, list]:
    plan = plan_for(database, TestResult, _FIELDS)
    flat: list = []
    refused: list[BaseException] = []
    for row in rows:  # a value its field refuses costs only its own row
        try:
            flat.extend(plan.flatten((row,)))
        except Exception as exc:  # noqa: BLE001 - counted and shown in the summary
            refused.append(exc)
    written, rejected = insert_isolating(plan, flat, _row_error) if flat else ([], [])
    return len(written) // plan.width, refused + [exc for _row, exc in rejected]


def _row_error(exc: BaseException) -> bool:
    """A failure is the row's unless the store itself failed (a lost connection, a lock)."""
    return not is_transient(exc)


def storable(text, limit: int | None = None, keep_end: bool = False):
    """``text`` with NUL and lone surrogates escaped, cut to ``limit`` at the end with "…"
    (``keep_end``: in the middle with a marker, so a traceback's end survives)."""
    if text is None:
        return None
    text = str(text)
    if _BAD_TEXT.search(text):
        text = _BAD_TEXT.sub(_visible, text)
    if limit is not None and len(text) > limit:
        if keep_end:
            head = limit // 4
            marker = _CUT.format(count=len(text) - limit)
            tail = max(0, limit - head - len(marker))
            text = text[:head] + marker + text[len(text) - tail:]
        else:
            text = text[:limit - 1] + "…"
    return text


def _visible(match: re.Match) -> str:
    code = ord(match.group())
    return "\\x00" if code == 0 else f"\\u{code:04x}"


def _json(value):
    try:
        json.dumps(value)
    except (TypeError, ValueError):  # a value a test put in directly: keep its repr
        return json.loads(json.dumps(value, default=repr, sort_keys=True))
    return value


def _open_store(url: str) -> DatabaseManager:
    """The recorder's manager (short timeouts), on a store migrated with the usual ones."""
    try:
        config = DatabaseConfig(url)
    except DatabaseError as exc:
        raise pytest.UsageError(f"--cardlink-db: {exc}") from None
    manager = DatabaseManager(config)
    try:
        with _borrowed_binding(manager):
            try:
                manager.initialize(check_schema=False)
                _migrate(manager)
            finally:
                manager.close()
            recording = DatabaseManager(DatabaseConfig(
                url, busy_timeout=_SQLITE_BUSY_SECONDS,
                connect_defaults=_SHORT_TIMEOUTS.get(config.backend)))
            recording.initialize(check_schema=False)
    except (DatabaseError, peewee.PeeweeException) as exc:
        raise pytest.UsageError(
            f"cannot record test results in {config.safe_url} ({first_line(exc)}); "
            f"fix --cardlink-db (or cardlink_db / {ENV_VAR}) or leave it out to run "
            "without recording"
        ) from None
    return recording


def _migrate(manager: DatabaseManager) -> None:
    if not get_pending_revisions(manager=manager):
        return
    try:
        run_migrations(manager=manager)
    except MigrationError as exc:
        # A job started alongside (parallel CI) may have migrated it meanwhile: go on then.
        if isinstance(exc, SchemaVersionMismatch) or get_pending_revisions(manager=manager):
            raise


@contextlib.contextmanager
def _borrowed_binding(manager: DatabaseManager):
    """Point the models at ``manager`` meanwhile (in this thread); the process-wide binding
    and current manager ``initialize()`` sets are put back: the tests bind their own."""
    saved_obj, saved_current = _db.process_binding(), _db._current
    try:
        with _db.bound_models(manager.database if manager.is_initialized else None):
            yield manager
    finally:
        database_proxy.initialize(saved_obj)
        _db._current = saved_current


# -- what the plugin asks the store at the end of a run (timed by bench_run_summary) -----
def finish_run(manager: DatabaseManager, run_id: str, ending: RunEnding, exit_status: int,
               selection: str | None) -> None:
    with UnitOfWork(manager) as uow:
        uow.tests.finish_run(run_id, ending, exit_status, selection)


def run_history(manager: DatabaseManager, suite: str, run_id: str, window: int):
    """The latest comparable run (or None), the comparison with it, the window's flaky tests."""
    with UnitOfWork(manager) as uow:
        base = uow.tests.latest_comparable_run(suite, exclude=run_id)
        comparison = uow.tests.compare_runs(base.id, run_id) if base else {}
        flaky = uow.tests.flaky_tests(suite, window=window)
    return base, comparison, flaky


def _short_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # a skip: (path, line, reason)
        text = str(longrepr[2]).removeprefix("Skipped: ")
    else:
        text = getattr(getattr(longrepr, "reprcrash", None), "message", None) or ""
        if not text:
            lines = [ln for ln in report.longreprtext.splitlines() if ln.strip()]
            errors = [ln[1:].strip() for ln in lines if ln.startswith("E ")]
            text = errors[0] if errors else (lines or [""])[-1]
    text = " ".join(text.split()) if "\n" in text else text.strip()
    return storable(text, _MAX_MESSAGE)


_SYNTAX_FILE = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+)')
_SYNTAX_LINE = re.compile(r"^E\s+(?P<kind>SyntaxError|IndentationError|TabError): (?P<msg>.+)$",
                          re.MULTILINE)


def _syntax_error(text: str) -> str | None:
    """A collection SyntaxError as Python words it: "SyntaxError: … (file, line N)"."""
    found = _SYNTAX_LINE.search(text)
    places = list(_SYNTAX_FILE.finditer(text, 0, found.start())) if found else []
    if not places:
        return None
    where = places[-1]  # the file the parser stopped in, not the importing one
    name = where["file"].replace("\\", "/").rsplit("/", 1)[-1]
    return storable(f"{found['kind']}: {found['msg'].strip()} ({name}, line {where['line']})",
                    _MAX_MESSAGE)


def _long_repr(report) -> str | None:
    text = report.longreprtext
    return storable(text, _MAX_LONGREPR, keep_end=True) if text else None


def _labels(config) -> dict:
    labels = {}
    for key in ("device", "card", "firmware"):
        if config.getoption(f"cardlink_{key}", None):
            labels[key] = storable(config.getoption(f"cardlink_{key}"))
    for text in config.getoption("cardlink_labels", None) or ():
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise pytest.UsageError(f"--cardlink-label wants KEY=VALUE, got {text[:40]!r}")
        labels[storable(key.strip())] = storable(value)
    return labels


def _context(config) -> dict:
    context = {"host": socket.gethostname(), "python": platform.python_version(),
               "pytest": pytest.__version__}
    if getattr(config.option, "numprocesses", None):
        context["xdist_workers"] = config.option.numprocesses
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD", "--abbrev-ref", "HEAD"],
                              cwd=config.rootpath, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return context
    parts = done.stdout.split()
    if done.returncode == 0 and len(parts) == 2:  # anything else: no git facts, no failure
        context["git_commit"], context["git_branch"] = parts
    return context


def _selection(config, deselected: int) -> str | None:
    """What narrowed the run to part of the suite, or None."""
    parts = ["--lf"] if config.getoption("lf", False) else []
    for flag, option in (("-k", "keyword"), ("-m", "markexpr")):
        if config.getoption(option, ""):
            parts.append(f"{flag} {config.getoption(option)}")
    if any("::" in str(arg) for arg in config.args):
        parts.append("node ids")
    if deselected and not parts:
        parts.append(f"{deselected} deselected")
    return ", ".join(parts) or None


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, timezone.utc)
