"""APDU command/response logs: batched writes through the APDU writer, trace queries, export."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from functools import partial

import peewee

from .._peewee import mark_clean
from ..apdu import ApduLogWriter, command_facts, is_hex, session_key
from ..db import small_page_cache
from ..errors import ValidationError, quote
from ..events import EventType
from ..fields import iso_utc
from ..models import CommDirection, CommLog
from ..retention import purge_older_than
from ..status_words import MORE_DATA_PREFIXES, is_retry_query_answer, normalize_status_word
from ..transfer_format import write_jsonl
from .base import BaseRepository, Statement

__all__ = ["LogRepository", "SessionLogExport"]

_EXPORT_COLUMNS = (CommLog.id, CommLog.timestamp, CommLog.direction, CommLog.raw_data,
                   CommLog.decoded_data, CommLog.status_word, CommLog.status_message,
                   CommLog.latency_ms)
_PAGE = 5000           # rows per keyset page when streaming (flat memory on every backend)
_PURGE_CHUNK = 5000


class SessionLogExport(Sequence):
    """A session's logs as export dicts, streamed when iterated; otherwise it behaves like a
    list (len, indexing, ==)."""

    def __init__(self, repository: LogRepository, session_id):
        self._repo = repository
        self.session_id = session_id

    def __iter__(self) -> Iterator[dict]:
        return self._repo.iter_logs(self.session_id)

    def __len__(self) -> int:
        return self._repo.count_by_session(self.session_id)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return list(self)[index]
        if index < 0:
            index += len(self)
        if index >= 0:  # one row read at its offset, not every row before it
            for row in self._repo._iter_pages(self._repo.database, self.session_id, 1, index):
                return row
        raise IndexError("log export index out of range")

    def __eq__(self, other) -> bool:
        if isinstance(other, SessionLogExport | list | tuple):
            return list(self) == list(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"<SessionLogExport session={self.session_id!r}>"

    def write_jsonl(self, fp) -> int:
        """Write one JSON object per line to the text file ``fp``; returns the row count."""
        return write_jsonl(fp, self)


class LogRepository(BaseRepository):
    """APDU logs: batched rows go through one :class:`ApduLogWriter`, flushed before every
    query; a session's rows come in (timestamp, id) order. Loaded rows are not tracked."""

    tracks_objects = False
    model = CommLog
    entity_type = "log"
    batch_size = 1000

    def __init__(self, uow=None, batch_size: int | None = None):
        super().__init__(uow)
        if batch_size is not None:
            self.batch_size = batch_size
        self._writer: ApduLogWriter | None = None

    # -- writing ---------------------------------------------------------------
    @property
    def writer(self) -> ApduLogWriter:
        """The writer of this repository's batched rows (no timer: the unit of work commits)."""
        if self._writer is None:
            self._writer = ApduLogWriter(self.database, batch_size=self.batch_size,
                                         flush_interval=None, flush_at_exit=False,
                                         on_flush=partial(self._emit, EventType.LOG_CREATED))
        return self._writer

    @property
    def pending(self) -> int:
        """Rows added with add_log_batch() and not yet flushed."""
        return 0 if self._writer is None else self._writer.pending

    def add_log(self, session_id, direction, raw_data, decoded_data=None, status_word=None,
                status_message=None, latency_ms=None, timestamp=None) -> CommLog:
        """Write one log row now (validated like batched rows); returns it with its id."""
        row = self.writer.checked_row(session_id, direction, raw_data, decoded_data, status_word,
                               status_message, latency_ms, timestamp)
        self.flush_batch()  # earlier batched rows keep their place in the trace
        # Schema 0003's channel and INS (a command's header) only when there are some.
        header = {k: v for k, v in (("channel", row[8]), ("ins", row[9])) if v is not None}
        log = CommLog(session=row[0], timestamp=row[1], latency_ms=row[2],
                      direction=row[3], raw_data=row[4], decoded_data=row[5],
                      status_word=row[6], status_message=row[7], **header)
        with self._write():
            log.save(force_insert=True)
        log.timestamp = CommLog.timestamp.python_value(row[1])
        log.direction = CommDirection(row[3])
        mark_clean(log)
        self._emit(EventType.LOG_CREATED, log.id, {"count": 1, "session_id": row[0]})
        return log

    def add_log_batch(self, *args, **kwargs) -> int:
        """Buffer the design's one row (``add()``'s arguments) or the guide's list of rows
        (tuples, dicts or CommLogs: all or none); returns how many were buffered."""
        self._touch(write=True)
        if len(args) == 1 and not kwargs and not isinstance(args[0], str | bytes) \
                and hasattr(args[0], "__iter__"):
            return self.writer.add_many(args[0])
        self.writer.add(*args, **kwargs)
        return 1

    def flush_batch(self) -> int:
        """Write the buffered rows now (one savepoint in the unit of work); returns the count."""
        if self._writer is None or not self._writer.pending:
            return 0
        self._touch(write=True)
        with self._wrap():
            return self._writer.flush()

    # Unit-of-work hooks: write pending rows before commit, forget them on rollback.
    _flush_pending = flush_batch

    def _discard_pending(self) -> int:
        return 0 if self._writer is None else self._writer.discard()

    # -- queries ---------------------------------------------------------------
    def session_query(self, session_id, direction=None) -> peewee.ModelSelect:
        """A session's rows in logging order, as a Peewee query to refine or stream (big
        sessions: ``.iterator()``, ``.tuples()`` or ``.dicts()``)."""
        self._reading()
        return _trace_query(*self._trace_params(session_id, direction))

    def _reading(self) -> peewee.Database:
        self.flush_batch()
        return super()._reading()

    def _models(self, query) -> list[CommLog]:
        with self._wrap():
            rows = self.database.execute(query).fetchall()
        return _TRACE.to_models(rows)  # every CommLog column, as the trace read

    def _trace_params(self, session_id, direction=None) -> tuple:
        params = (session_key(session_id),)
        if direction is not None:
            params += (_direction(direction),)
        return params

    def session_rows(self, session_id, as_dicts: bool = False) -> list:
        """A session's rows in logging order as tuples (model field order) or dicts: the fast
        trace read (aware UTC timestamps, directions as text)."""
        return _trace_rows(self._fetch(_TRACE, *self._trace_params(session_id)), as_dicts)

    def find_by_session(self, session_id, limit: int | None = None,
                        offset: int | None = None) -> list[CommLog]:
        """A session's rows in logging order (``limit``/``offset`` page through big ones)."""
        if limit is None and not offset:
            return self._load(_TRACE, *self._trace_params(session_id))
        return self._models(self.session_query(session_id).limit(limit).offset(offset or None))

    def find_by_direction(self, session_id, direction) -> list[CommLog]:
        """A session's commands or responses, in logging order."""
        return self._load(_TRACE_DIRECTION, *self._trace_params(session_id, direction))

    def find_commands(self, session_id) -> list[CommLog]:
        return self.find_by_direction(session_id, CommDirection.COMMAND)

    def find_responses(self, session_id) -> list[CommLog]:
        return self.find_by_direction(session_id, CommDirection.RESPONSE)

    def find_by_status(self, session_id, status_word) -> list[CommLog]:
        """A session's rows with this status word (``"9000"``, ``"6a82"``...)."""
        sw = normalize_status_word(status_word)
        return self._load(_BY_STATUS, session_key(session_id), sw)

    def find_errors(self, session_id, include_success_with_data: bool = False) -> list[CommLog]:
        """A session's non-9000 responses, less "more data" (61xx/9Fxx/91xx) and 63Cx answering
        a retry-counter query unless ``include_success_with_data``."""
        session = session_key(session_id)
        if include_success_with_data:
            return self._load(_ALL_ERRORS, session)
        errors = self._load(_ERRORS, session)
        retries = {row.id for row in errors if row.status_word.startswith("63C")}
        if retries:
            retries &= self._retry_query_answers(session_id, retries)
            errors = [row for row in errors if row.id not in retries]
        return errors

    def _retry_query_answers(self, session_id, ids: set) -> set:
        """Those of the 63Cx responses ``ids`` that answer a retry-counter query."""
        query = self.session_query(session_id).where(
            (CommLog.direction == CommDirection.COMMAND) | CommLog.id.in_(list(ids)))
        with self._wrap():
            rows = self.database.execute(query.select(CommLog.id, CommLog.raw_data,
                                                      CommLog.status_word)).fetchall()
        answers, command = set(), ""
        for row_id, raw, sw in rows:
            if row_id not in ids:
                command = raw
            elif is_retry_query_answer(sw, *command_facts(command)):
                answers.add(row_id)
        return answers

    def count_by_session(self, session_id) -> int:
        with self._wrap():
            return self._select(CommLog.session == session_key(session_id)).count()

    def search_hex(self, pattern, session_id=None, limit: int | None = None, *,
                   header: bool = False) -> list[CommLog]:
        """Rows whose raw APDU contains the hex ``pattern`` (any case, spaces ignored);
        ``header=True``: commands starting with it, found through the INS index."""
        text = "".join(str(pattern).split())
        text = text.upper() if text.isascii() else ""  # "ﬀ".upper() is "FF"
        if not is_hex(text):
            raise ValidationError("search pattern must be hex digits such as 'A4' or "
                                  f"'00A40400'; got {quote(pattern)}", problems=["pattern"])
        # Stored hex is upper case and the pattern is plain hex: no wildcard to escape.
        if header and len(text) >= 4:
            # Only commands have an instruction byte: the INS index alone finds them (adding
            # the direction made MariaDB intersect with half the table's direction index).
            query = self._select(CommLog.ins == int(text[2:4], 16),
                                 CommLog.raw_data.startswith(text))
        elif header:
            query = self._select(CommLog.direction == CommDirection.COMMAND,
                                 CommLog.raw_data.startswith(text))
        else:
            query = self._select(CommLog.raw_data.contains(text))
        if session_id is not None:
            query = query.where(CommLog.session == session_key(session_id))
        return self._models(query.order_by(CommLog.timestamp, CommLog.id).limit(limit))

    # -- export ----------------------------------------------------------------
    def export_session_logs(self, session_id) -> SessionLogExport:
        """A session's logs as dicts (the design's keys), streamed when iterated."""
        self.flush_batch()
        return SessionLogExport(self, session_key(session_id))

    def iter_logs(self, session_id=None, page_size: int = _PAGE) -> Iterator[dict]:
        """Export dicts of one session (logging order) or of every log (id order), read in
        keyset pages so memory stays flat (on SQLite with a small page cache)."""
        database = self.database
        with small_page_cache(database):
            yield from self._iter_pages(database, session_id, page_size)

    def _iter_pages(self, database, session_id, page_size: int,
                    offset: int = 0) -> Iterator[dict]:
        if session_id is None:
            base = self._select().order_by(CommLog.id)
        else:
            base = self._select(CommLog.session == session_key(session_id)) \
                .order_by(CommLog.timestamp, CommLog.id)
        base = base.select(*_EXPORT_COLUMNS)
        query = base.offset(offset) if offset else base
        while True:
            # The driver's own values: the per-row conversion is ours and cheap.
            with self._wrap():
                rows = database.execute(query.limit(page_size)).fetchall()
            for row in rows:
                yield {"timestamp": iso_utc(row[1]), "direction": row[2], "raw_data": row[3],
                       "decoded_data": row[4], "status_word": row[5],
                       "status_message": row[6], "latency_ms": row[7]}
            if len(rows) < page_size:
                return
            # The next page: keyset on the stored values themselves (no conversion: exact).
            last_id, last_time = rows[-1][0], peewee.Value(rows[-1][1], converter=False)
            query = base.where(CommLog.id > last_id) if session_id is None else base.where(
                (CommLog.timestamp > last_time)
                | ((CommLog.timestamp == last_time) & (CommLog.id > last_id)))

    def write_jsonl(self, fp, session_id=None) -> int:
        """Stream logs (one session, or all) to ``fp`` as JSON lines; returns the count."""
        return write_jsonl(fp, self.iter_logs(session_id))

    # -- retention -------------------------------------------------------------
    def purge_old(self, days: int, chunk_size: int = _PURGE_CHUNK) -> int:
        """Delete logs older than ``days`` days in chunks (each its own commit outside a
        transaction, so loggers never wait long); returns the count."""
        if isinstance(days, bool) or not isinstance(days, int | float) or days < 0:
            raise ValidationError(f"days must be a number >= 0; got {days!r}")
        self.flush_batch()
        self._touch(write=True)
        cutoff = datetime.now(timezone.utc) - timedelta(days=days)
        with self._wrap():
            deleted = purge_older_than(self.database, CommLog, CommLog.timestamp, cutoff,
                                       chunk_size=chunk_size)
        if deleted:
            self._emit(EventType.LOG_DELETED, None, {"count": deleted, "older_than_days": days})
        return deleted


