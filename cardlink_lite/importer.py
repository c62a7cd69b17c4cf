"""DataImporter: a document checked row by row, then applied in one transaction (all or
nothing), with conflict modes for keys already stored."""

from __future__ import annotations

import bisect
import contextlib
import enum
import json
import math
import re
import uuid
from array import array
from dataclasses import dataclass, field
from datetime import date, datetime, timezone

import peewee

from .apdu_rows import MAX_DECODED_CHARS, MAX_RAW_HEX, check_text, normalize_hex
from .crypto import encrypt_psk
from .db import bound_models, max_rows_per_statement
from .errors import ValidationError, quote, translate_error
from .fields import (
    ApduTextField,
    EnumField,
    JSONField,
    UTCDateTimeField,
    UUIDStrField,
    to_utc_ms,
    utc_now,
)
from .import_reader import (
    BadRow,
    Duplicated,
    _line_document,
    _LineRows,
    _NotLineFormat,
    parse_document,
)
from .models import ALL_MODELS, CardProfile, CommDirection, CommLog
from .transfer_format import (
    _BY_NAME,
    _SHORT_NAMES,
    FORMAT_VERSION,
    TABLES,
    _columns,
    _database_of,
    _key,
    _snapshot,
)

__all__ = ["ConflictMode", "DataImporter", "ImportResult"]

_MAX_PROBLEMS = 200
MAX_JSON_DEPTH = 32           # nesting of a JSON field (connection_settings, metadata...)
MAX_JSON_CHARS = 1_048_576    # a JSON field's size, as stored
MAX_TEXT_BYTES = 65_535       # a TEXT column on MySQL/MariaDB (notes, error_message)
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})*")
_STATUS_WORD = re.compile(r"[0-9A-Fa-f]{4}")


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
    tables: dict[str, dict[str, int]] = field(default_factory=dict)
    dry_run: bool = False

    def to_dict(self) -> dict:
        return {"created": self.created, "updated": self.updated, "skipped": self.skipped,
                "unchanged": self.unchanged, "errors": list(self.errors),
                "tables": self.tables, "dry_run": self.dry_run}

    def _count(self, table: str, what: str, n: int = 1) -> None:
        counts = self.tables.setdefault(table, _zero_counts())
        counts[what] += n
        setattr(self, what, getattr(self, what) + n)


def _zero_counts() -> dict[str, int]:
    return {"created": 0, "updated": 0, "skipped": 0, "unchanged": 0}


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
        result = ImportResult(dry_run=dry_run)
        with contextlib.ExitStack() as stack:
            document, whole = _line_document(data, format, stack)
            stack.enter_context(bound_models(database, ALL_MODELS))
            if dry_run:
                # A read snapshot: counts as of one moment, no write lock, nothing written.
                with _snapshot(database):
                    _validated_plan(database, document, whole, format, mode).count(result)
                return result
            try:
                # Checked and applied in one transaction (IMMEDIATE on SQLite), so no
                # other writer can make the plan's SKIP/OVERWRITE decisions stale.
                with database.atomic():
                    _validated_plan(database, document, whole, format, mode).apply(result)
            except peewee.PeeweeException as exc:
                raise translate_error(exc, "imported row") from exc
        return result


def _validated_plan(database, document, whole, format, mode) -> _Plan:
    """The checked plan: from the file's lines when it is laid out as the export writes
    it, else from the whole parsed document. ValidationError lists every problem."""
    if document is not None:
        plan = _Plan(database, document, mode)
        try:
            plan.validate()
            return plan
        except _NotLineFormat:
            pass
    plan = _Plan(database, parse_document(whole, format), mode)
    plan.validate()
    return plan


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


