"""The record shapes every trace reader yields, and what it reports besides."""

from __future__ import annotations

from collections import Counter

from ..errors import ValidationError

__all__ = ["ATR", "EXCHANGE", "MAX_APDU", "MAX_NS", "MIN_NS", "RESET", "ReadStats",
           "TraceFormatError", "too_long"]

# A record is a plain tuple, as readers make millions: (kind, ns since the epoch or None,
# command / ATR / b"", response incl. SW1 SW2 or None, latency ms or None, response ns or None).
EXCHANGE, ATR, RESET = "exchange", "atr", "reset"
# The times the store takes: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999999Z, in ns.
MIN_NS, MAX_NS = -62_135_596_800 * 10**9, 253_402_300_800 * 10**9 - 1
# The longest APDU a log row holds (apdu.MAX_RAW_HEX // 2); a longer one is damage.
MAX_APDU = 131_072


def too_long(size: int) -> str:
    """The damage text of an APDU of ``size`` bytes, over MAX_APDU."""
    return f"an APDU of {size:,} bytes, more than the {MAX_APDU:,} a log row holds; skipped"


class TraceFormatError(ValidationError):
    """The file is not in the format asked for (or in none of the formats tried)."""


class ReadStats:
    """What a reader met besides records: skipped input by reason, damage, a truncated tail."""

    def __init__(self):
        self.skipped: Counter = Counter()
        self.corrupt: list[str] = []   # the first 100 "offset N: ..." / "line N: ..."
        self.leftover_bytes = 0        # of an incomplete record at the end of a capture
        self.open_exchange = False     # the trace ends with a command and no response
        self.container = None          # "pcap" or "pcapng" for a capture

    def skip(self, reason: str) -> None:
        self.skipped[reason] += 1

    def damage(self, where: str, what: str) -> None:
        if len(self.corrupt) < 100:
            self.corrupt.append(f"{where}: {what}")
