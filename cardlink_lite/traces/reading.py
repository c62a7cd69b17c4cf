"""One entry point over every reader: pick the format (given or detected) and stream records."""

from __future__ import annotations

from datetime import datetime, timezone

from .apdu4j import read_apdu4j
from .detect import FORMATS, SNIFF_BYTES, detect_format
from .gsmtap import read_gsmtap
from .hexlogs import HEX_FORMATS, read_hex_log
from .records import ReadStats, TraceFormatError
from .textlines import text_lines

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
        records = read_gsmtap(fp, stats, head)
    elif found == "apdu4j":
        records = read_apdu4j(text_lines(fp, head), stats, start)
    elif found in HEX_FORMATS:
        records = read_hex_log(found, text_lines(fp, head), stats, start)
    else:  # pragma: no cover - FORMATS and the readers list the same names
        raise TraceFormatError(f"no reader for {found}")
    return found, records, stats
