"""apdu4j dumps: ``# ATR:`` header, alternating C-APDU / R-APDU lines, ``# Received in NNms``."""

from __future__ import annotations

import re
from datetime import datetime

from .records import ATR
from .textlines import LATENCY, Alternation, hex_bytes

__all__ = ["apdu4j_parser", "looks_like_apdu4j"]

_GENERATED = re.compile(r"#\s*Generated on (.+?) by apdu4j", re.I)
_RECEIVED = re.compile(r"#\s*Received in (\d+(?:\.\d+)?)\s*ms", re.I)
_ATR = re.compile(r"#\s*ATR:\s*([0-9A-Fa-f ]+)\s*$")


def looks_like_apdu4j(head: list[str]) -> bool:
    """True when the first lines carry apdu4j's header or its Sent/Received comments."""
    return any(_GENERATED.match(line) or _ATR.match(line) or _RECEIVED.match(line)
               or line.strip() == "# Sent" for line in head)


def apdu4j_parser():
    """A line parser for ``read_lines(..., timestamps=False)``: apdu4j writes no per-APDU time,
    so rows are timed from the ``# Generated on`` header advanced by each response's latency."""
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
                except ValueError:
                    return None
                return "time", int(when.timestamp()) * 1_000_000_000
            if text.strip() == "# Sent":
                lines.expect_command = True
            return None
        return lines.event(text)

    return parse