class _LogIds:
    """Log ids an import hands out: after every id stored or in the file, so a new row
    never takes an id a later row of the file keeps (dry run and import alike)."""

    def __init__(self, file_max: int):
        self.before = CommLog.select(peewee.fn.MAX(CommLog.id)).scalar() or 0
        self.next = max(self.before, file_max) + 1
        self.claimed: set = set()   # stored ids a file row was matched to

    def new(self) -> int:
        self.next += 1
        return self.next - 1


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
        self.max_file_log_id = 0                   # the highest log id the file gives
        self.log_ids: _LogIds | None = None        # new log ids, stored ones matched
        self._by_key: dict = {}
        self._statements: dict = {}

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
        if isinstance(self.document, Duplicated):
            self.problem(f"{_name(self.document.duplicate)}: appears twice at the top of the "
                         "document; give each table once")
        for key, value in self.document.items():
            if key in ("format_version", "exported_at"):
                continue
            model = _BY_NAME.get(str(key).lower())
            if model is None:
                self.problem(f"{_name(key)}: unknown table; use any of {', '.join(TABLES)} "
                             f"(or {', '.join(_SHORT_NAMES)})")
                continue
            if model in tables:
                self.problem(f"{_name(key)}: table {model._meta.table_name} appears twice")
                continue
            if not isinstance(value, list | _LineRows):
                self.problem(f"{_name(key)}: must be a list of rows, got "
                             f"{type(value).__name__}")
                continue
            tables[model] = value
        version = self.document.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            self.problem(f"format_version: this cardlink_lite reads version {FORMAT_VERSION}, "
                         f"got {quote(version)}; export the data again with this version")
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
            if model is CommLog and type(row.get("id")) is int:
                self.max_file_log_id = max(self.max_file_log_id, row["id"])
            if model is CardProfile and self.first_psk is None and "psk_key" in row:
                self.first_psk = bytes.fromhex(row["psk_key"])

    def _prepare(self, model, index: int, raw):
        """Row ``index`` of ``model``'s table converted to field names and values, or None
        if it is not a mapping; each bad value is recorded as a problem."""
        table = model._meta.table_name
        where = f"{table}[{index}]"
        if isinstance(raw, BadRow):
            self.problem(f"{where}: {raw.reason}")
            return None
        if not isinstance(raw, dict):
            self.problem(f"{where}: must be a mapping of field names to values, "
                         f"got {type(raw).__name__}")
            return None
        if isinstance(raw, Duplicated):
            self.problem(f"{where}: field {_name(raw.duplicate)} appears twice in the row; "
                         "give each field once")
            return None
        by_key = self._by_key.get(model)
        if by_key is None:
            by_key = self._by_key[model] = {
                _key(f): (f, f.name, f.null, _converter(f)) for f in _columns(model)}
        row = {}
        rejected = set()
        for key, value in raw.items():
            entry = by_key.get(key)
            if entry is None:
                if model is CardProfile and key == "psk_key":
                    if value is not None:
                        if not isinstance(value, str) or not value or not _HEX.fullmatch(value):
                            self.problem(f"{where}.psk_key: must be the key in hex "
                                         "(an even number of 0-9a-f digits)")
                        else:
                            row["psk_key"] = value
                    continue
                entry = by_key.get(model.aliases.get(key, key)) if type(key) is str else None
                if entry is None:
                    hint = (" (keys are never imported encrypted: export with --include-keys "
                            "to get psk_key in hex)") if key == "psk_key_encrypted" else ""
                    self.problem(f"{where}.{_name(key)}: unknown field{hint}; known fields: "
                                 f"{', '.join(by_key)}")
                    continue
            f, name, null, convert = entry
            if value is None and null:
                row[name] = None
                continue
            try:
                row[name] = convert(value)
            except ValueError as exc:
                rejected.add(name)
                self.problem(f"{where}.{_name(key)}: {exc}")
        if model is CommLog and row.get("raw_data") == "" and (
                row.get("direction") is not CommDirection.RESET):
            self.problem(f"{where}.raw_data: must be hex digits, two per byte; only a reset "
                         "row has none")
        if len(row) - ("psk_key" in row) < len(by_key):
            self._fill_missing(model, where, by_key, row, rejected)
        return row

    def _fill_missing(self, model, where: str, by_key: dict, row: dict, rejected: set) -> None:
        """New UUID keys for rows without one; a problem per required field missing."""
        pk = model._meta.primary_key
        for f, name, _, _ in by_key.values():
            if name in row or name in rejected or (
                    f is pk and isinstance(pk, peewee.AutoField)):
                continue
            if isinstance(f, UUIDStrField) and f.primary_key:
                row[name] = str(uuid.uuid4())
            elif not f.null and f.default is None:
                self.problem(f"{where}.{_key(f)}: required field is missing")

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
        if model is CommLog:
            existing = self._match_logs(chunk, existing)
        same = set() if self.mode is ConflictMode.SKIP else self._identical(model, chunk,
                                                                            existing)
        for row in chunk:
            if pk in row and row[pk] in existing:
                if self.mode is ConflictMode.SKIP:
                    yield "skipped", row
                else:
                    yield ("unchanged" if row[pk] in same else "updated"), row
            else:
                yield "created", row

    def _identical(self, model, chunk, existing) -> set:
        """Keys of stored rows that an update from ``chunk`` would leave as they are."""
        pk = model._meta.primary_key
        keys = [row[pk.name] for row in chunk if row.get(pk.name) in existing]
        if not keys:
            return set()
        fields = model._meta.sorted_fields
        stored = {values[0]: dict(zip((f.name for f in fields[1:]), values[1:], strict=True))
                  for values in model.select(pk, *fields[1:]).where(pk.in_(keys)).tuples()}
        same = set()
        for row in chunk:
            old = stored.get(row.get(pk.name))
            if old is None or any(k in row for k in ("psk_key", "psk_key_encrypted")):
                continue  # a PSK arrives re-encrypted: always a change
            new = self._written_values(model, row)
            if all(model._meta.fields[name].db_value(value)
                   == model._meta.fields[name].db_value(old.get(name))
                   for name, value in new.items() if name != "updated_at"):
                same.add(row[pk.name])
        return same

    def _match_logs(self, chunk, stored_ids) -> set:
        """Ids of ``chunk`` rows already stored as the same APDU; the others become new rows.

        Log ids are per-store counters, so an equal id from another store is a different
        row. A file row is the stored row of its id when session, time, direction and data
        are equal; when its id holds another APDU it is matched to a stored row with that
        content not matched yet (the file's id replaced by the stored one), else it is
        added under a new id. Identical APDUs (a repeated STATUS in one millisecond) are
        matched one to one, so a store's own export always re-imports unchanged.
        """
        ids = self.log_ids
        if ids is None:
            ids = self.log_ids = _LogIds(self.max_file_log_id)
        fields = [CommLog.session, CommLog.timestamp, CommLog.direction, CommLog.raw_data]

        def identity(values):
            return tuple(f.db_value(v) for f, v in zip(fields, values, strict=True))

        by_id = {}
        if stored_ids:
            by_id = {r[0]: identity(r[1:]) for r in
                     CommLog.select(CommLog.id, *fields)
                     .where(CommLog.id.in_(list(stored_ids))).tuples()}
        same, clashing = set(), []
        for row in chunk:
            key = row.get("id")
            if key is None:
                row["id"] = ids.new()
            elif key in by_id:
                if identity([row.get(f.name) for f in fields]) == by_id[key]:
                    same.add(key)
                    ids.claimed.add(key)
                else:
                    clashing.append(row)
        if clashing:
            sessions = {identity([r.get(f.name) for f in fields])[0] for r in clashing}
            candidates: dict = {}
            query = (CommLog.select(CommLog.id, *fields)
                     .where(CommLog.session.in_(list(sessions)) & (CommLog.id <= ids.before))
                     .order_by(CommLog.id).tuples())
            for r in query:
                if r[0] not in ids.claimed:
                    candidates.setdefault(identity(r[1:]), []).append(r[0])
            for row in clashing:
                found = candidates.get(identity([row.get(f.name) for f in fields]))
                if found:
                    row["id"] = found.pop(0)
                    same.add(row["id"])
                    ids.claimed.add(row["id"])
                else:
                    row["id"] = ids.new()
        return same

    def count(self, result: ImportResult) -> None:
        for model in ALL_MODELS:
            if model not in self.tables:
                continue
            table = model._meta.table_name
            result.tables.setdefault(table, _zero_counts())
            for chunk, existing in self._chunks(model):
                for what, _ in self._decide(model, chunk, existing):
                    result._count(table, what)

    def apply(self, result: ImportResult) -> None:
        for model in ALL_MODELS:
            if model not in self.tables:
                continue
            try:
                self._apply_table(model, result)
            except peewee.PeeweeException as exc:
                raise translate_error(exc, f"{model._meta.table_name} row") from exc

    def _apply_table(self, model, result: ImportResult) -> None:
        table = model._meta.table_name
        result.tables.setdefault(table, _zero_counts())
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
        if model is CommLog and created:
            self._resync_log_ids()

    def _resync_log_ids(self) -> None:
        # Explicit ids leave PostgreSQL's sequence behind: the next new row would collide.
        if isinstance(self.database, peewee.PostgresqlDatabase):
            self.database.execute_sql(
                "SELECT setval(pg_get_serial_sequence('comm_logs', 'id'), "
                "(SELECT COALESCE(MAX(id), 1) FROM comm_logs))")

    @staticmethod
    def _encrypt_psks(rows) -> None:
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
        pk = model._meta.primary_key.name
        # Rows keeping their ids first, so ids the database hands out come after them.
        ordered = sorted(groups.items(), key=lambda item: pk not in item[0])
        resynced = False
        for names, group in ordered:
            if pk not in names and model is CommLog and not resynced:
                self._resync_log_ids()
                resynced = True
            fields = [f for f in model._meta.sorted_fields if f.name in names]
            converters = [(f.name, f.db_value) for f in fields]
            batch = max_rows_per_statement(self.database, len(fields))
            for start in range(0, len(group), batch):
                chunk = group[start:start + batch]
                sql = self._insert_sql(model, fields, len(chunk))
                if sql is None:
                    model.insert_many(chunk).execute()
                    continue
                # What insert_many would bind: each field's db_value, in field order.
                params = [convert(row[name]) for row in chunk for name, convert in converters]
                self.database.execute_sql(sql, params)

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
        values = self._written_values(model, row)
        if "updated_at" in model._meta.fields and "updated_at" not in row:
            values["updated_at"] = utc_now()
        if values:
            model.update(values).where(pk == row[pk.name]).execute()

    def _written_values(self, model, row: dict) -> dict:
        """The fields an overwrite or merge of ``row`` sets, with their new values."""
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
        return values


