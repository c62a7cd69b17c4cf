"""The transfer document: JSON and YAML parsed whole, JSON Lines read a line at a time,
with the checks a hostile file needs (keys twice, YAML aliases, nesting, huge numbers)."""

from __future__ import annotations

import enum
import functools
import io
import json
import math
from datetime import datetime

from .errors import ValidationError, first_line, quote
from .fields import iso_utc

__all__ = [
    "CLOSING_KEY",
    "FORMAT_VERSION",
    "MAX_JSON_CHARS",
    "MAX_JSON_DEPTH",
    "MAX_LINE_CHARS",
    "PROMISE_KEY",
    "BadRow",
    "Duplicated",
    "ExportFormat",
    "JsonLines",
    "check_json_value",
    "export_format",
    "parse_document",
    "plain_value",
    "read_document",
    "write_document",
    "write_jsonl",
]

FORMAT_VERSION = 1
PROMISE_KEY = "closing_record"  # header: true when the file ends with its row counts
CLOSING_KEY = "row_counts"      # the closing record: {table: rows written}
MAX_JSON_DEPTH = 32           # nesting of a JSON field (connection_settings, metadata...)
MAX_JSON_CHARS = 1_048_576    # a JSON field's size, as stored
MAX_LINE_CHARS = 16 << 20     # one JSON Lines row: far above any row a column set holds
_YAML_WIDTH = 1 << 30         # never fold long strings: one row reads as one block


def _yaml():
    # Only YAML needs it: opening a store and the APDU log's JSON lines do not load it.
    import yaml

    return yaml


class ExportFormat(str, enum.Enum):
    JSON = "json"
    YAML = "yaml"
    JSONL = "jsonl"  # JSON Lines: the streamed layout (a header line, then a line per row)


def export_format(value) -> ExportFormat:
    try:
        return ExportFormat(str(getattr(value, "value", value)).lower())
    except ValueError:
        raise ValidationError(f"unknown format {value!r}; use json, jsonl or yaml") from None


# -- writing ------------------------------------------------------------------------------

def write_jsonl(fp, rows) -> int:
    """Write each row as one line of JSON to the text file ``fp``; returns the row count."""
    count = 0
    dumps = json.dumps
    write = fp.write
    for row in rows:
        write(dumps(row))
        write("\n")
        count += 1
    return count


_PLAIN = frozenset({str, int, bool, type(None), dict, list})


def plain_value(value):
    """A field's Python value as a JSON value: times as ``2024-11-29T10:00:00.123Z``, enum
    members as their value, infinity and NaN as null."""
    if type(value) in _PLAIN:
        return value
    if isinstance(value, float):
        # An old writer let infinity into SQLite; a latency of infinity means "unknown".
        return value if math.isfinite(value) else None
    if isinstance(value, datetime):
        return iso_utc(value, millis=True)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, str | int):  # subclasses of the plain types
        return value
    return str(value)


def write_document(stream, format, header: dict, tables, closing=None) -> None:
    """Write ``header`` then each ``(name, rows)`` of ``tables`` to text ``stream``, then the
    mapping ``closing()`` returns (once every row is written), if given."""
    fmt = export_format(format)
    write = stream.write
    if fmt is ExportFormat.JSONL:  # the header line, then a {"table": name} line, a line a row
        write(json.dumps({**header, "format": fmt.value}) + "\n")
        for name, rows in tables:
            write(json.dumps({"table": name}) + "\n")
            write_jsonl(stream, rows)
        if closing is not None:
            write(json.dumps(closing()) + "\n")
    elif fmt is ExportFormat.YAML:
        yaml = _yaml()
        dump = functools.partial(yaml.dump, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper),
                                 default_flow_style=False, sort_keys=False, allow_unicode=False,
                                 width=_YAML_WIDTH)
        write(dump(header))
        for name, rows in tables:
            write(f"{name}:")
            empty = True
            for row in rows:
                write(("\n" if empty else "") + dump([row]))
                empty = False
            if empty:
                write(" []\n")
        for k, v in (closing() if closing is not None else {}).items():
            write(f"{k}: {json.dumps(v)}\n")  # one line (JSON is YAML): a cut loses it whole
    else:  # one row per line inside one JSON document: stable bytes, small diffs
        dumps = json.dumps
        write("{\n" + ",\n".join(f"  {dumps(k)}: {dumps(v)}" for k, v in header.items()))
        for name, rows in tables:
            write(f",\n  {dumps(name)}: [")
            separator = "\n    "
            for row in rows:
                write(separator)
                write(dumps(row))
                separator = ",\n    "
            write("]" if separator == "\n    " else "\n  ]")
        for k, v in (closing() if closing is not None else {}).items():
            write(f",\n  {dumps(k)}: {dumps(v)}")
        write("\n}\n")


