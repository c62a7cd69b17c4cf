"""The guide's DataExporter and DataImporter: out a page at a time from one read snapshot,
in a chunk at a time in one transaction, all or nothing."""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import enum
import functools
import io
import itertools
import operator
import re
import unicodedata
from array import array
from dataclasses import dataclass, field
from datetime import datetime, timezone

import peewee

from ._peewee import passes_through
from .apdu import MAX_RAW_HEX, command_header, is_hex, normalize_hex
from .batch_insert import insert, plan_for
from .crypto import decrypt_psk, encrypt_psk
from .db import bound_models, small_page_cache
from .errors import ValidationError, quote, translate_error
from .fields import DATETIME_MS, JSON_TEXT, EnumField, UUIDStrField, new_uuid, utc_now
from .migrations import check_no_pending
from .models import (
    ALL_MODELS,
    CardProfile,
    CommDirection,
    CommLog,
    ReplayCounter,
    TraceSource,
)
from .repositories.counters import counter_key, counter_value
from .table_names import display_name
from .transfer_format import (
    CLOSING_KEY,
    FORMAT_VERSION,
    PROMISE_KEY,
    BadRow,
    Duplicated,
    ExportFormat,
    JsonLines,
    check_json_value,
    export_format,
    parse_document,
    plain_value,
    read_document,
    write_document,
)

__all__ = [
    "FORMAT_VERSION",
    "TABLES",
    "ConflictMode",
    "DataExporter",
    "DataImporter",
    "ExportFormat",
    "ImportResult",
    "parse_document",
    "resolve_tables",
]

TABLES = [m._meta.table_name for m in ALL_MODELS]  # parents before children
# Document keys are the table names; the names output prints (the guide's) are taken too.
_BY_NAME = {**{display_name(m._meta.table_name): m for m in ALL_MODELS},
            **{m._meta.table_name: m for m in ALL_MODELS}}
_NAMES = ", ".join(_BY_NAME)  # each name once, the printed ones first
_PAGE = 1000            # rows read per query while exporting
_CHUNK = 1000           # rows checked, decided and written per round trip while importing
_MAX_PROBLEMS = 200
_MAX_TEXT_BYTES = 65_535  # a TEXT column on MySQL/MariaDB (notes, error_message)
_COUNTS = ("created", "updated", "skipped", "unchanged")
_STATUS_WORD = re.compile(r"[0-9A-Fa-f]{4}").fullmatch
_COUNTER_COLUMNS = {"card": "card_iccid"}  # counter_key's names for the document's keys
# The unique keys besides the primary key. Integer ids are per-store counters: a row from
# another store is the same row by these (or a new one), whatever its id.
_NATURAL_KEYS = {TraceSource: (TraceSource.sha256,),
                 ReplayCounter: (ReplayCounter.card, ReplayCounter.keyset, ReplayCounter.tar)}


def resolve_tables(tables=None) -> list[type[peewee.Model]]:
    """Models for table names or the guide's short names, in dependency order."""
    if tables is None:
        return list(ALL_MODELS)
    if isinstance(tables, str):
        tables = tables.split(",")
    wanted = set()
    for name in tables:
        key = str(name).strip().lower()
        if key not in _BY_NAME:
            raise ValidationError(f"unknown table {quote(name)}; use any of {_NAMES}")
        wanted.add(_BY_NAME[key])
    if not wanted:
        raise ValidationError(f"no table named; use any of {_NAMES}")
    return [m for m in ALL_MODELS if m in wanted]


def _database_of(source) -> peewee.Database:
    """The database of ``source``, connected, its migrations all applied."""
    database = source if isinstance(source, peewee.Database) else getattr(source, "database",
                                                                          None)
    if database is None:
        raise TypeError("expected a UnitOfWork, a DatabaseManager or a Peewee database")
    ensure = getattr(getattr(source, "manager", source), "ensure_connection", None)
    if ensure is not None:
        ensure()
    check_no_pending(database, "an export or import")
    return database


def _columns(model, include_keys: bool = False) -> list[peewee.Field]:
    return [f for f in model._meta.sorted_fields
            if include_keys or f.name not in model.secret_fields]


def _key(f: peewee.Field) -> str:
    # Foreign keys appear under their column name (device_id, card_iccid, session_id);
    # the encrypted PSK only ever leaves decrypted, as psk_key (hex).
    if f is CardProfile.psk_key_encrypted:
        return "psk_key"
    return f.column_name if isinstance(f, peewee.ForeignKeyField) else f.name


@contextlib.contextmanager
def _snapshot(database):
    """A read transaction that blocks no writer: every table from the same moment."""
    if database.in_transaction():
        yield
        return
    deferred = {"lock_type": "DEFERRED"} if isinstance(database, peewee.SqliteDatabase) else {}
    with database.atomic(**deferred):
        if isinstance(database, peewee.PostgresqlDatabase):
            database.execute_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield


# -- export -------------------------------------------------------------------------------

