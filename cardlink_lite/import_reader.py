"""Reading an import document: the export's own JSON layout a line at a time (re-readable,
never all in memory), anything else parsed whole."""

from __future__ import annotations

import io
import json
import re
import shutil
import tempfile

import yaml

from .errors import ValidationError, first_line, quote
from .transfer_format import ExportFormat, _export_format

__all__ = ["BadRow", "Duplicated", "parse_document"]

_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class Duplicated(dict):
    """A JSON object or YAML mapping that named a key twice (``duplicate`` is the key);
    the importer refuses it, naming the row."""

    duplicate = None


class BadRow:
    """A row line that could not become a row (``reason`` says why)."""

    def __init__(self, reason: str):
        self.reason = reason


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


class _Loader(_SafeLoader):
    """The safe loader, refusing a key given twice in one mapping."""

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
        loads = _decode
        for _ in range(self._count):
            text = lines.readline().strip()
            if text.endswith(","):
                text = text[:-1]
            try:
                row = loads(text)
            except RecursionError:
                row = BadRow("nested too deeply to read")
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
        try:
            key = json.loads(match.group(1))
        except ValueError:  # e.g. a raw control character: the whole parse says where
            raise _NotLineFormat from None
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
            document[key] = _decode(rest)
        except (ValueError, RecursionError):
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


def _parse_json(text: str):
    try:
        return _decode(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(
            f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}; "
            "fix the file or give the right --format"
        ) from None
    except RecursionError:
        raise ValidationError("not valid JSON for an import: it is nested too deeply; "
                              "give a file written by cardlink-db export") from None
    except ValueError as exc:  # a number Python will not convert (over 4,300 digits)
        what = ("a number has too many digits" if "digits" in str(exc)
                else first_line(exc)[:100])
        raise ValidationError(f"not valid JSON for an import: {what}; fix the file") from None


def _parse_yaml(text: str):
    if "*" in text:
        # An alias repeats a value by reference: a kilobyte of aliases can stand for
        # gigabytes of data (the "billion laughs"). Import files never need them.
        try:
            for event in yaml.parse(text, Loader=_SafeLoader):
                if isinstance(event, yaml.AliasEvent):
                    mark = event.start_mark
                    raise ValidationError(
                        f"YAML aliases are not accepted in an import (*{event.anchor[:40]} at "
                        f"line {mark.line + 1} column {mark.column + 1}); write the value "
                        "out in full")
        except yaml.YAMLError:
            pass  # the load below reports it
    try:
        # Safe loader only: a document can never construct Python objects.
        return yaml.load(text, Loader=_Loader)
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
        document = _parse_json(text)
    else:
        document = _parse_yaml(text)
    if not isinstance(document, dict):
        kind = "empty document" if document is None else type(document).__name__
        raise ValidationError(
            f"the import document must be a mapping of table names to lists of rows, "
            f"got a {kind}; give a file written by cardlink-db export"
        )
    return document