# -- reading --------------------------------------------------------------------------------

class Duplicated(dict):
    """A JSON object that named a key twice (``duplicate`` is the key)."""

    duplicate = None


class BadRow(str):
    """A JSON Lines row that could not be read; the text says why."""


def _pairs(pairs: list) -> dict:
    """``object_pairs_hook``: a dict, or a :class:`Duplicated` when a key repeats."""
    d = dict(pairs)
    if len(d) != len(pairs):
        seen = set()
        d = Duplicated(d)
        for key, _ in pairs:
            if key in seen:
                d.duplicate = key
                break
            seen.add(key)
    return d


_decode = json.JSONDecoder(object_pairs_hook=_pairs).decode


@functools.cache
def _loader():
    """The safe loader (in C where PyYAML has it), refusing a key given twice."""
    yaml = _yaml()

    class Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                self.flatten_mapping(node)
                seen = set()
                for key_node, _ in node.value:
                    key = self.construct_object(key_node, deep=True)
                    try:
                        repeated = key in seen
                        seen.add(key)
                    except TypeError:
                        continue  # unhashable: the base class says so
                    if repeated:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"key {quote(key)} appears twice in one mapping",
                            key_node.start_mark)
            return super().construct_mapping(node, deep)
    return Loader


def _json_problem(exc: Exception) -> str:
    """What is wrong with JSON text that did not parse, in a few words."""
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    if isinstance(exc, RecursionError):
        return "not valid JSON for an import: it is nested too deeply"
    # A number Python will not convert (over 4,300 digits), a lone surrogate...
    what = "a number has too many digits" if "digits" in str(exc) else first_line(exc)[:100]
    return f"not valid JSON for an import: {what}"


def _parse_yaml(text: str):
    yaml = _yaml()
    if "*" in text:
        # A kilobyte of aliases can stand for gigabytes ("billion laughs"); exports have none.
        try:
            for event in yaml.parse(text, Loader=_loader()):
                if isinstance(event, yaml.AliasEvent):
                    mark = event.start_mark
                    raise ValidationError(
                        f"YAML aliases are not accepted in an import (*{event.anchor[:40]} at "
                        f"line {mark.line + 1} column {mark.column + 1}); write the value "
                        "out in full")
        except yaml.YAMLError:
            pass  # the load below reports it
    try:
        return yaml.load(text, Loader=_loader())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValidationError(
            f"not valid YAML: {what[:200]}{where}; fix the file or give the right --format"
        ) from None
    except RecursionError:
        raise ValidationError("not valid YAML for an import: it is nested too deeply; "
                              "give a file written by cardlink-db export") from None
    except (ValueError, OverflowError, TypeError) as exc:  # e.g. a date out of range
        raise ValidationError(
            f"not valid YAML for an import: a value cannot be read "
            f"({type(exc).__name__}: {first_line(exc)[:100]}); fix the file") from None


def _text(data) -> str:
    if isinstance(data, bytes | bytearray):
        try:
            return bytes(data).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ValidationError(
                f"the import document is not UTF-8 text (byte {exc.start}); export it again "
                "with cardlink-db export") from None
    if not isinstance(data, str):
        raise ValidationError(f"cannot import a {type(data).__name__}; pass JSON or YAML text")
    return data.lstrip("\ufeff")


def parse_document(data, format=None) -> dict:
    """The mapping inside whole JSON/YAML ``data``. Without ``format``, text starting with
    ``{`` or ``[`` is JSON, anything else YAML."""
    if isinstance(data, dict):
        return data
    if hasattr(data, "read"):
        data = data.read()
    text = _text(data)
    if not text.strip():
        raise ValidationError("the import document is empty; give a file written by "
                              "cardlink-db export")
    fmt = export_format(format) if format is not None else (
        ExportFormat.JSON if text.lstrip()[:1] in ("{", "[") else ExportFormat.YAML)
    if fmt is ExportFormat.YAML:
        document = _parse_yaml(text)
    else:
        try:
            document = _decode(text)
        except (ValueError, RecursionError) as exc:
            hint = "give a file written by cardlink-db export" if isinstance(
                exc, RecursionError) else "fix the file or give the right --format"
            raise ValidationError(f"{_json_problem(exc)}; {hint}") from None
    if not isinstance(document, dict):
        kind = "empty document" if document is None else type(document).__name__
        raise ValidationError(
            f"the import document must be a mapping of table names to lists of rows, "
            f"got a {kind}; give a file written by cardlink-db export")
    return document