class DataExporter:
    """Streams tables out as JSON, JSON Lines or YAML, a page at a time, from one snapshot."""

    def __init__(self, uow):
        self._uow = uow

    def export_all(self, format=ExportFormat.JSON, include_keys: bool = False) -> str:
        return self.export_selective(None, format, include_keys=include_keys)

    def export_selective(self, tables, format=ExportFormat.JSON,
                         include_keys: bool = False) -> str:
        buffer = io.StringIO()
        self.write(buffer, tables=tables, format=format, include_keys=include_keys)
        return buffer.getvalue()

    def count_rows(self, tables=None) -> dict[str, int]:
        """Rows each chosen table holds now (a progress bar's length)."""
        database = _database_of(self._uow)
        with bound_models(database):
            return {m._meta.table_name: _select(m, where).count()
                    for m, where in _exported(tables)}

    def write(self, stream, tables=None, format=ExportFormat.JSON, include_keys: bool = False,
              progress=None) -> dict[str, int]:
        """Write the document to text ``stream``, calling ``progress(table, n)`` after each
        page; returns rows written per table."""
        fmt = export_format(format)
        models = _exported(tables)
        database = _database_of(self._uow)
        counts = {m._meta.table_name: 0 for m, _ in models}

        def rows(model, where):
            name = model._meta.table_name
            for count, page in _pages(database, model, include_keys, where):
                yield from page
                counts[name] += count
                if progress is not None:
                    progress(name, count)

        with bound_models(database), _snapshot(database), small_page_cache(database):
            # The header promises a closing record: a file cut short says so on import.
            header = {"format_version": FORMAT_VERSION, "exported_at": plain_value(utc_now()),
                      PROMISE_KEY: True}
            write_document(stream, fmt, header,
                           ((m._meta.table_name, rows(m, where)) for m, where in models),
                           closing=lambda: {CLOSING_KEY: counts})
        return counts


def _exported(tables) -> list[tuple]:
    """(model, condition on its rows or None) per table to write, parents first. Logs bring
    the trace sources they name, so an import matches their source_id by sha256."""
    models = resolve_tables(tables)
    if CommLog not in models or TraceSource in models:
        return [(m, None) for m in models]
    named = TraceSource.id.in_(CommLog.select(CommLog.source_id)
                               .where(CommLog.source_id.is_null(False)))
    return [(m, named if m is TraceSource else None)
            for m in ALL_MODELS if m in models or m is TraceSource]


def _select(model, where, *fields) -> peewee.ModelSelect:
    query = model.select(*fields)
    return query if where is None else query.where(where)


def _pages(database, model, include_keys: bool, where=None):
    """(row count, row dicts made lazily) a page at a time, in key order."""
    fields = _columns(model, include_keys)
    keys = [_key(f) for f in fields]
    converters = [_export_converter(f) for f in fields]
    pk = model._meta.primary_key
    pk_index = fields.index(pk)

    def page_of(tuples):
        return len(tuples), ({k: v if c is None or v is None else c(v)
                              for k, c, v in zip(keys, converters, values, strict=True)}
                             for values in tuples)

    if isinstance(pk, peewee.AutoField):
        # Integer keys: keyset pages, so a million logs never sit in memory at once.
        query = _select(model, where, *fields).order_by(pk).limit(_PAGE)
        page = database.execute(query).fetchall()
        while page:
            yield page_of(page)
            page = database.execute(query.where(pk > page[-1][pk_index])).fetchall()
        return
    # Text keys: collations differ between backends (MySQL ignores case, PostgreSQL's
    # locale skips punctuation), so order the keys in Python, by code point, everywhere.
    ids = sorted(row[0] for row in _select(model, where, pk).tuples())
    for chunk in peewee.chunked(ids, _PAGE):
        found = {values[pk_index]: values for values in
                 database.execute(model.select(*fields).where(pk.in_(chunk))).fetchall()}
        yield page_of([found[i] for i in chunk if i in found])


def _export_converter(f: peewee.Field):
    """Driver value -> document value, or None where the driver's value is the document's."""
    if f is CardProfile.psk_key_encrypted:  # the one value no field gives in a portable form
        return lambda value: decrypt_psk(bytes(value)).hex()
    export_value = getattr(f, "export_value", None)
    if export_value is not None:
        return export_value
    if passes_through(f) and not isinstance(f, peewee.FloatField):
        return None
    python_value = f.python_value
    return lambda value: plain_value(python_value(value))


# -- import -------------------------------------------------------------------------------

class ConflictMode(str, enum.Enum):
    """What an import does with a row whose key already exists."""

    SKIP = "skip"            # keep the stored row
    OVERWRITE = "overwrite"  # replace it: absent fields go back to their defaults
    MERGE = "merge"          # change only the fields present and non-null in the input


@dataclass
class ImportResult:
    """What an import created, updated and skipped, in total and per table."""

    created: int = 0
    updated: int = 0
    skipped: int = 0
    unchanged: int = 0      # overwrite/merge: stored rows the file holds identically
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was imported otherwise than given
    tables: dict[str, dict[str, int]] = field(default_factory=dict)
    dry_run: bool = False

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def _count(self, table: str, what: str, n: int = 1) -> None:
        self.tables.setdefault(table, dict.fromkeys(_COUNTS, 0))[what] += n
        setattr(self, what, getattr(self, what) + n)


