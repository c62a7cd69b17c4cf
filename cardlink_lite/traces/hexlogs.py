"""The line formats: apdu4j dumps, GlobalPlatformPro ``-d`` logs, pyscard's console observer,
pySim-shell's ``apdu_trace``, pySim-trace's ``stdin-hex``, tca-loader logs and plain alternating
hex lines."""

from __future__ import annotations

import re
from datetime import datetime

from ..errors import quote
from .decode import split_t0_exchange
from .records import ATR, RESET
from .textlines import (
    COMMAND,
    EXCHANGE_LINE,
    LATENCY,
    RESPONSE,
    TIMED_RESPONSE,
    Alternation,
    hex_bytes,
)

__all__ = ["PARSERS", "text_format"]

_GENERATED = re.compile(r"#\s*Generated on (.+?) by apdu4j", re.I)
_RECEIVED = re.compile(r"#\s*Received in (\d+(?:\.\d+)?)\s*ms", re.I)
_ATR = re.compile(r"#\s*ATR:\s*([0-9A-Fa-f ]+)\s*$")
_PYSCARD_EMPTY = re.compile(r"<\s*\[\]\s*")
# apdu4j's LoggingCardTerminal, which GlobalPlatformPro's -d turns on: "A>> T=1 (4+0008)
# 80500000 08 <data> 00" (the data length in decimal, then the APDU in up to four hex groups)
# and "A<< (0028+2) (1s204ms) <data> 9000"; "B>> T=1 (5) <hex>" / "B<< (2) <hex>" count bytes.
_GP_COMMAND = re.compile(r"A>>\s+(?:[^\s(]\S*\s+)?\(4\+(\d{1,6})\)([\s0-9A-Fa-f]+)$")
_GP_RESPONSE = re.compile(
    r"A<<\s+\((\d{1,6})\+2\)\s*(?:\((?:(\d+)s)?(\d+(?:\.\d+)?)ms\))?([\s0-9A-Fa-f]+)$")
_GP_BUFFER = re.compile(r"B(>>|<<)\s+(?:[^\s(]\S*\s+)?\((\d{1,6})\)([\s0-9A-Fa-f]+)$")
_GP_CONNECT_ATR = re.compile(r"SCardConnect\(.*\)\s*->\s*[^\s,]+,\s*([0-9A-Fa-f]+)$")
_GP_ATR = re.compile(r"(?:#\s*)?ATR:\s*([0-9A-Fa-f ]+)$")


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


def _data_length(apdu: bytes) -> int | None:
    """Nc of a command APDU (ISO 7816-4 §5.1, short or extended), None if its length agrees
    with no case."""
    n = len(apdu)
    if n <= 5:
        return 0 if n == 4 or n == 5 else None
    p3 = apdu[4]
    if p3:
        return p3 if n in (5 + p3, 6 + p3) else None
    if n == 7:
        return 0
    lc = apdu[5] << 8 | apdu[6]
    return lc if lc > 0 and n in (7 + lc, 9 + lc) else None


def _gppro():
    connect_atr = None  # GlobalPlatformPro repeats the ATR SCardConnect gave on an "ATR:" line

    def parse(text: str):
        nonlocal connect_atr
        if text.startswith(("A>>", "A<<", "B>>", "B<<")):
            return _gppro_apdu(text)
        if text.startswith("SCardConnect("):
            match = _GP_CONNECT_ATR.match(text)
            connect_atr = hex_bytes(match.group(1)) if match else None
            return (ATR, connect_atr) if connect_atr else None  # no ATR, or a failed connect
        match = _GP_ATR.match(text)
        atr = hex_bytes(match.group(1)) if match else None
        if atr is None or atr == connect_atr:
            return None  # [INFO] / [DEBUG] lines, "# " comments, SCardDisconnect, "<< error"
        connect_atr = atr
        return ATR, atr

    return parse


def _gppro_apdu(text: str):
    if text[0] == "B":
        match = _GP_BUFFER.match(text)
        data = match and hex_bytes(match.group(3))
        if not data or len(data) != int(match.group(2)) or len(data) < (
                4 if match.group(1) == ">>" else 2):
            return f"not an apdu4j {text[:3]} line: {text[:24]!r}"
        return (COMMAND if match.group(1) == ">>" else RESPONSE), data
    if text[1] == ">":
        match = _GP_COMMAND.match(text)
        data = match and hex_bytes(match.group(2))
        if not data:
            return f"not an apdu4j A>> line: {text[:24]!r}"
        if _data_length(data) != int(match.group(1)):
            return (f"command announces {int(match.group(1))} data bytes but its APDU does not "
                    f"hold them: {text[:24]!r}")
        return COMMAND, data
    match = _GP_RESPONSE.match(text)
    data = match and hex_bytes(match.group(4))
    if not data or len(data) < 2:
        return f"not an apdu4j A<< line: {text[:24]!r}"
    if len(data) - 2 != int(match.group(1)):
        return (f"response announces {int(match.group(1))} data bytes but holds "
                f"{len(data) - 2}: {text[:24]!r}")
    seconds, ms = match.group(2, 3)
    latency = None if ms is None else int(seconds or 0) * 1000 + float(ms)
    return TIMED_RESPONSE, (data, latency)


def _pyscard_response(text: str) -> bytes | None:
    """The bytes after "<" (or "<  []"); pyscard before its "%02X" wrote the status word with
    "%-2X", so an SW2 under 10 is one digit ("90 0"), the only such token on the line."""
    data = hex_bytes(text)
    if data is None:
        tokens = text.split()
        if len(tokens) >= 2 and len(tokens[-1]) == 1 and all(len(t) == 2 for t in tokens[:-1]):
            data = hex_bytes("".join(tokens[:-1]) + "0" + tokens[-1])
            return data if _plausible_response(data) else None
    return data


def _pyscard(text: str):
    if text.startswith(">"):
        data = hex_bytes(text[1:])
        return (COMMAND, data) if data else f"command not hex: {text[:24]!r}"
    if text.startswith("<"):
        match = _PYSCARD_EMPTY.match(text)
        data = _pyscard_response(text[match.end():] if match else text[1:])
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
    "gppro": _gppro,
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
    return data is not None and _data_length(data) is not None


def _starts(lines, *prefixes) -> int:
    return sum(1 for line in lines if line.startswith(prefixes))


def text_format(lines: list[str]) -> str | None:
    """The line format of a file's first lines (timestamps removed), or None."""
    if _starts(lines, "A>>", "B>>") and _starts(lines, "A<<", "B<<"):
        return "gppro"  # before apdu4j: GlobalPlatformPro may print a "# ATR:" line too
    if any(_GENERATED.match(line) or _ATR.match(line) or _RECEIVED.match(line)
           or line.strip() == "# Sent" for line in lines):
        return "apdu4j"
    arrows = [line for line in lines if line.startswith(("->", "<-"))]
    if arrows and _starts(arrows, "<-") and _starts(arrows, "->"):
        return "pysim-shell"
    angled = [line for line in lines if line.startswith((">", "<"))]
    if angled and _starts(angled, "<") and _starts(angled, ">") and \
            all(hex_bytes(line[1:]) if line[0] == ">" else
                _pyscard_response(line[1:].replace("[]", "")) for line in angled):
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
