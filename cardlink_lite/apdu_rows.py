"""APDU log rows checked and converted to the values the writer stores."""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone

from ._peewee import field_values
from .errors import ValidationError
from .models import CommDirection, CommLog, OTASession
from .status_words import describe_status_word

__all__ = ["check_small_ints", "is_hex", "is_status_word", "model_kwargs", "normalize_hex",
           "now_text", "row_kwargs", "session_key", "stored_direction", "sw_message",
           "timestamp_text"]

_ELISION = "..."

# Match a whole upper-case hex string / status word.
is_hex = re.compile(r"[0-9A-F]+").fullmatch
is_status_word = re.compile(r"[0-9A-F]{4}").fullmatch

# Every accepted spelling of a direction -> its stored value.
_DIRECTIONS = {}
for _member in CommDirection:
    for _key in (_member.value, _member.name, _member.value.capitalize()):
        _DIRECTIONS[_key] = _member.value
# The stored value of a direction spelling, or None. Exported bound: Python compiles
# ``imported_dict.get(...)`` without its fast method call, and the writer calls this per row.
stored_direction = _DIRECTIONS.get

_MESSAGES: dict[str, str] = {}
_UTC = timezone.utc
# Exactly what sqlite3 stores for a datetime (isoformat(" ")), so rows written by the
# writer and by Model.save() sort and compare alike.
_MILLIS = [""] + [f".{ms:03d}000" for ms in range(1, 1000)]
_second = (None, "")


def now_text() -> str:
    """Now, as the timestamp column stores it: naive UTC text with milliseconds.

    The same value ``fields.utc_now()`` gives, but this runs once per logged APDU, so
    the date text is only rebuilt when the second changes.
    """
    global _second
    now = time.time()
    sec = int(now)
    cached = _second
    if cached[0] != sec:
        cached = _second = (sec, datetime.fromtimestamp(sec, _UTC).strftime("%Y-%m-%d %H:%M:%S"))
    return cached[1] + _MILLIS[int((now - sec) * 1000)]


def normalize_hex(value, field: str = "raw_data") -> str:
    """Upper-case hex with spaces removed; a trailing ``...`` (an elided sample) is kept."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex().upper()
    if not isinstance(value, str):
        raise ValidationError(
            f"{field} must be a hex string such as '00A40400'; got {type(value).__name__}",
            problems=[field],
        )
    text = value.upper()
    if is_hex(text) and not len(text) & 1:
        return text
    text = "".join(text.split())
    elided = text.endswith(_ELISION)
    body = text[:-len(_ELISION)] if elided else text
    # An elided sample may stop mid-byte; a complete value must be whole bytes.
    if not body or not is_hex(body) or (len(body) & 1 and not elided):
        shown = value if len(value) <= 40 else value[:37] + "..."
        raise ValidationError(
            f"{field} must be whole bytes of hex digits (spaces allowed, a trailing '...' "
            f"marks an elided sample); got {shown!r}",
            problems=[field],
        )
    return text


def sw_message(sw: str) -> str:
    """The status word's meaning, as stored in ``status_message`` (cached)."""
    text = _MESSAGES.get(sw)
    if text is None:
        text = _MESSAGES[sw] = describe_status_word(sw)[:128]
    return text


def session_key(session_id) -> str:
    """The stored key of an OTA session given as an OTASession, UUID or UUID text."""
    if isinstance(session_id, OTASession):
        session_id = session_id.id
    try:
        return OTASession.id.db_value(session_id)
    except ValidationError:
        raise ValidationError(
            f"session_id must be an OTA session's UUID; got {session_id!r}",
            problems=["session_id"],
        ) from None


def timestamp_text(value) -> str:
    """A datetime or ISO 8601 text as the timestamp column stores it."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValidationError(
                f"timestamp must be a datetime or ISO 8601 text; got {value!r}",
                problems=["timestamp"],
            ) from None
    if not isinstance(value, datetime):
        raise ValidationError(f"timestamp must be a datetime; got {type(value).__name__}",
                              problems=["timestamp"])
    return CommLog.timestamp.db_value(value).isoformat(" ")


_ROW_KEYS = ("session_id", "direction", "raw_data", "decoded_data", "status_word",
             "status_message", "latency_ms", "timestamp", "channel", "ins", "source_id")
# Schema 0003's integer columns: name -> (lowest, highest) accepted.
_INT_RANGES = {"channel": (0, 19), "ins": (0, 255), "source_id": (1, 2**31 - 1)}


def check_small_ints(channel, ins, source_id) -> None:
    """Refuse a logical channel outside 0-19, an INS byte outside 0-255 or a bad source id."""
    for name, value in (("channel", channel), ("ins", ins), ("source_id", source_id)):
        low, high = _INT_RANGES[name]
        if value is not None and (type(value) is not int or not low <= value <= high):
            raise ValidationError(f"{name} must be a whole number {low}..{high}; got "
                                  f"{str(value)[:20]!r}", problems=[name])


def row_kwargs(row: dict) -> dict:
    """A dict row as keyword arguments of ``ApduLogWriter.add``."""
    row = dict(row)
    if "session" in row and "session_id" not in row:
        row["session_id"] = row.pop("session")
    unknown = set(row) - set(_ROW_KEYS)
    if unknown:
        raise ValidationError(
            f"unknown log field {sorted(unknown)[0]!r}; use {', '.join(_ROW_KEYS)}",
            problems=sorted(unknown),
        )
    return row


def model_kwargs(log: CommLog) -> dict:
    """A CommLog object as keyword arguments of ``ApduLogWriter.add``."""
    data = field_values(log)
    return {"session_id": data.get("session"), "direction": data.get("direction"),
            "raw_data": data.get("raw_data"), "decoded_data": data.get("decoded_data"),
            "status_word": data.get("status_word"),
            "status_message": data.get("status_message"),
            "latency_ms": data.get("latency_ms"), "timestamp": data.get("timestamp"),
            "channel": data.get("channel"), "ins": data.get("ins"),
            "source_id": data.get("source_id")}
