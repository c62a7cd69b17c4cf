"""Benchmark ``import_trace`` on a GSMTAP-SIM pcapng against the APDU writer fed the same rows.

    python scripts/bench_traces.py                  # 1,000,000 packets on SQLite
    python scripts/bench_traces.py --packets 100000

Target (issue 13): importing the capture (reading, parsing, decoding and writing) runs at
>= 0.5x the throughput of the APDU writer alone, fed the very same decoded rows from memory
(in chunks of 100,000 packets, decoded beforehand and not timed), one transaction each side.
Memory: peak RSS growth of the import must stay flat: under 50 MB on top of SQLite's own
page cache (PRAGMA cache_size, 64 MB as the store configures it), whatever the file size.
Prints the figures and exits non-zero when the target is missed or nothing was measured.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gen_gsmtap_pcapng import write_capture  # noqa: E402

from cardlink_lite import DatabaseManager, OTASession  # noqa: E402
from cardlink_lite.apdu import ApduLogWriter  # noqa: E402
from cardlink_lite.traces import import_trace  # noqa: E402
from cardlink_lite.traces.load import rows_of_records  # noqa: E402
from cardlink_lite.traces.reading import read_trace  # noqa: E402

TARGET = 0.5
RSS_OVER_CACHE_MB = 50
CHUNK = 100_000


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _manager(directory: str, name: str):
    manager = DatabaseManager(f"sqlite:///{directory}/{name}.db")
    manager.initialize(check_schema=False)
    manager.create_tables()
    return manager


def _writer_seconds(manager, path: str) -> tuple[float, int]:
    """Seconds the APDU writer takes for the capture's rows, decoded beforehand in chunks."""
    session_id = OTASession.create(session_type="bench").id
    database = manager.database
    _, records, _ = read_trace(open(path, "rb"))
    rows_iter = rows_of_records(records, session_id)
    elapsed, count = 0.0, 0
    with database.atomic():
        writer = ApduLogWriter(database, batch_size=2000, flush_interval=None,
                               flush_at_exit=False)
        add_many = writer.add_many
        while True:
            chunk = list(islice(rows_iter, CHUNK * 2))
            if not chunk:
                break
            start = time.perf_counter()
            for at in range(0, len(chunk), 2000):  # as import_trace hands them over
                add_many(chunk[at:at + 2000])
            elapsed += time.perf_counter() - start
            count += len(chunk)
        start = time.perf_counter()
        writer.close()
        elapsed += time.perf_counter() - start
    return elapsed, count


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=1_000_000)
    parser.add_argument("--capture", help="use this pcapng instead of generating one")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as directory:
        path = args.capture or f"{directory}/bench.pcapng"
        if not args.capture:
            write_capture(path, args.packets)
        size_mb = Path(path).stat().st_size / 1e6
        before = _rss_mb()
        manager = _manager(directory, "import")
        kib = manager.database.execute_sql("PRAGMA cache_size").fetchone()[0]
        cache_mb = -kib / 1024 if kib < 0 else kib * 4096 / 2**20
        rss_limit = cache_mb + RSS_OVER_CACHE_MB
        start = time.perf_counter()
        summary = import_trace(manager, path)
        import_s = time.perf_counter() - start
        rss_growth = _rss_mb() - before
        manager.close()
        manager = _manager(directory, "writer")
        writer_s, writer_rows = _writer_seconds(manager, path)
        manager.close()
    if not summary.rows or not writer_rows or summary.rows != writer_rows:
        print(f"FAIL: nothing comparable measured (import {summary.rows} rows, writer "
              f"{writer_rows})")
        return 1
    ratio = (summary.rows / import_s) / (writer_rows / writer_s)
    report = {
        "packets": summary.exchanges + summary.atrs, "rows": summary.rows,
        "capture_mb": round(size_mb, 1),
        "import_s": round(import_s, 2), "import_rows_per_s": round(summary.rows / import_s),
        "writer_s": round(writer_s, 2), "writer_rows_per_s": round(writer_rows / writer_s),
        "ratio": round(ratio, 3), "target": TARGET,
        "import_rss_growth_mb": round(rss_growth, 1), "rss_limit_mb": round(rss_limit, 1),
    }
    print(json.dumps(report))
    ok = ratio >= TARGET and rss_growth < rss_limit
    print(f"{'OK' if ok else 'FAIL'}: import {ratio:.2f}x the writer fed from memory "
          f"(target >= {TARGET}x); import RSS growth {rss_growth:.0f} MB "
          f"(limit {rss_limit:.0f} MB: SQLite's page cache + {RSS_OVER_CACHE_MB}). "
          "Figures are noisy on a shared machine.")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
