"""ETSI TS 102 223 card application toolkit: proactive commands, results, envelopes (data)."""

from __future__ import annotations

__all__ = [
    "ENVELOPE_KINDS",
    "EVENTS",
    "PROACTIVE_COMMANDS",
    "RESULTS",
    "describe_envelope",
    "describe_proactive",
    "describe_terminal_response",
]

# Type of command (TS 102 223 §9.4), the byte after the command number in Command details.
PROACTIVE_COMMANDS: dict[int, str] = {
    0x01: "REFRESH", 0x02: "MORE TIME", 0x03: "POLL INTERVAL", 0x04: "POLLING OFF",
    0x05: "SET UP EVENT LIST", 0x10: "SET UP CALL", 0x11: "SEND SS", 0x12: "SEND USSD",
    0x13: "SEND SHORT MESSAGE", 0x14: "SEND DTMF", 0x15: "LAUNCH BROWSER",
    0x16: "GEOGRAPHICAL LOCATION REQUEST", 0x20: "PLAY TONE", 0x21: "DISPLAY TEXT",
    0x22: "GET INKEY", 0x23: "GET INPUT", 0x24: "SELECT ITEM", 0x25: "SET UP MENU",
    0x26: "PROVIDE LOCAL INFORMATION", 0x27: "TIMER MANAGEMENT",
    0x28: "SET UP IDLE MODE TEXT", 0x30: "PERFORM CARD APDU", 0x31: "POWER ON CARD",
    0x32: "POWER OFF CARD", 0x33: "GET READER STATUS", 0x34: "RUN AT COMMAND",
    0x35: "LANGUAGE NOTIFICATION", 0x40: "OPEN CHANNEL", 0x41: "CLOSE CHANNEL",
    0x42: "RECEIVE DATA", 0x43: "SEND DATA", 0x44: "GET CHANNEL STATUS",
    0x45: "SERVICE SEARCH", 0x46: "GET SERVICE INFORMATION", 0x47: "DECLARE SERVICE",
    0x50: "SET FRAMES", 0x51: "GET FRAMES STATUS", 0x60: "RETRIEVE MULTIMEDIA MESSAGE",
    0x61: "SUBMIT MULTIMEDIA MESSAGE", 0x62: "DISPLAY MULTIMEDIA MESSAGE", 0x70: "ACTIVATE",
    0x71: "CONTACTLESS STATE CHANGED", 0x72: "COMMAND CONTAINER",
    0x73: "ENCAPSULATED SESSION CONTROL",
}

# General result (TS 102 223 §8.12), first byte of the Result data object.
RESULTS: dict[int, str] = {
    0x00: "command performed successfully",
    0x01: "performed with partial comprehension",
    0x02: "performed with missing information",
    0x03: "REFRESH performed with additional EFs read",
    0x04: "performed, requested icon could not be displayed",
    0x05: "performed but modified by call control",
    0x06: "performed, limited service",
    0x07: "performed with modification",
    0x08: "REFRESH performed but indicated NAA was not active",
    0x09: "performed, tone not played",
    0x10: "proactive session terminated by the user",
    0x11: "backward move requested by the user",
    0x12: "no response from user",
    0x13: "help information required by the user",
    0x20: "terminal currently unable to process command",
    0x21: "network currently unable to process command",
    0x22: "user did not accept the proactive command",
    0x23: "user cleared down call before connection or network release",
    0x24: "action in contradiction with the current timer state",
    0x25: "interaction with call control, temporary problem",
    0x26: "launch browser generic error",
    0x27: "MMS temporary problem",
    0x30: "command beyond terminal's capabilities",
    0x31: "command type not understood by terminal",
    0x32: "command data not understood by terminal",
    0x33: "command number not known by terminal",
    0x35: "SMS RP-ERROR",
    0x36: "error, required values are missing",
    0x38: "MultipleCard commands error",
    0x39: "interaction with call control, permanent problem",
    0x3A: "Bearer Independent Protocol error",
    0x3B: "access technology unable to process command",
    0x3C: "frames error",
    0x3D: "MMS error",
}

