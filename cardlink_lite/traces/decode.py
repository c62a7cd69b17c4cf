"""Name APDU commands: ISO 7816-4, ETSI TS 102 221, GlobalPlatform and TS 102 223 (CAT)."""

from __future__ import annotations

from ..apdu import channel_of, command_body
from ..status_words import describe_after_command
from .cat import describe_envelope, describe_proactive, describe_terminal_response

__all__ = [
    "channel_of",
    "command_body",
    "command_name",
    "decode_exchange",
    "describe_atr",
    "split_t0_exchange",
]

# Instructions of the interindustry classes (CLA 0x, 4x, 6x) and of GSM (Ax).
_ISO: dict[int, str] = {
    0x04: "DEACTIVATE FILE", 0x0E: "ERASE BINARY", 0x10: "TERMINAL PROFILE", 0x12: "FETCH",
    0x14: "TERMINAL RESPONSE", 0x20: "VERIFY", 0x24: "CHANGE PIN", 0x26: "DISABLE PIN",
    0x28: "ENABLE PIN", 0x2C: "UNBLOCK PIN", 0x32: "INCREASE", 0x44: "ACTIVATE FILE",
    0x70: "MANAGE CHANNEL", 0x73: "MANAGE SECURE CHANNEL", 0x75: "TRANSACT DATA",
    0x76: "SUSPEND UICC", 0x78: "GET IDENTITY", 0x82: "EXTERNAL AUTHENTICATE",
    0x84: "GET CHALLENGE", 0x88: "AUTHENTICATE", 0x89: "AUTHENTICATE", 0xA2: "SEARCH RECORD",
    0xA4: "SELECT", 0xAA: "TERMINAL CAPABILITY", 0xB0: "READ BINARY", 0xB1: "READ BINARY",
    0xB2: "READ RECORD", 0xB3: "READ RECORD", 0xC0: "GET RESPONSE", 0xC2: "ENVELOPE",
    0xCA: "GET DATA", 0xCB: "GET DATA", 0xD6: "UPDATE BINARY", 0xD7: "UPDATE BINARY",
    0xDC: "UPDATE RECORD", 0xDD: "UPDATE RECORD", 0xE0: "CREATE FILE", 0xE2: "APPEND RECORD",
    0xE4: "DELETE FILE", 0xF2: "STATUS",
}
# Proprietary classes (8x, 9x, Cx-Ex): GlobalPlatform first, then the UICC names above.
_GP: dict[int, str] = {
    0x50: "INITIALIZE UPDATE", 0x78: "END R-MAC SESSION", 0x7A: "BEGIN R-MAC SESSION",
    0xD8: "PUT KEY", 0xE2: "STORE DATA", 0xE4: "DELETE", 0xE6: "INSTALL", 0xE8: "LOAD",
    0xF0: "SET STATUS",
}
_INSTALL_FOR = {0x02: "load", 0x04: "install", 0x08: "make selectable",
                0x0C: "install and make selectable", 0x10: "extradition",
                0x20: "personalization", 0x40: "registry update"}
_GET_STATUS_OF = {0x80: "issuer security domain", 0x40: "applications",
                  0x20: "load files", 0x10: "load files and modules"}
_SECURITY_LEVEL = {0x00: "no security", 0x01: "C-MAC", 0x03: "C-DECRYPTION and C-MAC",
                   0x11: "C-MAC and R-MAC", 0x13: "C-DECRYPTION, C-MAC and R-MAC",
                   0x33: "C-DECRYPTION, R-ENCRYPTION, C-MAC and R-MAC"}
_GSM_CLASS = 0xA0