class DataImporter:
    """Imports a document in one transaction, all or nothing: JSON Lines a chunk of rows
    at a time (memory stays flat), JSON and YAML parsed whole first."""

    def __init__(self, uow):
        self._uow = uow

    def import_data(self, data, format=None, conflict_mode=ConflictMode.SKIP,
                    dry_run: bool = False) -> ImportResult:
        """Import ``data`` (text, bytes, a file or a mapping). Raises ValidationError listing
        every problem (``.problems``), or EncryptionError for a ``psk_key`` without a key."""
        try:
            mode = ConflictMode(str(getattr(conflict_mode, "value", conflict_mode)).lower())
        except ValueError:
            raise ValidationError(f"unknown conflict mode {conflict_mode!r}; use skip, "
                                  "overwrite or merge") from None
        database = _database_of(self._uow)
        document = read_document(data, format)
        result = ImportResult(dry_run=dry_run)
        # One transaction (IMMEDIATE on SQLite): no other writer can make the decisions stale.
        with bound_models(database):
            try:
                with _snapshot(database) if dry_run else database.atomic():
                    # A mapping handed in by a program has no end to lose: only text is
                    # held to the closing record its header promises.
                    _Import(database, mode, result, write=not dry_run).run(
                        document, text=not isinstance(data, dict))
            except peewee.PeeweeException as exc:
                raise translate_error(exc, "imported row") from exc
        return result


class _Keys:
    """One table's keys met so far in the file: an export's ascending integer ids in an
    array (8 bytes each, a million logs fit), any other key in a set."""

    def __init__(self):
        self._ids = array("q")
        self._other: set = set()

    def extend_ascending(self, keys: list) -> bool:
        """Remember ``keys`` if they are ascending integers, all new; else False."""
        try:
            new = array("q", keys)
        except (TypeError, OverflowError):
            return False
        if not new or (self._ids and new[0] <= self._ids[-1]) or sorted(set(keys)) != keys \
                or (self._other and not self._other.isdisjoint(keys)):
            return False
        self._ids.extend(new)
        return True

    def add(self, key) -> bool:
        """Remember ``key``; False if it was already there."""
        if key in self:
            return False
        self._other.add(key)
        return True

    def __contains__(self, key) -> bool:
        ids = self._ids
        i = bisect.bisect_left(ids, key) if type(key) is int else len(ids)
        return key in self._other or (i < len(ids) and ids[i] == key)


def _name(key) -> str:
    """A key from the file, fit to print: plain names as they are, anything else quoted."""
    if isinstance(key, str) and len(key) <= 64 and key.isascii() and key.isprintable():
        return key
    return quote(key)


@functools.cache
def _by_key(model) -> dict:
    """Document key -> (field, field name, conversion) for ``model``'s columns."""
    return {_key(f): (f, f.name, _converter(f)) for f in _columns(model)}