def _name(key) -> str:
    """A key from the file, fit to print: plain names as they are, anything else quoted."""
    if isinstance(key, str) and len(key) <= 64 and key.isascii() and key.isprintable():
        return key
    return quote(key)


_CONVERTERS: dict = {}


def _converter(f: peewee.Field):
    """``_convert`` for field ``f``, with a fast path for the values an export writes
    (checked exactly as ``_convert`` checks them); anything else goes through it."""
    conv = _CONVERTERS.get(f)
    if conv is None:
        conv = _CONVERTERS[f] = _build_converter(f)
    return conv


def _build_converter(f: peewee.Field):  # noqa: C901 - one fast path per kind of field
    def slow(value):
        return _convert(f, value)

    target = f.rel_field if isinstance(f, peewee.ForeignKeyField) else f
    if isinstance(target, UUIDStrField):
        seen: dict = {}

        def uuid_text(value):
            hit = seen.get(value) if type(value) is str else None
            if hit is None:
                hit = slow(value)
                if type(value) is str:
                    if len(seen) > 10_000:
                        seen.clear()
                    seen[value] = hit
            return hit
        return uuid_text
    if isinstance(target, UTCDateTimeField):
        def timestamp(value):
            # The export's own form, 2024-11-29T10:00:00.123Z: no zone arithmetic needed.
            if type(value) is str and len(value) == 24 and value[23] == "Z" and value[10] == "T":
                try:
                    return _combine_utc(datetime.fromisoformat(value[:23]))
                except ValueError:
                    pass
            return slow(value)
        return timestamp
    if isinstance(target, EnumField):
        members = {m.value: m for m in target.enum_class if isinstance(m.value, str)}

        def member(value):
            hit = members.get(value) if type(value) is str else None
            return hit if hit is not None else slow(value)
        return member
    if isinstance(target, peewee.FloatField):
        def number(value):
            if type(value) is float and math.isfinite(value):
                return value
            return slow(value)
        return number
    if isinstance(target, peewee.IntegerField) and not isinstance(target, peewee.BooleanField):
        high = 2**63 if isinstance(target, peewee.BigAutoField | peewee.BigIntegerField) \
            else 2**31
        low = 1 if target.primary_key else -high

        def whole(value):
            if type(value) is int and low <= value < high:
                return value
            return slow(value)
        return whole
    if target is CommLog.raw_data:
        def hex_text(value):
            if (type(value) is str and value.isascii() and not len(value) & 1
                    and len(value) <= MAX_RAW_HEX and _UPPER_HEX(value)):
                return value
            return slow(value)
        return hex_text
    if target is CommLog.status_word:
        def status_word(value):
            if type(value) is str and value.isascii() and _STATUS_WORD.fullmatch(value):
                return value
            return slow(value)
        return status_word
    if isinstance(target, peewee.CharField | peewee.TextField) and not isinstance(
            target, JSONField | UUIDStrField):
        limit = (MAX_DECODED_CHARS if isinstance(target, ApduTextField) else
                 getattr(target, "max_length", None) or MAX_TEXT_BYTES)

        def text(value):
            if (type(value) is str and value.isascii() and len(value) <= limit
                    and "\x00" not in value):
                return value
            return slow(value)
        return text
    return slow


