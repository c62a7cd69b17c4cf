"""Streaming pcap / pcapng reader (standard library ``struct``): packets with their link type.

Reads a binary file object in 1 MiB chunks, so memory stays flat for any file size. Both
byte orders; pcap with microsecond or nanosecond timestamps; pcapng with any ``if_tsresol``
and ``if_tsoffset``, several sections and interfaces. A damaged record is reported with its
offset and reading resumes at the next plausible record; a truncated tail is reported as the
number of bytes left.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

__all__ = ["CaptureStats", "PCAPNG_MAGIC", "PCAP_MAGICS", "read_capture"]

PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
# pcap magic (as the file's first 4 bytes) -> (byte order, nanosecond resolution)
PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", False), b"\xa1\xb2\xc3\xd4": (">", False),
    b"\x4d\x3c\xb2\xa1": ("<", True), b"\xa1\xb2\x3c\x4d": (">", True),
}
_CHUNK = 1 << 20
_MAX_PACKET = 1 << 18          # 256 KiB: far above any GSMTAP packet; bigger means damage
_RESYNC_LIMIT = 1 << 22        # give up looking for the next record after 4 MiB
_MAX_GAP = 86400 * 365         # seconds between two packets beyond which a header is damage

_SHB, _IDB, _SPB, _OPB, _EPB = 0x0A0D0D0A, 0x00000001, 0x00000003, 0x00000002, 0x00000006
_KNOWN_BLOCKS = frozenset({_SHB, _IDB, _SPB, _OPB, _EPB, 0x4, 0x5, 0xA, 0xBAD, 0x40000BAD})


class CaptureStats:
    """What reading a capture found besides packets: its kind, damage, a truncated tail."""

    def __init__(self):
        self.container = None       # "pcap" or "pcapng"
        self.packets = 0
        self.corrupt: list[str] = []   # "offset N: what was wrong"
        self.leftover_bytes = 0     # an incomplete record at the end

    def damage(self, offset: int, what: str) -> None:
        if len(self.corrupt) < 100:
            self.corrupt.append(f"offset {offset}: {what}")


class _Buffer:
    """A sliding window over a binary file: ``need(n)`` makes n bytes from ``pos`` readable."""

    def __init__(self, fp, first: bytes = b""):
        self.fp = fp
        self.data = first
        self.pos = 0
        self.base = 0  # file offset of data[0]
        self.eof = False

    def need(self, n: int) -> bool:
        if self.pos + n <= len(self.data):
            return True
        if self.eof:
            return False
        rest = self.data[self.pos:]
        self.base += self.pos
        self.pos = 0
        while len(rest) < n and not self.eof:
            more = self.fp.read(max(_CHUNK, n - len(rest)))
            if not more:
                self.eof = True
            rest += more
        self.data = rest
        return len(rest) >= n

    @property
    def offset(self) -> int:
        return self.base + self.pos

    def left(self) -> int:
        """Bytes from ``pos`` to the end of the file (reads it all: only at the end)."""
        while self.need(len(self.data) - self.pos + _CHUNK):
            pass
        return len(self.data) - self.pos


def read_capture(fp, stats: CaptureStats, first: bytes = b"") -> Iterator[tuple[int, int, bytes]]:
    """Yield ``(link type, timestamp in ns since the epoch or None, packet bytes)``.

    ``first`` holds bytes already read from ``fp`` (format sniffing). Raises ValueError
    when the file is neither pcap nor pcapng.
    """
    buf = _Buffer(fp, first)
    if not buf.need(4):
        raise ValueError("file too short for a capture")
    magic = buf.data[:4]
    if magic == PCAPNG_MAGIC:
        stats.container = "pcapng"
        return _pcapng(buf, stats)
    if magic in PCAP_MAGICS:
        stats.container = "pcap"
        return _pcap(buf, stats, *PCAP_MAGICS[magic])
    raise ValueError("not a pcap or pcapng file")


def _pcap(buf: _Buffer, stats: CaptureStats, order: str, nanos: bool):
    if not buf.need(24):
        stats.leftover_bytes = buf.left()
        return
    _, _, _, _, _, snaplen, network = struct.unpack_from(order + "IHHiIII", buf.data, 0)
    linktype = network & 0x0FFFFFFF
    limit = max(snaplen, 65535) if 0 < snaplen <= _MAX_PACKET else _MAX_PACKET
    buf.pos = 24
    record = struct.Struct(order + "IIII").unpack_from
    scale = 1 if nanos else 1000
    last_sec = None
    while True:
        if not buf.need(16):
            break
        sec, frac, incl, orig = record(buf.data, buf.pos)
        if incl > limit or orig < incl or (last_sec is not None
                                           and abs(sec - last_sec) > _MAX_GAP):
            stats.damage(buf.offset, f"pcap record header makes no sense (length {incl})")
            if not _resync_pcap(buf, record, limit, last_sec):
                stats.leftover_bytes = buf.left()
                return
            continue
        if not buf.need(16 + incl):
            break
        start = buf.pos + 16
        buf.pos = start + incl
        last_sec = sec
        stats.packets += 1
        yield linktype, sec * 1_000_000_000 + frac * scale, buf.data[start:start + incl]
    stats.leftover_bytes = len(buf.data) - buf.pos


def _resync_pcap(buf: _Buffer, record, limit: int, last_sec) -> bool:
    """Move to the next offset where two consecutive plausible record headers start."""
    scanned = 0
    buf.pos += 1
    while scanned < _RESYNC_LIMIT and buf.need(16):
        sec, _, incl, orig = record(buf.data, buf.pos)
        if incl <= limit and orig >= incl and (last_sec is None or abs(sec - last_sec) < 86400):
            if buf.need(32 + incl):
                nsec, _, nincl, norig = record(buf.data, buf.pos + 16 + incl)
                if nincl <= limit and norig >= nincl and abs(nsec - sec) < 86400:
                    return True
            elif buf.need(16 + incl):
                return True  # the last record of the file
        buf.pos += 1
        scanned += 1
    return False


class _Interface:
    __slots__ = ("linktype", "scale_num", "scale_den", "offset_ns")

    def __init__(self, linktype: int):
        self.linktype = linktype
        self.scale_num, self.scale_den = 1000, 1  # microseconds by default
        self.offset_ns = 0

    def nanoseconds(self, units: int) -> int:
        return units * self.scale_num // self.scale_den + self.offset_ns


def _options(data: bytes, start: int, end: int, order: str):
    while start + 4 <= end:
        code, length = struct.unpack_from(order + "HH", data, start)
        if code == 0:
            return
        value = data[start + 4:start + 4 + length]
        yield code, value
        start += 4 + ((length + 3) & ~3)


def _interface(data: bytes, start: int, end: int, order: str) -> _Interface:
    linktype = struct.unpack_from(order + "H", data, start + 8)[0]
    iface = _Interface(linktype)
    for code, value in _options(data, start + 16, end, order):
        if code == 9 and len(value) >= 1:  # if_tsresol
            v = value[0]
            if v & 0x80:
                iface.scale_num, iface.scale_den = 1_000_000_000, 1 << (v & 0x7F)
            elif v <= 9:
                iface.scale_num, iface.scale_den = 10 ** (9 - v), 1
            else:
                iface.scale_num, iface.scale_den = 1, 10 ** (v - 9)
        elif code == 14 and len(value) >= 8:  # if_tsoffset, seconds
            iface.offset_ns = struct.unpack_from(order + "q", value, 0)[0] * 1_000_000_000
    return iface


def _pcapng(buf: _Buffer, stats: CaptureStats):
    order = "<"
    interfaces: list[_Interface] = []
    header = struct.Struct("<II")
    word = struct.Struct("<I")
    epb = struct.Struct("<IIIII")
    while True:
        # Checks on len(data) first: need() is only called when a chunk boundary is near.
        if len(buf.data) - buf.pos < 12 and not buf.need(12):
            break
        data, pos = buf.data, buf.pos
        btype, length = header.unpack_from(data, pos)
        if btype == _SHB:
            bom = data[pos + 8:pos + 12]
            if bom == b"\x4d\x3c\x2b\x1a":
                order = "<"
            elif bom == b"\x1a\x2b\x3c\x4d":
                order = ">"
            else:
                stats.damage(buf.offset, "section header with a bad byte-order magic")
                if not _resync_pcapng(buf, order):
                    break
                continue
            header = struct.Struct(order + "II")
            word = struct.Struct(order + "I")
            epb = struct.Struct(order + "IIIII")
            interfaces = []
            btype, length = header.unpack_from(data, pos)
        if length < 12 or length % 4 or length > _MAX_PACKET + 64:
            stats.damage(buf.offset, f"pcapng block length {length} makes no sense")
            if not _resync_pcapng(buf, order):
                break
            continue
        if pos + length > len(data):
            if not buf.need(length):
                break
            data, pos = buf.data, buf.pos
        if word.unpack_from(data, pos + length - 4)[0] != length:
            stats.damage(buf.offset, "pcapng block whose trailing length differs")
            if not _resync_pcapng(buf, order):
                break
            continue
        buf.pos = pos + length
        if btype == _EPB:
            iface_id, high, low, caplen, _ = epb.unpack_from(data, pos + 8)
            if iface_id >= len(interfaces) or 28 + caplen > length - 4:
                stats.damage(pos + buf.base, "enhanced packet block with a bad interface or length")
                continue
            iface = interfaces[iface_id]
            stats.packets += 1
            yield (iface.linktype, iface.nanoseconds(high << 32 | low),
                   data[pos + 28:pos + 28 + caplen])
        elif btype == _IDB:
            interfaces.append(_interface(data, pos, pos + length - 4, order))
        elif btype == _SPB:
            if not interfaces:
                stats.damage(pos + buf.base, "simple packet block before any interface")
                continue
            stats.packets += 1
            orig = header.unpack_from(data, pos + 8)[0]
            caplen = min(orig, length - 16)
            yield interfaces[0].linktype, None, data[pos + 12:pos + 12 + caplen]
        elif btype == _OPB:
            iface_id = struct.unpack_from(order + "H", data, pos + 8)[0]
            high, low, caplen = struct.unpack_from(order + "III", data, pos + 12)
            if iface_id >= len(interfaces) or 32 + caplen > length:
                stats.damage(pos + buf.base, "packet block with a bad interface or length")
                continue
            iface = interfaces[iface_id]
            stats.packets += 1
            yield (iface.linktype, iface.nanoseconds(high << 32 | low),
                   data[pos + 28:pos + 28 + caplen])
    stats.leftover_bytes = len(buf.data) - buf.pos


def _resync_pcapng(buf: _Buffer, order: str) -> bool:
    """Move to the next 4-byte aligned offset where a known block with a matching trailer starts."""
    header = struct.Struct(order + "II")
    scanned = 0
    buf.pos += 4
    while scanned < _RESYNC_LIMIT and buf.need(12):
        btype, length = header.unpack_from(buf.data, buf.pos)
        if btype in _KNOWN_BLOCKS and 12 <= length <= _MAX_PACKET + 64 and not length % 4:
            if buf.need(length) and header.unpack_from(buf.data, buf.pos + length - 8)[1] == length:
                return True
        buf.pos += 4
        scanned += 4
    return False