# ENVELOPE BER-TLV tags (TS 102 223 §9.1).
ENVELOPE_KINDS: dict[int, str] = {
    0xD1: "SMS-PP DOWNLOAD", 0xD2: "CELL BROADCAST DOWNLOAD", 0xD3: "MENU SELECTION",
    0xD4: "CALL CONTROL", 0xD5: "MO SHORT MESSAGE CONTROL", 0xD6: "EVENT DOWNLOAD",
    0xD7: "TIMER EXPIRATION", 0xD8: "USSD DOWNLOAD", 0xD9: "MMS TRANSFER STATUS",
    0xDA: "MMS NOTIFICATION DOWNLOAD", 0xDB: "TERMINAL APPLICATION",
    0xDC: "GEOGRAPHICAL LOCATION REPORTING", 0xDD: "ENVELOPE CONTAINER",
}

# Event list values (TS 102 223 §8.25) named in an EVENT DOWNLOAD.
EVENTS: dict[int, str] = {
    0x00: "MT CALL", 0x01: "CALL CONNECTED", 0x02: "CALL DISCONNECTED",
    0x03: "LOCATION STATUS", 0x04: "USER ACTIVITY", 0x05: "IDLE SCREEN AVAILABLE",
    0x06: "CARD READER STATUS", 0x07: "LANGUAGE SELECTION", 0x08: "BROWSER TERMINATION",
    0x09: "DATA AVAILABLE", 0x0A: "CHANNEL STATUS", 0x0B: "ACCESS TECHNOLOGY CHANGE",
    0x0C: "DISPLAY PARAMETERS CHANGED", 0x0D: "LOCAL CONNECTION",
    0x0E: "NETWORK SEARCH MODE CHANGE", 0x0F: "BROWSING STATUS",
    0x10: "FRAMES INFORMATION CHANGE", 0x13: "HCI CONNECTIVITY EVENT",
}


def _tlvs(data: bytes, start: int):
    """(tag without the comprehension bit, value) of simple TLVs from ``start``; stops at junk."""
    i, end = start, len(data)
    while i + 2 <= end:
        tag = data[i] & 0x7F
        length = data[i + 1]
        i += 2
        if length == 0x81:
            if i >= end:
                return
            length = data[i]
            i += 1
        elif length > 0x80:
            return
        if i + length > end:
            return
        yield tag, data[i:i + length]
        i += length


def _ber_body(data: bytes) -> tuple[int, int] | None:
    """(tag, offset of the value) of a one-byte-tag BER-TLV, or None."""
    if len(data) < 2:
        return None
    length = data[1]
    if length == 0x81:
        return (data[0], 3) if len(data) >= 3 else None
    if length > 0x80:
        return None
    return data[0], 2


def _command_type(details: bytes) -> str | None:
    if len(details) < 2:
        return None
    return PROACTIVE_COMMANDS.get(details[1], f"proactive command {details[1]:02X}")


def describe_proactive(data: bytes) -> str | None:
    """The proactive command a FETCH returned (``D0`` template), e.g. ``"OPEN CHANNEL"``."""
    head = _ber_body(data)
    if head is None or head[0] != 0xD0:
        return None
    for tag, value in _tlvs(data, head[1]):
        if tag == 0x01:  # command details
            return _command_type(value)
    return None


def describe_terminal_response(data: bytes) -> str | None:
    """``"OPEN CHANNEL, result 00 (command performed successfully)"`` from a TERMINAL RESPONSE."""
    command = result = None
    for tag, value in _tlvs(data, 0):
        if tag == 0x01 and command is None:
            command = _command_type(value)
        elif tag == 0x03 and result is None and value:
            general = value[0]
            text = RESULTS.get(general, "unknown result")
            extra = f", additional info {value[1:].hex().upper()}" if len(value) > 1 else ""
            result = f"result {general:02X} ({text}{extra})"
    parts = [p for p in (command, result) if p]
    return ", ".join(parts) if parts else None


def describe_envelope(data: bytes) -> str | None:
    """``"SMS-PP DOWNLOAD"``, ``"EVENT DOWNLOAD: DATA AVAILABLE"``... from an ENVELOPE body."""
    head = _ber_body(data)
    if head is None:
        return None
    kind = ENVELOPE_KINDS.get(head[0])
    if kind is None:
        return f"envelope tag {head[0]:02X}"
    if head[0] == 0xD6:
        for tag, value in _tlvs(data, head[1]):
            if tag == 0x19 and value:  # event list
                names = [EVENTS.get(v, f"event {v:02X}") for v in value]
                return f"{kind}: {', '.join(names)}"
    return kind
