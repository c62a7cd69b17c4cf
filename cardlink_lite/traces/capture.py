"""Streaming pcap / pcapng reader: packets with their link type and time, in 1 MiB chunks;
damage is reported with its offset and reading resumes at the next plausible record."""

from __future__ import annotations

import functools
import re
import struct
from collections.abc import Iterator

from .records import MAX_NS, MIN_NS, ReadStats

__all__ = ["PCAPNG_MAGIC", "PCAP_MAGICS", "read_capture"]

PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
# pcap magic (as the file's first 4 bytes) -> (byte order, nanosecond resolution)
PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", False), b"\xa1\xb2\xc3\xd4": (">", False),
    b"\x4d\x3c\xb2\xa1": ("<", True), b"\xa1\xb2\x3c\x4d": (">", True),
}
_CHUNK = 1 << 20
_MAX_PACKET = 1 << 18          # 256 KiB: far above any GSMTAP packet; bigger means damage
_OVERLAP = 32                 # bytes a record start needs to be recognised (see resync)
_MAX_GAP = 86400 * 365         # seconds between two packets beyond which a header is damage
_NOT_ZEROS = re.compile(b"(?s)(?!\\x00{16}).")  # where an all-zero header does not start

_SHB, _IDB, _SPB, _OPB, _EPB = 0x0A0D0D0A, 0x00000001, 0x00000003, 0x00000002, 0x00000006
_KNOWN_BLOCKS = frozenset({_SHB, _IDB, _SPB, _OPB, _EPB, 0x4, 0x5, 0xA, 0xBAD, 0x40000BAD})
_CUT = "packet cut by snaplen"  # a packet stored shorter than it was: its SW would be wrong
_PACKET_BLOCKS = {_EPB: "enhanced packet block", _OPB: "packet block"}


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
        """Bytes from ``pos`` to the end of the file, read through (the hash sees them) but
        not kept."""
        count = len(self.data) - self.pos
        self.base += len(self.data)
        self.data, self.pos = b"", 0
        while not self.eof:
            more = self.fp.read(_CHUNK)
            self.eof = not more
            count += len(more)
            self.base += len(more)
        return count

    def resync(self, step: int, size: int, plausible, start: re.Pattern) -> bool:
        """Move by ``step`` bytes until ``plausible(data, pos)`` (``size`` bytes readable);
        only where ``start`` (a regex every record start matches) matches, so a long run of
        zeros is crossed at C speed, a window at a time, in flat memory."""
        self.pos += step
        while self.need(size):
            found = start.search(self.data, self.pos)
            if found is None:
                if self.eof:
                    break
                # No start in this window but maybe one across its end: keep its last bytes.
                tail = max(self.pos, len(self.data) - _OVERLAP)
                self.pos += (tail - self.pos + step - 1) // step * step
                self.need(len(self.data) - self.pos + _CHUNK)
                continue
            self.pos += (found.start() - self.pos + step - 1) // step * step
            if not self.need(size):
                break
            if plausible(self.data, self.pos):
                return True
            self.pos += step
        return False


def _unreadable(buf: _Buffer, stats: ReadStats, start: int, what: str, found: bool) -> None:
    """Report damage at file offset ``start`` and the bytes skipped from there."""
    count = buf.offset - start if found else buf.offset - start + buf.left()
    stats.damage(f"offset {start}", f"{what}; {count:,} bytes unreadable"
                 + ("" if found else " (no record after them)"))


def read_capture(fp, stats: ReadStats, first: bytes = b"") -> Iterator[tuple[int, int, bytes]]:
    """``(link type, ns since the epoch or None, packet)`` of each packet; ``first`` holds
    bytes already read from ``fp``."""
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


def _pcap(buf: _Buffer, stats: ReadStats, order: str, nanos: bool):
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

    def plausible(data: bytes, pos: int) -> bool:
        """Two consecutive plausible record headers (or the file's last record) start here."""
        sec, frac, incl, orig = record(data, pos)
        if (incl > limit or orig < incl or not (sec or frac or orig)
                or (last_sec is not None and abs(sec - last_sec) >= 86400)):
            return False
        if buf.need(32 + incl):
            nsec, _, nincl, norig = record(buf.data, buf.pos + 16 + incl)
            return nincl <= limit and norig >= nincl and abs(nsec - sec) < 86400
        return buf.need(16 + incl)

    def starts() -> re.Pattern:
        """What a plausible record header starts with: a time near the last one's."""
        if last_sec is None:
            return _NOT_ZEROS
        high = {h >> 16 for h in range(max(0, last_sec - 86399),
                                       min(last_sec + 86400, 1 << 32), 1 << 15)}
        high |= {max(0, last_sec - 86399) >> 16, min(last_sec + 86399, (1 << 32) - 1) >> 16}
        words = b"|".join(re.escape(struct.pack(order + "H", h)) for h in sorted(high))
        return re.compile((b"(?s)..(?:%s)" if order == "<" else b"(?:%s)") % words)

    while buf.need(16):
        sec, frac, incl, orig = record(buf.data, buf.pos)
        if (incl > limit or orig < incl or not (sec or frac or orig)
                or (last_sec is not None and abs(sec - last_sec) > _MAX_GAP)):
            at = buf.offset
            found = buf.resync(1, 16, plausible, starts())
            _unreadable(buf, stats, at, f"pcap record header makes no sense (length {incl})",
                        found)
            if not found:
                return
            continue
        if not buf.need(16 + incl):
            break
        start = buf.pos + 16
        buf.pos = start + incl
        last_sec = sec
        if orig > incl:
            stats.skip(_CUT)
            continue
        yield linktype, sec * 1_000_000_000 + frac * scale, buf.data[start:start + incl]
    stats.leftover_bytes = len(buf.data) - buf.pos


