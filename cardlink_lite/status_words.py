"""What a card's status word (SW1 SW2) means: ISO/IEC 7816-4, ETSI TS 102 221, GlobalPlatform."""

from __future__ import annotations

import functools
import re

from .errors import ValidationError, quote

__all__ = ["MORE_DATA_PREFIXES", "STATUS_WORDS", "depends_on_command", "describe_after_command",
           "describe_status_word", "is_more_data", "is_retry_query_answer", "is_success",
           "normalize_status_word"]

_SW = re.compile(r"[0-9A-F]{4}")

# Exact status words.
STATUS_WORDS: dict[str, str] = {
    "9000": "Success: normal ending of the command",
    # 62xx / 63xx: warnings (ISO 7816-4)
    "6200": "Warning: no information given, non-volatile memory unchanged",
    "6281": "Warning: part of the returned data may be corrupted",
    "6282": "Warning: end of file or record reached before reading Le bytes",
    "6283": "Warning: selected file invalidated (or card locked)",
    "6284": "Warning: file control information not formatted correctly",
    "6285": "Warning: selected file in termination state",
    "6286": "Warning: no input data available from a sensor on the card",
    "62F1": "Warning: more data available",
    "6300": "Warning: no information given, non-volatile memory changed (verification failed)",
    "6310": "Warning: more data available (GET STATUS)",
    "6381": "Warning: file filled up by the last write",
    # 64xx / 65xx: execution errors
    "6400": "Execution error: non-volatile memory unchanged",
    "6401": "Execution error: immediate response required by the card",
    "6500": "Execution error: non-volatile memory changed",
    "6581": "Execution error: memory failure",
    "6600": "Security error: no information given",
    # 67xx - 6Fxx: checking errors
    "6700": "Wrong length (Lc or Le)",
    "6800": "Functions in CLA not supported",
    "6881": "Logical channel not supported",
    "6882": "Secure messaging not supported",
    "6883": "Last command of the chain expected",
    "6884": "Command chaining not supported",
    "6900": "Command not allowed: no information given",
    "6981": "Command incompatible with the file structure",
    "6982": "Security status not satisfied",
    "6983": "Authentication method blocked",
    "6984": "Referenced data not usable (invalidated)",
    "6985": "Conditions of use not satisfied",
    "6986": "Command not allowed: no current elementary file",
    "6987": "Expected secure messaging data objects missing",
    "6988": "Incorrect secure messaging data objects",
    "6999": "Applet selection failed",
    "6A00": "Wrong parameters P1-P2: no information given",
    "6A80": "Incorrect parameters in the data field",
    "6A81": "Function not supported",
    "6A82": "File or application not found",
    "6A83": "Record not found",
    "6A84": "Not enough memory space",
    "6A85": "Nc inconsistent with the TLV structure",
    "6A86": "Incorrect parameters P1-P2",
    "6A87": "Nc inconsistent with parameters P1-P2",
    "6A88": "Referenced data or reference data not found",
    "6A89": "File already exists",
    "6A8A": "DF name already exists",
    "6B00": "Wrong parameters P1-P2",
    "6D00": "Instruction code not supported or invalid",
    "6E00": "Class not supported",
    "6F00": "Technical problem, no precise diagnosis",
    # ETSI TS 102 221 / TS 51.011
    "9240": "Memory problem",
    "9300": "SIM Application Toolkit busy: command cannot be executed now",
    "9302": "Recovery error",
    "9400": "No EF selected",
    "9402": "Out of range (invalid address)",
    "9404": "File ID or pattern not found",
    "9408": "File inconsistent with the command",
    "9484": "Algorithm not supported",
    "9485": "Invalid key check value",
    "9802": "No CHV initialized",
    "9804": "Access condition not fulfilled (unsuccessful CHV verification or authentication)",
    "9808": "In contradiction with CHV status",
    "9810": "In contradiction with invalidation status",
    "9840": "Unsuccessful CHV verification, no attempt left (CHV blocked)",
    "9850": "Increase cannot be performed, maximum value reached",
    "9862": "Authentication error, application specific",
    "9863": "Security session or association expired",
    "9864": "Minimum UICC suspension time is too long",
}

