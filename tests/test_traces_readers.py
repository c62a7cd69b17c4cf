"""Trace readers without a store: pcap/pcapng in every variant, GSMTAP-SIM, apdu4j, hex logs,
format detection, damage. The captures are written here, by the tests."""

import gzip
import io
import struct
import tracemalloc
from datetime import datetime, timezone
from pathlib import Path

import pytest

from cardlink_lite.apdu import MAX_RAW_HEX
from cardlink_lite.traces.reading import read_trace
from cardlink_lite.traces.records import MAX_APDU, TraceFormatError
from cardlink_lite.traces.textlines import MAX_LINE, text_lines
from tests.pcapwrite import CaptureWriter, gsmtap_sim, udp_frame

DATA = Path(__file__).parent / "data" / "traces"
T0 = 1_732_874_400_123_456_789  # 2024-11-29 10:00:00.123456789 UTC

ATR_HEX = "3B9F96801FC78031A073BE21136743200718000001A5"
# (packet body, expected command, expected response): whole T=0 exchanges as GSMTAP carries them
EXCHANGES = [
    ("00A40004023F006121", "00A40004023F00", "6121"),                      # case 3, data to card
    ("00C0000004" + "62028202" + "9000", "00C0000004", "620282029000"),   # case 2, data from card
    ("01A4000C022F00" + "9000", "01A4000C022F00", "9000"),                 # channel 1
    ("82F2000010" + "AB" * 16 + "9000", "82F2000010", "AB" * 16 + "9000"),  # STATUS, channel 2
    ("03B0000002" + "1234" + "9000", "03B0000002", "12349000"),            # channel 3
    # extended Lc (0003), then a stray 00 the split gives to the response
    ("80E2900000000301020300" + "9000", "80E29000000003010203", "009000"),
]


def _capture(container="pcapng", link="ethernet", nanoseconds=False, big_endian=False,
             ipv6=False, extra=()):
    out = io.BytesIO()
    writer = CaptureWriter(out, container, link, nanoseconds, big_endian)
    writer.gsmtap(T0, bytes.fromhex(ATR_HEX), sub_type=1, ipv6=ipv6)
    for i, (body, _, _) in enumerate(EXCHANGES, 1):
        writer.gsmtap(T0 + i * 1_000_000, bytes.fromhex(body), ipv6=ipv6)
    for ts, frame in extra:
        writer.packet(ts, frame)
    return out.getvalue()


def _read(data: bytes, fmt="auto"):
    found, records, stats = read_trace(io.BytesIO(data), fmt)
    return found, list(records), stats


