"""Custom Peewee fields: enums, UTC millisecond datetimes, dashed UUIDs and JSON."""

from __future__ import annotations

import enum
import json
import os
import re
import threading
import time
import uuid
from datetime import datetime, timezone

import peewee

from .errors import EncryptionError, KeyFormatError, ValidationError, quote

__all__ = [
    "ApduTextField",
    "BooleanField",
    "CharField",
    "EncryptedBlobField",
    "EnumField",
    "ExactCharField",
    "ExactForeignKeyField",
    "JSONField",
    "UTCDateTimeField",
    "TextField",
    "UUIDStrField",
    "iso_utc",
    "new_uuid",
    "storable_text",
    "stored_utc",
    "to_utc_ms",
    "utc_from_text",
    "utc_now",
]

# Column types the manager maps per backend (see db._FIELD_TYPES).
DATETIME_MS = "DATETIME_MS"
JSON_TEXT = "JSON_TEXT"
APDU_TEXT = "APDU_TEXT"
# Not a column type: the collation (with its character set) of exactly compared text, on the
# backends whose default collation folds case (MySQL/MariaDB).
EXACT_COLLATION = "EXACT_COLLATION"


def utc_now() -> datetime:
    """The current time, UTC, truncated to milliseconds."""
    return to_utc_ms(datetime.now(timezone.utc))


def to_utc_ms(value: datetime) -> datetime:
    """Aware UTC with millisecond precision; a naive value is local time, as ``astimezone()``
    takes it (the guide passes ``datetime.now()``)."""
    if value.tzinfo is None:
        try:
            value = value.astimezone(timezone.utc)
        except (OverflowError, ValueError, OSError):
            # Years the C library's local time does not cover (0001, 9999...): today's
            # offset. Raises OverflowError if that leaves datetime's range.
            offset = datetime.now().astimezone().utcoffset()
            value = (value - offset).replace(tzinfo=timezone.utc)
    else:
        value = value.astimezone(timezone.utc)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def stored_utc(value: datetime) -> datetime:
    """A timestamp as a driver or a file hands it back: naive means UTC (what we store)."""
    if value.tzinfo is None:
        return _combine(value.date(), value.time(), timezone.utc)
    return to_utc_ms(value)


def iso_utc(value, millis: bool = False) -> str | None:
    """A UTC timestamp (a datetime, or the text SQLite stored) as ISO-8601 text: ``+00:00``
    as ``isoformat()`` writes it, or with ``millis`` the export's ``…T10:00:00.123Z``."""
    if value is None:
        return None
    if millis:
        if type(value) is str and len(value) in (19, 26) and value[10] == " ":
            # The text SQLite stored (isoformat(" ") of a naive UTC value): no parsing.
            return f"{value[:10]}T{value[11:19]}.{value[20:23] if value[19:] else '000'}Z"
        if type(value) is datetime and value.tzinfo is None:  # MySQL, PostgreSQL: naive UTC
            return value.isoformat(timespec="milliseconds") + "Z"
        value = stored_utc(utc_from_text(value) if isinstance(value, str) else value)
        return value.isoformat(timespec="milliseconds")[:23] + "Z"
    if isinstance(value, str):  # SQLite hands back the stored text (naive UTC)
        return value.replace(" ", "T", 1) + "+00:00"
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc)
    return value.replace(tzinfo=None).isoformat() + "+00:00"


def _shown(value: str) -> str:
    return repr(value if len(value) <= 20 else value[:20] + "...")


def storable_text(value: str, name: str) -> str:
    """``value`` if every backend stores it alike (no NUL for PostgreSQL, no lone surrogate);
    ValidationError naming ``name`` otherwise."""
    if "\x00" in value:
        raise ValidationError(
            f"{name} must not contain NUL characters (PostgreSQL cannot store them); "
            f"got {_shown(value)}", problems=[name])
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValidationError(
                f"{name} is not valid Unicode text (lone surrogate at character "
                f"{exc.start})", problems=[name]) from None
    return value


def _check_text(field, value):
    """Refuse text no backend can store (NUL, lone surrogates: ``storable_text``) and text over
    ``max_length`` (SQLite would keep it, the servers not); a LIKE pattern's edge ``%`` is free."""
    if type(value) is not str:
        return value
    storable_text(value, field.name)
    limit = getattr(field, "max_length", None)
    if limit and len(value) > limit and \
            len(value) - value.startswith("%") - value.endswith("%") > limit:
        raise ValidationError(
            f"{field.name} must be at most {limit} characters; got {len(value)} "
            f"({_shown(value)})", problems=[field.name])
    return value