def describe_atr(atr: bytes) -> str:
    """``"ATR: T=0"`` / ``"ATR: T=0, T=1"``: the protocols an ATR offers (ISO 7816-3 §8.2)."""
    if len(atr) < 2 or atr[0] not in (0x3B, 0x3F):
        return "ATR"
    protocols: list[int] = []
    at, indicator = 1, atr[1] >> 4
    while True:
        at += 1 + bin(indicator & 0x7).count("1")  # TA, TB, TC present before TD
        if not indicator & 0x8:
            break
        if at >= len(atr):
            return "ATR"
        td = atr[at]
        if td & 0x0F not in protocols:
            protocols.append(td & 0x0F)
        indicator = td >> 4
    offered = [t for t in protocols if t != 15] or [0]  # no TD1: T=0; T=15 is not one
    return "ATR: " + ", ".join(f"T={t}" for t in offered)


def _base_name(cla: int, ins: int) -> str:
    if cla & 0x80 and (cla & 0xF0) != _GSM_CLASS:
        name = _GP.get(ins)
        if name is not None:
            return name
    elif (cla & 0xF0) == _GSM_CLASS and ins == 0x88:
        return "RUN GSM ALGORITHM"
    return _ISO.get(ins) or f"INS {ins:02X}"


# The base name of every (CLA, INS), built once: naming runs once per imported exchange.
_NAMES = [[_base_name(cla, ins) for ins in range(256)] for cla in range(256)]


def _select(name, cmd, data, rdata):
    if not data:
        return "SELECT"
    p1 = cmd[2]
    if p1 == 0x04:
        return f"SELECT AID {data.hex().upper()}"
    text = data.hex().upper()
    if p1 in (0x08, 0x09) and len(data) % 2 == 0:
        return "SELECT path " + "/".join(text[i:i + 4] for i in range(0, len(text), 4))
    return f"SELECT {text}"


def _described(describe, of_response=False):
    def named(name, cmd, data, rdata):
        text = describe(rdata if of_response else data)
        return f"{name}: {text}" if text else name
    return named


def _status(name, cmd, data, rdata):
    if cmd[0] & 0x80 and cmd[2] in _GET_STATUS_OF:
        return f"GET STATUS {_GET_STATUS_OF[cmd[2]]}"
    return "STATUS"


def _install(name, cmd, data, rdata):
    purpose = _INSTALL_FOR.get(cmd[2] & 0x7E)
    return f"INSTALL [for {purpose}]" if purpose else "INSTALL"


def _block(name, cmd, data, rdata):
    return f"{name} block {cmd[3]}" + (" (last)" if cmd[2] & 0x80 else "")


def _put_key(name, cmd, data, rdata):
    return f"PUT KEY version {cmd[2]:02X} key {cmd[3] & 0x7F:02X}"


def _initialize_update(name, cmd, data, rdata):
    return f"INITIALIZE UPDATE key version {cmd[2]:02X}"


def _external_authenticate(name, cmd, data, rdata):
    if not cmd[0] & 0x80:
        return "EXTERNAL AUTHENTICATE"
    return f"EXTERNAL AUTHENTICATE ({_SECURITY_LEVEL.get(cmd[2], f'level {cmd[2]:02X}')})"


def _manage_channel(name, cmd, data, rdata):
    return "MANAGE CHANNEL open" if cmd[2] == 0x00 else f"MANAGE CHANNEL close {cmd[3]}"


def _pin(name, cmd, data, rdata):
    text = f"{name} {cmd[3]:02X}"
    return text + " (retry counter query)" if name in _RETRY_QUERIES and not data else text


def _record(name, cmd, data, rdata):
    return f"{name} {cmd[2]}"


# Base names whose text depends on P1/P2, the data or (FETCH) the card's answer.
_RETRY_QUERIES = frozenset({"VERIFY", "UNBLOCK PIN"})  # without data: how many tries are left
_DETAILS = {
    "SELECT": _select, "FETCH": _described(describe_proactive, of_response=True),
    "TERMINAL RESPONSE": _described(describe_terminal_response),
    "ENVELOPE": _described(describe_envelope), "STATUS": _status, "INSTALL": _install,
    "LOAD": _block, "STORE DATA": _block, "PUT KEY": _put_key,
    "INITIALIZE UPDATE": _initialize_update, "EXTERNAL AUTHENTICATE": _external_authenticate,
    "MANAGE CHANNEL": _manage_channel, "VERIFY": _pin, "UNBLOCK PIN": _pin, "ENABLE PIN": _pin,
    "DISABLE PIN": _pin, "CHANGE PIN": _pin, "READ RECORD": _record, "UPDATE RECORD": _record,
}