class JsonLines:
    """A JSON Lines document read a line at a time: ``(table, None)`` at each ``{"table": name}``
    line, then ``(table, row)`` per row (a :class:`BadRow` if it could not be read). A last
    ``{"row_counts": ...}`` line is kept as ``closing``, not yielded."""

    def __init__(self, readline, header: dict):
        self._readline = readline
        self.header = header
        self.line = 1  # the line being read
        self.closing: dict | None = None

    def __iter__(self):
        table = None
        readline = self._readline
        decode = _decode
        while text := readline(MAX_LINE_CHARS):
            self.line += 1
            if len(text) >= MAX_LINE_CHARS and text[-1:] not in ("\n", b"\n"):
                while text and text[-1:] not in ("\n", b"\n"):  # skip the rest of it
                    text = readline(1 << 20)
                row = BadRow(f"line {self.line} is longer than {MAX_LINE_CHARS:,} characters")
            else:
                try:
                    row = decode(text.decode("utf-8") if type(text) is bytes else text)
                except UnicodeDecodeError as exc:
                    row = BadRow(f"line {self.line} is not UTF-8 text (byte {exc.start})")
                except (ValueError, RecursionError) as exc:
                    if not text.strip():
                        continue
                    row = BadRow(f"line {self.line}: {_json_problem(exc)}")
            if self.closing is not None:
                yield None, BadRow(f"line {self.line}: comes after the closing record (the "
                                   f"row counts); a file ends with it")
            elif type(row) is dict and len(row) == 1 and CLOSING_KEY in row:
                self.closing = row
            elif type(row) is dict and len(row) == 1 and "table" in row:
                table = row["table"]
                yield table, None
            elif table is None and type(row) is not BadRow:
                yield None, BadRow(f"line {self.line}: a row before any {{\"table\": name}} line")
            else:
                yield table, row


def _line_reader(data):
    """``readline(limit)`` over ``data`` (text, bytes or a file), or None for a mapping."""
    if isinstance(data, str):
        return io.StringIO(data).readline
    if isinstance(data, bytes | bytearray):
        return io.BytesIO(data).readline
    if hasattr(data, "readline"):
        return data.readline
    if hasattr(data, "read"):
        return io.BytesIO(data.read()).readline
    return None


def read_document(data, format=None):
    """``data`` as a mapping, or as a :class:`JsonLines` reader when ``format`` or a first
    line with ``"format": "jsonl"`` says JSON Lines."""
    fmt = None if format is None else export_format(format)
    readline = None if fmt is ExportFormat.YAML else _line_reader(data)
    if readline is None:
        return parse_document(data, fmt)
    first = readline()
    while first and not first.strip() and fmt is ExportFormat.JSONL:
        first = readline()
    head = _text(first) if first else ""
    header = None
    if fmt is ExportFormat.JSONL or head.lstrip().startswith("{") and head.rstrip()[-1:] == "}":
        try:
            header = _decode(head)
        except (ValueError, RecursionError) as exc:
            if fmt is ExportFormat.JSONL:
                raise ValidationError(f"line 1: {_json_problem(exc)}; give a file written by "
                                      "cardlink-db export --format jsonl") from None
    if fmt is ExportFormat.JSONL or (isinstance(header, dict)
                                     and header.get("format") == ExportFormat.JSONL.value):
        if not isinstance(header, dict):
            raise ValidationError(
                "line 1 of a JSON Lines import must be a mapping such as "
                '{"format_version": 1, "format": "jsonl"}; give a file written by '
                "cardlink-db export --format jsonl")
        return JsonLines(readline, header)
    if isinstance(data, str | bytes | bytearray):
        return parse_document(data, fmt)
    chunks = [first]  # a file: the first line read and everything after it
    while chunk := readline(1 << 20):
        chunks.append(chunk)
    return parse_document(first[:0].join(chunks), fmt)


def check_json_value(value):
    """``value`` if it is a JSON value every backend stores and every export carries back;
    ValueError saying what is wrong otherwise."""
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