class CharField(peewee.CharField):
    """VARCHAR whose ``max_length`` and NUL rule hold before any SQL, on every backend."""

    def db_value(self, value):
        if type(value) is str:  # Peewee's own conversion gives text back as it is
            return _check_text(self, value)
        return _check_text(self, super().db_value(value))


class BooleanField(peewee.BooleanField):
    """True or False (1 and 0 too); text is refused: ``bool("false")`` would store true."""

    def db_value(self, value):
        if value is None or type(value) is bool:
            return value
        if type(value) is int and value in (0, 1):
            return bool(value)
        raise ValidationError(f"{self.name} must be True or False; got {quote(value)}",
                              problems=[self.name])


class TextField(peewee.TextField):
    """TEXT without NUL characters (PostgreSQL cannot store them), checked before SQL."""

    def db_value(self, value):
        return _check_text(self, super().db_value(value))


class EnumField(peewee.CharField):
    """Stores an Enum member's value; gives the member back. Unknown values are refused."""

    def __init__(self, enum_class: type[enum.Enum], max_length: int = 20, **kwargs):
        self.enum_class = enum_class
        self._lookup = {str(key).lower(): member
                        for member in enum_class for key in (member.value, member.name)}
        super().__init__(max_length=max_length, **kwargs)

    def coerce_member(self, value):
        if value is None or isinstance(value, self.enum_class):
            return value
        member = self._lookup.get(str(value).lower())
        if member is None:
            allowed = ", ".join(str(m.value) for m in self.enum_class)
            raise ValidationError(
                f"{self.name or 'value'} must be one of {allowed}; got {quote(value)}"
            )
        return member

    def db_value(self, value):
        member = self.coerce_member(value)
        return None if member is None else member.value

    def export_value(self, value):
        """The stored value as an export writes it: the member's value."""
        member = self._lookup.get(str(value).lower())
        return value if member is None else member.value

    def python_value(self, value):
        return None if value is None else self._lookup.get(str(value).lower(), value)