# Status words whose SW2 carries a value: (prefix, meaning with {n} for SW2 as a number).
_PATTERNS: list[tuple[str, str]] = [
    ("61", "Success: {n} response bytes still available (use GET RESPONSE)"),
    ("6C", "Wrong Le field: resend with Le = {n}"),
    ("9F", "Success: {n} response bytes available (use GET RESPONSE)"),
    ("91", "Success: a proactive command of {n} bytes is pending (use FETCH)"),
    ("63C", "Verification failed: {n} retries left"),
    ("92", "Success after {n} internal retries of the update routine"),
    ("6E", "Class not supported"),
    ("62", "Warning: non-volatile memory unchanged"),
    ("63", "Warning: non-volatile memory changed"),
    ("64", "Execution error: non-volatile memory unchanged"),
    ("65", "Execution error: non-volatile memory changed"),
    ("66", "Security-related error"),
    ("67", "Wrong length"),
    ("68", "Functions in CLA not supported"),
    ("69", "Command not allowed"),
    ("6A", "Wrong parameters P1-P2"),
    ("6D", "Instruction code not supported or invalid"),
    ("6F", "Technical problem, no precise diagnosis"),
    ("93", "SIM Application Toolkit busy"),
    ("98", "Security management error"),
]

_SUCCESS_PREFIXES = ("9000", "61", "9F", "91", "920")
# "Success, more to come": response bytes waiting for GET RESPONSE, or a proactive command
# waiting for FETCH. Never an error.
MORE_DATA_PREFIXES = ("61", "9F", "91")

# Meanings that depend on the command (its INS byte): (INS, SW or SW prefix) -> text.
_VERIFY, _UNBLOCK = 0x20, 0x2C
_AFTER_COMMAND: dict[tuple[int, str], str] = {
    (0xA4, "6283"): "Warning: selected file deactivated",
    (0xA4, "6A82"): "File or application not found",
    (0xA4, "6999"): "Applet selection failed",
    (0x82, "6300"): "Authentication failed: host cryptogram not verified",
    (0xC2, "9300"): "SIM Application Toolkit busy: the ENVELOPE cannot be processed now",
    (0xC2, "6200"): "Warning: ENVELOPE processed, no information given",
    (0x88, "9862"): "Authentication error: incorrect MAC",
    (0x88, "9864"): "Authentication error: security context not supported",
    (0xE6, "6A80"): "Incorrect parameters in the INSTALL data field",
    (0xE8, "6A84"): "Not enough memory space to LOAD",
}
_DEPENDENT = frozenset(sw for _, sw in _AFTER_COMMAND)


def normalize_status_word(sw) -> str:
    """``sw`` as four upper-case hex digits (bytes and ints 0..0xFFFF accepted)."""
    if isinstance(sw, bytes | bytearray):
        sw = sw.hex()
    elif isinstance(sw, int) and not isinstance(sw, bool) and 0 <= sw <= 0xFFFF:
        return f"{sw:04X}"
    text = str(sw).replace(" ", "").upper()
    if not str(sw).isascii() or not _SW.fullmatch(text):  # "\ufb00".upper() is "FF"
        raise ValidationError(
            f"status_word must be 4 hex digits such as 9000 or 6A82; got {quote(sw)}",
            problems=["status_word"],
        )
    return text


def describe_status_word(sw) -> str:
    """A one-line meaning of ``sw``, e.g. ``"6A82"`` -> ``"File or application not found"``."""
    sw = normalize_status_word(sw)
    known = STATUS_WORDS.get(sw)
    if known is not None:
        return known
    for prefix, text in _PATTERNS:
        if sw.startswith(prefix):
            return text.format(n=int(sw[len(prefix):], 16))
    return "Unknown status word"


def is_success(sw) -> bool:
    """True for normal processing: 9000, 61xx, 9Fxx, 91xx, 920x (warnings are not success)."""
    return normalize_status_word(sw).startswith(_SUCCESS_PREFIXES)


@functools.lru_cache(maxsize=4096)
def describe_after_command(sw, ins: int | None, has_data: bool = True) -> str:
    """The meaning of ``sw`` as the answer to instruction ``ins`` (63Cx to a retry-counter
    query is "x attempts remaining"; some SWs differ after SELECT, ENVELOPE, INSTALL...)."""
    sw = normalize_status_word(sw)
    text = _AFTER_COMMAND.get((ins, sw))
    if text is None and is_retry_query_answer(sw, ins, has_data):
        left = int(sw[3], 16)
        what = "PIN" if ins == _VERIFY else "unblock (PUK)"
        text = f"{left} {what} attempt{'' if left == 1 else 's'} remaining"
    return describe_status_word(sw) if text is None else text


def depends_on_command(sw: str) -> bool:
    """True if the meaning of the normalised ``sw`` depends on the command it answers."""
    return sw in _DEPENDENT or sw.startswith("63C")


def is_retry_query_answer(sw: str, ins: int | None, has_data: bool) -> bool:
    """True for 63Cx answering VERIFY / UNBLOCK PIN without data: the normal answer of a
    retry-counter query, not a failed verification."""
    return sw.startswith("63C") and ins in (_VERIFY, _UNBLOCK) and not has_data


def is_more_data(sw) -> bool:
    """True for 61xx / 9Fxx / 91xx: success, with response bytes or a proactive command waiting."""
    return normalize_status_word(sw).startswith(MORE_DATA_PREFIXES)
