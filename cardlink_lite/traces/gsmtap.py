"""GSMTAP-SIM (UDP port 4729, GSMTAP v2 type 0x04) packets from pcap/pcapng into trace records."""

from __future__ import annotations

from .capture import read_capture
from .decode import split_t0_exchange
from .netlayers import udp_payload
from .records import ATR, EXCHANGE, MAX_APDU, ReadStats, too_long

__all__ = ["GSMTAP_TYPE_SIM", "read_gsmtap"]

GSMTAP_TYPE_SIM = 0x04
_SUB_APDU, _SUB_ATR = 0x00, 0x01
_SUB_TYPES = {0x02: "PPS request", 0x03: "PPS response", 0x04: "TPDU header",
              0x05: "TPDU command", 0x06: "TPDU response", 0x07: "TPDU status word"}


def read_gsmtap(fp, stats: ReadStats, first: bytes = b""):
    """Trace records of a capture's GSMTAP-SIM packets: an APDU packet holds a whole T=0
    exchange, an ATR packet an ATR; others are skipped and counted."""
    skip = stats.skip
    for number, (linktype, ts, frame) in enumerate(read_capture(fp, stats, first), 1):
        payload = udp_payload(linktype, frame)
        if type(payload) is str:
            skip(payload)
            continue
        if len(payload) < 16 or payload[0] not in (1, 2):
            skip("not GSMTAP v1/v2")
            continue
        if payload[1] < 4:  # in 32-bit words: the body would start inside the header
            skip("GSMTAP header length under 16 bytes")
            continue
        if payload[2] != GSMTAP_TYPE_SIM:
            skip(f"GSMTAP type {payload[2]} (not SIM)")
            continue
        body = payload[payload[1] * 4:]
        if len(body) > MAX_APDU:
            skip("APDU too long")
            stats.damage(f"packet {number}", too_long(len(body)))
            continue
        sub = payload[12]
        if sub == _SUB_APDU:
            if len(body) < 6:
                skip("GSMTAP-SIM APDU too short")
                continue
            cmd, rsp = split_t0_exchange(body)
            yield EXCHANGE, ts, cmd, rsp, None, None
        elif sub == _SUB_ATR:
            if not body:
                skip("GSMTAP-SIM ATR empty")
                continue
            yield ATR, ts, body, None, None, None
        else:
            skip(f"GSMTAP-SIM {_SUB_TYPES.get(sub, f'sub-type {sub}')}")