@pytest.mark.parametrize("container", ["pcap", "pcapng"])
@pytest.mark.parametrize("link", ["ethernet", "sll", "sll2", "raw", "null"])
@pytest.mark.parametrize("nanoseconds", [False, True], ids=["us", "ns"])
@pytest.mark.parametrize("big_endian", [False, True], ids=["le", "be"])
def test_every_capture_variant_reads_the_same_records(container, link, nanoseconds, big_endian):
    ipv6 = link in ("sll2", "null")  # IPv6 under two link types, IPv4 under the others
    found, records, stats = _read(_capture(container, link, nanoseconds, big_endian, ipv6))
    assert found == container and stats.container == container
    step = 1 if nanoseconds else 1000
    expected = [("atr", T0 // step * step, ATR_HEX, None, None)] + [
        ("exchange", (T0 + i * 1_000_000) // step * step, cmd, rsp, None)
        for i, (_, cmd, rsp) in enumerate(EXCHANGES, 1)]
    got = [(k, ts, d.hex().upper(), r.hex().upper() if r is not None else None, lat)
           for k, ts, d, r, lat, _ in records]
    assert got == expected
    assert stats.skipped == {} and stats.corrupt == [] and stats.leftover_bytes == 0


def test_a_pcap_written_by_hand_reads(tmp_path):
    # Independent of CaptureWriter: a big-endian ns pcap, raw IPv4, one GSMTAP-SIM APDU.
    gsmtap = bytes([2, 4, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    gsmtap += bytes.fromhex("0070000001019000")
    udp = struct.pack("!HHHH", 1234, 4729, 8 + len(gsmtap), 0) + gsmtap
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                     b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02") + udp
    data = struct.pack(">IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 101)
    data += struct.pack(">IIII", 1_700_000_000, 5_000_123, len(ip), len(ip)) + ip
    _, records, _ = _read(data)
    assert records == [("exchange", 1_700_000_000_005_000_123, bytes.fromhex("0070000001"),
                        bytes.fromhex("019000"), None, None)]


def test_packets_that_are_not_gsmtap_sim_are_skipped_and_counted():
    other_port = udp_frame(b"hello", dport=53)
    not_sim = udp_frame(bytes([2, 4, 1, 0]) + bytes(12) + b"\x01\x02")  # GSMTAP type 1 (Um)
    pps = udp_frame(gsmtap_sim(b"\xff\x10\x94\x7b", sub_type=2))
    arp = b"\xff" * 6 + b"\x02" * 6 + b"\x08\x06" + bytes(28)
    tcp = bytearray(udp_frame(b"x" * 8))
    tcp[14 + 9] = 6
    extra = [(T0 + 9_000_000 + i, f) for i, f in enumerate([other_port, not_sim, pps, arp,
                                                            bytes(tcp)])]
    _, records, stats = _read(_capture(extra=extra))
    assert len(records) == 1 + len(EXCHANGES)
    assert stats.skipped == {"not GSMTAP (UDP port)": 1, "GSMTAP type 1 (not SIM)": 1,
                             "GSMTAP-SIM PPS request": 1, "not IP": 1, "not UDP": 1}


def test_a_truncated_capture_reads_what_is_complete_and_counts_the_rest():
    data = _capture("pcap")
    cut = data[:-7]
    _, records, stats = _read(cut)
    assert len(records) == len(EXCHANGES)  # the last packet is incomplete
    last_packet = 16 + 14 + 20 + 8 + 16 + len(bytes.fromhex(EXCHANGES[-1][0]))
    assert stats.leftover_bytes == last_packet - 7
    _, records, stats = _read(_capture("pcapng")[:-3])
    assert len(records) == len(EXCHANGES) and stats.leftover_bytes > 0


@pytest.mark.parametrize("container", ["pcap", "pcapng"])
def test_a_corrupt_block_in_the_middle_is_reported_with_its_offset(container):
    data = bytearray(_capture(container))
    # find the third packet (second exchange) and wreck its length field
    marker = bytes.fromhex(EXCHANGES[1][0])
    at = data.index(marker)
    if container == "pcap":
        header = at - (14 + 20 + 8 + 16) - 16
        struct.pack_into("<I", data, header + 8, 0x7FFFFFF0)
    else:
        header = at - (14 + 20 + 8 + 16) - 28
        struct.pack_into("<I", data, header + 4, 0x7FFFFFF0)
    _, records, stats = _read(bytes(data))
    assert [r[2].hex().upper() for r in records[1:]] == [c for _, c, _ in EXCHANGES
                                                        if c != EXCHANGES[1][1]]
    assert len(stats.corrupt) == 1 and stats.corrupt[0].startswith(f"offset {header}:")


@pytest.mark.parametrize("data, what", [
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(200), "a binary file"),
    (b'{"format": "cardlink-export", "devices": []}\n', "a text file"),
    (b"", "an empty file"),
])
def test_another_kind_of_file_is_refused_naming_the_formats_tried(data, what):
    with pytest.raises(TraceFormatError) as info:
        _read(data)
    assert str(info.value) == (
        f"not a trace this tool can read ({what}); tried: pcapng, pcap, gppro, apdu4j, "
        "pysim-shell, pyscard, tca-loader, hex-lines, pysim-hex. Pass --format to name it if it "
        "is one of them")


def test_asking_for_pcap_on_a_text_file_says_what_it_looks_like():
    with pytest.raises(TraceFormatError, match="not a pcap file .*looks like hex-lines"):
        _read(b"00A40004023F00\n9000\n", "pcap")


def test_apdu4j_session_with_latency_and_header_time():
    with open(DATA / "apdu4j-gp-scp02-session.dump", "rb") as fp:
        found, records, stats = read_trace(fp)
        records = list(records)
    assert found == "apdu4j"
    start = 1_422_205_863_000_000_000  # Sun, 25 Jan 2015 19:11:03 +0200
    assert records[0] == ("atr", start, bytes.fromhex("3BF91300008131FE454A434F503234325232A3"),
                          None, None, None)
    exchanges = records[1:]
    assert [r[4] for r in exchanges] == [40.0, 50.0, 49.0, 37.0, 33.0, 37.0, 40.0, 35.0, 166.0]
    assert [r[1] - start for r in exchanges[:3]] == [0, 40_000_000, 90_000_000]
    assert exchanges[4][3] == bytes.fromhex("6A88")
    assert exchanges[-1][2].hex().upper().startswith("84D80181")
    assert stats.open_exchange is False and stats.corrupt == []


def test_apdu4j_without_latency_lines():
    with open(DATA / "apdu4j-multi-channel.dump", "rb") as fp:
        found, records, _ = read_trace(fp)
        records = list(records)
    assert found == "apdu4j"
    assert [(r[0], r[1], r[4]) for r in records] == [("atr", None, None),
                                                   ("exchange", None, None)]
    assert records[1][2] == bytes.fromhex("00A4040000")
    assert records[1][3].hex().upper().endswith("029000")


HEX_LOGS = {
    "pyscard": (
        "connecting to Gemalto USB Reader 00 00\n"
        "> 00 A4 04 00 07 A0 00 00 00 87 10 02\n"
        "< 61 2C\n"
        "> 00 C0 00 00 02\n"
        "< 62 2A 90 00\n"
        "> 00 70 00 00 01\n"
        "<  [] 90 00\n"
        "reconnecting to Gemalto USB Reader 00 00\n"),
    "pysim-shell": (
        "-> 00A4040007 A0000000871002\n"
        "<- 612C: \n"
        "-> 00C0000002 \n"
        "<- 9000: 622a\n"
        "-> 0070000001 \n"
        "<- 9000: \n"),
    "tca-loader": (
        "TCA Loader v2 log\n"
        "Command 00A4040007A0000000871002\n"
        "Response 612C\n"
        "Command 00C0000002\n"
        "Response 622A9000\n"
        "Command 0070000001\n"
        "Response 9000\n"),
    "hex-lines": (
        "00A4040007A0000000871002\n612C\n00C0000002\n622A9000\n0070000001\n9000\n"),
    "pysim-hex": (
        "00A4040007A0000000871002612C\n00C0000002622A9000\n00700000019000\n"),
}
EXPECTED_HEX = [("00A4040007A0000000871002", "612C"), ("00C0000002", "622A9000"),
                ("0070000001", "9000")]


@pytest.mark.parametrize("fmt", sorted(HEX_LOGS))
def test_hex_logs_are_detected_by_content_and_read(fmt):
    found, records, stats = _read(HEX_LOGS[fmt].encode())
    assert found == fmt
    exchanges = [(r[2].hex().upper(), r[3].hex().upper()) for r in records if r[0] == "exchange"]
    assert exchanges == EXPECTED_HEX
    assert all(r[1] is None and r[4] is None for r in records)  # no time, no latency
    kinds = [r[0] for r in records]
    assert kinds == ["exchange"] * 3 + (["reset"] if fmt == "pyscard" else [])
    assert stats.corrupt == [] and stats.open_exchange is False


@pytest.mark.parametrize("stamp, expected_ns", [
    ("2024-11-29 10:00:00.123 ", T0 // 1_000_000 * 1_000_000),
    ("[2024-11-29T10:00:00.123456Z] ", T0 // 1000 * 1000),
    ("2024-11-29T11:00:00.123+01:00 | ", T0 // 1_000_000 * 1_000_000),
    ("1732874400.123456789 ", T0),
])
def test_leading_timestamps(stamp, expected_ns):
    text = f"{stamp}> 00 B0 00 00 02\n{stamp}< 12 34 90 00\n"
    _, records, _ = _read(text.encode())
    assert [(r[1], r[2].hex(), r[3].hex(), r[5]) for r in records] == [
        (expected_ns, "00b0000002", "12349000", expected_ns)]


def test_time_only_stamps_take_the_last_date_and_roll_over_midnight():
    text = ("2024-11-29 23:59:59.500 -> 00B0000001 \n23:59:59.900 <- 9000: 01\n"
            "00:00:00.100 -> 00B0000001 \n00:00:00.200 <- 9000: 02\n")
    _, records, _ = _read(text.encode())
    day = 1_732_924_799_500_000_000  # 2024-11-29 23:59:59.5 UTC
    assert [(r[1], r[5]) for r in records] == [(day, day + 400_000_000),
                                               (day + 600_000_000, day + 700_000_000)]


def test_a_log_ending_with_a_command_is_an_open_exchange():
    _, records, stats = _read(b"00A40004023F00\n9000\n00B0000010\n")
    assert records[-1][2:4] == (bytes.fromhex("00B0000010"), None)
    assert stats.open_exchange is True


def test_an_unreadable_line_is_reported_with_its_number():
    _, records, stats = _read(b"> 00 A4 00 00 02 3F 00\n< 90 00\n> 00 ZZ\n> 00 B0 00 00 01\n"
                              b"< 01 90 00\n", "pyscard")
    assert len(records) == 2
    assert stats.corrupt == ["line 3: command not hex: '> 00 ZZ'"]
    assert stats.skipped == {"unreadable line": 1}


@pytest.mark.slow
def test_reading_streams_a_big_capture_in_flat_memory():
    out = io.BytesIO()
    writer = CaptureWriter(out)
    body = bytes.fromhex("00B0000010") + bytes(16) + b"\x90\x00"
    for i in range(40_000):
        writer.gsmtap(T0 + i, body)
    out.seek(0)
    tracemalloc.start()
    _, records, _ = read_trace(out)
    count = sum(1 for _ in records)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == 40_000
    assert peak < 4 * (1 << 20) < len(out.getvalue())  # well under the file's 4.5 MB


def _block(btype: int, body: bytes) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    return struct.pack("<II", btype, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))


def test_pcapng_simple_and_obsolete_packet_blocks_and_vlan_tags():
    frame = udp_frame(gsmtap_sim(bytes.fromhex("00B00000020102" + "9000")))
    tagged = frame[:12] + b"\x81\x00\x00\x05" + frame[12:]  # an 802.1Q VLAN tag
    shb = _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    # microsecond interface with a 10 s if_tsoffset
    idb = _block(1, struct.pack("<HHI", 1, 0, 65535) + struct.pack("<HH", 14, 8)
                 + struct.pack("<q", 10) + struct.pack("<HH", 0, 0))
    spb = _block(3, struct.pack("<I", len(tagged)) + tagged)
    units = 1_700_000_000_000_001
    opb = _block(2, struct.pack("<HHIII", 0, 0, units >> 32, units & 0xFFFFFFFF, len(frame))
                 + struct.pack("<I", len(frame)) + frame)
    _, records, stats = _read(shb + idb + spb + opb)
    assert [(r[1], r[2].hex(), r[3].hex()) for r in records] == [
        (None, "00b0000002", "01029000"),
        (1_700_000_010_000_001_000, "00b0000002", "01029000")]
    assert stats.corrupt == []


def test_damaged_files_never_raise_anything_but_a_format_error():
    import random

    from cardlink_lite.traces.decode import decode_exchange

    rng = random.Random(13)
    bases = [_capture(c, link) for c in ("pcap", "pcapng") for link in ("ethernet", "sll2")]
    bases += [text.encode() for text in HEX_LOGS.values()]
    for _ in range(400):
        data = bytearray(rng.choice(bases))
        for _ in range(rng.randint(1, 6)):
            at = rng.randrange(len(data))
            roll = rng.random()
            if roll < 0.6:
                data[at] = rng.randrange(256)
            elif roll < 0.8:
                del data[at:at + rng.randint(1, 20)]
            else:
                data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 20)))
        try:
            _, records, _ = read_trace(io.BytesIO(bytes(data)))
            for record in records:
                if record[0] == "exchange":
                    decode_exchange(record[2], record[3] or b"")
        except TraceFormatError:
            pass


def test_text_lines_keeps_a_line_spanning_many_chunks_whole():
    long_line = "ab" * (MAX_LINE // 2)  # 512 KiB, the longest line read: 8 chunks
    data = f"{long_line}\r\nshort\rlast".encode()
    assert list(text_lines(io.BytesIO(data[5:]), data[:5])) == [long_line, "short", "last"]



def _epb(units: int, frame: bytes) -> bytes:
    return _block(6, struct.pack("<IIIII", 0, units >> 32, units & 0xFFFFFFFF, len(frame),
                                 len(frame)) + frame)


@pytest.mark.parametrize("units, tsoffset", [(2**63, 0), (2**64 - 1, 0), (1, -2**40)],
                         ids=["2^63 us", "2^64-1 us", "negative offset"])
def test_a_packet_time_out_of_range_is_damage_and_reading_goes_on(units, tsoffset):
    shb = _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb = _block(1, struct.pack("<HHI", 1, 0, 65535) + struct.pack("<HHq", 14, 8, tsoffset)
                 + struct.pack("<HH", 0, 0))  # microseconds, if_tsoffset in seconds
    good = T0 // 1000 - tsoffset * 1_000_000  # microseconds that land at T0 after the offset
    frames = [udp_frame(gsmtap_sim(bytes.fromhex(body))) for body, _, _ in EXCHANGES[:3]]
    bad = _epb(units, frames[1])
    data = shb + idb + _epb(good, frames[0]) + bad + _epb(good + 1, frames[2])
    _, records, stats = _read(data)
    assert [(r[1], r[2].hex().upper()) for r in records] == [
        (T0 // 1000 * 1000, EXCHANGES[0][1]), (T0 // 1000 * 1000 + 1000, EXCHANGES[2][1])]
    assert stats.corrupt == [f"offset {data.index(bad)}: enhanced packet block with a time "
                             "outside 0001-01-01..9999-12-31"]


@pytest.mark.parametrize("stamp", ["9999-12-31 23:59:59-05:00", "0001-01-01 00:00:00+05:00",
                                   "2024-02-30 10:00:00"])
@pytest.mark.parametrize("fmt", ["pyscard", "hex-lines"])
def test_a_line_time_out_of_range_is_damage_and_reading_goes_on(stamp, fmt):
    lines = ["> 00 A4 00 00 02 3F 00", "< 90 00", "> 00 B0 00 00 01", "< 01 90 00"]
    if fmt == "hex-lines":
        lines = [line[2:] for line in lines]
    lines[2] = f"{stamp} {lines[2]}"
    _, records, stats = _read("\n".join(["2024-11-29 10:00:00 " + lines[0]] + lines[1:])
                              .encode(), fmt)
    assert records[0][:4] == ("exchange", 1_732_874_400 * 10**9, bytes.fromhex("00A40000023F00"),
                              bytes.fromhex("9000"))
    assert stats.corrupt[0] == (f"line 3: timestamp {stamp!r} is not a date and time inside "
                                "0001-01-01..9999-12-31 (UTC)")
    assert stats.skipped["unreadable line"] >= 1



@pytest.mark.parametrize("name", ["apdu4j-gp-scp02-session.dump", "hex-lines"])
def test_a_utf8_byte_order_mark_is_not_part_of_the_first_line(name):
    data = (DATA / name).read_bytes() if name.endswith(".dump") else \
        HEX_LOGS["hex-lines"].encode()
    plain = _read(data)
    for fmt in ("auto", plain[0]):
        found, records, stats = _read(b"\xef\xbb\xbf" + data, fmt)
        assert (found, records, stats.corrupt) == (plain[0], plain[1], [])
    assert list(text_lines(io.BytesIO(b"\xbfab\ncd"), b"\xef\xbb")) == ["ab", "cd"]



def test_an_apdu4j_header_date_not_in_english_is_reported():
    data = (DATA / "apdu4j-gp-scp02-session.dump").read_bytes().replace(
        b"Sun, 25 Jan 2015", b"So., 25 Jan. 2015")
    _, records, stats = _read(data)
    assert stats.corrupt == [
        "line 1: 'Generated on' date not in apdu4j's English form ('Mon, 4 May 2020 17:31:15 "
        "+0200'); rows are timed at the file's modification time instead: 'So., 25 Jan. "
        "2015 19:11:03 +0200'"]
    assert len(records) == 10 and all(r[1] is None for r in records)


def _packets_only(container):
    """The capture's packets without its file header (pcap) / SHB and IDB (pcapng)."""
    out = io.BytesIO()
    CaptureWriter(out, container)
    return _capture(container)[len(out.getvalue()):]


def _traced(data: bytes):
    source = io.BytesIO(data)
    tracemalloc.start()
    _, records, stats = read_trace(source)
    records = list(records)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return records, stats, peak


@pytest.mark.parametrize("container", ["pcap", "pcapng"])
def test_a_long_zero_filled_gap_is_skipped_to_the_next_record_in_flat_memory(container):
    good = _capture(container)
    zeros = 12 << 20  # more than any give-up limit: reading goes on at the next good record
    records, stats, peak = _traced(good + bytes(zeros) + _packets_only(container))
    assert len(records) == 2 * (1 + len(EXCHANGES)) and stats.leftover_bytes == 0
    assert stats.skipped == {}
    assert len(stats.corrupt) == 1 and stats.corrupt[0].startswith(f"offset {len(good)}: ")
    assert stats.corrupt[0].endswith(f" makes no sense (length 0); {zeros:,} bytes unreadable"
                                     if container == "pcap" else
                                     f" makes no sense; {zeros:,} bytes unreadable")
    assert peak < 4 << 20 < zeros


@pytest.mark.parametrize("container", ["pcap", "pcapng"])
def test_a_zero_filled_tail_is_reported_as_unreadable_not_as_a_truncated_record(container):
    good = _capture(container)
    zeros = 12 << 20
    records, stats, peak = _traced(good + bytes(zeros))
    assert len(records) == 1 + len(EXCHANGES) and stats.leftover_bytes == 0
    assert stats.skipped == {}
    assert len(stats.corrupt) == 1 and stats.corrupt[0].startswith(f"offset {len(good)}: ")
    assert stats.corrupt[0].endswith(f"; {zeros:,} bytes unreadable (no record after them)")
    assert peak < 4 << 20 < zeros


def test_all_zero_pcap_records_after_the_header_are_one_damage_not_millions_of_skips():
    header = _capture("pcap")[:24]
    records, stats, _ = _traced(header + bytes(1 << 20) + _packets_only("pcap"))
    assert len(records) == 1 + len(EXCHANGES) and stats.skipped == {}
    assert stats.corrupt == [f"offset 24: pcap record header makes no sense (length 0); "
                             f"{1 << 20:,} bytes unreadable"]


@pytest.mark.parametrize("container", ["pcap", "pcapng"])
def test_a_packet_cut_by_the_snaplen_is_skipped_not_stored_with_a_wrong_sw(container):
    out = io.BytesIO()
    writer = CaptureWriter(out, container)
    writer.gsmtap(T0, bytes.fromhex(EXCHANGES[0][0]))
    frame = udp_frame(gsmtap_sim(bytes.fromhex("00B0000010" + "11" * 16 + "9000")))
    writer.packet(T0 + 1000, frame[:70], original=len(frame))
    # a UDP header claiming more bytes than the frame holds
    short = bytearray(udp_frame(gsmtap_sim(bytes.fromhex("00B0000002" + "1122" + "9000"))))
    struct.pack_into("!H", short, 14 + 20 + 4, 8 + 16 + 9 + 40)
    writer.packet(T0 + 2000, bytes(short))
    _, records, stats = _read(out.getvalue())
    assert [r[2].hex().upper() for r in records] == [EXCHANGES[0][1]]
    assert stats.skipped == {"packet cut by snaplen": 1, "truncated UDP datagram": 1}


def test_an_apdu_longer_than_a_log_row_holds_is_damage_on_its_line_and_the_rest_reads():
    big = "00D6000000" + "11" * 140_000
    text = f"00A40004023F00\n6121\n{big}\n9000\n00B0000002\n01029000\n"
    found, records, stats = _read(text.encode(), "hex-lines")
    assert [r[2].hex().upper() for r in records] == ["00A40004023F00", "00B0000002"]
    assert stats.corrupt[0] == ("line 3: an APDU of 140,005 bytes, more than the 131,072 a "
                                "log row holds; skipped")
    assert MAX_APDU * 2 == MAX_RAW_HEX


def test_a_line_without_end_is_cut_off_in_flat_memory():
    data = b"00A40004023F00\n6121\n" + b"1" * (8 << 20)
    source = io.BytesIO(data)
    tracemalloc.start()
    _, records, stats = read_trace(source, "hex-lines")
    records = list(records)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(records) == 1
    assert stats.corrupt == ["line 3: longer than 524,288 characters; skipped"]
    assert peak < 4 << 20 < len(data)


def test_a_packet_with_an_apdu_longer_than_a_log_row_holds_is_skipped():
    out = io.BytesIO()
    writer = CaptureWriter(out, "pcap")
    body = gsmtap_sim(bytes.fromhex("00D6000000") + b"\x11" * 140_000 + b"\x90\x00")
    frame = bytearray(udp_frame(b""))  # lengths 0: too long for the 16-bit fields
    struct.pack_into("!H", frame, 14 + 2, 0)
    struct.pack_into("!H", frame, 14 + 20 + 4, 0)
    writer.packet(T0, bytes(frame) + body)
    writer.gsmtap(T0 + 1000, bytes.fromhex(EXCHANGES[0][0]))
    _, records, stats = _read(out.getvalue())
    assert [r[2].hex().upper() for r in records] == [EXCHANGES[0][1]]
    assert stats.corrupt == ["packet 1: an APDU of 140,007 bytes, more than the 131,072 a "
                             "log row holds; skipped"]


@pytest.mark.parametrize("fmt", ["auto", "pyscard"])
@pytest.mark.parametrize("data, what", [
    (gzip.compress(b"00A40004023F00\n9000\n"), "a gzip-compressed file; decompress it first "
                                               "(gunzip)"),
    ("> 00 A4 00 04 02 3F 00\n< 90 00\n".encode("utf-16"), "UTF-16 text; convert it to "
                                                          "UTF-8 first (iconv -f UTF-16 -t UTF-8)"),
    ("\ufeff> 00 A4\n< 90 00\n".encode("utf-16-be"), "UTF-16 text; convert it to UTF-8 "
                                                     "first (iconv -f UTF-16 -t UTF-8)"),
], ids=["gzip", "utf-16-le", "utf-16-be"])
def test_gzip_and_utf16_files_are_named_not_called_binary(data, what, fmt):
    with pytest.raises(TraceFormatError) as caught:
        _read(data, fmt)
    assert f"({what})" in str(caught.value)


def test_a_gsmtap_header_length_under_4_words_is_skipped():
    bad = bytearray(gsmtap_sim(bytes.fromhex(EXCHANGES[0][0])))
    bad[1] = 0
    _, records, stats = _read(_capture(extra=[(T0 + 9_000_000, udp_frame(bytes(bad)))]))
    assert len(records) == 1 + len(EXCHANGES)
    assert stats.skipped == {"GSMTAP header length under 16 bytes": 1}


# GlobalPlatformPro `-d` output: apdu4j's LoggingCardTerminal (martinpaljak/apdu4j,
# pcsc/src/main/java/apdu4j/pcsc/terminals/LoggingCardTerminal.java; earlier
# pcsc/src/main/java/apdu4j/terminals/LoggingCardTerminal.java and GlobalPlatformPro's own
# openkms/gpj/LoggingCardTerminal.java). Written by hand after its print statements:
# "A>> <protocol> (4+<data length, decimal>) <CLA INS P1 P2> <Lc> <data> <Le>" and
# "A<< (<data length>+2) (<time>) <data> <SW>", the time as "26ms" or "1s204ms"; the
# SCardConnect line carries the ATR; GlobalPlatformPro's own lines are interleaved.
GPPRO_ATR = "3B8A800150564A434F503453494471"
GPPRO_LOG = f"""\
GlobalPlatformPro v20.01.23-0-g5ad373b
Running on Linux 5.15.0 amd64, Java 11.0.21 by Ubuntu
# Detected readers from JNA2PCSC
[*] Gemalto PC Twin Reader 00 00
SCardConnect("Gemalto PC Twin Reader 00 00", T=*) -> T=1, {GPPRO_ATR}
SCardBeginTransaction("Gemalto PC Twin Reader 00 00")
Reader: Gemalto PC Twin Reader 00 00
ATR: {GPPRO_ATR}
More information about your card:
    http://smartcard-atr.appspot.com/parse?ATR={GPPRO_ATR}

A>> T=1 (4+0000) 00A40400 00
A<< (0018+2) (26ms) 6F108408A000000151000000A5049F6501FF 9000
[DEBUG] GlobalPlatform - Auto-detected ISD: A000000151000000
# Warning: no keys given, defaulting to 404142434445464748494A4B4C4D4E4F
[TRACE] GlobalPlatform - Generated host challenge: 1122334455667788
A>> T=1 (4+0008) 80500000 08 1122334455667788 00
A<< (0028+2) (1s204ms) 00000000000000000000FF0200{"AB" * 15} 9000
A>> T=1 (4+0016) 84820100 10 {"CD" * 16}
A<< (0000+2) (31ms) 9000
A>> T=1 (4+0002) 80F24000 02 4F00 00
A<< (0000+2) (40ms) 6A88
SCardEndTransaction("Gemalto PC Twin Reader 00 00")
SCardDisconnect("Gemalto PC Twin Reader 00 00", true) tx:59/rx:52 in 1s411ms
"""
GPPRO_EXCHANGES = [
    ("00A4040000", "6F108408A000000151000000A5049F6501FF9000", 26.0),
    ("80500000081122334455667788" + "00", "00000000000000000000FF0200" + "AB" * 15 + "9000",
     1204.0),
    ("8482010010" + "CD" * 16, "9000", 31.0),
    ("80F24000024F0000", "6A88", 40.0),
]


def test_a_globalplatformpro_debug_log_is_detected_and_read():
    start = datetime(2024, 11, 29, 10, 0, 0, 123456, tzinfo=timezone.utc)
    found, records, stats = read_trace(io.BytesIO(GPPRO_LOG.encode()), start=start)
    records = list(records)
    assert found == "gppro"
    # no time in the format: the start, advanced by each latency (as apdu4j's dumps are)
    base = T0 // 1_000_000 * 1_000_000
    assert records[0] == ("atr", base, bytes.fromhex(GPPRO_ATR), None, None, None)  # once
    assert [(r[0], r[2].hex().upper(), r[3].hex().upper(), r[4], r[1] - base, r[5] - base)
            for r in records[1:]] == [
        ("exchange", c, r, ms, after * 1_000_000, after * 1_000_000)
        for (c, r, ms), after in zip(GPPRO_EXCHANGES, (0, 26, 1230, 1261), strict=True)]
    assert stats.corrupt == [] and stats.open_exchange is False


@pytest.mark.parametrize("command, response, expected", [
    # T=0, no time (a LoggingCardTerminal fed by a replay), an empty payload's double space
    ("A>> T=0 (4+0000) 00C00000 1C", "A<< (0028+2) " + "11" * 28 + " 9000",
     ("00C000001C", "11" * 28 + "9000", None)),
    # no protocol; Lc and payload and Le printed as the older versions did
    ("A>> (4+0002) 00A40000 02  3F00", "A<< (0000+2) (3ms) 6982", ("00A40000023F00", "6982", 3.0)),
    # GlobalPlatformPro's own older copy (openkms.gpj): lower-case hex, a trailing space
    ("A>> T=1 (4+0002) 00a40000 02 3f00 ", "A<< (0003+2) (12ms) 6f0001 9000",
     ("00A40000023F00", "6F00019000", 12.0)),
    # extended length: 300 data bytes (decimal), Lc 00012C, split as apdu4j splits it
    ("A>> T=1 (4+0300) 80E20000 00012C " + "01" * 44 + " " + "02" * 256,
     "A<< (0000+2) (2s5ms) 9000", ("80E2000000012C" + "01" * 44 + "02" * 256, "9000", 2005.0)),
    # the ByteBuffer transmit: total byte counts
    ("B>> T=1 (5) 00CA9F7F2D", "B<< (2) 6C2D", ("00CA9F7F2D", "6C2D", None)),
])
def test_gppro_line_variants(command, response, expected):
    _, records, stats = _read(f"{command}\n{response}\n".encode(), "gppro")
    assert [(r[2].hex().upper(), r[3].hex().upper(), r[4]) for r in records] == [expected]
    assert stats.corrupt == []


def test_gppro_a_failed_transmit_leaves_its_command_unanswered():
    text = ("A>> T=1 (4+0000) 00A40400 00\n<< (15ms) SCARD_W_REMOVED_CARD\n"
            "SCardConnect(\"R\", T=*) -> T=1, 3B00\nA>> T=1 (4+0000) 00B00000 00\n"
            "A<< (0000+2) (5ms) 6B00\n")
    found, records, stats = _read(text.encode())
    assert found == "gppro"
    assert [(r[0], r[2].hex(), r[3] and r[3].hex()) for r in records] == [
        ("exchange", "00a4040000", None), ("atr", "3b00", None),
        ("exchange", "00b0000000", "6b00")]
    assert stats.corrupt == []


def test_gppro_damaged_lines_are_reported_with_their_numbers_and_the_rest_reads():
    text = ("A>> T=1 (4+0000) 00A40400 00\n"
            "A<< (0018+2) (26ms) 6F10 9000\n"                 # 18 data bytes announced, 2 there
            "A>> T=1 (4+0008) 80500000 08 11223344\n"         # cut: 8 announced, 4 there
            "A>> T=1 (4+0000) 00B0000001\n"
            "A<< (0001+2) (7ms) 42 9000\n"
            "A>> T=1 (4+00zz) 00B0000001\n"                   # not the grammar
            "A<< (0002+2) (5ms) 9000\n")                      # old gpj: data of 2 bytes left out
    _, records, stats = _read(text.encode(), "gppro")
    assert [(r[2].hex(), r[3] and r[3].hex()) for r in records] == [
        ("00a4040000", None), ("00b0000001", "429000")]
    assert [c.split(":")[0] for c in stats.corrupt] == ["line 2", "line 3", "line 6", "line 7"]
    assert stats.skipped["unreadable line"] == 4
    assert "18 data bytes" in stats.corrupt[0] and "8 data bytes" in stats.corrupt[1]


def test_gppro_atr_from_an_info_line_when_the_connect_line_has_none():
    text = (f"SCardConnect(T=*)\n# ATR: {GPPRO_ATR}\nA>> T=1 (4+0000) 00A40400 00\n"
            "A<< (0000+2) (9ms) 9000\n")
    _, records, _ = _read(text.encode())
    assert [(r[0], r[2].hex().upper()) for r in records] == [("atr", GPPRO_ATR),
                                                           ("exchange", "00A4040000")]


# pyscard before its observer used "%02X %02X" wrote the status word with "%-2X %-2X"
# (pyscard's smartcard/CardConnectionObserver.py and its samples), so SW2 below 10 is one
# digit: "90 0", "61 0", "6C 1". toHexString always wrote two digits per data byte.
def test_old_pyscard_single_digit_sw2_is_read():
    text = ("connecting to Reader 0\n> 00 A4 04 00 07 A0 00 00 00 87 10 02\n< 61 0 \n"
            "> 00 C0 00 00 00\n< 62 2A 90 0 \n> 00 70 00 00 01\n<  [] 90 0 \n"
            "> 00 B0 00 00 00\n<  [] 6C 1\n")
    found, records, stats = _read(text.encode())
    assert found == "pyscard"
    assert [r[3].hex().upper() for r in records] == ["6100", "622A9000", "9000", "6C01"]
    assert stats.corrupt == []


@pytest.mark.parametrize("line", ["< 6 1", "< 62 2 90 00", "< 9 0 0"])
def test_pyscard_single_digit_bytes_elsewhere_are_damage(line):
    _, records, stats = _read(f"> 00 B0 00 00 01\n{line}\n".encode(), "pyscard")
    assert stats.corrupt == [f"line 2: response not hex: {line!r}"]
