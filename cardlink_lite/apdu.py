"""The APDU log: rows checked and converted to their stored values, and the batched writer
(one transaction per flush, through batch_insert)."""

from __future__ import annotations

import atexit
import contextlib
import logging
import random
import re
import threading
import time
import weakref
from collections import Counter
from datetime import datetime, timezone

import peewee

from ._peewee import discard_connection, field_values, thread_state
from .batch_insert import insert, insert_isolating, plan_for
from .db import scoped_connection
from .errors import (
    DatabaseError,
    RejectedRowsError,
    ValidationError,
    first_line,
    is_transient,
    quote,
    translate_error,
)
from .events import EventType, emit_after_commit
from .fields import storable_text
from .models import CommDirection, CommLog, OTASession
from .status_words import (
    depends_on_command,
    describe_after_command,
    describe_status_word,
    normalize_status_word,
)

__all__ = ["LOG_FIELDS", "MAX_RAW_HEX", "ApduLogWriter", "apdu_logger", "channel_of",
           "command_body", "command_facts", "command_header", "is_hex", "normalize_hex",
           "now_text", "session_key"]

logger = logging.getLogger("cardlink_lite.apdu")

# Column order of a buffered row (and of every cached statement).
LOG_FIELDS = (CommLog.session, CommLog.timestamp, CommLog.latency_ms, CommLog.direction,
              CommLog.raw_data, CommLog.decoded_data, CommLog.status_word,
              CommLog.status_message, CommLog.channel, CommLog.ins, CommLog.source_id)
_WIDTH = len(LOG_FIELDS)
_ROW_KEYS = ("session_id", "direction", "raw_data", "decoded_data", "status_word",
             "status_message", "latency_ms", "timestamp", "channel", "ins", "source_id")

# What every backend's comm_logs columns hold (MEDIUMTEXT on MariaDB, TEXT elsewhere):
# an extended-length APDU (64 KiB of data plus header and status word) fits twice over.
MAX_RAW_HEX = 262_144          # characters of hex: 131,072 bytes
_MAX_DECODED = 1_048_576       # at most 4 MiB of UTF-8, well inside MEDIUMTEXT's 16 MiB
_MAX_MESSAGE = 128

_WAL_TRUNCATE_ROWS = 20000       # SQLite: a flush this big grows the -wal; shrink it after
_BUSY_RETRIES = 8
_TIMER_LOCK_WAIT = 0.1           # s: the timer's flush gives up on a lock (maybe the caller's)
_KEPT_COMMANDS = 1024            # sessions whose last command is remembered
_MAX_PENDING = 100_000           # rows buffered while the database is away (default)
_RETRY_AFTER = (0.5, 30.0)       # back-off of log.*'s own flush attempts after a failure
_KEPT_REJECTIONS = 1000          # rejected rows remembered in ApduLogWriter.rejected
_UNSET = object()                # no session seen yet (None is itself refused)

_BUSY = re.compile(r"database is locked|database is busy|deadlock|lock (wait )?timeout|"
                   r"could not serialize", re.I)
# Failures tied to the rows themselves (a value or reference the database refuses),
# as opposed to the connection, a lock or the schema: only these are isolated and dropped.
_ROW_ERRORS = (peewee.IntegrityError, peewee.DataError, ValueError)

is_hex = re.compile(r"[0-9A-F]+").fullmatch  # a whole upper-case hex string
_is_status_word = re.compile(r"[0-9A-F]{4}").fullmatch
_DIRECTIONS = {key: member.value for member in CommDirection
               for key in (member.value, member.name, member.value.capitalize())}
_MESSAGES: dict[str, str] = {}  # status word -> stored message ("": depends on the command)
# Exactly what sqlite3 stores for a datetime (isoformat(" ")), so rows written by the
# writer and by Model.save() sort and compare alike.
_MILLIS = [""] + [f".{ms:03d}000" for ms in range(1, 1000)]
_second = (None, "")


