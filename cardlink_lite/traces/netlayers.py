"""From a captured frame to its UDP payload: link layer, IPv4/IPv6, UDP (standard library only)."""

from __future__ import annotations

import struct

__all__ = ["GSMTAP_PORT", "udp_payload"]

GSMTAP_PORT = 4729

# Link types we unwrap (tcpdump.org/linktypes.html): Ethernet, Linux cooked v1 (SLL) and
# v2 (SLL2), BSD loopback, and raw IP (12, 14, 101), IPv4 (228), IPv6 (229).
_ETH, _SLL, _SLL2, _NULL = 1, 113, 276, 0
_LINK_HEADERS = {_ETH: (14, 12), _SLL: (16, 14), _SLL2: (20, 0)}  # (length, ethertype at)
_RAW = frozenset({12, 14, 101, 228, 229})
_VLAN = frozenset({0x8100, 0x88A8, 0x9100})
_IPV6_EXTENSIONS = frozenset({0, 43, 60})  # hop-by-hop, routing, destination options
_u16 = struct.Struct("!H").unpack_from
_u16x3 = struct.Struct("!HHH").unpack_from
_NULL_V6 = frozenset({24, 28, 30})


def _ip(frame: bytes, off: int, port: int) -> bytes | str:
    if off >= len(frame):
        return "truncated frame"
    version = frame[off] >> 4
    if version == 4:
        ihl = (frame[off] & 0x0F) * 4
        if ihl < 20 or len(frame) < off + ihl + 8:
            return "truncated IPv4 packet"
        if frame[off + 9] != 17:
            return "not UDP"
        if _u16(frame, off + 6)[0] & 0x3FFF:
            return "IP fragment"
        off += ihl
    elif version == 6:
        nxt = frame[off + 6] if len(frame) > off + 6 else None
        off += 40
        while nxt in _IPV6_EXTENSIONS and len(frame) >= off + 8:
            nxt, off = frame[off], off + (frame[off + 1] + 1) * 8
        if nxt == 44:
            return "IP fragment"
        if nxt != 17:
            return "not UDP"
        if len(frame) < off + 8:
            return "truncated IPv6 packet"
    else:
        return "not IP"
    sport, dport, length = _u16x3(frame, off)
    if sport != port and dport != port:
        return "not GSMTAP (UDP port)"
    if off + length > len(frame):
        return "truncated UDP datagram"
    end = off + length if length >= 8 else len(frame)  # 0: an IPv6 jumbogram's
    return frame[off + 8:end]


def udp_payload(linktype: int, frame: bytes, port: int = GSMTAP_PORT) -> bytes | str:
    """The payload of a UDP datagram to or from ``port`` in ``frame``, or why there is none."""
    if linktype in _LINK_HEADERS:
        off, at = _LINK_HEADERS[linktype]
        if len(frame) < off:
            return "truncated frame"
        ethertype = _u16(frame, at)[0]
        while linktype == _ETH and ethertype in _VLAN and len(frame) >= off + 4:
            ethertype = _u16(frame, off + 2)[0]
            off += 4
    elif linktype in _RAW:
        return _ip(frame, 0, port)
    elif linktype == _NULL:
        if len(frame) < 4:
            return "truncated frame"
        family = struct.unpack_from("<I", frame)[0]
        if family > 0xFFFF:  # written on a big-endian host
            family = struct.unpack_from(">I", frame)[0]
        if family != 2 and family not in _NULL_V6:
            return "not IP"
        return _ip(frame, 4, port)
    else:
        return f"unsupported link type {linktype}"
    if ethertype != 0x0800 and ethertype != 0x86DD:
        return "not IP"
    return _ip(frame, off, port)
