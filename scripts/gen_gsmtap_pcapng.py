"""Write a GSMTAP-SIM pcapng capture of a realistic bench exchange, repeated to any size.

    python scripts/gen_gsmtap_pcapng.py trace.pcapng                 # 1,000,000 packets
    python scripts/gen_gsmtap_pcapng.py trace.pcap --packets 5000 --container pcap

An ATR, then SELECT / GET RESPONSE / READ BINARY on channels 0-3, a BIP session (FETCH: OPEN
CHANNEL, TERMINAL RESPONSE, ENVELOPE: EVENT DOWNLOAD, FETCH: RECEIVE DATA / SEND DATA / CLOSE
CHANNEL), GlobalPlatform INSTALL / PUT KEY, a VERIFY retry query, one packet every 2 ms.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.pcapwrite import CaptureWriter  # noqa: E402

ATR = "3B9F96801FC78031A073BE21136743200718000001A5"
# Whole T=0 exchanges (header, data, SW) as SIMtrace2 puts them in one GSMTAP packet.
PATTERN = [
    "00A40004023F006121",
    "00C0000021" + "62" + "1F" + "82027821" * 7 + "8A0105" + "9000",
    "01A4040007A00000008710026118",
    "02B0000008" + "0102030405060708" + "9000",
    "03B2010410" + "FF" * 16 + "9000",
    "8012000018" + "D016810301400182028182350702030403041F0239020578" + "9000",
    "801400000C810301400182028281830100" + "910F",
    "80C2000009D60799010982028281" + "910C",
    "801200000F" + "D00D810301420082028121B7010A" + "9000",
    "801400000C810301420082028281830100" + "910E",
    "801200000E" + "D00C810301430182028121B60101" + "9000",
    "801400000C810301430182028281830100" + "910B",
    "8012000009" + "D009810301410082028121" + "9000",
    "801400000C810301410082028281830100" + "9000",
    "0020000100" + "63C3",
    "80E60C0012" + "00" * 18 + "9000",
    "80D801810A" + "01" * 10 + "6A80",
]


def write_capture(path: str, packets: int, container: str = "pcapng",
                  start_ns: int = 1_732_874_400_000_000_000) -> int:
    """Write ``packets`` packets (the first an ATR) to ``path``; returns the file size."""
    bodies = [bytes.fromhex(p) for p in PATTERN]
    with open(path, "wb") as fp:
        writer = CaptureWriter(fp, container)
        writer.gsmtap(start_ns, bytes.fromhex(ATR), sub_type=1)
        for i in range(1, packets):
            writer.gsmtap(start_ns + i * 2_000_000, bodies[i % len(bodies)])
    return Path(path).stat().st_size


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--packets", type=int, default=1_000_000)
    parser.add_argument("--container", choices=("pcapng", "pcap"), default="pcapng")
    args = parser.parse_args(argv)
    if args.packets < 1:
        parser.error("--packets must be at least 1")
    size = write_capture(args.path, args.packets, args.container)
    print(f"wrote {args.packets} packets ({size} bytes) to {args.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
