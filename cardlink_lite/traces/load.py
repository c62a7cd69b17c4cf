"""``import_trace``: one trace file into the store, decoded, in one transaction."""

from __future__ import annotations

import hashlib
import os
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from functools import partial

from peewee import SQL, IntegrityError, PeeweeException, chunked, fn

from .._peewee import discard_connection
from ..apdu import ApduLogWriter, session_key
from ..db import bound_models
from ..errors import NotFoundError, ValidationError, translate_error
from ..models import CardProfile, CommLog, Device, OTASession, SessionStatus, TraceSource
from .decode import channel_of, decode_exchange, describe_atr
from .reading import read_trace
from .records import ATR, EXCHANGE, TraceFormatError

__all__ = ["ImportSummary", "import_trace", "rows_of_records"]

SESSION_TYPE = "trace-import"
_UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=_UTC)
_MILLIS = [f".{ms:03d}000" for ms in range(1000)]
_CHUNK_ROWS = 2000
_CHANNELS = [channel_of(cla) for cla in range(256)]


@dataclass
class ImportSummary:
    """What one ``import_trace`` call did (or, with ``dry_run``, would do)."""

    path: str
    format: str = ""
    sha256: str = ""
    size_bytes: int = 0
    source_id: int | None = None
    sessions: list[str] = field(default_factory=list)   # sessions written to, in order
    sessions_created: int = 0
    exchanges: int = 0
    atrs: int = 0
    resets: int = 0
    rows: int = 0
    skipped: dict[str, int] = field(default_factory=dict)   # reason -> packets/lines
    corrupt: list[str] = field(default_factory=list)         # "offset N: ..." / "line N: ..."
    leftover_bytes: int = 0
    ends_mid_exchange: bool = False
    already_imported: bool = False
    dry_run: bool = False

    @property
    def packets_skipped(self) -> int:
        return sum(self.skipped.values())

    def as_dict(self) -> dict:
        data = asdict(self)
        data["packets_skipped"] = self.packets_skipped
        return data


class _Reader:
    """A binary file that hashes and counts what is read through it."""

    def __init__(self, fp, progress):
        self.fp = fp
        self.sha = hashlib.sha256()
        self.count = 0
        self.progress = progress

    def read(self, n: int = -1) -> bytes:
        data = self.fp.read(n)
        self.sha.update(data)
        self.count += len(data)
        if self.progress is not None and data:
            self.progress(len(data))
        return data


def _second_text(sec: int) -> str:
    try:  # isoformat, as strftime writes the year 1 as "1"
        return datetime.fromtimestamp(sec, _UTC).isoformat(" ")[:19]
    except (ValueError, OverflowError):  # readers drop such times, but not header + latency
        raise TraceFormatError("a row's time falls outside 0001-01-01..9999-12-31 (UTC); check "
                               "the apdu4j 'Generated on' and 'Received in' lines") from None