class _Import:
    """One import, a chunk at a time. After a problem nothing is written, but every row is
    still checked to list every problem."""

    def __init__(self, database, mode: ConflictMode, result: ImportResult, write: bool):
        self.database = database
        self.mode = mode
        self.result = result
        self.write = write
        self.problems: list[str] = []
        self.extra_problems = 0
        self.keys: dict = {}          # model -> _Keys of the file's rows
        self.next_index: dict = {}    # model -> index of its next row in the file
        self.log_ids_before: int | None = None  # the largest log id stored before
        self.next_log_id = 0
        self.claimed_log_ids: set = set()  # stored ids a file row was matched to
        self.given_log_ids: set = set()    # ids handed to new rows, taken for later rows
        self._shapes: dict = {}       # (model, a row's keys) -> the fast path's plan
        self.natural: dict = {}       # model -> {folded natural key: index of its file row}
        self.fresh: dict = {}         # model -> [next free id, ids given to file rows]
        self.new_ids: dict = {}       # model -> {id in the file: id stored under}, if not same
        self.sequence_behind: set = set()  # models given explicit ids on PostgreSQL
        self.unknown_sources = 0      # log rows naming a trace source the file lacks

    def problem(self, text: str) -> None:
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(text)
        else:
            self.extra_problems += 1

    def run(self, document, text: bool = True) -> None:
        if isinstance(document, JsonLines):
            self._header(document.header, "line 1: ")
            for key, group in itertools.groupby(document, key=operator.itemgetter(0)):
                self._section(key, (raw for _, raw in group if raw is not None))
            header, closing = document.header, document.closing
        else:
            self._header(document, "")
            header, closing = document, document if CLOSING_KEY in document else None
            tables = {}
            for key, value in document.items():
                if key in ("format_version", "exported_at", PROMISE_KEY, CLOSING_KEY):
                    continue
                model = _BY_NAME.get(str(key).lower())
                if model is None:
                    self._section(key, ())
                elif model in tables:
                    self.problem(f"{_name(key)}: table {model._meta.table_name} appears twice")
                elif not isinstance(value, list):
                    self.problem(f"{_name(key)}: must be a list of rows, got "
                                 f"{type(value).__name__}")
                else:
                    tables[model] = value
            for model in ALL_MODELS:  # parents first, whatever the document's order
                if model in tables:
                    self._section(model._meta.table_name, tables[model])
        if text and header.get(PROMISE_KEY) is True:
            self._closing(closing)
        if self.unknown_sources:
            self.result.notes.append(
                f"{self.unknown_sources:,} comm_logs rows name a trace source (source_id) that "
                "is not among the file's trace_sources; they are imported without one")
        if self.problems:
            count = len(self.problems) + self.extra_problems
            more = [f"... and {self.extra_problems} more problems"] if self.extra_problems else []
            raise ValidationError(
                f"import rejected, nothing was changed: {count} problem(s), first: "
                f"{self.problems[0]}", problems=self.problems + more)

    def _header(self, header: dict, where: str) -> None:
        if isinstance(header, Duplicated):
            self.problem(f"{where}{_name(header.duplicate)}: appears twice at the top of the "
                         "document; give each table once")
        version = header.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            self.problem(f"{where}format_version: this cardlink_lite reads version "
                         f"{FORMAT_VERSION}, got {quote(version)}; export the data again "
                         "with this version")
        if header.get(PROMISE_KEY, True) is not True:
            self.problem(f"{where}{PROMISE_KEY}: must be true (the file ends with its row "
                         f"counts), got {quote(header[PROMISE_KEY])}")
        for key in header if where else ():  # a JSON Lines header line
            if key not in ("format_version", "exported_at", "format", PROMISE_KEY):
                self.problem(f"{where}{_name(key)}: unknown header field; a JSON Lines "
                             'import starts with {"format_version": 1, "format": "jsonl"}')

    def _closing(self, closing) -> None:
        """The rows read per table against the closing record's counts: a file cut at a line
        (or row) boundary is still a valid, shorter file."""
        again = (f"; export it again (or, for a file edited on purpose, remove its "
                 f"{PROMISE_KEY})")
        if closing is None:
            self.problem(f"the file ends before its closing record ({CLOSING_KEY}): it was cut "
                         f"short{again}")
            return
        counts = closing[CLOSING_KEY]
        if type(counts) is not dict or not all(type(n) is int for n in counts.values()):
            self.problem(f"{CLOSING_KEY}: must map each table to its number of rows{again}")
            return
        read = {model._meta.table_name: n for model, n in self.next_index.items()}
        for table in [*counts, *(t for t in read if t not in counts)]:
            if counts.get(table, 0) != read.get(table, 0):
                self.problem(f"{CLOSING_KEY}: the file holds {read.get(table, 0):,} "
                             f"{_name(table)} rows, its closing record says "
                             f"{counts.get(table, 0):,}: it was cut short or edited{again}")

    def _section(self, key, rows) -> None:
        """Rows of the table named ``key``, in chunks."""
        model = _BY_NAME.get(key.lower()) if isinstance(key, str) else None
        if model is None:
            if key is None:  # JSON Lines rows that could not be read before any table line
                for raw in rows:
                    self.problem(str(raw))
            else:
                self.problem(f"{_name(key)}: unknown table; use any of {_NAMES}")
            return
        table = model._meta.table_name
        self.result.tables.setdefault(table, dict.fromkeys(_COUNTS, 0))
        index = self.next_index.get(model, 0)
        chunk = []
        for raw in rows:
            row = self._prepare(model, index, raw)
            if row is not None:
                chunk.append((index, row))
                if len(chunk) == _CHUNK:
                    self._chunk(model, chunk)
                    chunk = []
            index += 1
        if chunk:
            self._chunk(model, chunk)
        self.next_index[model] = index
        self._catch_up_sequence(model)

    def _catch_up_sequence(self, model) -> None:
        # Explicit ids leave PostgreSQL's sequence behind: the next new row would collide.
        if model in self.sequence_behind:
            self.sequence_behind.discard(model)
            table, column = model._meta.table_name, model._meta.primary_key.column_name
            self.database.execute_sql(
                f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "
                f"(SELECT COALESCE(MAX({column}), 1) FROM {table}))")

    # -- checking ---------------------------------------------------------------------------
    def _prepare(self, model, index: int, raw):
        """Row ``index`` as field names and the values to store (None if it is not a
        mapping); a problem for each bad value."""
        if type(raw) is dict:  # fast path: known fields, in an order met before, all good
            shape = self._shapes.get((model, tuple(raw)))
            if shape is None:
                shape = self._shape(model, raw)
            if shape:
                entries, complete = shape
                try:
                    row = {name: convert(value) if value is not None else
                           None if null else _null(null)
                           for (name, convert, null), value in zip(entries, raw.values(),
                                                                     strict=True)}
                except (ValueError, ValidationError):
                    pass  # the slow path below names the problem
                else:
                    if complete and (model is not CommLog or row.get("raw_data") != ""):
                        return row
                    return self._finish(model, f"{model._meta.table_name}[{index}]", row, ())
        where = f"{model._meta.table_name}[{index}]"
        if not isinstance(raw, dict):
            self.problem(f"{where}: {raw}" if isinstance(raw, BadRow) else
                         f"{where}: must be a mapping of field names to values, got "
                         f"{type(raw).__name__}")
            return None
        if isinstance(raw, Duplicated):
            self.problem(f"{where}: field {_name(raw.duplicate)} appears twice in the row; "
                         "give each field once")
            return None
        by_key = _by_key(model)
        row = {}
        rejected = set()
        for key, value in raw.items():
            entry = by_key.get(model.aliases.get(key, key)) if type(key) is str else None
            if entry is None and model is CardProfile and key == "psk_key":
                self._psk(where, value, row)
            elif entry is None:
                hint = (" (keys are never imported encrypted: export with --include-keys "
                        "to get psk_key in hex)") if key == "psk_key_encrypted" else ""
                self.problem(f"{where}.{_name(key)}: unknown field{hint}; known fields: "
                             f"{', '.join(by_key)}")
            else:
                f, name, convert = entry
                try:
                    row[name] = convert(value) if value is not None else _null(f.null)
                except (ValueError, ValidationError) as exc:
                    rejected.add(name)
                    self.problem(f"{where}.{_name(key)}: {_reason(exc, f)}")
        return self._finish(model, where, row, rejected)

    def _shape(self, model, raw: dict) -> tuple:
        """The fast path's plan for rows with ``raw``'s keys: ((field name, conversion, null
        allowed) per key, whether every field is given); empty when a key is not a field's."""
        by_key = _by_key(model)
        entries = [by_key.get(k) if type(k) is str else None for k in raw]
        shape = () if None in entries else (
            [(name, convert, f.null) for f, name, convert in entries],
            len(entries) == len(by_key))
        self._shapes[(model, tuple(raw))] = shape
        return shape

    def _finish(self, model, where: str, row: dict, rejected) -> dict:
        """``row`` with a new UUID key if it has none; a problem per required field missing
        and for a log row without data that is not a reset."""
        if model is CommLog and row.get("raw_data") == "" and (
                row.get("direction") != CommDirection.RESET.value):
            self.problem(f"{where}.raw_data: must be hex digits, two per byte; only a reset "
                         "row has none")
        if model is CommLog and "channel" not in row and "ins" not in row and \
                row.get("direction") == CommDirection.COMMAND.value:
            # An export from before schema 0003: the header, as the writer and 0003 derive it.
            row["channel"], row["ins"] = command_header(row.get("raw_data") or "")
        pk = model._meta.primary_key
        for f, name, _ in _by_key(model).values():
            if name in row or name in rejected or (f is pk and isinstance(pk, peewee.AutoField)):
                continue
            if f is pk and isinstance(f, UUIDStrField):
                row[name] = new_uuid()
            elif not f.null and f.default is None:
                self.problem(f"{where}.{_key(f)}: required field is missing")
        return row

    def _psk(self, where: str, value, row: dict) -> None:
        if value is None:
            return
        try:
            key = bytes.fromhex(value) if isinstance(value, str) and value else None
        except ValueError:
            key = None
        if key is None:
            self.problem(f"{where}.psk_key: must be the key in hex (an even number of 0-9a-f "
                         "digits)")
            return
        # Encrypted here, so a missing key (EncryptionError) stops the import before a write.
        row["psk_key_encrypted"] = CardProfile.psk_key_encrypted.db_value(encrypt_psk(key))

    def _check_references(self, model, chunk) -> None:
        for f in model._meta.refs:
            name = f.name
            present = self.keys.get(f.rel_model, ())
            unknown = {row.get(name) for _, row in chunk} - {None}  # a few values, many rows
            unknown = {value for value in unknown if value not in present}
            if unknown:
                unknown -= _stored_keys(f.rel_model, unknown)
            for index, row in chunk if unknown else ():
                if row.get(name) in unknown:
                    self.problem(f"{model._meta.table_name}[{index}].{f.column_name}: no "
                                 f"{f.rel_model._meta.table_name} row {quote(row[name])} in "
                                 "the file or the database")

    def _remember_keys(self, model, chunk) -> None:
        """The chunk's keys, each a problem if met before in the file."""
        keys = self.keys.setdefault(model, _Keys())
        pk = model._meta.primary_key
        if keys.extend_ascending([row.get(pk.name) for _, row in chunk]):
            return  # an export's ids: ascending, none met before
        table = model._meta.table_name
        for index, row in chunk:
            if pk.name in row and not keys.add(row[pk.name]):
                self.problem(f"{table}[{index}].{_key(pk)}: {quote(row[pk.name])} appears "
                             f"twice in {table}")

    # -- deciding and writing ---------------------------------------------------------------
    def _chunk(self, model, chunk) -> None:
        table = model._meta.table_name
        try:
            self._remember_keys(model, chunk)
            if model is ReplayCounter:
                self._check_counters(chunk)
            if model in _NATURAL_KEYS:
                self._remember_natural_keys(model, chunk)
            if model._meta.refs and not self.problems:
                self._check_references(model, chunk)
            if self.problems:
                return  # nothing is decided or written once the import is refused
            rows = [row for _, row in chunk]
            pk = model._meta.primary_key
            if model in _NATURAL_KEYS:
                existing = self._match_natural_keys(model, rows)
            else:
                existing = _stored_keys(model, [r[pk.name] for r in rows if pk.name in r])
            if model is CommLog:
                self._link_sources(rows)
                existing = self._match_logs(rows, existing)
            stored = {}
            if self.mode is not ConflictMode.SKIP and existing:
                stored = _stored_values(model, existing)
            creates = []
            for row in rows:
                key = row.get(pk.name)
                if key is None or key not in existing:
                    creates.append(row)
                elif self.mode is ConflictMode.SKIP:
                    self.result._count(table, "skipped")
                else:
                    values = self._written_values(model, row)
                    old = stored.get(key)
                    if model is ReplayCounter and old is not None and \
                            values.get("counter", old["counter"]) < old["counter"]:
                        # A counter never goes back: the card refuses a reused one.
                        del values["counter"]
                        values.pop("updated_at", None)
                    # A PSK arrives re-encrypted: always a change.
                    if old is not None and "psk_key_encrypted" not in row and all(
                            v == old.get(n) for n, v in values.items() if n != "updated_at"):
                        self.result._count(table, "unchanged")
                        continue
                    self.result._count(table, "updated")
                    if self.write:
                        self._update(model, row, values)
            if creates and self.write:
                self._insert(model, creates)
            self.result._count(table, "created", len(creates))
        except peewee.PeeweeException as exc:
            raise translate_error(exc, f"{table} row") from exc

    def _insert(self, model, rows: list[dict]) -> None:
        # The fields a row leaves out get their defaults (the schema has no server-side
        # ones): rows differ only in giving their integer key or leaving it to the database.
        pk = model._meta.primary_key
        fields = model._meta.sorted_fields
        others = [f for f in fields if f is not pk]
        names = {f.name for f in others}
        groups: dict[bool, list] = {}
        for row in rows:
            if not row.keys() >= names:
                for f in others:
                    if f.name not in row:
                        row[f.name] = _default(f)
            groups.setdefault(pk.name in row, []).append(row)
        for keyed, group in sorted(groups.items(), reverse=True):  # given keys first
            given = fields if keyed else others
            if not keyed:
                self._catch_up_sequence(model)
            values = operator.itemgetter(*(f.name for f in given))
            if len(given) == 1:  # itemgetter of one name gives the value, not a tuple
                flat = [values(row) for row in group]
            else:
                flat = [v for row in group for v in values(row)]
            insert(plan_for(self.database, model, given), flat)
            if keyed and isinstance(pk, peewee.AutoField) and \
                    isinstance(self.database, peewee.PostgresqlDatabase):
                self.sequence_behind.add(model)

    def _update(self, model, row: dict, values: dict) -> None:
        if "updated_at" in model._meta.fields and "updated_at" not in row:
            values["updated_at"] = model.updated_at.db_value(utc_now())
        if values:
            # The values are converted already (db_value): Peewee must not convert again.
            pk = model._meta.primary_key
            (model.update({model._meta.fields[k]: peewee.Value(v, converter=False)
                           for k, v in values.items()})
             .where(pk == row[pk.name]).execute())

    def _written_values(self, model, row: dict) -> dict:
        """The fields an overwrite or merge of ``row`` sets, with their values as stored."""
        pk = model._meta.primary_key
        if self.mode is ConflictMode.MERGE:
            return {k: v for k, v in row.items() if v is not None and k != pk.name}
        # Overwrite: a field the row leaves out goes back to its default, except created_at.
        values = {}
        for f in model._meta.sorted_fields:
            if f is pk:
                continue
            if f.name in row:
                values[f.name] = row[f.name]
            elif f.name != "created_at" and f.name not in model.secret_fields:
                values[f.name] = _default(f)
        return values

    def _check_counters(self, chunk) -> None:
        """Counter rows as the counter functions take them (keyset trimmed, TAR upper-case
        hex, 5 bytes of counter); a problem for each row outside those rules."""
        for index, row in chunk:
            key = (row.get("card"), row.get("keyset"), row.get("tar"))
            try:
                if None not in key:
                    row["card"], row["keyset"], row["tar"] = counter_key(*key)
                if row.get("counter") is not None:
                    counter_value(row["counter"], "counter must be")
            except ValidationError as exc:
                name, _, reason = str(exc).partition(" ")
                self.problem(f"replay_counters[{index}].{_COUNTER_COLUMNS.get(name, name)}: "
                             f"{reason}")

    def _remember_natural_keys(self, model, chunk) -> None:
        """The chunk's natural keys, each a problem if met before in the file."""
        fields = _NATURAL_KEYS[model]
        fold, how = _COMPARED[model]
        seen = self.natural.setdefault(model, {})
        table = model._meta.table_name
        for index, row in chunk:
            values = tuple(row.get(f.name) for f in fields)
            first = seen.setdefault(fold(values), index) if None not in values else index
            if first != index:
                columns = ", ".join(_key(f) for f in fields)
                self.problem(
                    f"{table}[{index}].{columns if len(fields) == 1 else f'({columns})'}: "
                    f"{', '.join(quote(v) for v in values)} repeats {table}[{first}]'s "
                    f"({how}); give each row its own {columns}")

    def _match_natural_keys(self, model, rows) -> set:
        """Ids of ``rows`` stored already under their natural key; each row takes its stored
        row's id, or a new one where its id holds another row."""
        fields = _NATURAL_KEYS[model]
        pk = model._meta.primary_key
        if model not in self.fresh:
            self.fresh[model] = [(model.select(peewee.fn.MAX(pk)).scalar() or 0) + 1, set()]
        fresh, given = self.fresh[model]
        fold = _COMPARED[model][0]
        keys = [tuple(row[f.name] for f in fields) for row in rows]
        stored = {fold(tuple(values)): key for part in peewee.chunked(keys, 300)
                  for key, *values in model.select(pk, *fields)
                  .where(peewee.Tuple(*fields).in_(part)).tuples()}
        same = {stored[k] for k in map(fold, keys) if k in stored}
        taken = _stored_keys(model, [row[pk.name] for row in rows if pk.name in row])
        moved = self.new_ids.setdefault(model, {})
        for row, key in zip(rows, keys, strict=True):
            old = row.get(pk.name)
            new = stored.get(fold(key))
            if new is None and (old is None or old in taken or old in given):
                new, fresh = fresh, fresh + 1
                given.add(new)
            elif new is None:
                new, fresh = old, max(fresh, old + 1)
            if old is not None and old != new:
                moved[old] = new
            row[pk.name] = new
        self.fresh[model][0] = fresh
        return same

    def _link_sources(self, rows) -> None:
        """Each log's trace source as this store numbers it. A source_id the file's
        trace_sources do not hold is another store's number for an unknown file: dropped."""
        known = self.keys.get(TraceSource, ())
        moved = self.new_ids.get(TraceSource) or {}
        for row in rows:
            source = row.get("source_id")
            if source is None:
                continue
            if source in known:
                row["source_id"] = moved.get(source, source)
            else:
                row["source_id"] = None
                self.unknown_sources += 1

    def _match_logs(self, rows, stored_ids) -> set:
        """Ids of ``rows`` stored already as the same APDU. Log ids are per-store counters: a
        row whose id holds another APDU takes an unmatched stored copy, else a new id."""
        if self.log_ids_before is None:
            self.log_ids_before = CommLog.select(peewee.fn.MAX(CommLog.id)).scalar() or 0
            self.next_log_id = self.log_ids_before + 1
        claimed, given = self.claimed_log_ids, self.given_log_ids
        fields = [CommLog.session, CommLog.timestamp, CommLog.direction, CommLog.raw_data]
        names = [f.name for f in fields]

        def stored_identity(values):
            return tuple(f.db_value(v) for f, v in zip(fields, values, strict=True))

        by_id = {}
        if stored_ids:
            by_id = {r[0]: stored_identity(r[1:]) for r in
                     CommLog.select(CommLog.id, *fields)
                     .where(CommLog.id.in_(list(stored_ids))).tuples()}
        same, clashing = set(), []
        for row in rows:
            key = row.get("id")
            if key is None:
                continue
            if key in by_id and key not in given and \
                    tuple(row.get(n) for n in names) == by_id[key]:
                same.add(key)
                claimed.add(key)
            elif key in by_id or key in given:
                clashing.append(row)
            elif key >= self.next_log_id:
                self.next_log_id = key + 1
        if clashing:
            sessions = {row.get("session") for row in clashing}
            candidates: dict = {}
            query = (CommLog.select(CommLog.id, *fields)
                     .where(CommLog.session.in_(list(sessions))
                            & (CommLog.id <= self.log_ids_before))
                     .order_by(CommLog.id).tuples())
            for r in query:
                if r[0] not in claimed:
                    candidates.setdefault(stored_identity(r[1:]), []).append(r[0])
            for row in clashing:
                found = candidates.get(tuple(row.get(n) for n in names))
                row["id"] = found.pop(0) if found else None
                if row["id"] is not None:
                    same.add(row["id"])
                    claimed.add(row["id"])
        for row in rows:
            if row.get("id") is None:
                row["id"] = self.next_log_id
                given.add(self.next_log_id)
                self.next_log_id += 1
        return same