_UPPER_HEX = re.compile(r"[0-9A-F]*").fullmatch


def _combine_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc)


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
        return _json_value(value)
    if isinstance(f, peewee.BooleanField):
        if not isinstance(value, bool):
            raise ValueError(f"must be true or false, got {quote(value)}")
        return value
    if isinstance(f, peewee.FloatField):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"must be a number, got {quote(value)}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise ValueError(f"must be a finite number, got {quote(value)}")
        return number
    if isinstance(f, peewee.IntegerField):
        limit = 2**63 if isinstance(f, peewee.BigAutoField | peewee.BigIntegerField) else 2**31
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be a whole number, got {quote(value)}")
        if not -limit <= value < limit or (f.primary_key and value < 1):
            raise ValueError(f"{quote(value)} is out of range")
        return value
    if not isinstance(value, str):
        raise ValueError(f"must be text, got {type(value).__name__} {quote(value)}")
    if isinstance(f, EnumField):
        try:
            return f.coerce_member(value)
        except ValidationError:
            allowed = ", ".join(str(m.value) for m in f.enum_class)
            raise ValueError(f"must be one of {allowed}, got {quote(value)}") from None
    if isinstance(f, UUIDStrField):
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError(f"must be a UUID like 123e4567-e89b-12d3-a456-426614174000, "
                             f"got {quote(value)}") from None
    if f is CommLog.raw_data and value == "":
        return value  # a reset seen without an ATR (the row's direction is checked)
    if f is CommLog.raw_data:
        # The APDU writer's own rule (upper-case ASCII hex, whole bytes, '...' for an
        # elided sample, at most MAX_RAW_HEX digits), so anything it stored comes back in.
        try:
            return normalize_hex(value)
        except ValidationError:
            if len(value) > MAX_RAW_HEX:
                raise ValueError(f"is {len(value):,} characters long; at most "
                                 f"{MAX_RAW_HEX:,} hex digits are stored") from None
            raise ValueError("must be hex digits (ASCII), two per byte (e.g. 00A4040000)"
                             ) from None
    if f is CommLog.status_word and not (value.isascii() and _STATUS_WORD.fullmatch(value)):
        raise ValueError(f"must be four hex digits such as 9000, got {quote(value)}")
    if isinstance(f, ApduTextField):
        limit = MAX_DECODED_CHARS
    else:
        limit = getattr(f, "max_length", None) or MAX_TEXT_BYTES
    try:
        check_text(value, f.name, limit)
    except ValidationError as exc:
        raise ValueError(str(exc).removeprefix(f"{f.name} ")) from None
    if not isinstance(f, ApduTextField) and not getattr(f, "max_length", None) and (
            not value.isascii() and len(value.encode("utf-8")) > MAX_TEXT_BYTES):
        raise ValueError(f"is {len(value.encode('utf-8')):,} bytes of UTF-8; at most "
                         f"{MAX_TEXT_BYTES:,} fit (a TEXT column on MySQL)")
    return value


