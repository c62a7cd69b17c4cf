"""The line formats: apdu4j dumps, pyscard's console observer, pySim-shell's ``apdu_trace``,
pySim-trace's ``stdin-hex``, tca-loader logs and plain alternating hex lines."""

from __future__ import annotations

import re
from datetime import datetime

from ..errors import quote
from .decode import split_t0_exchange
from .records import ATR, RESET
from .textlines import COMMAND, EXCHANGE_LINE, LATENCY, RESPONSE, Alternation, hex_bytes

__all__ = ["PARSERS", "text_format"]

_GENERATED = re.compile(r"#\s*Generated on (.+?) by apdu4j", re.I)
_RECEIVED = re.compile(r"#\s*Received in (\d+(?:\.\d+)?)\s*ms", re.I)
_ATR = re.compile(r"#\s*ATR:\s*([0-9A-Fa-f ]+)\s*$")
_PYSCARD_EMPTY = re.compile(r"<\s*\[\]\s*")


def _apdu4j():
    # apdu4j writes no per-APDU time: rows are timed from the "Generated on" header, advanced
    # by each response's latency (read with timestamps=False).
    lines = Alternation()

    def parse(text: str):
        if text.startswith("#"):
            match = _RECEIVED.match(text)
            if match:
                return LATENCY, float(match.group(1))
            match = _ATR.match(text)
            if match:
                atr = hex_bytes(match.group(1))
                return (ATR, atr) if atr else "ATR comment without hex"
            match = _GENERATED.match(text)
            if match:
                try:
                    when = datetime.strptime(match.group(1).strip(), "%a, %d %b %Y %H:%M:%S %z")
                except ValueError:  # the JVM's language: "Mo., 4 Mai 2020 17:31:15 +0200"
                    return ("'Generated on' date not in apdu4j's English form ('Mon, 4 May "
                            "2020 17:31:15 +0200'); rows are timed at the file's modification "
                            f"time instead: {quote(match.group(1).strip())}")
                return "time", int(when.timestamp()) * 1_000_000_000
            if text.strip() == "# Sent":
                lines.expect_command = True
            return None
        return lines.event(text)

    return parse


def _pyscard(text: str):
    if text.startswith(">"):
        data = hex_bytes(text[1:])
        return (COMMAND, data) if data else f"command not hex: {text[:24]!r}"
    if text.startswith("<"):
        match = _PYSCARD_EMPTY.match(text)
        data = hex_bytes(text[match.end():] if match else text[1:])
        return (RESPONSE, data) if data and len(data) >= 2 else f"response not hex: {text[:24]!r}"
    if text.startswith("reconnecting to"):
        return RESET, None
    return None  # connecting to / disconnecting from / release from


def _pysim_shell(text: str):
    if text.startswith("->"):
        data = hex_bytes(text[2:])
        return (COMMAND, data) if data else f"command not hex: {text[:24]!r}"
    if text.startswith("<-"):
        sw, _, rest = text[2:].partition(":")
        sw_bytes, data = hex_bytes(sw), hex_bytes(rest) if rest.strip() else b""
        if sw_bytes is None or len(sw_bytes) != 2 or data is None:
            return f"response not 'SW: hex': {text[:24]!r}"
        return RESPONSE, data + sw_bytes
    return None


def _stdin_hex(text: str):
    if text.startswith("C-APDU >"):
        text = text[8:]
    if text.startswith("#"):
        return None
    data = hex_bytes(text)
    if data is None or len(data) < 6:
        return f"not a hex exchange: {text[:24]!r}"
    return EXCHANGE_LINE, split_t0_exchange(data)


def _tca_loader(text: str):
    for word, kind in (("Command", COMMAND), ("Response", RESPONSE)):
        if text.startswith(word):
            data = hex_bytes(text[len(word):].strip(" :=\t"))
            return (kind, data) if data else f"{word.lower()} not hex: {text[:24]!r}"
    return None


def _plain():
    lines = Alternation()

    def parse(text: str):
        if text.startswith(("#", "//", ";")):
            return None
        return lines.event(text)

    return parse


# format name -> factory of its line parser
PARSERS = {
    "apdu4j": _apdu4j,
    "pyscard": lambda: _pyscard,
    "pysim-shell": lambda: _pysim_shell,
    "pysim-hex": lambda: _stdin_hex,
    "tca-loader": lambda: _tca_loader,
    "hex-lines": _plain,
}


def _plausible_response(data: bytes | None) -> bool:
    """At least a status word, SW1 in 61-6F or 90-9F."""
    return data is not None and len(data) >= 2 and (0x61 <= data[-2] <= 0x6F
                                                     or 0x90 <= data[-2] <= 0x9F)


def _consistent_command(data: bytes | None) -> bool:
    """A command APDU whose length agrees with its Lc/Le (ISO 7816-4 §5.1, short or extended)."""
    if data is None or len(data) < 4:
        return False
    n = len(data)
    if n <= 5:
        return True
    p3 = data[4]
    if p3:
        return n in (5 + p3, 6 + p3)
    if n == 7:
        return True
    lc = data[5] << 8 | data[6]
    return lc > 0 and n in (7 + lc, 9 + lc)


def _starts(lines, *prefixes) -> int:
    return sum(1 for line in lines if line.startswith(prefixes))


def text_format(lines: list[str]) -> str | None:
    """The line format of a file's first lines (timestamps removed), or None."""
    if any(_GENERATED.match(line) or _ATR.match(line) or _RECEIVED.match(line)
           or line.strip() == "# Sent" for line in lines):
        return "apdu4j"
    arrows = [line for line in lines if line.startswith(("->", "<-"))]
    if arrows and _starts(arrows, "<-") and _starts(arrows, "->"):
        return "pysim-shell"
    angled = [line for line in lines if line.startswith((">", "<"))]
    if angled and _starts(angled, "<") and _starts(angled, ">") and \
            all(hex_bytes(line[1:].replace("[]", "")) for line in angled):
        return "pyscard"
    if _starts(lines, "Command") and _starts(lines, "Response"):
        return "tca-loader"
    data = [hex_bytes(line) for line in lines if not line.startswith(("#", "//", ";"))]
    if not data or any(d is None for d in data):
        return None
    # drop a last odd line that may have been cut by the sniff window
    pairs = data if len(data) % 2 == 0 or len(data) < 3 else data[:-1]
    if all(_consistent_command(c) for c in pairs[0::2]) and \
            all(_plausible_response(r) for r in pairs[1::2]) and len(pairs) >= 2:
        return "hex-lines"
    if all(len(d) >= 6 and _plausible_response(d) for d in data):
        return "pysim-hex"
    return None
