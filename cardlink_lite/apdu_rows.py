"""APDU log rows checked and converted to the values the writer stores."""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone

from ._peewee import field_values
from .errors import ValidationError, quote
from .fields import storable_text
from .models import CommDirection, CommLog, OTASession
from .status_words import depends_on_command, describe_after_command, describe_status_word

__all__ = ["MAX_DECODED_CHARS", "MAX_MESSAGE_CHARS", "MAX_RAW_HEX", "channel_of",
           "check_small_ints", "check_text", "command_body", "command_facts", "command_header",
           "is_hex", "is_status_word", "latency_value", "normalize_hex", "now_text",
           "row_kwargs", "session_key", "stored_direction", "sw_message", "timestamp_text"]

# What every backend's comm_logs columns hold (MEDIUMTEXT on MariaDB, TEXT elsewhere):
# an extended-length APDU (64 KiB of data plus header and status word) fits twice over.
MAX_RAW_HEX = 262_144          # characters of hex: 131,072 bytes
MAX_DECODED_CHARS = 1_048_576  # at most 4 MiB of UTF-8, well inside MEDIUMTEXT's 16 MiB
MAX_MESSAGE_CHARS = 128

_ELISION = "..."

# Match a whole upper-case hex string / status word.
is_hex = re.compile(r"[0-9A-F]+").fullmatch
is_status_word = re.compile(r"[0-9A-F]{4}").fullmatch

# Every accepted spelling of a direction -> its stored value.
_DIRECTIONS = {key: member.value for member in CommDirection
               for key in (member.value, member.name, member.value.capitalize())}
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
    """Now as the timestamp column stores it (``fields.utc_now()``'s value); run once per
    logged APDU, so the date text is only rebuilt when the second changes."""
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
        raise ValidationError(f"{field} must be a hex string such as '00A40400'; got "
                              f"{type(value).__name__}", problems=[field])
    if not value.isascii():  # "ﬀ".upper() is "FF": only ASCII digits are hex digits
        raise ValidationError(f"{field} must be ASCII hex digits (0-9, A-F); got {quote(value)}",
                              problems=[field])
    text = value.upper()
    if is_hex(text) and not len(text) & 1:
        return _checked_length(text, field)
    text = "".join(text.split())
    elided = text.endswith(_ELISION)
    body = text[:-len(_ELISION)] if elided else text
    # An elided sample may stop mid-byte; a complete value must be whole bytes.
    if not body or not is_hex(body) or (len(body) & 1 and not elided):
        raise ValidationError(f"{field} must be whole bytes of hex digits (spaces allowed, a "
                              f"trailing '...' marks an elided sample); got {quote(value)}",
                              problems=[field])
    return _checked_length(text, field)


def _checked_length(text: str, field: str) -> str:
    if len(text) > MAX_RAW_HEX:
        raise ValidationError(
            f"{field} is {len(text):,} hex digits long; at most {MAX_RAW_HEX:,} "
            f"({MAX_RAW_HEX // 2:,} bytes) are stored", problems=[field])
    return text


def check_text(value, field: str, limit: int) -> str:
    """``value`` if every backend stores it: text, no NUL or lone surrogate, at most ``limit``."""
    if type(value) is not str:
        raise ValidationError(f"{field} must be text; got {type(value).__name__}",
                              problems=[field])
    if len(value) > limit:
        raise ValidationError(
            f"{field} is {len(value):,} characters long; at most {limit:,} are stored",
            problems=[field])
    return storable_text(value, field)


def latency_value(value) -> float:
    """A latency as stored: a finite number of milliseconds >= 0 (a bool is not one)."""
    number = -1.0
    if type(value) is not bool:
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            number = -1.0
    if not 0 <= number <= 1e300:  # also refuses NaN and infinity
        raise ValidationError(
            f"latency_ms must be a finite number of milliseconds >= 0; got {quote(value)}",
            problems=["latency_ms"])
    return number


def sw_message(sw: str, command: str | None = None) -> str:
    """``sw``'s meaning as stored in ``status_message``, as the answer to ``command`` (hex)."""
    text = _MESSAGES.get(sw)
    if text is None:  # "" marks a status word whose meaning depends on the command
        text = _MESSAGES[sw] = "" if depends_on_command(sw) else describe_status_word(sw)[:128]
    if text:
        return text
    ins, has_data = command_facts(command) if command else (None, True)
    return describe_after_command(sw, ins, has_data)[:128]


def command_facts(raw: str) -> tuple[int | None, bool]:
    """(INS, whether it carries data) of a command's upper-case hex."""
    ins = command_header(raw)[1]
    try:
        return ins, bool(command_body(bytes.fromhex(raw))[0])
    except ValueError:  # an elided ("...") command
        return ins, True