def _fold(values: tuple) -> tuple:
    """Text as MySQL/MariaDB's default collation compares it in a unique key: letter case,
    accents and trailing spaces aside."""
    return tuple("".join(c for c in unicodedata.normalize("NFD", v) if not unicodedata.combining(c))
                 .casefold().rstrip(" ") if type(v) is str else v for v in values)


# How each natural key compares: a trace file's sha256 as MySQL/MariaDB's default collation
# does (one key there); a counter's card, keyset and TAR exactly (schema 0007), once
# _check_counters has normalised them.
_COMPARED = {
    TraceSource: (_fold, "letter case, accents and trailing spaces aside, as MySQL and "
                         "MariaDB compare"),
    ReplayCounter: (tuple, "keysets trimmed, TARs in upper case, as the counter functions "
                           "take them"),
}


def _stored_values(model, keys) -> dict:
    """Stored rows with ``keys``: key -> {field name: value as stored (``db_value``)}."""
    pk = model._meta.primary_key
    fields = model._meta.sorted_fields[1:]
    stored = {}
    for key, *values in model.select(pk, *fields).where(pk.in_(list(keys))).tuples():
        stored[key] = {f.name: f.db_value(v) for f, v in zip(fields, values, strict=True)}
    return stored


def _default(f: peewee.Field):
    return f.db_value(f.default() if callable(f.default) else f.default)