def _json_value(value):
    """A JSON field's value, if every backend stores it and every export carries it back:
    plain JSON types, no key twice, at most MAX_JSON_DEPTH levels and MAX_JSON_CHARS."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if isinstance(item, Duplicated):
                raise ValueError(f"key {quote(item.duplicate)} appears twice in one object")
            children = item.values()
            if any(not isinstance(k, str) for k in item):
                raise ValueError("object keys must be text")
        elif isinstance(item, list):
            children = item
        elif isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"must hold only finite numbers, got {item!r}")
        elif item is None or isinstance(item, str | int | float):
            continue
        else:
            raise ValueError("must hold only JSON values (objects, lists, text, numbers, "
                             f"true/false, null), got {type(item).__name__}")
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"is nested more than {MAX_JSON_DEPTH} levels deep")
        stack.extend((child, depth + 1) for child in children)
    try:
        size = len(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError, RecursionError):
        raise ValueError("must hold only JSON values (objects, lists, text, numbers, "
                         "true/false, null)") from None
    if size > MAX_JSON_CHARS:
        raise ValueError(f"is {size:,} characters as JSON; at most {MAX_JSON_CHARS:,} are "
                         "stored")
    return value


_ISO_HINT = "must be an ISO-8601 date and time like 2024-11-29T10:00:00.123Z"


def _parse_datetime(value) -> datetime:
    if isinstance(value, datetime):  # YAML turns unquoted timestamps into datetimes
        parsed = value
    elif isinstance(value, date) or not isinstance(value, str):
        raise ValueError(f"{_ISO_HINT}, got {quote(value)}")
    else:
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{_ISO_HINT}, got {quote(value)}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    try:
        return to_utc_ms(parsed)
    except OverflowError:
        raise ValueError(f"{quote(value if isinstance(value, str) else parsed.isoformat())} "
                         "is outside 0001-01-01..9999-12-31 once converted to UTC") from None