class ApduLogWriter:
    """Buffers APDU log rows, validated when logged, and writes them in batches (thread-safe):
    at ``batch_size`` rows, every ``flush_interval`` s, on flush/close/exit (README: failures)."""

    def __init__(self, database, session_id=None, batch_size: int = 1000,
                 flush_interval: float | None = 1.0, on_flush=None,
                 flush_at_exit: bool = True, max_pending: int = _MAX_PENDING):
        if batch_size is None or int(batch_size) < 1:
            raise ValidationError(f"batch_size must be at least 1; got {batch_size!r}")
        if max_pending is None or int(max_pending) < int(batch_size):
            raise ValidationError(
                f"max_pending must be at least batch_size ({batch_size}); got {max_pending!r}")
        if flush_interval is not None and flush_interval <= 0:
            raise ValidationError("flush_interval must be a positive number of seconds or None; "
                                  f"got {flush_interval!r}")
        # A DatabaseManager (it reconnects when a flush waits for the server) or a database.
        self._manager = database if hasattr(database, "ensure_connection") else None
        self.database = database if self._manager is None else database.database
        self.session_id = None if session_id is None else session_key(session_id)
        self.batch_size = int(batch_size)
        self.flush_interval = flush_interval
        self._on_flush = on_flush
        self._flat: list = []            # buffered rows, flattened in column order
        self._inflight = 0               # values taken by the flush under way
        self._lock = threading.Lock()    # guards _flat
        self._flush_lock = threading.RLock()
        self._flush_at = self.batch_size * _WIDTH
        self._last_session = (_UNSET, None)
        self._commands: dict = {}        # session -> its last command: what a response answers
        # Rows logged inside a transaction are its own: (start in _flat, the logging thread's
        # transaction stack, that transaction), one per run of rows (see _take).
        self._holds: list = []
        self._per_thread = thread_state(self.database)
        self._thread = None
        self._stop = threading.Event()
        self._last_flush = time.monotonic()
        self._suspect_connection = False
        self._unsure: list = []  # (an id, the values sent) of COMMITs whose replies were lost
        self._max_flat = int(max_pending) * _WIDTH
        self._retry_at = 0.0             # log.* makes no flush attempt before this
        self._backoff = _RETRY_AFTER[0]
        self._unreported: list = []      # rejections not raised by flush()/close() yet
        self.rejected: list = []         # the last rejected rows, as (row, reason)
        self.rows_rejected = 0
        self.last_error: BaseException | None = None
        self.closed = False
        self.rows_written = 0
        self._flush_at_exit = flush_at_exit
        if flush_at_exit:
            _live_writers.add(self)

    def __repr__(self) -> str:
        return f"<ApduLogWriter pending={self.pending} written={self.rows_written}>"

    # -- logging ---------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Rows logged but not yet committed (a flush under way included)."""
        return (len(self._flat) + self._inflight) // _WIDTH

    def command(self, raw_data, decoded=None, *, timestamp=None, session_id=None) -> None:
        """Log a command APDU sent to the card."""
        self.add(self._session(session_id), "command", raw_data, decoded,
                 timestamp=timestamp)

    def response(self, raw_data, sw=None, latency_ms=None, decoded=None, *,
                 status_message=None, timestamp=None, session_id=None) -> None:
        """Log a response APDU; ``sw`` defaults to the last four hex digits of ``raw_data``."""
        self.add(self._session(session_id), "response", raw_data, decoded, sw,
                 status_message, latency_ms, timestamp=timestamp)

    def add(self, session_id, direction, raw_data, decoded_data=None, status_word=None,
            status_message=None, latency_ms=None, timestamp=None, channel=None, ins=None,
            source_id=None) -> None:
        """Buffer one row (validated now); flushes when the buffer reaches ``batch_size``."""
        self._buffer(self.checked_row(session_id, direction, raw_data, decoded_data, status_word,
                                      status_message, latency_ms, timestamp, channel, ins,
                                      source_id))

    def add_many(self, rows) -> int:
        """Buffer many rows (tuples in :meth:`add` order, dicts or CommLogs): all or none;
        a bad row raises ValidationError naming its index and field."""
        flat: list = []
        problems = []
        for index, row in enumerate(rows):
            try:
                if isinstance(row, dict | CommLog):
                    flat.extend(self.checked_row(**_row_kwargs(row)))
                else:
                    flat.extend(self.checked_row(*row))
            except (ValidationError, TypeError) as exc:
                problems.append(f"row {index}: {exc}")
            if len(problems) >= 10:
                break
        if problems:
            raise ValidationError(f"{len(problems)} log row(s) rejected, none of this batch was "
                                  f"buffered; first: {problems[0]}", problems=problems)
        self._buffer(flat)
        return len(flat) // _WIDTH

    def _session(self, session_id):
        if session_id is not None:
            return session_id
        if self.session_id is None:
            raise ValidationError("this writer has no session: pass session_id= or create it "
                                  "with apdu_logger(manager, session_id)")
        return self.session_id

    def checked_row(self, session_id, direction, raw_data, decoded_data=None, status_word=None,
                    status_message=None, latency_ms=None, timestamp=None, channel=None, ins=None,
                    source_id=None) -> tuple:
        """One row checked and converted to the stored values, in LOG_FIELDS order."""
        timestamp = now_text() if timestamp is None else _timestamp_text(timestamp)
        last = self._last_session
        if session_id is not None and (session_id is last[0] or session_id == last[0]):
            session = last[1]
        else:
            if session_id is None:
                raise ValidationError("session_id is required for every log row",
                                      problems=["session_id"])
            session = session_key(session_id)
            self._last_session = (session_id, session)
            if len(self._commands) >= _KEPT_COMMANDS:  # forget the older half's commands
                self._commands = dict(list(self._commands.items())[_KEPT_COMMANDS // 2:])
        stored = _DIRECTIONS.get(direction) or _DIRECTIONS.get(str(direction).lower())
        if stored is None:
            raise ValidationError(f"direction must be 'command' or 'response'; got "
                                  f"{direction!r}", problems=["direction"])
        # The common case inline (a call per row costs the writer its target); a reset seen
        # without an ATR carries no bytes.
        raw = raw_data.upper() if type(raw_data) is str and raw_data.isascii() else None
        if raw is None or not is_hex(raw) or len(raw) & 1 or len(raw) > MAX_RAW_HEX:
            raw = "" if raw_data == "" and stored == "reset" else normalize_hex(raw_data)
        if status_word is not None:
            sw = status_word.upper() if type(status_word) is str and status_word.isascii() else ""
            if not _is_status_word(sw):
                sw = normalize_status_word(status_word)
        elif stored == "response" and len(raw) >= 4 and raw[-1] != ".":
            sw = raw[-4:]
        else:
            sw = None
        if status_message is None:
            if sw is not None:
                status_message = _MESSAGES.get(sw) or _sw_message(sw, self._commands.get(session))
        elif not _plain_text(status_message, _MAX_MESSAGE):
            _check_text(status_message, "status_message", _MAX_MESSAGE)
        if decoded_data is not None and not _plain_text(decoded_data, _MAX_DECODED):
            _check_text(decoded_data, "decoded_data", _MAX_DECODED)
        if latency_ms is not None:
            latency_ms = _latency(latency_ms)
        if channel is not None or ins is not None or source_id is not None:
            _check_small_ints(channel, ins, source_id)
        if stored == "command":
            self._commands[session] = raw
            if channel is None and ins is None:
                channel, ins = command_header(raw)  # indexed: "every INSTALL" is a lookup
        return (session, timestamp, latency_ms, stored, raw, decoded_data, sw,
                status_message, channel, ins, source_id)

    def _buffer(self, values) -> None:
        if self.closed:
            raise DatabaseError("this ApduLogWriter is closed; create a new one to log more")
        if len(self._flat) + self._inflight + len(values) > self._max_flat:
            # At max_pending: flush now (waiting for a reconnect), raising its error.
            self.flush(report=False)
            if len(self._flat) + self._inflight + len(values) > self._max_flat:
                raise ValidationError(f"the APDU log buffer holds {self.pending:,} rows "
                                      "(max_pending); log fewer rows at once")
        stack = self._per_thread.transactions  # this thread's open transaction, if any
        with self._lock:
            if stack and (not self._holds or self._holds[-1][2] is not stack[0]):
                self._holds.append((len(self._flat), stack, stack[0]))
            self._flat.extend(values)
            full = len(self._flat) >= self._flush_at
            start_timer = self._thread is None and self.flush_interval is not None
            if start_timer:
                self._thread = threading.Thread(
                    target=_flusher, args=(weakref.ref(self), self._stop, self.flush_interval),
                    name="apdu-log-flusher", daemon=True)
        if start_timer:
            self._thread.start()
        if full and time.monotonic() >= self._retry_at:
            self._flush_quietly()

    def _flush_quietly(self, lock_wait: float | None = None) -> None:
        """A flush by log.* or the timer (one quick attempt): a failure is logged, not raised.
        Skipped when another thread is flushing (it takes these rows too, or retries)."""
        if not self._flush_lock.acquire(blocking=False):
            return
        try:
            self._flush(self._per_thread.transactions, quick=True, lock_wait=lock_wait)
        except Exception as exc:
            self.last_error = exc
            if lock_wait is not None and _BUSY.search(str(exc)):
                # The timer met a lock (maybe the caller's): the caller's flush or commit, or
                # a later tick, writes these rows.
                logger.debug("APDU log flush deferred: %s", first_line(exc))
                return
            self._retry_at = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, _RETRY_AFTER[1])
            logger.warning("APDU log flush failed, %d rows kept for retry: %s",
                           self.pending, first_line(exc))
        finally:
            self._flush_lock.release()

    # -- flushing --------------------------------------------------------------
    def flush(self, report: bool = True) -> int:
        """Write every buffered row in one transaction; returns the count. A transient failure
        keeps the rows and raises; with ``report``, refused rows raise RejectedRowsError once."""
        count = self._flush()
        if report and self._unreported:
            self._raise_rejections()
        return count

    def _flush(self, stack=None, quick: bool = False, lock_wait: float | None = None) -> int:
        """Write the buffered rows (see _take); a connection it opens is closed after."""
        with scoped_connection(self.database):
            with self._flush_lock:
                with self._lock:
                    flat, holds = self._take(stack)
                    self._inflight = len(flat)
                if not flat:
                    return 0
                try:
                    written, rejected = self._write(flat, quick, lock_wait)
                except BaseException as exc:
                    with self._lock:
                        self._flat[:0] = flat
                        self._holds = holds + [(start + len(flat), owner, transaction)
                                               for start, owner, transaction in self._holds]
                        self._inflight = 0
                    if isinstance(exc, peewee.PeeweeException):
                        raise self._translate(exc, flat) from exc
                    raise
                with self._lock:
                    self._inflight = 0
                self.last_error = None
                self._retry_at = 0.0
                self._backoff = _RETRY_AFTER[0]
                self._last_flush = time.monotonic()
                count = len(written) // _WIDTH
                self.rows_written += count
                if rejected:
                    self.rows_rejected += len(rejected)
                    for kept in (self._unreported, self.rejected):
                        kept.extend(rejected)
                        del kept[:-_KEPT_REJECTIONS]
                    logger.warning("%d APDU log row(s) refused by the database and dropped; "
                                   "first: %s", len(rejected), rejected[0][1])
            if count:
                self._announce(written, count)
            return count

    def _take(self, stack) -> tuple[list, list]:
        """Under _lock: the rows a flush writes, and their holds. An explicit flush (``stack``
        None) takes them all; log.* and the timer (``stack``: the flushing thread's open
        transactions) stop at the first row logged in another thread's open transaction:
        that thread's flush writes it, or theirs once that transaction has ended."""
        flat, holds = self._flat, self._holds
        end = len(flat)
        if stack is not None:
            for start, owner, transaction in holds:
                if owner is not stack and owner[:1] == [transaction]:
                    end = start
                    break
        taken = [hold for hold in holds if hold[0] < end]
        self._holds = [(start - end, owner, transaction)
                       for start, owner, transaction in holds[len(taken):]]
        if end == len(flat):
            self._flat = []
            return flat, taken
        self._flat = flat[end:]
        return flat[:end], taken

    def _raise_rejections(self) -> None:
        rejected, self._unreported = self._unreported, []
        raise RejectedRowsError(
            f"{len(rejected)} APDU log row(s) were refused by the database and not "
            f"written (the others were); first: {rejected[0][1]}", rejected=rejected,
            written=self.rows_written)

    def discard(self) -> int:
        """Drop every buffered row without writing it; returns how many were dropped."""
        with self._lock:
            flat, self._flat, self._holds = self._flat, [], []
        return len(flat) // _WIDTH

    def close(self) -> None:
        """Flush, stop the background flusher and refuse further rows; raises like flush()."""
        self._stop.set()
        if self.closed:
            return
        self.flush(report=False)
        self.closed = True
        _live_writers.discard(self)
        if self._unreported:
            self._raise_rejections()

    def __enter__(self) -> ApduLogWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.close()
        except Exception:
            if exc_type is None:
                raise
            # The block failed: its log is kept, but its error is not hidden by a flush error.
            logger.exception("could not write %d buffered APDU log rows after an error; "
                             "they stay buffered for the exit-time flush", self.pending)

    def __del__(self):
        if self.__dict__.get("closed", True):
            # Closed already: at interpreter exit the frozen daemon flusher may still hold
            # the stop event's lock, and setting it again here would hang the process.
            return
        with contextlib.suppress(Exception):
            self._stop.set()
            if not self._flat:
                return
            if not self._flush_at_exit or self._holds:
                # Rows of a transaction (maybe rolled back) or of an owner that writes them
                # itself: a flush now would commit them on their own.
                logger.warning("ApduLogWriter garbage-collected with %d unwritten rows of a "
                               "transaction or without flush_at_exit; dropping them",
                               self.discard())
                return
            logger.warning("ApduLogWriter garbage-collected with %d unwritten rows; "
                           "writing them now", self.pending)
            self.flush()

    def _write(self, flat: list, quick: bool = False,
               lock_wait: float | None = None) -> tuple[list, list]:
        """Insert ``flat``; returns (values written, rejected rows with their reason)."""
        database = self.database
        top = not database.in_transaction()
        delay = 0.02
        for attempt in range(_BUSY_RETRIES):
            done, marker = 0, None
            try:
                if top:
                    self._connect(quick)
                    if self._unsure:
                        done = self._landed(flat)
                with _lock_wait(database, lock_wait), database.atomic():
                    if done < len(flat):
                        insert(plan_for(database, CommLog, LOG_FIELDS), flat[done:])
                        if top:
                            marker = _last_id(database)
                self._unsure = []
                self._suspect_connection = False
                break
            except (peewee.OperationalError, peewee.InterfaceError) as exc:
                if marker is not None:
                    # COMMIT sent, its reply lost: the rows may be stored. Ask (now, or
                    # before the next write) rather than write them twice.
                    self._unsure.append((marker, flat[done:]))
                    self._suspect_connection = True
                    with contextlib.suppress(peewee.PeeweeException):
                        self._connect(quick)
                        if self._landed(flat) == len(flat):
                            self._unsure, self._suspect_connection = [], False
                            return flat, []
                    raise
                busy = _BUSY.search(str(exc))
                if top and busy and not quick and attempt < _BUSY_RETRIES - 1:
                    time.sleep(delay * (1 + random.random()))
                    delay = min(delay * 2, 1.0)
                    continue
                if top and not busy:
                    self._suspect_connection = True
                raise
            except _ROW_ERRORS as exc:
                if is_transient(exc):
                    raise
                written, rejected = self._isolate(flat[done:])
                self._unsure = []
                return flat[:done] + written, rejected
        if top and len(flat) >= _WAL_TRUNCATE_ROWS * _WIDTH:
            _shrink_wal(database)
        return flat, []

    def _landed(self, flat: list) -> int:
        """How many leading values of ``flat`` the COMMITs whose replies were lost
        (``_unsure``: an id each wrote, and what it sent) did store; asks the database."""
        done = 0
        for marker, sent in self._unsure:
            if not _row_exists(self.database, marker):
                break
            if flat[done:done + len(sent)] != sent:
                logger.warning("%d APDU log rows whose commit reply was lost were stored, and "
                               "may be stored twice", len(sent) // _WIDTH)
                break
            done += len(sent)
        return done

    def _isolate(self, flat: list) -> tuple[list, list]:
        """Bisect a refused batch in savepoints: write every row the database takes."""
        written, rejected = insert_isolating(
            plan_for(self.database, CommLog, LOG_FIELDS), flat,
            lambda exc: isinstance(exc, _ROW_ERRORS) and not is_transient(exc))
        # Each refused row as add()'s keyword arguments (what a caller may log again).
        rows = [(dict(zip(_LOGGED_AS, values, strict=True)), exc) for values, exc in rejected]
        return written, [(row, self._reason(row, exc)) for row, exc in rows]

    def _reason(self, row: dict, exc: Exception) -> str:
        if isinstance(exc, peewee.IntegrityError) and _missing_sessions([row["session_id"]]):
            return f"OTA session {row['session_id']!r} does not exist; create the session first"
        if isinstance(exc, peewee.PeeweeException):
            return first_line(translate_error(exc, "APDU log row"))
        return f"{type(exc).__name__}: {first_line(exc)}"[:200]

    def _connect(self, quick: bool = False) -> None:
        if not self._suspect_connection:
            return
        if self._manager is not None and not quick:
            self._manager.ensure_connection()
            return
        # One attempt, no back-off: log.* never waits for a server that is away.
        with contextlib.suppress(peewee.PeeweeException):
            self.database.close()
        self.database.connect(reuse_if_open=True)

    def _translate(self, exc, flat) -> DatabaseError:
        error = translate_error(exc, "APDU log")
        if isinstance(exc, peewee.IntegrityError) and not self.database.in_transaction():
            with contextlib.suppress(Exception):
                missing = _missing_sessions(sorted(set(flat[0::_WIDTH])))
                if missing:
                    error = type(error)(
                        f"APDU log rows refer to OTA session {missing[0]!r}, which does not "
                        "exist; create the session first (the rows stay buffered; discard() "
                        "drops them)")
        return error

    def _announce(self, flat: list, count: int) -> None:
        sessions = Counter(flat[0::_WIDTH])
        data = {"count": count, "sessions": dict(sessions)}
        entity = next(iter(sessions)) if len(sessions) == 1 else None
        try:
            if self._on_flush is not None:
                self._on_flush(entity, data)
            else:
                emit_after_commit(self.database, EventType.LOG_CREATED, "log", entity, data)
        except Exception:
            logger.exception("LOG_CREATED event delivery failed")

    def _background_flush(self) -> None:
        # Never waits for a lock: the thread holding it may be waiting for this flush.
        if self._flat and time.monotonic() - self._last_flush >= self.flush_interval * 0.5:
            self._flush_quietly(lock_wait=_TIMER_LOCK_WAIT)


_LOGGED_AS = tuple("session_id" if f is CommLog.session else f.name for f in LOG_FIELDS)


def _flusher(ref, stop: threading.Event, interval: float) -> None:
    while not stop.wait(interval):
        writer = ref()
        if writer is None:
            return
        writer._background_flush()
        del writer


def _missing_sessions(sessions: list) -> list:
    found = {s for (s,) in OTASession.select(OTASession.id)
             .where(OTASession.id.in_(sessions)).tuples()}
    return [s for s in sessions if s not in found]


def _last_id(database) -> int | None:
    """An id this connection's last insert gave a row (servers: a lost COMMIT reply leaves
    the outcome to be asked); None on SQLite, where a commit's outcome is never in doubt."""
    if isinstance(database, peewee.SqliteDatabase):
        return None
    sql = "SELECT LAST_INSERT_ID()" if isinstance(database, peewee.MySQLDatabase) else \
        "SELECT lastval()"
    return database.execute_sql(sql).fetchone()[0]


def _row_exists(database, key) -> bool:
    return database.execute(CommLog.select(peewee.SQL("1")).where(CommLog.id == key)
                            .limit(1)).fetchone() is not None


def _shrink_wal(database) -> None:
    if isinstance(database, peewee.SqliteDatabase):
        # Never wait for readers here: if one is busy the journal_size_limit trims it later.
        with _lock_wait(database, 0), contextlib.suppress(peewee.PeeweeException):
            database.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


@contextlib.contextmanager
def _lock_wait(database, seconds: float | None):
    """Inside the block this thread's connection waits at most ``seconds`` for a lock, then
    fails as busy (None: as configured); its own setting is back after (else it is dropped)."""
    if seconds is None:
        yield
        return
    if isinstance(database, peewee.SqliteDatabase):
        before = database.execute_sql("PRAGMA busy_timeout").fetchone()[0]
        change, restore = f"PRAGMA busy_timeout = {seconds * 1000:.0f}", \
            f"PRAGMA busy_timeout = {int(before)}"
    elif isinstance(database, peewee.MySQLDatabase):  # whole seconds; MariaDB takes 0
        change = ("SET @cardlink_lock_wait = @@innodb_lock_wait_timeout, "
                  f"innodb_lock_wait_timeout = {int(seconds)}")
        restore = "SET innodb_lock_wait_timeout = @cardlink_lock_wait"
    else:  # PostgreSQL: 0 would mean no limit
        change, restore = f"SET lock_timeout = {max(1, round(seconds * 1000))}", \
            "RESET lock_timeout"
    database.execute_sql(change)
    try:
        yield
    finally:
        try:
            database.execute_sql(restore)
        except peewee.PeeweeException:
            discard_connection(database)  # not handed on with our setting


_live_writers: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    for writer in list(_live_writers):
        try:
            writer.close()
        except Exception as exc:
            logger.error("APDU log rows lost at exit: %d rows could not be written: %s",
                         writer.pending, exc)


@contextlib.contextmanager
def apdu_logger(manager, session_id, **options):
    """``with apdu_logger(manager, session_id) as log: log.command(...)``: an
    :class:`ApduLogWriter` (same options) flushed on exit."""
    writer = ApduLogWriter(manager, session_id=session_id, **options)
    with writer:
        yield writer


# -- row values ----------------------------------------------------------------
def now_text() -> str:
    """Now as the timestamp column stores it; the date text is rebuilt once a second."""
    global _second
    now = time.time()
    sec = int(now)
    cached = _second
    if cached[0] != sec:
        cached = _second = (sec, datetime.fromtimestamp(sec, timezone.utc)
                            .strftime("%Y-%m-%d %H:%M:%S"))
    return cached[1] + _MILLIS[int((now - sec) * 1000)]


def normalize_hex(value, field: str = "raw_data") -> str:
    """Upper-case hex with spaces removed; a trailing ``...`` (an elided sample) is kept."""
    if isinstance(value, bytes | bytearray | memoryview):
        text = bytes(value).hex().upper()
    elif not isinstance(value, str):
        raise ValidationError(f"{field} must be a hex string such as '00A40400'; got "
                              f"{type(value).__name__}", problems=[field])
    elif not value.isascii():  # "ﬀ".upper() is "FF": only ASCII digits are hex digits
        raise ValidationError(f"{field} must be ASCII hex digits (0-9, A-F); got {quote(value)}",
                              problems=[field])
    else:
        text = value.upper()
        if not is_hex(text) or len(text) & 1:
            text = "".join(text.split())
            elided = text.endswith("...")
            body = text[:-3] if elided else text
            # An elided sample may stop mid-byte; a complete value must be whole bytes.
            if not body or not is_hex(body) or (len(body) & 1 and not elided):
                raise ValidationError(
                    f"{field} must be whole bytes of hex digits (spaces allowed, a trailing "
                    f"'...' marks an elided sample); got {quote(value)}", problems=[field])
    if len(text) > MAX_RAW_HEX:
        raise ValidationError(
            f"{field} is {len(text):,} hex digits long; at most {MAX_RAW_HEX:,} "
            f"({MAX_RAW_HEX // 2:,} bytes) are stored", problems=[field])
    return text


def _plain_text(value, limit: int) -> bool:
    """True for short ASCII text without NUL: stored as it is, no further check needed."""
    return type(value) is str and value.isascii() and "\x00" not in value and len(value) <= limit


def _check_text(value, field: str, limit: int) -> None:
    if type(value) is not str:
        raise ValidationError(f"{field} must be text; got {type(value).__name__}",
                              problems=[field])
    if len(value) > limit:
        raise ValidationError(
            f"{field} is {len(value):,} characters long; at most {limit:,} are stored",
            problems=[field])
    storable_text(value, field)


def _latency(value) -> float:
    number = -1.0
    if type(value) is not bool:  # a bool is not a number of milliseconds
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            pass
    if not 0 <= number <= 1e300:  # also refuses NaN and infinity
        raise ValidationError(
            f"latency_ms must be a finite number of milliseconds >= 0; got {quote(value)}",
            problems=["latency_ms"])
    return number


def _sw_message(sw: str, command: str | None) -> str:
    """``sw``'s meaning as stored in ``status_message``, as the answer to ``command`` (hex)."""
    text = _MESSAGES.get(sw)
    if text is None:
        text = _MESSAGES[sw] = "" if depends_on_command(sw) else describe_status_word(sw)[:128]
    if text:
        return text
    ins, has_data = command_facts(command) if command else (None, True)
    return describe_after_command(sw, ins, has_data)[:128]


def _timestamp_text(value) -> str:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValidationError(f"timestamp must be a datetime or ISO 8601 text; got "
                                  f"{quote(value)}", problems=["timestamp"]) from None
    if not isinstance(value, datetime):
        raise ValidationError(f"timestamp must be a datetime; got {type(value).__name__}",
                              problems=["timestamp"])
    try:
        return CommLog.timestamp.db_value(value).isoformat(" ")
    except OverflowError:
        raise ValidationError(
            f"timestamp {value.isoformat()} is outside 0001-01-01..9999-12-31 once "
            "converted to UTC", problems=["timestamp"]) from None


def session_key(session_id) -> str:
    """The stored key of an OTA session given as an OTASession, UUID or UUID text."""
    if isinstance(session_id, OTASession):
        session_id = session_id.id
    try:
        return OTASession.id.db_value(session_id)
    except ValidationError:
        raise ValidationError(f"session_id must be an OTA session's UUID; got "
                              f"{quote(session_id)}", problems=["session_id"]) from None


def _check_small_ints(channel, ins, source_id) -> None:
    for name, value, low, high in (("channel", channel, 0, 19), ("ins", ins, 0, 255),
                                   ("source_id", source_id, 1, 2**31 - 1)):
        if value is not None and (type(value) is not int or not low <= value <= high):
            raise ValidationError(f"{name} must be a whole number {low}..{high}; got "
                                  f"{str(value)[:20]!r}", problems=[name])


def _row_kwargs(row: dict | CommLog) -> dict:
    if isinstance(row, CommLog):
        data = field_values(row)
        return {key: data.get("session" if key == "session_id" else key) for key in _ROW_KEYS}
    row = dict(row)
    if "session" in row and "session_id" not in row:
        row["session_id"] = row.pop("session")
    unknown = set(row) - set(_ROW_KEYS)
    if unknown:
        raise ValidationError(f"unknown log field {sorted(unknown)[0]!r}; use "
                              f"{', '.join(_ROW_KEYS)}", problems=sorted(unknown))
    return row


# -- command APDUs -------------------------------------------------------------
def channel_of(cla: int) -> int | None:
    """The logical channel a CLA byte addresses (ISO 7816-4 §5.4.1 / TS 102 221 §10.1.1)."""
    if cla == 0xFF:
        return None  # PPS, not an APDU
    if (cla & 0xF0) == 0xA0:
        return 0  # GSM 11.11 class: no logical channels
    if cla & 0x40:
        return 4 + (cla & 0x0F)  # further interindustry / proprietary: channels 4-19
    return cla & 0x03


# Hex text of a byte -> (logical channel as a CLA, the byte as an INS): one dict lookup
# per logged command instead of int() parsing.
_HEADER_BYTES = {f"{b:02X}": (channel_of(b), b) for b in range(256)}


def command_header(raw: str) -> tuple[int | None, int | None]:
    """(logical channel, INS) of a command's upper-case hex; (None, None) if too short."""
    cla = _HEADER_BYTES.get(raw[:2])
    ins = _HEADER_BYTES.get(raw[2:4])
    if cla is None or ins is None:
        return None, None
    return cla[0], ins[1]


def command_facts(raw: str) -> tuple[int | None, bool]:
    """(INS, whether it carries data) of a command's upper-case hex."""
    ins = command_header(raw)[1]
    try:
        return ins, bool(command_body(bytes.fromhex(raw))[0])
    except ValueError:  # an elided ("...") command
        return ins, True


def command_body(cmd: bytes) -> tuple[bytes, int | None]:
    """(command data, Le) of a command APDU in short or extended form (ISO 7816-4 §5.1);
    a T=0 TPDU (``CLA INS P1 P2 P3 data``) reads as the short form."""
    n = len(cmd)
    if n <= 4:
        return b"", None
    p3 = cmd[4]
    if n == 5:
        return b"", p3 or 256
    if p3:
        if n == 5 + p3:
            return cmd[5:], None
        if n == 6 + p3:
            return cmd[5:-1], cmd[-1] or 256
        return cmd[5:], None
    # P3 = 00 and more bytes: extended length
    if n == 6:
        return cmd[5:], None  # one stray byte: not a well-formed APDU, kept as data
    if n == 7:
        return b"", (cmd[5] << 8 | cmd[6]) or 65536
    lc = cmd[5] << 8 | cmd[6]
    if n == 7 + lc:
        return cmd[7:], None
    if n == 9 + lc:
        return cmd[7:-2], (cmd[-2] << 8 | cmd[-1]) or 65536
    return cmd[5:], None
