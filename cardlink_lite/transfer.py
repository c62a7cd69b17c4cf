"""Export and import of the whole store as JSON or YAML: streamed out, validated then
applied in one transaction on the way in (all or nothing).
"""

from __future__ import annotations

import bisect
import contextlib
import enum
import io
import json
import math
import re
import shutil
import tempfile
import uuid
from array import array
from dataclasses import dataclass, field
from datetime import date, datetime, timezone

import peewee
import yaml

from .apdu import small_page_cache
from .db import database_proxy
from .errors import ValidationError
from .fields import EnumField, JSONField, UTCDateTimeField, UUIDStrField, to_utc_ms, utc_now
from .models import ALL_MODELS, CardProfile, CommLog, Device, OTASession, Setting, TestResult

__all__ = [
    "FORMAT_VERSION",
    "TABLES",
    "ConflictMode",
    "DataExporter",
    "DataImporter",
    "ExportFormat",
    "ImportResult",
    "resolve_tables",
]

FORMAT_VERSION = 1

# Document keys are the table names; the guide's short names are accepted too.
_SHORT_NAMES = {
    "devices": Device, "cards": CardProfile, "sessions": OTASession,
    "logs": CommLog, "tests": TestResult, "settings": Setting,
}
TABLES = [m._meta.table_name for m in ALL_MODELS]  # parents before children
_BY_NAME = {**{m._meta.table_name: m for m in ALL_MODELS}, **_SHORT_NAMES}
_PAGE = 1000  # rows read per query while exporting
_MAX_PROBLEMS = 200
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})*")
_STATUS_WORD = re.compile(r"[0-9A-Fa-f]{4}")
_YAML_WIDTH = 1 << 30  # never fold long strings: keeps rows on predictable lines

_SafeDumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ExportFormat(str, enum.Enum):
    JSON = "json"
    YAML = "yaml"


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
    errors: list[str] = field(default_factory=list)
    tables: dict[str, dict[str, int]] = field(default_factory=dict)
    dry_run: bool = False

    def to_dict(self) -> dict:
        return {"created": self.created, "updated": self.updated, "skipped": self.skipped,
                "errors": list(self.errors), "tables": self.tables, "dry_run": self.dry_run}

    def _count(self, table: str, what: str, n: int = 1) -> None:
        counts = self.tables.setdefault(table, {"created": 0, "updated": 0, "skipped": 0})
        counts[what] += n
        setattr(self, what, getattr(self, what) + n)


def resolve_tables(tables=None) -> list[type[peewee.Model]]:
    """Models for table names or the guide's short names, in dependency order."""
    if tables is None:
        return list(ALL_MODELS)
    if isinstance(tables, str):
        tables = [t for t in tables.split(",")]
    wanted = set()
    for name in tables:
        key = str(name).strip().lower()
        if key not in _BY_NAME:
            raise ValidationError(
                f"unknown table {name!r}; use any of {', '.join(_SHORT_NAMES)} "
                f"or {', '.join(TABLES)}"
            )
        wanted.add(_BY_NAME[key])
    if not wanted:
        raise ValidationError(f"no table named; use any of {', '.join(_SHORT_NAMES)}")
    return [m for m in ALL_MODELS if m in wanted]


# -- shared plumbing -------------------------------------------------------------------

def _database_of(source) -> peewee.Database:
    if isinstance(source, peewee.Database):
        return source
    database = getattr(source, "database", None)
    if database is None:
        raise TypeError("expected a UnitOfWork, a DatabaseManager or a Peewee database")
    ensure = getattr(getattr(source, "manager", source), "ensure_connection", None)
    if ensure is not None:
        ensure()
    return database


def _bound(database, models=ALL_MODELS):
    # Models use the one proxy; only rebind (class-wide) when it points elsewhere.
    if database_proxy.obj is database:
        return contextlib.nullcontext()
    return database.bind_ctx(models)


def _columns(model, include_keys: bool = False) -> list[peewee.Field]:
    return [f for f in model._meta.sorted_fields
            if include_keys or f.name not in model.secret_fields]


def _key(f: peewee.Field) -> str:
    # Foreign keys appear under their column name (device_id, card_iccid, session_id);
    # the encrypted PSK only ever leaves decrypted, as psk_key (hex).
    if f is CardProfile.psk_key_encrypted:
        return "psk_key"
    return f.column_name if isinstance(f, peewee.ForeignKeyField) else f.name