def _when(ns: int) -> datetime:
    """ns since the epoch as a UTC datetime; no float, which is off by a few µs in 9999."""
    return _EPOCH + timedelta(microseconds=ns // 1000)


def _stamp(ns: int) -> str:
    """ns since the epoch as the timestamp column stores it (naive UTC, milliseconds)."""
    sec, rest = divmod(ns, 1_000_000_000)
    return _second_text(sec) + _MILLIS[rest // 1_000_000]


def _file_hash(fp) -> tuple[str, int]:
    sha, size = hashlib.sha256(), 0
    for chunk in iter(partial(fp.read, 1 << 20), b""):
        sha.update(chunk)
        size += len(chunk)
    fp.seek(0)
    return sha.hexdigest(), size


def _check_links(session_id, device_id, card_iccid, split_on_reset) -> str | None:
    if session_id is not None and split_on_reset:
        raise ValidationError("--session and --split-on-reset exclude each other: a trace "
                              "either goes into one existing session or into new ones")
    if device_id is not None and Device.get_or_none(Device.id == device_id) is None:
        raise NotFoundError(f"device {device_id!r} is not in the store; add it first "
                            "(cardlink-db import, or DeviceRepository.create)")
    if card_iccid is not None and CardProfile.get_or_none(CardProfile.iccid == card_iccid) is None:
        raise NotFoundError(f"card {card_iccid!r} is not in the store; add its profile first")
    if session_id is None:
        return None
    key = session_key(session_id)
    if OTASession.get_or_none(OTASession.id == key) is None:
        raise NotFoundError(f"session {key} not found; check the id (cardlink-db logs show) "
                            "or leave out --session to create a new one")
    return key


def import_trace(manager, path_or_file, format: str = "auto", *,  # noqa: A002 - the CLI's name
                 session_id=None, split_on_reset: bool = False, device_id: str | None = None,
                 card_iccid: str | None = None, dry_run: bool = False,
                 start: datetime | None = None, name: str | None = None,
                 progress=None) -> ImportSummary:
    """Import one trace file (a path or a binary file object) whole or not at all; a file
    whose SHA-256 is already in ``trace_sources`` changes nothing (``already_imported``).

    Rows without a time of their own are timed at ``start`` (default: the file's modification
    time, or now for a file object). ``progress(n)`` is called with each chunk's size.
    """
    with ExitStack() as stack:
        stack.enter_context(bound_models(manager.database))
        fp = path_or_file
        if isinstance(fp, str | os.PathLike):
            name = name or os.fspath(fp)
            fp = stack.enter_context(open(fp, "rb"))
            start = start or datetime.fromtimestamp(os.stat(fp.fileno()).st_mtime, _UTC)
        summary = ImportSummary(path=name or getattr(fp, "name", None) or "<stream>",
                                dry_run=dry_run)
        start = start or datetime.now(_UTC)
        known_hash = None
        if fp.seekable():
            known_hash, summary.size_bytes = _file_hash(fp)
            existing = _imported(known_hash)
            if existing is not None:
                return _already(summary, existing, known_hash)
        reader = _Reader(fp, progress)
        stack.enter_context(_failed_rollback(manager.database))
        with (nullcontext() if dry_run else manager.database.atomic()) as transaction:
            target = _check_links(session_id, device_id, card_iccid, split_on_reset)
            fmt, records, stats = read_trace(reader, format, start)
            if dry_run:
                _Importer(summary, None, device_id, card_iccid, split_on_reset, start,
                          target).run(records)
                return _finish(summary, fmt, stats, reader, known_hash)
            if known_hash is not None:
                _drop_unused(known_hash)
            try:
                with manager.database.atomic():  # a savepoint: the import goes on after it
                    source = TraceSource.create(
                        path=summary.path[-512:], format=fmt,
                        sha256=known_hash or "pending-" + os.urandom(8).hex(),
                        size_bytes=summary.size_bytes)
            except IntegrityError:  # another import of this file committed first
                if _raced(transaction, summary, known_hash) is None:
                    raise
                return summary
            # Flushed by run() after every chunk, raising: never log.*'s quiet flush, which
            # would keep reading (and holding) the file after the connection is gone.
            writer = ApduLogWriter(manager.database, batch_size=2 * _CHUNK_ROWS,
                                   flush_interval=None, flush_at_exit=False)
            importer = _Importer(summary, source.id, device_id, card_iccid, split_on_reset,
                                 start, target)
            try:
                importer.run(records, writer)
                writer.close()
            except BaseException:  # Ctrl-C included: the rows go with the rolled-back import
                writer.discard()
                raise
            _finish(summary, fmt, stats, reader, known_hash)
            if not summary.rows:  # not recorded: the file imports once given the right format
                transaction.rollback()
                return summary
            if known_hash is None:
                existing = _imported(summary.sha256)
                if existing is not None:
                    transaction.rollback()
                    return _already(summary, existing, summary.sha256)
                _drop_unused(summary.sha256)
            importer.close_sessions(stats.open_exchange)
            summary.source_id = source.id
            source.sha256 = summary.sha256
            source.size_bytes = summary.size_bytes
            source.summary = {k: v for k, v in summary.as_dict().items()
                              if k not in ("path", "sha256", "source_id", "dry_run")}
            try:
                with manager.database.atomic():
                    source.save()
            except IntegrityError:  # another import of this stream committed first
                if _raced(transaction, summary, summary.sha256) is None:
                    raise
    return summary


def _imported(sha: str):
    """The trace source of the file with this SHA-256, if rows from it are still stored (a
    purge may have deleted them all)."""
    source = TraceSource.get_or_none(TraceSource.sha256 == sha)
    if source is None or CommLog.select().where(CommLog.source_id == source.id).exists():
        return source
    return None


def _drop_unused(sha: str) -> None:
    """Delete the source of the file with this SHA-256 if no row references it any more."""
    used = CommLog.select(SQL("1")).where(CommLog.source_id == TraceSource.id)
    TraceSource.delete().where((TraceSource.sha256 == sha) & ~fn.EXISTS(used)).execute()


def _raced(transaction, summary: ImportSummary, sha: str) -> ImportSummary | None:
    """Roll back an import another one of the same file beat: it changes nothing."""
    transaction.rollback()
    existing = TraceSource.get_or_none(TraceSource.sha256 == sha)
    return None if existing is None else _already(summary, existing, sha)


@contextmanager
def _failed_rollback(database):
    """A rollback that fails on a dead connection (MySQL says only ``(0, '')``) raises the
    error that caused it, and the dead connection is dropped."""
    try:
        yield
    except PeeweeException as exc:
        cause = exc.__context__
        while cause is not None and cause.args == exc.args:  # the driver's error Peewee wraps
            cause = cause.__context__
        if cause is None:
            raise
        discard_connection(database)
        if isinstance(cause, PeeweeException):
            raise translate_error(cause, "trace import") from cause
        raise cause from None


def _already(summary: ImportSummary, source, sha: str) -> ImportSummary:
    summary.already_imported = True
    summary.sha256 = sha
    summary.source_id = source.id
    summary.format = source.format
    summary.sessions = list((source.summary or {}).get("sessions", []))
    return summary


def _finish(summary, fmt, stats, reader, known_hash) -> ImportSummary:
    summary.format = fmt
    summary.sha256 = known_hash or reader.sha.hexdigest()
    summary.size_bytes = summary.size_bytes or reader.count
    summary.skipped = dict(stats.skipped)
    summary.corrupt = list(stats.corrupt)
    summary.leftover_bytes = stats.leftover_bytes
    summary.ends_mid_exchange = stats.open_exchange
    return summary


class _Importer:
    """Turns records into log rows (tuples in ``ApduLogWriter.add`` order), session by session."""

    def __init__(self, summary, source_id, device_id, card_iccid, split_on_reset, start,
                 target=None):
        self.summary = summary
        self.source_id = source_id
        self.device_id = device_id
        self.card_iccid = card_iccid
        self.split = split_on_reset
        self.default_ns = int(start.timestamp() * 1000) * 1_000_000
        self.session = target          # stored key of the session rows go to
        self.created: list[dict] = []  # sessions made here: id, first and last ns
        if target is not None:
            summary.sessions.append(target)

    def _new_session(self, ns: int) -> None:
        self.summary.sessions_created += 1
        if self.summary.dry_run:
            self.session = f"dry-run-{self.summary.sessions_created}"
        else:
            session = OTASession.create(session_type=SESSION_TYPE, status=SessionStatus.ACTIVE,
                                        started_at=_when(ns),
                                        device=self.device_id, card=self.card_iccid)
            self.session = session.id
        self.created.append({"id": self.session, "first": ns, "last": ns})
        self.summary.sessions.append(self.session)

    def run(self, records, writer=None) -> None:
        """Write (without a writer: only count) the rows of ``records``."""
        for chunk in chunked(self.rows(records), _CHUNK_ROWS):
            if writer is not None:
                writer.add_many(chunk)
                writer.flush()

    def rows(self, records):
        """The writer rows of ``records``, counted in the summary; the per-record work is
        inlined, as it runs a million times for a big capture."""
        summary = self.summary
        source = self.source_id
        default_ns = self.default_ns
        split = self.split
        created = self.created
        channels = _CHANNELS
        millis = _MILLIS
        cached_sec, cached_text = None, ""
        exchanges = atrs = resets = rows = in_session = 0
        last_ns = None
        try:
            for kind, ns, data, response, latency, response_ns in records:
                if ns is None:
                    ns = default_ns
                sec = ns // 1_000_000_000
                if sec != cached_sec:
                    cached_sec, cached_text = sec, _second_text(sec)
                stamp = cached_text + millis[ns % 1_000_000_000 // 1_000_000]
                end = ns  # of the record's last row: a session ends with its last response
                if kind == EXCHANGE:
                    if self.session is None:
                        self._new_session(ns)
                    session = self.session
                    exchanges += 1
                    text, response_text, message = decode_exchange(data, response or b"")
                    channel = channels[data[0]] if data else None
                    yield (session, "command", data.hex().upper(), text, None, None, None,
                           stamp, channel, data[1] if len(data) > 1 else None, source)
                    rows += 1
                    if response is not None:
                        if latency is not None:
                            end = ns + int(latency * 1_000_000)
                            stamp = _stamp(end)
                        elif response_ns is not None and response_ns != ns:
                            end = response_ns
                            stamp = _stamp(end)
                        yield (session, "response", response.hex().upper(), response_text,
                               None, message, latency, stamp, channel, None, source)
                        rows += 1
                else:  # ATR / RESET
                    if self.session is None or (split and in_session):
                        if created and last_ns is not None:
                            created[-1]["last"] = last_ns
                        self._new_session(ns)
                        in_session = 0
                    if kind == ATR:
                        atrs += 1
                    else:
                        resets += 1
                    yield (self.session, kind, data.hex().upper(),
                           describe_atr(data) if kind == ATR else "card reset", None, None,
                           None, stamp, None, None, source)
                    rows += 1
                in_session += 1
                last_ns = end
        finally:
            summary.exchanges += exchanges
            summary.atrs += atrs
            summary.resets += resets
            summary.rows += rows
            if created and last_ns is not None:  # none are made when appending
                created[-1]["last"] = last_ns

    def close_sessions(self, open_exchange: bool) -> None:
        """Give the sessions made here their end, duration and status."""
        for index, made in enumerate(self.created):
            failed = open_exchange and index == len(self.created) - 1
            (OTASession.update(
                status=SessionStatus.FAILED if failed else SessionStatus.COMPLETED,
                started_at=_when(made["first"]), ended_at=_when(made["last"]),
                duration_ms=max(0, (made["last"] - made["first"]) // 1_000_000),
                error_code="TRACE_ENDS_MID_EXCHANGE" if failed else None,
                error_message=("the trace ends with a command that has no response"
                               if failed else None))
             .where(OTASession.id == made["id"]).execute())


def rows_of_records(records, session_id, source_id=None, start: datetime | None = None):
    """The writer rows ``import_trace`` makes of ``records``, all in one existing session
    (``scripts/bench_traces.py`` feeds them to the writer to compare)."""
    importer = _Importer(ImportSummary(path=""), source_id, None, None, False,
                         start or datetime.now(_UTC), session_key(session_id))
    return importer.rows(records)
