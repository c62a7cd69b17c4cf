"""Hex line logs as benches print them: pyscard's console observer, pySim-shell's
``apdu_trace``, pySim-trace's ``stdin-hex``, tca-loader logs and plain alternating lines."""

from __future__ import annotations

import re

from .decode import split_t0_exchange
from .records import RESET
from .textlines import COMMAND, EXCHANGE_LINE, RESPONSE, Alternation, hex_bytes

__all__ = ["HEX_FORMATS", "is_consistent_command", "is_plausible_response"]

_PYSCARD_EMPTY = re.compile(r"<\s*\[\]\s*")


def is_plausible_response(data: bytes | None) -> bool:
    """At least a status word, SW1 in 61-6F or 90-9F."""
    return data is not None and len(data) >= 2 and (0x61 <= data[-2] <= 0x6F
                                                     or 0x90 <= data[-2] <= 0x9F)


def is_consistent_command(data: bytes | None) -> bool:
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
HEX_FORMATS = {
    "pyscard": lambda: _pyscard,
    "pysim-shell": lambda: _pysim_shell,
    "pysim-hex": lambda: _stdin_hex,
    "tca-loader": lambda: _tca_loader,
    "hex-lines": _plain,
}
