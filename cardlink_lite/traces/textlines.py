"""What the line-based trace formats share: streamed lines, leading timestamps, hex, pairing."""

from __future__ import annotations

import codecs
import io
import re
from datetime import datetime, timedelta, timezone

from ..errors import quote
from .records import ATR, EXCHANGE, MAX_APDU, RESET, ReadStats, too_long

__all__ = ["COMMAND", "EXCHANGE_LINE", "LATENCY", "RESPONSE", "TIMED_RESPONSE", "Alternation",
           "hex_bytes", "read_lines", "split_timestamp", "text_lines"]

# The kinds of (kind, value) events a line parser returns, besides ATR, RESET and "time".
COMMAND, RESPONSE, EXCHANGE_LINE, LATENCY, TIMED_RESPONSE = "C", "R", "X", "L", "RL"

_TIMESTAMP = re.compile(
    r"\s*\[?(?:(?P<date>\d{4}-\d{2}-\d{2})[T ])?(?P<time>\d{2}:\d{2}:\d{2}(?:[.,]\d{1,9})?)"
    r"(?P<zone>Z|[+-]\d{2}:?\d{2})?\]?\s*[|:-]?\s+"
    r"|\s*\[?(?P<epoch>\d{9,10}\.\d{1,9})\]?\s*[|:-]?\s+"
)
_NOT_HEX = re.compile(r"[^0-9A-Fa-f]")
MAX_LINE = 1 << 19  # characters: a longest APDU as spaced hex ("00 A4 ..."), and then some
LONG_LINE = "\x00 a line over MAX_LINE characters"  # text_lines yields this very object
_UTC = timezone.utc


def hex_bytes(text: str) -> bytes | None:
    """Bytes of hex text with spaces (``"00 A4 04 00"``), or None if it is not whole hex bytes."""
    text = text.replace(" ", "").replace("\t", "")
    if not text or len(text) % 2 or _NOT_HEX.search(text):
        return None
    return bytes.fromhex(text)


class Alternation:
    """Commands and responses on alternating hex lines."""

    def __init__(self):
        self.expect_command = True

    def event(self, text: str):
        data = hex_bytes(text)
        if data is None:
            return f"not hex: {text[:24]!r}"
        kind = COMMAND if self.expect_command else RESPONSE
        self.expect_command = not self.expect_command
        return kind, data


class Clock:
    """Timestamps to ns since the epoch; a time of day alone takes the day of ``start`` and
    rolls over at midnight."""

    def __init__(self, start: datetime):
        self.day = start.astimezone(_UTC).date()
        self.last = None

    def ns(self, match: re.Match) -> int:
        if match.group("epoch"):
            seconds, _, frac = match.group("epoch").partition(".")
            return int(seconds) * 1_000_000_000 + int(frac.ljust(9, "0")[:9])
        clock, _, frac = match.group("time").replace(",", ".").partition(".")
        zone = match.group("zone") or "+00:00"
        if zone == "Z":
            zone = "+00:00"
        elif ":" not in zone:
            zone = zone[:3] + ":" + zone[3:]
        date = match.group("date")
        when = datetime.fromisoformat(f"{date or self.day.isoformat()}T{clock}{zone}")
        if date is not None:
            self.day = when.astimezone(_UTC).date()
        elif self.last is not None and when < self.last - timedelta(hours=12):
            self.day += timedelta(days=1)
            when += timedelta(days=1)
        self.last = when
        return int(when.timestamp()) * 1_000_000_000 + int(frac.ljust(9, "0")[:9])


def split_timestamp(line: str, clock: Clock | None):
    """(ns or None, rest of the line) for a line that may begin with a timestamp; in place of
    the ns, what is wrong with a timestamp that is no real time or outside the stored range."""
    if clock is None or not line[:1].isdigit() and line[:1] not in "[ ":
        return None, line
    match = _TIMESTAMP.match(line)
    if match is None:
        return None, line
    try:
        return clock.ns(match), line[match.end():]
    except (ValueError, OverflowError):  # 2024-02-30; 9999-12-31 23:59:59-05:00 in UTC
        stamp = quote(line[:match.end()].strip(" \t[]|:-"))
        return (f"timestamp {stamp} is not a date and time inside 0001-01-01..9999-12-31 (UTC)",
                line[match.end():])


