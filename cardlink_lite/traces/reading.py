"""Pick a trace file's format (given, or recognised from its content) and stream its records."""

from __future__ import annotations

from datetime import datetime, timezone

from .capture import PCAP_MAGICS, PCAPNG_MAGIC
from .gsmtap import read_gsmtap
from .hexlogs import PARSERS, text_format
from .records import ReadStats, TraceFormatError
from .textlines import Clock, read_lines, split_timestamp, text_lines

__all__ = ["FORMATS", "SNIFF_BYTES", "detect_format", "read_trace"]

# Every format, in the order auto-detection tries them.
FORMATS = ("pcapng", "pcap", "gppro", "apdu4j", "pysim-shell", "pyscard", "tca-loader",
           "hex-lines", "pysim-hex")
SNIFF_BYTES = 1 << 16


def _text_head(head: bytes) -> list[str] | None:
    """The first 200 non-blank lines without their timestamps; None for binary content."""
    if b"\x00" in head:
        return None
    cut = head.rfind(b"\n") if len(head) >= SNIFF_BYTES else len(head)
    text = head[:cut if cut > 0 else len(head)].decode("utf-8-sig", errors="replace")
    if text.count("\ufffd") > len(text) // 100 + 1:
        return None
    clock = Clock(datetime.now(timezone.utc))
    lines = []
    for raw in text.splitlines():
        line = raw.strip()
        if line:
            lines.append(split_timestamp(line, clock)[1].strip())
        if len(lines) >= 200:
            break
    return lines


# Files no reader takes as they are, by their first bytes: what to do first.
_WRAPPED = {b"\x1f\x8b": "a gzip-compressed file; decompress it first (gunzip)",
            b"\xff\xfe": "UTF-16 text; convert it to UTF-8 first (iconv -f UTF-16 -t UTF-8)",
            b"\xfe\xff": "UTF-16 text; convert it to UTF-8 first (iconv -f UTF-16 -t UTF-8)"}


def detect_format(head: bytes) -> str:
    """The format of a file whose first bytes (up to SNIFF_BYTES) are ``head``."""
    if head[:4] == PCAPNG_MAGIC:
        return "pcapng"
    if head[:4] in PCAP_MAGICS:
        return "pcap"
    lines = None if head[:2] in _WRAPPED else _text_head(head)
    found = text_format(lines) if lines else None
    if found:
        return found
    what = _WRAPPED.get(head[:2]) or (
        "a text file" if lines else ("an empty file" if not head else "a binary file"))
    raise TraceFormatError(
        f"not a trace this tool can read ({what}); tried: {', '.join(FORMATS)}. "
        "Pass --format to name it if it is one of them"
    )


def read_trace(fp, fmt: str = "auto", start: datetime | None = None):
    """``(format, records, stats)`` of the binary file ``fp``: records is a generator, stats
    fills in as it runs. ``start`` dates lines that carry only a time of day (default: now)."""
    if fmt != "auto" and fmt not in FORMATS:
        raise TraceFormatError(f"unknown trace format {fmt!r}; use auto or one of: "
                               f"{', '.join(FORMATS)}")
    head = fp.read(SNIFF_BYTES)
    wrapped = fmt != "auto" and _WRAPPED.get(head[:2])
    if wrapped:
        raise TraceFormatError(f"not a {fmt} file as it is ({wrapped})")
    try:
        found = detect_format(head) if fmt == "auto" or fmt in ("pcap", "pcapng") else fmt
    except TraceFormatError:
        if fmt == "auto":
            raise
        raise TraceFormatError(f"not a {fmt} file: it does not start with a {fmt} header, "
                               "and is no other trace this tool reads") from None
    if fmt in ("pcap", "pcapng") and found != fmt:
        raise TraceFormatError(f"not a {fmt} file (its content looks like {found}); "
                               "use --format auto")
    stats = ReadStats()
    if found in ("pcap", "pcapng"):
        return found, read_gsmtap(fp, stats, head), stats
    records = read_lines(text_lines(fp, head), PARSERS[found](), stats,
                         start or datetime.now(timezone.utc), timestamps=found != "apdu4j",
                         advance=found == "gppro")
    return found, records, stats