def _trace_query(session, direction=None):
    """A session's rows (one direction's) in logging order."""
    query = CommLog.select().where(CommLog.session == session)
    if direction is not None:
        query = query.where(CommLog.direction == direction)
    return query.order_by(CommLog.timestamp, CommLog.id)


def _errors_query(session, include_success_with_data: bool):
    query = _trace_query(session, CommDirection.RESPONSE).where(
        CommLog.status_word.is_null(False), CommLog.status_word != "9000")
    if not include_success_with_data:
        for prefix in MORE_DATA_PREFIXES:
            query = query.where(~CommLog.status_word.startswith(prefix))
    return query


# The reads of a trace, each built by Peewee once per database.
_TRACE = Statement(lambda session: _trace_query(session), model=CommLog)
_TRACE_DIRECTION = Statement(lambda session, direction: _trace_query(session, direction),
                             model=CommLog)
_BY_STATUS = Statement(lambda session, sw: _trace_query(session).where(
    CommLog.status_word == sw), model=CommLog)
_ERRORS = Statement(lambda session: _errors_query(session, False), model=CommLog)
_ALL_ERRORS = Statement(lambda session: _errors_query(session, True), model=CommLog)
_NAMES = tuple(CommLog._meta.sorted_field_names)
_TIME = _NAMES.index("timestamp")
_UTC = CommLog.timestamp.python_value


def _trace_rows(rows, as_dicts: bool) -> list:
    """Fetched trace rows with timestamps as aware UTC datetimes, the rest as the driver gave."""
    utc, at = _UTC, _TIME
    tuples = [row[:at] + (utc(row[at]),) + row[at + 1:] for row in map(tuple, rows)]
    if not as_dicts:
        return tuples
    names = _NAMES
    return [dict(zip(names, row, strict=True)) for row in tuples]


def _direction(direction) -> str:
    try:
        return CommLog.direction.coerce_member(direction).value
    except ValidationError:
        raise ValidationError(f"direction must be 'command' or 'response'; got {direction!r}",
                              problems=["direction"]) from None
