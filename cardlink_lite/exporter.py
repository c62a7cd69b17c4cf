"""DataExporter: the store streamed out as JSON or YAML, a page of rows at a time, from
one read snapshot."""

from __future__ import annotations

import enum
import functools
import io
import json
import math

import peewee
import yaml

from .crypto import decrypt_psk
from .db import bound_models, small_page_cache
from .fields import (
    EnumField,
    JSONField,
    UTCDateTimeField,
    iso_utc,
    utc_now,
)
from .models import ALL_MODELS, CardProfile
from .transfer_format import (
    FORMAT_VERSION,
    ExportFormat,
    _columns,
    _database_of,
    _export_format,
    _key,
    _snapshot,
    resolve_tables,
)

__all__ = ["DataExporter"]

_PAGE = 1000  # rows read per query while exporting
_YAML_WIDTH = 1 << 30  # never fold long strings: keeps rows on predictable lines

_SafeDumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


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
        with bound_models(database, ALL_MODELS):
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
        with bound_models(database, ALL_MODELS), _snapshot(database), small_page_cache(database):
            writer.header({"format_version": FORMAT_VERSION,
                           "exported_at": iso_utc(utc_now(), millis=True)})
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
        return functools.partial(iso_utc, millis=True)
    if isinstance(f, EnumField):
        return lambda v: v.value if isinstance(v, enum.Enum) else v
    if isinstance(f, JSONField):
        return lambda v: v
    if f is CardProfile.psk_key_encrypted:
        return lambda v: decrypt_psk(bytes(v)).hex()
    if isinstance(f, peewee.BooleanField):
        return bool
    if isinstance(f, peewee.FloatField):
        return _finite_or_none
    if isinstance(f, peewee.IntegerField):  # BigAutoField too
        return int
    return str


def _finite_or_none(value) -> float | None:
    # SQLite stores infinity (an old writer let it through); no export format can carry
    # it back in, and a latency of infinity means "unknown": it is exported as null.
    value = float(value)
    return value if math.isfinite(value) else None


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