def _stored_keys(model, keys) -> set:
    pk = model._meta.primary_key
    keys = list(keys)
    if keys and isinstance(pk, peewee.AutoField) and all(type(k) is int for k in keys):
        low, high = min(keys), max(keys)
        if high - low < 4 * len(keys):  # an export's ids: one range, two parameters
            wanted = set(keys)
            return {r[0] for r in model.select(pk).where(pk.between(low, high)).tuples()
                    if r[0] in wanted}
    return {r[0] for chunk in peewee.chunked(keys, 500)
            for r in model.select(pk).where(pk.in_(chunk)).tuples()}


# -- conversion of document values ----------------------------------------------------------

def _reason(exc: Exception, f: peewee.Field) -> str:
    """A conversion error without the field name the fields' messages start with."""
    text = str(exc)
    for name in (f.name, f.column_name, "value", "id"):
        if text.startswith(name + " "):
            return text[len(name) + 1:]
    return text


@functools.cache
def _converter(f: peewee.Field):
    """Document value (never None) -> the value ``f`` stores; ValueError or ValidationError
    says what is wrong."""
    target = f.rel_field if isinstance(f, peewee.ForeignKeyField) else f
    if target is CommLog.raw_data:
        return _hex_text
    check = _type_check(target, f.db_value)
    if isinstance(target, UUIDStrField | EnumField) or target is CommLog.status_word or \
            target is CommLog.status_message:
        memo = functools.lru_cache(maxsize=10_000)(check)  # a few values on many rows

        def cached(value):
            return memo(value) if type(value) is str else check(value)
        return cached
    return check