def _iso(value: datetime) -> str:
    value = to_utc_ms(value)
    return (f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:"
            f"{value.minute:02d}:{value.second:02d}.{value.microsecond // 1000:03d}Z")


# -- export -------------------------------------------------------------------------------

class DataExporter:
    """Streams tables out as JSON or YAML, one row at a time, from one read snapshot."""

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
        """Rows each chosen table holds now (for a progress bar's length)."""
        database = _database_of(self._uow)
        models = resolve_tables(tables)
        with _bound(database):
            return {m._meta.table_name: m.select().count() for m in models}

    def write(self, stream, tables=None, format=ExportFormat.JSON, include_keys: bool = False,
              progress=None) -> dict[str, int]:
        """Write the document to text ``stream``; returns rows written per table.

        ``progress(table, n)`` is called after each page of rows.
        """
        fmt = _export_format(format)
        models = resolve_tables(tables)
        database = _database_of(self._uow)
        counts = {}
        writer = _JsonWriter(stream) if fmt is ExportFormat.JSON else _YamlWriter(stream)
        with _bound(database), _snapshot(database), small_page_cache(database):
            writer.header({"format_version": FORMAT_VERSION, "exported_at": _iso(utc_now())})
            for model in models:
                name = model._meta.table_name
                writer.begin_table(name)
                n = 0
                for count, rows in _pages(database, model, include_keys):
                    for row in rows:
                        writer.row(row)
                    n += count
                    if progress is not None:
                        progress(name, count)
                writer.end_table()
                counts[name] = n
            writer.footer()
        return counts


@contextlib.contextmanager
def _snapshot(database):
    """A read transaction so every table comes from the same moment, without blocking
    writers (SQLite: deferred, so no write lock; PostgreSQL: repeatable read)."""
    if database.in_transaction():
        yield
        return
    if isinstance(database, peewee.SqliteDatabase):
        with database.atomic(lock_type="DEFERRED"):
            yield
        return
    with database.atomic():
        if isinstance(database, peewee.PostgresqlDatabase):
            database.execute_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield


def _pages(database, model, include_keys: bool):
    """Yield (row count, row dicts made lazily) one page at a time."""
    fields = _columns(model, include_keys)
    keys = [_key(f) for f in fields]
    converters = [_exporter_for(f) for f in fields]
    pk = model._meta.primary_key
    pk_index = fields.index(pk)

    def as_dicts(tuples):
        for values in tuples:
            yield {k: (None if v is None else c(v))
                   for k, c, v in zip(keys, converters, values, strict=True)}

    if isinstance(pk, peewee.AutoField):
        # Integer keys: keyset pages, so a million logs never sit in memory at once.
        last = None
        while True:
            query = model.select(*fields).order_by(pk).limit(_PAGE)
            if last is not None:
                query = query.where(pk > last)
            page = list(query.tuples())
            if not page:
                return
            last = page[-1][pk_index]
            yield len(page), as_dicts(page)
        return
    # Text keys: collations differ between backends (MySQL ignores case, PostgreSQL's
    # locale skips punctuation), so order the keys in Python, by code point, everywhere.
    ids = sorted(row[0] for row in model.select(pk).tuples())
    for start in range(0, len(ids), _PAGE):
        chunk = ids[start:start + _PAGE]
        found = {values[pk_index]: values
                 for values in model.select(*fields).where(pk.in_(chunk)).tuples()}
        page = [found[i] for i in chunk if i in found]
        yield len(page), as_dicts(page)


def _exporter_for(f: peewee.Field):
    if isinstance(f, UTCDateTimeField):
        return _iso
    if isinstance(f, EnumField):
        return lambda v: v.value if isinstance(v, enum.Enum) else v
    if isinstance(f, JSONField):
        return lambda v: v
    if f is CardProfile.psk_key_encrypted:
        from .crypto import decrypt_psk

        return lambda v: decrypt_psk(bytes(v)).hex()
    if isinstance(f, peewee.BooleanField):
        return bool
    if isinstance(f, peewee.FloatField):
        return float
    if isinstance(f, peewee.IntegerField):  # BigAutoField too
        return int
    return str


