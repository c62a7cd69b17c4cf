"""Write GSMTAP-SIM captures (pcap or pcapng) the way SIMtrace2 and Wireshark lay them out.

Used by the tests and ``scripts/gen_gsmtap_pcapng.py`` to make captures in every variant the
reader takes: both containers and byte orders, µs/ns resolutions, five link types, IPv4/IPv6.
"""

from __future__ import annotations

import struct

from cardlink_lite.traces.gsmtap import GSMTAP_TYPE_SIM
from cardlink_lite.traces.netlayers import GSMTAP_PORT

__all__ = ["CaptureWriter", "gsmtap_sim", "udp_frame"]

_LINKTYPES = {"ethernet": 1, "sll": 113, "sll2": 276, "raw": 101, "null": 0}


def gsmtap_sim(body: bytes, sub_type: int = 0) -> bytes:
    """A GSMTAP v2 header (type SIM, ``sub_type`` 0 APDU / 1 ATR) followed by ``body``."""
    return struct.pack("!BBBBHbbIBBBB", 2, 4, GSMTAP_TYPE_SIM, 0, 0, 0, 0, 0, sub_type, 0, 0,
                       0) + body


def _ip_udp(payload: bytes, ipv6: bool, dport: int) -> bytes:
    udp = struct.pack("!HHHH", 40000, dport, 8 + len(payload), 0) + payload
    if ipv6:
        return (struct.pack("!IHBB", 6 << 28, len(udp), 17, 64) + b"\x00" * 15 + b"\x01"
                + b"\x00" * 15 + b"\x01" + udp)
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
                         b"\x7f\x00\x00\x01", b"\x7f\x00\x00\x01")
    return header + udp


def udp_frame(payload: bytes, link: str = "ethernet", ipv6: bool = False,
              dport: int = GSMTAP_PORT) -> bytes:
    """``payload`` in UDP (to ``dport``) in IPv4/IPv6 in the given link layer."""
    ip = _ip_udp(payload, ipv6, dport)
    ethertype = 0x86DD if ipv6 else 0x0800
    if link == "ethernet":
        return b"\x02" * 6 + b"\x04" * 6 + struct.pack("!H", ethertype) + ip
    if link == "sll":
        return struct.pack("!HHH8sH", 0, 772, 6, b"\x00" * 8, ethertype) + ip
    if link == "sll2":
        return struct.pack("!HHIHBB8s", ethertype, 0, 1, 772, 0, 6, b"\x00" * 8) + ip
    if link == "raw":
        return ip
    if link == "null":
        return struct.pack("<I", 30 if ipv6 else 2) + ip
    raise ValueError(f"unknown link type {link!r}; use {', '.join(_LINKTYPES)}")


class CaptureWriter:
    """Writes packets to a binary file as pcap or pcapng (``container``), little or big endian."""

    def __init__(self, fp, container: str = "pcapng", link: str = "ethernet",
                 nanoseconds: bool = False, big_endian: bool = False):
        self.fp = fp
        self.container = container
        self.order = ">" if big_endian else "<"
        self.nanoseconds = nanoseconds
        self.linktype = _LINKTYPES[link]
        self.link = link
        o = self.order
        if container == "pcap":
            magic = 0xA1B23C4D if nanoseconds else 0xA1B2C3D4
            fp.write(struct.pack(o + "IHHiIII", magic, 2, 4, 0, 0, 262144, self.linktype))
        elif container == "pcapng":
            shb_body = struct.pack(o + "IHHq", 0x1A2B3C4D, 1, 0, -1)
            self._block(0x0A0D0D0A, shb_body)
            options = b""
            if nanoseconds:
                options = struct.pack(o + "HH", 9, 1) + b"\x09\x00\x00\x00"
                options += struct.pack(o + "HH", 0, 0)
            self._block(1, struct.pack(o + "HHI", self.linktype, 0, 262144) + options)
        else:
            raise ValueError("container must be pcap or pcapng")

    def _block(self, btype: int, body: bytes) -> None:
        body += b"\x00" * (-len(body) % 4)
        length = 12 + len(body)
        self.fp.write(struct.pack(self.order + "II", btype, length) + body
                      + struct.pack(self.order + "I", length))

    def packet(self, ts_ns: int, frame: bytes, original: int | None = None) -> None:
        """Write one frame captured at ``ts_ns`` (ns since the epoch); ``original``: its length
        on the wire, when the capture's snaplen cut it to ``frame``."""
        o = self.order
        original = len(frame) if original is None else original
        units = ts_ns if self.nanoseconds else ts_ns // 1000
        if self.container == "pcap":
            sec, frac = divmod(units, 1_000_000_000 if self.nanoseconds else 1_000_000)
            self.fp.write(struct.pack(o + "IIII", sec, frac, len(frame), original) + frame)
        else:
            self._block(6, struct.pack(o + "IIIII", 0, units >> 32, units & 0xFFFFFFFF,
                                       len(frame), original) + frame)

    def gsmtap(self, ts_ns: int, body: bytes, sub_type: int = 0, ipv6: bool = False) -> None:
        """Write one GSMTAP-SIM packet (``sub_type`` 0: a T=0 exchange, 1: an ATR)."""
        self.packet(ts_ns, udp_frame(gsmtap_sim(body, sub_type), self.link, ipv6))