def command_body(cmd: bytes) -> tuple[bytes, int | None]:
    """(command data, Le) of a command APDU in short or extended form (ISO 7816-4 §5.1);
    a T=0 TPDU (``CLA INS P1 P2 P3 data``) reads as the short form."""
    n = len(cmd)
    if n <= 4:
        return b"", None
    p3 = cmd[4]
    if n == 5:
        return b"", p3 or 256
    if p3:
        if n == 5 + p3:
            return cmd[5:], None
        if n == 6 + p3:
            return cmd[5:-1], cmd[-1] or 256
        return cmd[5:], None
    # P3 = 00 and more bytes: extended length
    if n == 6:
        return cmd[5:], None  # one stray byte: not a well-formed APDU, kept as data
    if n == 7:
        return b"", (cmd[5] << 8 | cmd[6]) or 65536
    lc = cmd[5] << 8 | cmd[6]
    if n == 7 + lc:
        return cmd[7:], None
    if n == 9 + lc:
        return cmd[7:-2], (cmd[-2] << 8 | cmd[-1]) or 65536
    return cmd[5:], None


def session_key(session_id) -> str:
    """The stored key of an OTA session given as an OTASession, UUID or UUID text."""
    if isinstance(session_id, OTASession):
        session_id = session_id.id
    try:
        return OTASession.id.db_value(session_id)
    except ValidationError:
        raise ValidationError(f"session_id must be an OTA session's UUID; got "
                              f"{quote(session_id)}", problems=["session_id"]) from None


def timestamp_text(value) -> str:
    """A datetime or ISO 8601 text as the timestamp column stores it."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValidationError(f"timestamp must be a datetime or ISO 8601 text; got "
                                  f"{quote(value)}", problems=["timestamp"]) from None
    if not isinstance(value, datetime):
        raise ValidationError(f"timestamp must be a datetime; got {type(value).__name__}",
                              problems=["timestamp"])
    try:
        return CommLog.timestamp.db_value(value).isoformat(" ")
    except OverflowError:
        raise ValidationError(
            f"timestamp {value.isoformat()} is outside 0001-01-01..9999-12-31 once "
            "converted to UTC", problems=["timestamp"]) from None


_ROW_KEYS = ("session_id", "direction", "raw_data", "decoded_data", "status_word",
             "status_message", "latency_ms", "timestamp", "channel", "ins", "source_id")
# Schema 0003's integer columns: name -> (lowest, highest) accepted.
_INT_RANGES = {"channel": (0, 19), "ins": (0, 255), "source_id": (1, 2**31 - 1)}


def channel_of(cla: int) -> int | None:
    """The logical channel a CLA byte addresses (ISO 7816-4 §5.4.1 / TS 102 221 §10.1.1)."""
    if cla == 0xFF:
        return None  # PPS, not an APDU
    if (cla & 0xF0) == 0xA0:
        return 0  # GSM 11.11 class: no logical channels
    if cla & 0x40:
        return 4 + (cla & 0x0F)  # further interindustry / proprietary: channels 4-19
    return cla & 0x03


# Hex text of a byte -> (logical channel as a CLA, the byte as an INS): one dict lookup
# per logged command instead of int() parsing.
_HEADER_BYTES = {f"{b:02X}": (channel_of(b), b) for b in range(256)}
_NO_HEADER = (None, None)


def command_header(raw: str) -> tuple[int | None, int | None]:
    """(logical channel, INS) of a command's upper-case hex; (None, None) if too short."""
    cla = _HEADER_BYTES.get(raw[:2])
    ins = _HEADER_BYTES.get(raw[2:4])
    if cla is None or ins is None:
        return _NO_HEADER
    return cla[0], ins[1]


def check_small_ints(channel, ins, source_id) -> None:
    """Refuse a logical channel outside 0-19, an INS byte outside 0-255 or a bad source id."""
    for name, value in (("channel", channel), ("ins", ins), ("source_id", source_id)):
        low, high = _INT_RANGES[name]
        if value is not None and (type(value) is not int or not low <= value <= high):
            raise ValidationError(f"{name} must be a whole number {low}..{high}; got "
                                  f"{str(value)[:20]!r}", problems=[name])


def row_kwargs(row: dict | CommLog) -> dict:
    """A dict row or a CommLog as keyword arguments of ``ApduLogWriter.add``."""
    if isinstance(row, CommLog):
        data = field_values(row)
        return {key: data.get("session" if key == "session_id" else key) for key in _ROW_KEYS}
    row = dict(row)
    if "session" in row and "session_id" not in row:
        row["session_id"] = row.pop("session")
    unknown = set(row) - set(_ROW_KEYS)
    if unknown:
        raise ValidationError(f"unknown log field {sorted(unknown)[0]!r}; use "
                              f"{', '.join(_ROW_KEYS)}", problems=sorted(unknown))
    return row