class _JsonWriter:
    """One row per line: stable bytes, small diffs, and no list of all rows in memory."""

    def __init__(self, stream):
        self._out = stream
        self._first = True

    def header(self, fields: dict) -> None:
        self._out.write("{\n" + ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}"
                                           for k, v in fields.items()))

    def begin_table(self, name: str) -> None:
        self._out.write(f",\n  {json.dumps(name)}: [")
        self._first = True

    def row(self, row: dict) -> None:
        text = json.dumps(row, ensure_ascii=True, allow_nan=False)
        self._out.write(("\n    " if self._first else ",\n    ") + text)
        self._first = False

    def end_table(self) -> None:
        self._out.write("]" if self._first else "\n  ]")

    def footer(self) -> None:
        self._out.write("\n}\n")


class _YamlWriter:
    def __init__(self, stream):
        self._out = stream
        self._empty = True

    def _dump(self, data) -> str:
        return yaml.dump(data, Dumper=_SafeDumper, default_flow_style=False, sort_keys=False,
                         allow_unicode=False, width=_YAML_WIDTH)

    def header(self, fields: dict) -> None:
        self._out.write(self._dump(fields))

    def begin_table(self, name: str) -> None:
        self._out.write(f"{name}:")
        self._empty = True

    def row(self, row: dict) -> None:
        if self._empty:
            self._out.write("\n")
        self._out.write(self._dump([row]))
        self._empty = False

    def end_table(self) -> None:
        if self._empty:
            self._out.write(" []\n")

    def footer(self) -> None:
        pass


# -- import -------------------------------------------------------------------------------

class DataImporter:
    """Validates a whole document, then applies it in one transaction (or not at all).

    A JSON document laid out as ``export`` writes it (one row per line) is read twice
    from its file or text, a row at a time: once to validate, once to write. Memory
    stays bounded by the keys it must remember, not by the rows. Anything else (YAML,
    other JSON layouts, a parsed mapping) is parsed whole first.
    """

    def __init__(self, uow):
        self._uow = uow

    def import_data(self, data, format=None, conflict_mode=ConflictMode.SKIP,
                    dry_run: bool = False) -> ImportResult:
        """Import ``data`` (text, bytes, a file object or an already parsed mapping).

        Raises ValidationError listing every problem (``.problems``) and changes nothing
        when any row is invalid; EncryptionError when a ``psk_key`` arrives without a key.
        """
        mode = _conflict_mode(conflict_mode)
        database = _database_of(self._uow)
        with contextlib.ExitStack() as stack:
            document, whole = _line_document(data, format, stack)
            with _bound(database):
                plan = None
                if document is not None:
                    plan = _Plan(database, document, mode)
                    try:
                        plan.validate()
                    except _NotLineFormat:
                        plan = None
                if plan is None:
                    plan = _Plan(database, parse_document(whole, format), mode)
                    plan.validate()
                result = ImportResult(dry_run=dry_run)
                if dry_run:
                    plan.count(result)
                    return result
                with database.atomic():
                    plan.apply(result)
        return result


# -- reading the export's own JSON layout a line at a time -------------------------------

class _NotLineFormat(Exception):
    """The text is not laid out as the JSON export writes it: parse it whole instead."""


class _TextLines:
    """readline/tell/seek over text already in memory (no copy of it)."""

    def __init__(self, text: str):
        self._text = text
        self._pos = 0

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int) -> None:
        self._pos = pos

    def readline(self) -> str:
        start = self._pos
        end = self._text.find("\n", start)
        end = len(self._text) if end < 0 else end + 1
        self._pos = end
        return self._text[start:end]


class _ByteLines:
    """readline/tell/seek over a seekable binary file, decoding UTF-8 line by line."""

    def __init__(self, fh):
        self._fh = fh

    def tell(self) -> int:
        return self._fh.tell()

    def seek(self, pos: int) -> None:
        self._fh.seek(pos)

    def readline(self) -> str:
        try:
            return self._fh.readline().decode("utf-8")
        except UnicodeDecodeError:
            raise _NotLineFormat from None


class _LineRows:
    """One table's rows in the file: re-readable, parsed a line at a time."""

    def __init__(self, lines, start: int, count: int):
        self._lines = lines
        self._start = start
        self._count = count

    def __len__(self) -> int:
        return self._count

    def __iter__(self):
        lines = self._lines
        lines.seek(self._start)
        loads = json.loads
        for _ in range(self._count):
            text = lines.readline().strip()
            if text.endswith(","):
                text = text[:-1]
            try:
                row = loads(text)
            except ValueError:
                raise _NotLineFormat from None
            yield row