def _name(cmd: bytes, data: bytes, response_data: bytes) -> str:
    name = _NAMES[cmd[0]][cmd[1]]
    details = _DETAILS.get(name)
    return name if details is None else details(name, cmd, data, response_data)


def command_name(cmd: bytes, response_data: bytes = b"") -> str:
    """What the command is, e.g. ``"SELECT AID A0000001510000"``; ``response_data`` (without
    the status word) names what a FETCH returned: ``"FETCH: OPEN CHANNEL"``."""
    if len(cmd) < 4:
        return "malformed command"
    return _name(cmd, command_body(cmd)[0], response_data)


_messages: dict[tuple, str] = {}


def decode_exchange(cmd: bytes, response: bytes) -> tuple[str, str | None, str | None]:
    """(command text, response text, status message) of a command and its response."""
    if len(cmd) < 4:
        return "malformed command", None, None
    response_data = response[:-2]
    data = command_body(cmd)[0] if len(cmd) > 5 else b""
    name = _name(cmd, data, response_data)
    rtext = None
    if name[:7] == "FETCH: ":
        rtext = f"proactive command {name[7:]}"
    elif name == "MANAGE CHANNEL open" and len(response_data) == 1:
        rtext = f"channel {response_data[0]} opened"
    if len(response) < 2:
        return name, rtext, None
    key = (response[-2:], cmd[1], not data)
    message = _messages.get(key)
    if message is None:
        message = describe_after_command(key[0].hex().upper(), cmd[1], bool(data))
        if len(_messages) < 8192:
            _messages[key] = message
    return name, rtext, message


# Instructions whose T=0 data travels from the card (ISO case 2): the P3 bytes after the
# header of a GSMTAP-SIM packet belong to the response.
_FETCHING = frozenset({0x12, 0xC0})   # FETCH, GET RESPONSE: data out, then 61xx for more
_PENDING = frozenset({0x61, 0x9F})    # SW1: response data waits for GET RESPONSE
_OUTGOING = frozenset({0x12, 0x70, 0x84, 0xB0, 0xB1, 0xB2, 0xB3, 0xC0, 0xCA, 0xCB})


def split_t0_exchange(body: bytes) -> tuple[bytes, bytes]:
    """(command, response) of a whole T=0 exchange ``CLA INS P1 P2 P3 [data] [data] SW1 SW2``;
    the instruction decides whose the data is, as in pySim-trace."""
    if len(body) < 7:
        return body[:-2], body[-2:]
    ins, p3 = body[1], body[4]
    rest = len(body) - 5 - 2
    outgoing = ins in _OUTGOING or (ins == 0xF2 and not (body[0] & 0x80 and body[2] in
                                                          _GET_STATUS_OF))
    if outgoing and rest == p3 and ins not in _FETCHING and (
            body[-2] in _PENDING or body[0] & (0x20 if body[0] & 0x40 else 0x0C)):
        # Data went in (case 4): T=0 answers such a command with 61xx/9Fxx, its response
        # waiting for GET RESPONSE; a secure-messaging CLA carries a MAC in.
        outgoing = False
    if not outgoing:
        if p3 == 0 and rest >= 2:
            lc = body[5] << 8 | body[6]
            if lc and 2 + lc <= rest:
                return body[:7 + lc], body[7 + lc:]
        if p3 <= rest:
            return body[:5 + p3], body[5 + p3:]
    return body[:5], body[5:]