class UTCDateTimeField(peewee.DateTimeField):
    """A UTC timestamp with millisecond precision on every backend (DATETIME(3) on MySQL)."""

    field_type = DATETIME_MS

    def db_value(self, value):
        if value is None:
            return None
        if type(value) is str:
            # Text without an offset is UTC, as stored: parsed naive, it is the stored
            # value already (datetime.replace costs five times the parse).
            try:
                naive = _fromisoformat(value[:-1] if value[-1:] == "Z" else value)
            except ValueError:
                naive = None
            if naive is not None and naive.tzinfo is None:
                return naive if not naive.microsecond % 1000 else naive.replace(
                    microsecond=naive.microsecond // 1000 * 1000)
        given = value
        try:
            if isinstance(value, str):  # text without an offset is UTC, as stored
                value = utc_from_text(value)
                if not isinstance(value, datetime):
                    raise ValidationError(
                        f"{self.name} must be an ISO-8601 date and time like "
                        f"2024-11-29T10:00:00.123Z; got {quote(given)}", problems=[self.name])
            if isinstance(value, datetime):
                # Stored naive: SQLite and MySQL have no zone; UTC by convention.
                if value.tzinfo is timezone.utc:  # one step for the common case
                    return value.replace(tzinfo=None,
                                         microsecond=value.microsecond // 1000 * 1000)
                return to_utc_ms(value).replace(tzinfo=None)
        except OverflowError:
            shown = quote(given if isinstance(given, str) else given.isoformat())
            raise ValidationError(f"{self.name} {shown} is outside 0001-01-01..9999-12-31 "
                                  "once converted to UTC", problems=[self.name]) from None
        return value

    def export_value(self, value) -> str:
        """The stored value as an export writes it: ``2024-11-29T10:00:00.123Z``."""
        return iso_utc(value, millis=True)

    def python_value(self, value):
        if isinstance(value, str):  # SQLite hands back the stored naive-UTC text
            return utc_from_text(value)
        if isinstance(value, datetime):  # MySQL, PostgreSQL (naive UTC), or already aware
            return stored_utc(value)
        return value


# combine() is far cheaper than datetime.replace(tzinfo=...) on CPython 3.11.
_combine = datetime.combine
_fromisoformat = datetime.fromisoformat


def utc_from_text(text: str) -> datetime:
    """Stored timestamp text (naive UTC) as an aware UTC datetime; text with its own offset
    is converted. Parsing ``text + "+00:00"`` in C is ten times faster than ``.replace()``."""
    if text[-1:] == "Z":  # an export's own form, 2024-11-29T10:00:00.123Z
        text = text[:-1]
    try:
        value = _fromisoformat(text + "+00:00")
    except ValueError:
        pass
    else:
        if value.tzinfo is not None:  # date-only text parses "+00:00" as a time
            return value
    try:
        value = _fromisoformat(text)
    except ValueError:
        value = peewee.format_date_time(text, peewee.DateTimeField.formats)
        if not isinstance(value, datetime):
            return value
    return stored_utc(value)


class _ExactCollation:
    """Adds the backend's exact-comparison collation (if it has one) to the column type."""

    def ddl_datatype(self, ctx):
        sql = super().ddl_datatype(ctx)
        collation = ctx.state.field_types.get(EXACT_COLLATION) \
            if ctx and ctx.state.field_types else None
        return peewee.NodeList((sql, peewee.SQL(collation))) if collation and sql else sql


class ExactCharField(_ExactCollation, CharField):
    """An identifier compared exactly on every backend (``a`` is not ``A``): on MySQL/MariaDB
    the column gets a binary collation instead of the case-folding default."""


class ExactForeignKeyField(_ExactCollation, peewee.ForeignKeyField):
    """A foreign key to an ``ExactCharField``: MySQL wants both columns in one collation."""


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


_uuid_lock = threading.Lock()
_uuid_ms = _uuid_counter = 0  # the millisecond and counter of the last key made


def new_uuid() -> str:
    """A new UUID (RFC 9562 version 7): the Unix time in ms, a 12-bit counter, 62 random bits.
    New keys land at the end of a B-tree index (InnoDB clusters by key), and keys made in one
    process sort in the order made, within a millisecond too: RFC 9562 6.2 method 1, the
    counter starts at random below 2,048 each millisecond, and past 4,095 the time moves on."""
    global _uuid_ms, _uuid_counter
    draw = int.from_bytes(os.urandom(10), "big")  # 11 bits seed the counter, 62 go last
    now = time.time_ns() // 1_000_000
    with _uuid_lock:
        if now > _uuid_ms:
            _uuid_ms, _uuid_counter = now, draw >> 69
        elif _uuid_counter < 0xFFF:  # same millisecond, or the clock went back
            _uuid_counter += 1
        else:
            _uuid_ms, _uuid_counter = _uuid_ms + 1, draw >> 69
        value = _uuid_ms << 80 | 0x7 << 76 | _uuid_counter << 64
    return str(uuid.UUID(int=value | 0x2 << 62 | draw & ((1 << 62) - 1)))


class UUIDStrField(peewee.CharField):
    """A UUID stored and returned as the 36-character dashed string."""

    passes_text_through = True  # python_value() of the stored text is that text

    def __init__(self, max_length: int = 36, **kwargs):
        super().__init__(max_length=max_length, **kwargs)

    def db_value(self, value):
        if value is None:
            return None
        if type(value) is str and _CANONICAL_UUID.fullmatch(value):
            return value  # already what str(uuid.UUID(value)) gives: skip the parse
        if isinstance(value, uuid.UUID):
            return str(value)
        if isinstance(value, peewee.Node):
            return value
        try:
            return str(uuid.UUID(str(value)))
        except ValueError:
            raise KeyFormatError(
                f"{self.name or 'id'} must be a UUID like 123e4567-e89b-12d3-a456-426614174000; "
                f"got {quote(value)}"
            ) from None

    def python_value(self, value):
        return None if value is None else str(value)


class JSONField(peewee.TextField):
    """Dicts, lists and scalars stored as JSON text on every backend."""

    field_type = JSON_TEXT

    def db_value(self, value):
        if value is None or isinstance(value, peewee.Node):
            return value
        try:
            return json.dumps(value, separators=(",", ":"), sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"{self.name} must be JSON-serialisable: {exc}") from None

    def python_value(self, value):
        if value is None or not isinstance(value, str | bytes):
            return value
        return json.loads(value)


class ApduTextField(TextField):
    """APDU hex and decoded text: MEDIUMTEXT on MySQL (TEXT's 64 KiB is too small for an
    extended-length APDU), TEXT elsewhere."""

    field_type = APDU_TEXT
    max_length = 1_048_576  # characters: at most 4 MiB of UTF-8, inside MEDIUMTEXT's 16 MiB


class EncryptedBlobField(peewee.BlobField):
    """Holds Fernet tokens only, so a plaintext PSK assigned by hand is never stored."""

    def db_value(self, value):
        if value is None or isinstance(value, peewee.Node):
            return value
        raw = value.encode() if isinstance(value, str) else bytes(value)
        if not raw.startswith(b"gAAAAA"):
            raise EncryptionError(
                f"{self.name} holds only encrypted PSKs; store a key with "
                "uow.cards.create_with_psk(card, key) or uow.cards.update_psk(iccid, key=...)"
            )
        return super().db_value(raw)