_KEY_LINE = re.compile(r'("(?:[^"\\]|\\.)*")\s*:\s*(.*)')


def _line_document(data, format, stack) -> tuple[dict | None, object]:
    """The top-level mapping with each table as re-readable :class:`_LineRows` (or None
    when the document must be parsed whole: YAML, a mapping, another JSON layout), and
    what to give :func:`parse_document` in that case."""
    if isinstance(data, dict) or (format is not None and _export_format(format)
                                  is not ExportFormat.JSON):
        return None, data
    if isinstance(data, str):
        lines = _TextLines(data)
    elif isinstance(data, bytes | bytearray):
        lines = _ByteLines(stack.enter_context(io.BytesIO(data)))
    elif hasattr(data, "read") and not isinstance(data, io.TextIOBase):
        fh = data
        if not _seekable(fh):  # a pipe: spool it to disk, not to memory
            fh = stack.enter_context(tempfile.TemporaryFile())
            shutil.copyfileobj(data, fh, 1 << 20)
            fh.seek(0)
        data = _Rewind(fh)
        lines = _ByteLines(fh)
    else:
        return None, data
    try:
        return _scan(lines), data
    except _NotLineFormat:
        return None, data


class _Rewind:
    """A binary file read again from where the import found it."""

    def __init__(self, fh):
        self._fh = fh
        self._start = fh.tell()

    def read(self) -> bytes:
        self._fh.seek(self._start)
        return self._fh.read()


def _seekable(fh) -> bool:
    try:
        return fh.seekable()
    except (AttributeError, ValueError, OSError):
        return False


def _scan(lines) -> dict:
    """Check the skeleton (braces, keys, brackets, commas) without parsing rows."""
    text = lines.readline()
    while text and not text.strip():
        text = lines.readline()
    if text.lstrip("\ufeff").strip() != "{":
        raise _NotLineFormat
    document = {}
    more = True  # another key follows
    while more:
        match = _KEY_LINE.fullmatch(lines.readline().strip())
        if not match:
            raise _NotLineFormat
        key = json.loads(match.group(1))
        rest = match.group(2)
        more = rest.endswith(",")
        if more:
            rest = rest[:-1].rstrip()
        if key in document:
            raise _NotLineFormat  # json.loads keeps the last one: leave that to it
        if rest == "[":
            document[key], more = _scan_rows(lines)
            continue
        try:
            document[key] = json.loads(rest)
        except ValueError:
            raise _NotLineFormat from None
    if lines.readline().strip() != "}":
        raise _NotLineFormat
    while True:
        text = lines.readline()
        if not text:
            return document
        if text.strip():
            raise _NotLineFormat


def _scan_rows(lines) -> tuple[_LineRows, bool]:
    """One table's row lines: ``{...},`` then a last ``{...}``, then ``]`` or ``],``."""
    start = lines.tell()
    count = 0
    comma = False
    while True:
        line = lines.readline().strip()
        if line in ("]", "],"):
            if comma:
                raise _NotLineFormat
            return _LineRows(lines, start, count), line == "],"
        if count and not comma:
            raise _NotLineFormat
        comma = line.endswith(",")
        if not (line.startswith("{") and line.endswith("},") if comma else
                line.startswith("{") and line.endswith("}")):
            raise _NotLineFormat
        count += 1


