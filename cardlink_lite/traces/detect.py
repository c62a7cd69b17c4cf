"""Recognise a trace file's format from its content (never from its name)."""

from __future__ import annotations

from datetime import datetime, timezone

from .apdu4j import looks_like_apdu4j
from .capture import PCAP_MAGICS, PCAPNG_MAGIC
from .hexlogs import is_consistent_command, is_plausible_response
from .records import TraceFormatError
from .textlines import Clock, hex_bytes, split_timestamp

__all__ = ["FORMATS", "SNIFF_BYTES", "detect_format"]

# Every format, in the order auto-detection tries them.
FORMATS = ("pcapng", "pcap", "apdu4j", "pysim-shell", "pyscard", "tca-loader", "hex-lines",
           "pysim-hex")
SNIFF_BYTES = 1 << 16
_HEAD_LINES = 200


def _text_head(head: bytes) -> list[str] | None:
    if b"\x00" in head:
        return None
    cut = head.rfind(b"\n") if len(head) >= SNIFF_BYTES else len(head)
    text = head[:cut if cut > 0 else len(head)].decode("utf-8", errors="replace")
    if text.count("\ufffd") > len(text) // 100 + 1:
        return None
    clock = Clock(datetime.now(timezone.utc))
    lines = []
    for raw in text.splitlines():
        line = raw.strip()
        if line:
            lines.append(split_timestamp(line, clock)[1].strip())
        if len(lines) >= _HEAD_LINES:
            break
    return lines


def _starts(lines, *prefixes) -> int:
    return sum(1 for line in lines if line.startswith(prefixes))


def _hex_kind(lines: list[str]) -> str | None:
    data = [hex_bytes(line) for line in lines if not line.startswith(("#", "//", ";"))]
    if not data or any(d is None for d in data):
        return None
    # drop a last odd line that may have been cut by the sniff window
    pairs = data if len(data) % 2 == 0 or len(data) < 3 else data[:-1]
    if all(is_consistent_command(c) for c in pairs[0::2]) and \
            all(is_plausible_response(r) for r in pairs[1::2]) and len(pairs) >= 2:
        return "hex-lines"
    if all(len(d) >= 6 and is_plausible_response(d) for d in data):
        return "pysim-hex"
    return None


def detect_format(head: bytes) -> str:
    """The format of a file whose first bytes are ``head`` (up to SNIFF_BYTES of them).

    Raises TraceFormatError naming every format tried when none fits.
    """
    if head[:4] == PCAPNG_MAGIC:
        return "pcapng"
    if head[:4] in PCAP_MAGICS:
        return "pcap"
    lines = _text_head(head)
    if lines:
        if looks_like_apdu4j(lines):
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
        kind = _hex_kind(lines)
        if kind:
            return kind
    what = "a text file" if lines else ("an empty file" if not head else "a binary file")
    raise TraceFormatError(
        f"not a trace this tool can read ({what}); tried: {', '.join(FORMATS)}. "
        "Pass --format to name it if it is one of them"
    )
