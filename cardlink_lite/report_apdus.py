"""One OTA session's APDUs as the report's exchanges: a command and the response after it,
with its channel, name and status-word meaning."""

from __future__ import annotations

from itertools import islice

from .apdu import command_header
from .models import CommLog
from .status_words import MORE_DATA_PREFIXES, describe_status_word

__all__ = ["aware_utc", "ins_name", "session_exchanges", "sw_kind"]


def session_exchanges(session_id: str, limit: int) -> tuple[list[dict], int, float]:
    """The session's first ``limit`` exchanges, how many more it has and their latencies'
    sum (rows streamed)."""
    query = (CommLog.select(CommLog.timestamp, CommLog.direction, CommLog.raw_data,
                            CommLog.decoded_data, CommLog.status_word, CommLog.latency_ms,
                            CommLog.channel)
             .where(CommLog.session == session_id)
             .order_by(CommLog.timestamp, CommLog.id))
    exchanges = _paired(query.tuples().iterator())
    shown, more, more_ms = list(islice(exchanges, limit)), 0, 0.0
    for exchange in exchanges:
        more += 1
        more_ms += exchange["latency_ms"] or 0
    return shown, more, more_ms


def _paired(rows):
    pending = None
    for timestamp, direction, raw, decoded, sw, latency, channel in rows:
        direction = str(direction)
        if direction == "response" and pending is not None:
            _add_response(pending, raw, sw, latency)
            yield pending
            pending = None
            continue
        if pending is not None:  # a command without a response
            yield pending
        pending = _exchange(timestamp, direction, raw, decoded, sw, latency, channel)
        if direction != "command":
            yield pending
            pending = None
    if pending is not None:
        yield pending


def _exchange(timestamp, direction, raw, decoded, sw, latency, channel) -> dict:
    exchange = {"at": aware_utc(timestamp), "command": None, "name": decoded,
                "response": None, "sw": None, "sw_kind": None, "meaning": None,
                "latency_ms": None, "channel": channel}
    if direction == "command":
        exchange["command"] = raw
        if channel is None:
            exchange["channel"] = command_header((raw or "").upper())[0]
        if not decoded:
            exchange["name"] = ins_name(raw[2:4] if raw else None)
    elif direction == "response":
        _add_response(exchange, raw, sw, latency)
        exchange["name"] = decoded or "response without a command"
    else:
        exchange["name"] = decoded or direction.upper()
        exchange["response"] = raw
    return exchange


def _add_response(exchange, raw, sw, latency) -> None:
    exchange["response"] = raw
    sw = sw or (raw[-4:] if raw and len(raw) >= 4 and not raw.endswith("...") else None)
    if sw:
        try:
            exchange["meaning"] = describe_status_word(sw)
        except ValueError:  # not a status word: shown without one
            pass
        else:
            exchange["sw"] = sw.upper()
            exchange["sw_kind"] = sw_kind(sw)
    exchange["latency_ms"] = None if latency is None else float(latency)


def sw_kind(sw: str) -> str:
    """success, more (more data / a pending proactive command), warning or error."""
    sw = sw.upper()
    if sw == "9000" or sw.startswith("92"):
        return "success"
    if sw.startswith(MORE_DATA_PREFIXES) or sw in ("6310", "62F1"):
        return "more"
    if sw.startswith(("62", "63", "6C")):
        return "warning"
    return "error"


# Instruction names for commands logged without one (ISO 7816-4, TS 102 221, GP).
_INS_NAMES = {
    "04": "DEACTIVATE FILE", "0E": "ERASE BINARY", "10": "TERMINAL PROFILE",
    "12": "FETCH", "14": "TERMINAL RESPONSE", "20": "VERIFY", "24": "CHANGE PIN",
    "2C": "UNBLOCK PIN", "32": "INCREASE", "44": "ACTIVATE FILE", "50": "INITIALIZE UPDATE",
    "70": "MANAGE CHANNEL", "73": "MANAGE SECURE CHANNEL", "75": "TRANSACT DATA",
    "82": "EXTERNAL AUTHENTICATE", "84": "GET CHALLENGE", "88": "AUTHENTICATE",
    "A2": "SEARCH RECORD", "A4": "SELECT", "AA": "TERMINAL CAPABILITY",
    "B0": "READ BINARY", "B2": "READ RECORD", "C0": "GET RESPONSE", "C2": "ENVELOPE",
    "CA": "GET DATA", "CB": "GET DATA", "D6": "UPDATE BINARY", "D8": "PUT KEY",
    "DC": "UPDATE RECORD", "E2": "STORE DATA", "E4": "DELETE", "E6": "INSTALL",
    "E8": "LOAD", "F0": "SET STATUS", "F2": "GET STATUS", "F8": "SUSPEND UICC",
}


def ins_name(ins) -> str:
    if not ins:
        return "(unknown command)"
    ins = str(ins).upper()
    name = _INS_NAMES.get(ins)
    return f"{name} (INS {ins})" if name else f"INS {ins}"


def aware_utc(value):
    """A stored timestamp (datetime, or SQLite's text) as an aware UTC datetime."""
    return CommLog.timestamp.python_value(value)