def parse_document(data, format=None) -> dict:
    """The mapping inside JSON/YAML ``data``; ValidationError with one clear line if none."""
    if isinstance(data, dict):
        return data
    if hasattr(data, "read"):
        data = data.read()
    if isinstance(data, bytes | bytearray):
        try:
            data = bytes(data).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ValidationError(
                f"the import document is not UTF-8 text (byte {exc.start}); export it again "
                "with cardlink-db export"
            ) from None
    if not isinstance(data, str):
        raise ValidationError(f"cannot import a {type(data).__name__}; pass JSON or YAML text")
    text = data.lstrip("\ufeff")
    if not text.strip():
        raise ValidationError("the import document is empty; give a file written by "
                              "cardlink-db export")
    fmt = _export_format(format) if format is not None else (
        ExportFormat.JSON if text.lstrip()[:1] in ("{", "[") else ExportFormat.YAML)
    if fmt is ExportFormat.JSON:
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValidationError(
                f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}; "
                "fix the file or give the right --format"
            ) from None
    else:
        try:
            # Safe loader only: a document can never construct Python objects.
            document = yaml.load(text, Loader=_SafeLoader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
            what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ValidationError(
                f"not valid YAML: {what}{where}; fix the file or give the right --format"
            ) from None
    if not isinstance(document, dict):
        kind = "empty document" if document is None else type(document).__name__
        raise ValidationError(
            f"the import document must be a mapping of table names to lists of rows, "
            f"got a {kind}; give a file written by cardlink-db export"
        )
    return document


def _export_format(value) -> ExportFormat:
    try:
        return ExportFormat(str(getattr(value, "value", value)).lower())
    except ValueError:
        raise ValidationError(f"unknown format {value!r}; use json or yaml") from None


def _conflict_mode(value) -> ConflictMode:
    try:
        return ConflictMode(str(getattr(value, "value", value)).lower())
    except ValueError:
        raise ValidationError(
            f"unknown conflict mode {value!r}; use skip, overwrite or merge") from None


_APPLY_CHUNK = 1000  # rows decided (stored or not) and written per round trip


class _Keys:
    """The keys of one table met so far, to catch duplicates and resolve references.

    An export lists keys in ascending order, so they are kept in a sorted array (8 bytes
    per integer id) and looked up by bisection; keys out of order switch to a set.
    """

    def __init__(self):
        self._sorted = None
        self._set = None

    def add(self, key) -> bool:
        """Remember ``key``; False if it was already there."""
        if self._set is not None:
            if key in self._set:
                return False
            self._set.add(key)
            return True
        keys = self._sorted
        if keys is None:
            keys = self._sorted = array("q") if type(key) is int else []
        if keys:
            try:
                ascending = key > keys[-1]
            except TypeError:
                ascending = False
        else:
            ascending = True
        if ascending:
            try:
                keys.append(key)
                return True
            except (TypeError, OverflowError):  # not an int64 after all
                pass
        self._set = set(keys)
        self._sorted = None
        return self.add(key)

    def __contains__(self, key) -> bool:
        if self._set is not None:
            return key in self._set
        keys = self._sorted
        if not keys:
            return False
        try:
            i = bisect.bisect_left(keys, key)
        except TypeError:
            return False
        return i < len(keys) and keys[i] == key


class _Plan:
    """The document checked row by row, then written table by table, a chunk at a time.

    Rows are read from the document twice (a list, or the file's lines) and never all
    kept: validation remembers only keys, and foreign-key values with the first indexes
    that use them.
    """

    def __init__(self, database, document: dict, mode: ConflictMode):
        self.database = database
        self.document = document
        self.mode = mode
        self.problems: list[str] = []
        self.extra_problems = 0
        self.tables: dict = {}                     # model -> its rows in the document
        self.keys: dict[type, _Keys] = {}          # model -> keys given in the file
        self.refs: dict = {}                       # (model, fk) -> {value: [count, indexes]}
        self.first_psk = None
        self._by_key: dict = {}
        self._statements: dict = {}
        self._variables = None

    # -- validation ---------------------------------------------------------------------
    def problem(self, text: str) -> None:
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(text)
        else:
            self.extra_problems += 1

    def validate(self) -> None:
        self.tables = self._tables()
        for model in ALL_MODELS:
            if model in self.tables:
                self._check_table(model, self.tables[model])
        if not self.problems:
            self._check_foreign_keys()
        self._raise_problems()
        self.keys.clear()
        self.refs.clear()
        if self.first_psk is not None:
            from .crypto import encrypt_psk

            encrypt_psk(self.first_psk)  # EncryptionError (no key) before any write

    def _raise_problems(self) -> None:
        if self.problems:
            problems = list(self.problems)
            if self.extra_problems:
                problems.append(f"... and {self.extra_problems} more problems")
            count = len(self.problems) + self.extra_problems
            raise ValidationError(
                f"import rejected, nothing was changed: {count} problem(s), first: "
                f"{problems[0]}", problems=problems)

    def _tables(self) -> dict:
        tables = {}
        for key, value in self.document.items():
            if key in ("format_version", "exported_at"):
                continue
            model = _BY_NAME.get(str(key).lower())
            if model is None:
                self.problem(f"{key}: unknown table; use any of {', '.join(TABLES)} "
                             f"(or {', '.join(_SHORT_NAMES)})")
                continue
            if model in tables:
                self.problem(f"{key}: table {model._meta.table_name} appears twice")
                continue
            if not isinstance(value, list | _LineRows):
                self.problem(f"{key}: must be a list of rows, got {type(value).__name__}")
                continue
            tables[model] = value
        version = self.document.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            self.problem(f"format_version: this cardlink_lite reads version {FORMAT_VERSION}, "
                         f"got {version!r}; export the data again with this version")
        return tables

    @staticmethod
    def _pk(model) -> str:
        return model._meta.primary_key.name

    def _check_table(self, model, rows) -> None:
        pk = model._meta.primary_key
        table = model._meta.table_name
        keys = self.keys[model] = _Keys()
        refs = [(f, self.refs.setdefault((model, f), {})) for f in model._meta.refs]
        for index, raw in enumerate(rows):
            row = self._prepare(model, index, raw)
            if row is None:
                continue
            if pk.name in row and not keys.add(row[pk.name]):
                self.problem(f"{table}[{index}].{_key(pk)}: {row[pk.name]!r} appears twice in "
                             f"{table}")
            for f, seen in refs:
                value = row.get(f.name)
                if value is not None:
                    entry = seen.get(value)
                    if entry is None:
                        seen[value] = [1, [index]]
                    else:
                        entry[0] += 1
                        if len(entry[1]) < _MAX_PROBLEMS:
                            entry[1].append(index)
            if model is CardProfile and self.first_psk is None and "psk_key" in row:
                self.first_psk = bytes.fromhex(row["psk_key"])

    def _prepare(self, model, index: int, raw):
        """Row ``index`` of ``model``'s table converted to field names and values, or None
        if it is not a mapping; each bad value is recorded as a problem."""
        table = model._meta.table_name
        where = f"{table}[{index}]"
        if not isinstance(raw, dict):
            self.problem(f"{where}: must be a mapping of field names to values, "
                         f"got {type(raw).__name__}")
            return None
        by_key = self._by_key.get(model)
        if by_key is None:
            by_key = self._by_key[model] = {_key(f): f for f in _columns(model)}
        pk = model._meta.primary_key
        row = {}
        rejected = set()
        for key, value in raw.items():
            if model is CardProfile and key == "psk_key":
                if value is not None:
                    if not isinstance(value, str) or not value or not _HEX.fullmatch(value):
                        self.problem(f"{where}.psk_key: must be the key in hex "
                                     "(an even number of 0-9a-f digits)")
                    else:
                        row["psk_key"] = value
                continue
            f = by_key.get(key) or (by_key.get(model.aliases.get(key, key)))
            if f is None:
                hint = (" (keys are never imported encrypted: export with --include-keys "
                        "to get psk_key in hex)") if key == "psk_key_encrypted" else ""
                self.problem(f"{where}.{key}: unknown field{hint}; known fields: "
                             f"{', '.join(by_key)}")
                continue
            try:
                row[f.name] = _convert(f, value)
            except ValueError as exc:
                rejected.add(f.name)
                self.problem(f"{where}.{key}: {exc}")
        for f in by_key.values():
            if f.name in row or f.name in rejected or (
                    f is pk and isinstance(pk, peewee.AutoField)):
                continue
            if isinstance(f, UUIDStrField) and f.primary_key:
                row[f.name] = str(uuid.uuid4())
            elif not f.null and f.default is None:
                self.problem(f"{where}.{_key(f)}: required field is missing")
        return row

    def _check_foreign_keys(self) -> None:
        for (model, f), seen in self.refs.items():
            if not seen:
                continue
            target = f.rel_model
            present = self.keys.get(target)
            missing = {v for v in seen if present is None or v not in present}
            if missing:
                missing -= self._stored_keys(target, missing)
            if not missing:
                continue
            table = model._meta.table_name
            hits = sorted((i, v) for v in missing for i in seen[v][1])
            for index, value in hits:
                self.problem(f"{table}[{index}].{f.column_name}: no {target._meta.table_name} "
                             f"row {value!r} in the file or the database")
            self.extra_problems += sum(seen[v][0] - len(seen[v][1]) for v in missing)

    def _stored_keys(self, model, keys) -> set:
        pk = model._meta.primary_key
        keys = list(keys)
        found = set()
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            found.update(r[0] for r in model.select(pk).where(pk.in_(chunk)).tuples())
        return found

    # -- applying -------------------------------------------------------------------------
    def _chunks(self, model):
        """(rows, keys already stored) a chunk at a time, rows read and converted again."""
        pk = self._pk(model)
        rows = self.tables[model]
        chunk = []
        for index, raw in enumerate(rows):
            row = self._prepare(model, index, raw)
            if row is None or self.problems:
                # Only if the file changed between the two readings.
                self._raise_problems()
                raise ValidationError(f"{model._meta.table_name}[{index}] changed while "
                                      "importing; import the file again")
            chunk.append(row)
            if len(chunk) == _APPLY_CHUNK:
                yield chunk, self._stored_keys(model, [r[pk] for r in chunk if pk in r])
                chunk = []
        if chunk:
            yield chunk, self._stored_keys(model, [r[pk] for r in chunk if pk in r])

    def _decide(self, model, chunk, existing):
        pk = self._pk(model)
        for row in chunk:
            if pk in row and row[pk] in existing:
                yield ("skipped" if self.mode is ConflictMode.SKIP else "updated"), row
            else:
                yield "created", row

    def count(self, result: ImportResult) -> None:
        for model in ALL_MODELS:
            if model not in self.tables:
                continue
            table = model._meta.table_name
            result.tables.setdefault(table, {"created": 0, "updated": 0, "skipped": 0})
            for chunk, existing in self._chunks(model):
                for what, _ in self._decide(model, chunk, existing):
                    result._count(table, what)

    def apply(self, result: ImportResult) -> None:
        for model in ALL_MODELS:
            if model not in self.tables:
                continue
            table = model._meta.table_name
            result.tables.setdefault(table, {"created": 0, "updated": 0, "skipped": 0})
            created = 0
            for chunk, existing in self._chunks(model):
                if model is CardProfile:
                    self._encrypt_psks(chunk)
                creates = []
                for what, row in self._decide(model, chunk, existing):
                    if what == "created":
                        creates.append(row)
                        continue
                    if what == "updated":
                        self._update(model, row)
                    result._count(table, what)
                self._insert(model, creates)
                created += len(creates)
            result._count(table, "created", created)
            if model is CommLog and created and isinstance(self.database,
                                                           peewee.PostgresqlDatabase):
                # Explicit ids leave the sequence behind: the next logged APDU would collide.
                self.database.execute_sql(
                    "SELECT setval(pg_get_serial_sequence('comm_logs', 'id'), "
                    "(SELECT MAX(id) FROM comm_logs))")

    @staticmethod
    def _encrypt_psks(rows) -> None:
        from .crypto import encrypt_psk

        for row in rows:
            if "psk_key" in row:
                row["psk_key_encrypted"] = encrypt_psk(bytes.fromhex(row.pop("psk_key")))

    def _insert(self, model, rows: list[dict]) -> None:
        if not rows:
            return
        fields = [f for f in model._meta.sorted_fields]
        for row in rows:
            for f in fields:
                if f.name not in row and f.default is not None:
                    row[f.name] = f.default() if callable(f.default) else f.default
        # Rows without an id (hand-written logs) get one from the database.
        groups: dict[frozenset, list] = {}
        for row in rows:
            groups.setdefault(frozenset(row), []).append(row)
        for names, group in groups.items():
            fields = [f for f in model._meta.sorted_fields if f.name in names]
            converters = [(f.name, f.db_value) for f in fields]
            batch = max(1, min(1000, self._max_variables() // len(fields)))
            for start in range(0, len(group), batch):
                chunk = group[start:start + batch]
                sql = self._insert_sql(model, fields, len(chunk))
                if sql is None:
                    model.insert_many(chunk).execute()
                    continue
                # What insert_many would bind: each field's db_value, in field order.
                params = [convert(row[name]) for row in chunk for name, convert in converters]
                self.database.execute_sql(sql, params)

    def _max_variables(self) -> int:
        if self._variables is None:
            if isinstance(self.database, peewee.SqliteDatabase):
                from .apdu import _sqlite_variable_limit

                self._variables = _sqlite_variable_limit(self.database)
            else:
                self._variables = 20000
        return self._variables

    def _insert_sql(self, model, fields: list, rows: int) -> str | None:
        """Peewee's multi-row INSERT for this shape, built once: building it again for
        every chunk is most of an import's time."""
        key = (model, tuple(f.name for f in fields), rows)
        if key not in self._statements:
            query = model.insert_many([(None,) * len(fields)] * rows, fields=fields)
            sql, params = self.database.get_sql_context().sql(query).query()
            # Only a statement that binds every value can be reused with other values.
            self._statements[key] = sql if len(params) == rows * len(fields) else None
        return self._statements[key]

    def _update(self, model, row: dict) -> None:
        pk = model._meta.primary_key
        values = {}
        if self.mode is ConflictMode.MERGE:
            values = {k: v for k, v in row.items() if v is not None and k != pk.name}
        else:
            for f in model._meta.sorted_fields:
                if f is pk or f.name in model.secret_fields and f.name not in row:
                    continue
                if f.name in row:
                    values[f.name] = row[f.name]
                elif f.name == "created_at":
                    continue
                else:
                    default = f.default() if callable(f.default) else f.default
                    values[f.name] = default
        if "updated_at" in model._meta.fields and "updated_at" not in row:
            values["updated_at"] = utc_now()
        if values:
            model.update(values).where(pk == row[pk.name]).execute()


def _convert(f: peewee.Field, value):
    """The Python value for field ``f``; ValueError saying what was expected."""
    if value is None:
        if not f.null:
            raise ValueError("must not be null")
        return None
    if isinstance(f, peewee.ForeignKeyField):
        return _convert(f.rel_field, value)
    if isinstance(f, UTCDateTimeField):
        return _parse_datetime(value)
    if isinstance(f, JSONField):
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            raise ValueError("must hold only JSON values (objects, lists, text, numbers, "
                             "true/false, null)") from None
        return value
    if isinstance(f, peewee.BooleanField):
        if not isinstance(value, bool):
            raise ValueError(f"must be true or false, got {value!r}")
        return value
    if isinstance(f, peewee.FloatField):
        if isinstance(value, bool) or not isinstance(value, int | float) or (
                isinstance(value, float) and not math.isfinite(value)):
            raise ValueError(f"must be a number, got {value!r}")
        return float(value)
    if isinstance(f, peewee.IntegerField):
        limit = 2**63 if isinstance(f, peewee.BigAutoField | peewee.BigIntegerField) else 2**31
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be a whole number, got {value!r}")
        if not -limit <= value < limit or (f.primary_key and value < 1):
            raise ValueError(f"{value} is out of range")
        return value
    if not isinstance(value, str):
        raise ValueError(f"must be text, got {type(value).__name__} {value!r}")
    if isinstance(f, EnumField):
        try:
            return f.coerce_member(value)
        except ValidationError:
            allowed = ", ".join(str(m.value) for m in f.enum_class)
            raise ValueError(f"must be one of {allowed}, got {value!r}") from None
    if isinstance(f, UUIDStrField):
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError(f"must be a UUID like 123e4567-e89b-12d3-a456-426614174000, "
                             f"got {value!r}") from None
    if f is CommLog.raw_data:
        # The APDU writer's own rule (upper-case hex, whole bytes, '...' for an elided
        # sample), so anything it stored comes back in unchanged.
        from .apdu import normalize_hex

        try:
            value = normalize_hex(value)
        except ValidationError:
            raise ValueError("must be hex digits, two per byte (e.g. 00A4040000)") from None
    if f is CommLog.status_word and not _STATUS_WORD.fullmatch(value):
        raise ValueError(f"must be four hex digits such as 9000, got {value!r}")
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    max_length = getattr(f, "max_length", None)
    if max_length and len(value) > max_length:
        raise ValueError(f"is {len(value)} characters long; at most {max_length} fit")
    return value


def _parse_datetime(value) -> datetime:
    if isinstance(value, datetime):  # YAML turns unquoted timestamps into datetimes
        return to_utc_ms(value)
    if isinstance(value, date) or not isinstance(value, str):
        raise ValueError(f"must be an ISO-8601 date and time like 2024-11-29T10:00:00.123Z, "
                         f"got {value!r}")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"must be an ISO-8601 date and time like 2024-11-29T10:00:00.123Z, "
                         f"got {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return to_utc_ms(parsed)