def _interface(data: bytes, start: int, end: int, order: str) -> tuple[int, int, int, int]:
    """(link type, num, den, offset) of an interface block: ns = units * num // den + offset."""
    linktype = struct.unpack_from(order + "H", data, start + 8)[0]
    num, den, offset = 1000, 1, 0  # microseconds by default
    start += 16
    while start + 4 <= end:
        code, length = struct.unpack_from(order + "HH", data, start)
        if code == 0:
            break
        value = data[start + 4:start + 4 + length]
        start += 4 + ((length + 3) & ~3)
        if code == 9 and len(value) >= 1:  # if_tsresol
            v = value[0]
            if v & 0x80:
                num, den = 1_000_000_000, 1 << (v & 0x7F)
            elif v <= 9:
                num, den = 10 ** (9 - v), 1
            else:
                num, den = 1, 10 ** (v - 9)
        elif code == 14 and len(value) >= 8:  # if_tsoffset, seconds
            offset = struct.unpack_from(order + "q", value, 0)[0] * 1_000_000_000
    return linktype, num, den, offset


def _block_structs(order: str) -> tuple[struct.Struct, ...]:
    return tuple(struct.Struct(order + fields) for fields in ("II", "I", "IIIII", "HHIIII"))


@functools.cache
def _block_starts(order: str) -> re.Pattern:
    return re.compile(b"|".join(re.escape(struct.pack(order + "I", btype))
                                for btype in sorted(_KNOWN_BLOCKS)))


def _pcapng(buf: _Buffer, stats: ReadStats):
    order = "<"
    interfaces: list[tuple[int, int, int, int]] = []
    header, word, epb, opb = _block_structs(order)

    def plausible(data: bytes, pos: int) -> bool:
        """A known block with a matching trailing length starts here."""
        btype, length = header.unpack_from(data, pos)
        return (btype in _KNOWN_BLOCKS and 12 <= length <= _MAX_PACKET + 64 and not length % 4
                and buf.need(length)
                and header.unpack_from(buf.data, buf.pos + length - 8)[1] == length)

    def damaged(what: str) -> bool:
        """Report damage here and move to the next block; False at the end of the file."""
        at = buf.offset
        found = buf.resync(4, 12, plausible, _block_starts(order))
        _unreadable(buf, stats, at, what, found)
        return found

    # Checks len(data) first: need() is only called when a chunk boundary is near.
    while len(buf.data) - buf.pos >= 12 or buf.need(12):
        data, pos = buf.data, buf.pos
        btype, length = header.unpack_from(data, pos)
        if btype == _SHB:
            bom = data[pos + 8:pos + 12]
            if bom not in (b"\x4d\x3c\x2b\x1a", b"\x1a\x2b\x3c\x4d"):
                if not damaged("section header with a bad byte-order magic"):
                    break
                continue
            order = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">"
            header, word, epb, opb = _block_structs(order)
            interfaces = []
            btype, length = header.unpack_from(data, pos)
        if length < 12 or length % 4 or length > _MAX_PACKET + 64:
            if not damaged(f"pcapng block length {length} makes no sense"):
                break
            continue
        if pos + length > len(data):
            if not buf.need(length):
                break
            data, pos = buf.data, buf.pos
        if word.unpack_from(data, pos + length - 4)[0] != length:
            if not damaged("pcapng block whose trailing length differs"):
                break
            continue
        buf.pos = pos + length
        if btype == _EPB or btype == _OPB:
            if btype == _EPB:
                iface_id, high, low, caplen, original = epb.unpack_from(data, pos + 8)
            else:  # obsolete packet block: a 16-bit interface id, then a drops count
                iface_id, _, high, low, caplen, original = opb.unpack_from(data, pos + 8)
            if iface_id >= len(interfaces) or 32 + caplen > length:
                stats.damage(f"offset {pos + buf.base}",
                             f"{_PACKET_BLOCKS[btype]} with a bad interface or length")
                continue
            if original > caplen:
                stats.skip(_CUT)
                continue
            linktype, num, den, offset = interfaces[iface_id]
            ns = (high << 32 | low) * num // den + offset
            if MIN_NS <= ns <= MAX_NS:
                yield linktype, ns, data[pos + 28:pos + 28 + caplen]
            else:
                stats.damage(f"offset {pos + buf.base}",
                             f"{_PACKET_BLOCKS[btype]} with a time outside 0001-01-01..9999-12-31")
        elif btype == _IDB:
            interfaces.append(_interface(data, pos, pos + length - 4, order))
        elif btype == _SPB:
            if not interfaces:
                stats.damage(f"offset {pos + buf.base}", "simple packet block before any interface")
                continue
            original = word.unpack_from(data, pos + 8)[0]
            if original > length - 16:
                stats.skip(_CUT)
                continue
            caplen = original
            yield interfaces[0][0], None, data[pos + 12:pos + 12 + caplen]
    stats.leftover_bytes = len(buf.data) - buf.pos
