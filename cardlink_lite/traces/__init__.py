"""Bench traces in: GSMTAP-SIM captures, apdu4j dumps and hex logs, decoded and stored."""

from .decode import channel_of, command_name, decode_exchange, describe_atr, split_t0_exchange
from .load import ImportSummary, import_trace
from .reading import FORMATS, detect_format, read_trace
from .records import TraceFormatError

__all__ = [
    "FORMATS",
    "ImportSummary",
    "TraceFormatError",
    "channel_of",
    "command_name",
    "decode_exchange",
    "describe_atr",
    "detect_format",
    "import_trace",
    "read_trace",
    "split_t0_exchange",
]