def _hex_text(value):
    """The APDU writer's hex rules (a field's db_value also sees LIKE patterns)."""
    if type(value) is str and is_hex(value) and not len(value) & 1 and len(value) <= MAX_RAW_HEX:
        return value  # an export's own form passes at once
    return value if value == "" else normalize_hex(_text(value))


def _null(nullable: bool) -> None:
    if not nullable:
        raise ValueError("must not be null")


def _text(value) -> str:
    if type(value) is not str:
        raise ValueError(f"must be text, got {type(value).__name__} {quote(value)}")
    return value


_ISO_HINT = "must be an ISO-8601 date and time like 2024-11-29T10:00:00.123Z"


def _type_check(f: peewee.Field, db_value):
    """``db_value`` behind a check that the document value has the JSON type ``f`` takes."""
    if f is CommLog.status_word:
        def check(value):
            if type(value) is str and _STATUS_WORD(value):
                return db_value(value)
            raise ValueError(f"must be four hex digits such as 9000, got {quote(value)}")
    elif isinstance(f, peewee.BooleanField):
        def check(value):
            if type(value) is bool:
                return db_value(value)
            raise ValueError(f"must be true or false, got {quote(value)}")
    elif isinstance(f, peewee.FloatField):
        def check(value):
            if type(value) is float and -1e308 < value < 1e308:
                return value
            if type(value) is int:
                with contextlib.suppress(OverflowError):
                    return db_value(value)
            raise ValueError(f"must be a finite number, got {quote(value)}")
    elif isinstance(f, peewee.IntegerField):
        big = isinstance(f, peewee.BigAutoField | peewee.BigIntegerField)
        high = 2**63 if big else 2**15 if isinstance(f, peewee.SmallIntegerField) else 2**31
        low = 1 if f.primary_key else -high

        def check(value):
            if type(value) is int and low <= value < high:
                return value
            if type(value) is not int:
                raise ValueError(f"must be a whole number, got {quote(value)}")
            raise ValueError(f"{quote(value)} is out of range")
    elif f.field_type == DATETIME_MS:
        def check(value):
            if type(value) is datetime:  # YAML reads unquoted times; without an offset: UTC
                if value.tzinfo is None:
                    value = value.replace(tzinfo=timezone.utc)
            elif type(value) is not str:
                raise ValueError(f"{_ISO_HINT}, got {quote(value)}")
            try:
                stored = db_value(value)
            except OverflowError:
                stored = None
            if type(stored) is not datetime:
                raise ValueError(f"{_ISO_HINT} within 0001-01-01..9999-12-31 (UTC), got "
                                 f"{quote(value if type(value) is str else value.isoformat())}")
            return stored
    elif f.field_type == JSON_TEXT:
        def check(value):
            return db_value(check_json_value(value))
    else:
        # A TEXT column holds 64 KiB on MySQL: a file that imports must import anywhere.
        column_bytes = _MAX_TEXT_BYTES if f.field_type == "TEXT" else None

        def check(value):
            stored = db_value(_text(value))  # NUL, lone surrogates, max_length
            if column_bytes and not value.isascii() and len(value.encode()) > column_bytes:
                raise ValueError(f"is {len(value.encode()):,} bytes of UTF-8; at most "
                                 f"{column_bytes:,} fit (a TEXT column on MySQL)")
            return stored
    return check