def text_lines(fp, first: bytes = b""):
    """Decoded lines of a binary file (UTF-8 without a leading byte-order mark, undecodable
    bytes replaced), streamed; a line over MAX_LINE characters is LONG_LINE, never built."""
    decoder = io.IncrementalNewlineDecoder(codecs.getincrementaldecoder("utf-8-sig")("replace"),
                                           translate=True)
    chunk, pending, size, long = first or fp.read(1 << 16), [], 0, False
    while True:
        text = decoder.decode(chunk, final=not chunk)
        if "\n" in text:
            lines = text.split("\n")
            # An unfinished line is joined once, not recopied for every chunk it spans.
            lines[0] = LONG_LINE if long or size + len(lines[0]) > MAX_LINE else (
                "".join(pending) + lines[0])
            pending = [lines.pop()]
            size, long = len(pending[0]), False
            yield from lines
        elif not long:
            pending.append(text)
            size += len(text)
            if size > MAX_LINE:
                pending, size, long = [], 0, True
        if not chunk:
            break
        chunk = fp.read(1 << 16)
    rest = "".join(pending)
    if long or rest:
        yield LONG_LINE if long else rest


def read_lines(lines, parse, stats: ReadStats, start: datetime, timestamps: bool = True,
               advance: bool = False):
    """Trace records from ``lines``; ``advance`` times lines without a time from ``start``,
    advanced by each latency (a format that measures latency but writes no time: a response
    after its command, not before). ``parse(text)`` gives None to skip, an error text (counted,
    with its line number) or an event: (COMMAND, bytes), (RESPONSE, bytes incl. SW), (ATR, bytes),
    (EXCHANGE_LINE, (cmd, rsp)), (RESET, None), (LATENCY, ms to next response), ("time", ns),
    (TIMED_RESPONSE, (bytes incl. SW, ms or None)): a response with its own latency."""
    clock = Clock(start) if timestamps else None
    pending = None       # (ts, command) waiting for its response
    latency = None
    # the format's own start time (apdu4j header) or ``start`` (as the importer rounds it),
    # advanced by latency
    base_ns = int(start.timestamp() * 1000) * 1_000_000 if advance else None
    for number, line in enumerate(lines, 1):
        if line is LONG_LINE:
            stats.skip("unreadable line")
            stats.damage(f"line {number}", f"longer than {MAX_LINE:,} characters; skipped")
            continue
        line = line.strip()
        if not line:
            continue
        ts, text = split_timestamp(line, clock)
        event = ts if type(ts) is str else parse(text)
        if event is None:
            continue
        if type(event) is str:
            stats.skip("unreadable line")
            stats.damage(f"line {number}", event)
            continue
        kind, value = event
        timed = kind == TIMED_RESPONSE
        if timed:
            kind, (value, ms) = RESPONSE, value
        if type(value) is bytes and len(value) > MAX_APDU or kind == EXCHANGE_LINE and (
                len(value[0]) > MAX_APDU or len(value[1]) > MAX_APDU):
            stats.skip("APDU too long")
            stats.damage(f"line {number}", too_long(max(len(value[0]), len(value[1]))
                                                    if kind == EXCHANGE_LINE else len(value)))
            continue
        if timed:
            latency = ms
        if ts is None and base_ns is not None:
            ts = base_ns
        if pending is not None and (kind == COMMAND or kind == ATR or kind == RESET):
            yield EXCHANGE, pending[0], pending[1], None, None, None  # no answer
            pending = None
        if kind == COMMAND:
            pending = (ts, value)
        elif kind == RESPONSE:
            if pending is None:
                stats.skip("response without a command")
                continue
            if latency is not None and base_ns is not None:
                base_ns += int(latency * 1_000_000)
            yield EXCHANGE, pending[0], pending[1], value, latency, ts
            pending = latency = None
        elif kind == EXCHANGE_LINE:
            yield EXCHANGE, ts, value[0], value[1], None, None
        elif kind == LATENCY:
            latency = value
        elif kind == "time":
            base_ns = value
        else:  # ATR or RESET
            yield kind, ts, value if kind == ATR else b"", None, None, None
    if pending is not None:
        stats.open_exchange = True
        yield EXCHANGE, pending[0], pending[1], None, None, None
