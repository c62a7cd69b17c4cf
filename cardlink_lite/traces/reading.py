"""One entry point over every reader: pick the format (given or detected) and stream records."""

from __future__ import annotations

from datetime import datetime, timezone

from .apdu4j import apdu4j_parser
from .detect import FORMATS, SNIFF_BYTES, detect_format
from .gsmtap import read_gsmtap
from .hexlogs import HEX_FORMATS
from .records import ReadStats, TraceFormatError
from .textlines import read_lines, text_lines

__all__ = ["read_trace"]


def read_trace(fp, fmt: str = "auto", start: datetime | None = None):
    """``(format, records, stats)`` for the binary file object ``fp``.

    ``records`` is a generator (see :mod:`.records`); ``stats`` fills in as it runs.
    ``start`` dates text traces whose lines carry only a time of day (default: now).
    """
    if fmt != "auto" and fmt not in FORMATS:
        raise TraceFormatError(f"unknown trace format {fmt!r}; use auto or one of: "
                               f"{', '.join(FORMATS)}")
    head = fp.read(SNIFF_BYTES)
    found = detect_format(head) if fmt == "auto" or fmt in ("pcap", "pcapng") else fmt
    if fmt in ("pcap", "pcapng") and found != fmt:
        raise TraceFormatError(f"not a {fmt} file (its content looks like {found}); "
                               "use --format auto")
    start = start or datetime.now(timezone.utc)
    stats = ReadStats()
    if found in ("pcap", "pcapng"):
        return found, read_gsmtap(fp, stats, head), stats
    parse = apdu4j_parser() if found == "apdu4j" else HEX_FORMATS[found]()
    records = read_lines(text_lines(fp, head), parse, stats, start, timestamps=found != "apdu4j")
    return found, records, stats
