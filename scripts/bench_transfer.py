"""Benchmark: export and import N APDU log rows through cardlink_lite and through the raw
driver, printing wall time and peak memory (each phase runs in its own process, so the
peak RSS is that phase's own; "idle" is the interpreter with cardlink_lite imported).

    python scripts/bench_transfer.py                 # 1,000,000 rows on a temp SQLite file
    python scripts/bench_transfer.py --rows 100000
    python scripts/bench_transfer.py --rows 100000 --server postgresql://postgres@127.0.0.1/x
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone

SESSION = "11111111-2222-4333-8444-555555555555"
COLUMNS = ("id", "session_id", "timestamp", "latency_ms", "direction", "raw_data",
           "decoded_data", "status_word", "status_message")


def _manager(url: str, create: bool):
    from cardlink_lite import DatabaseManager

    manager = DatabaseManager(url)
    manager.initialize(check_schema=False)
    if create:
        manager.drop_tables()
        manager.create_tables()
    return manager


def _placeholder(manager) -> str:
    return "?" if manager.config.is_sqlite else "%s"


def seed(url: str, rows: int) -> None:
    """One session and ``rows`` logs, inserted with the raw driver (not timed)."""
    manager = _manager(url, create=True)
    from cardlink_lite.models import OTASession

    OTASession.create(id=SESSION)
    t0 = datetime(2024, 11, 29, tzinfo=timezone.utc).replace(tzinfo=None)
    p = _placeholder(manager)
    sql = (f"INSERT INTO comm_logs ({', '.join(COLUMNS)}) VALUES "
           f"({', '.join([p] * len(COLUMNS))})")
    database = manager.database
    batch = []
    with database.atomic():
        cursor = database.cursor()
        for i in range(1, rows + 1):
            even = i % 2 == 0
            batch.append((i, SESSION, t0 + timedelta(milliseconds=i), 0.5 * (i % 97),
                          "response" if even else "command",
                          "9000" if even else "00A4040008A000000151000000",
                          None if even else "SELECT ISD", "9000" if even else None, None))
            if len(batch) == 5000:
                cursor.executemany(sql, batch)
                batch.clear()
        if batch:
            cursor.executemany(sql, batch)
    manager.close()


def phase_lib_export(url: str, path: str) -> dict:
    from cardlink_lite import DataExporter

    manager = _manager(url, create=False)
    with open(path, "w", encoding="utf-8") as fh:
        counts = DataExporter(manager).write(fh, tables=["sessions", "logs"])
    return {"rows": counts["comm_logs"]}


def phase_raw_export(url: str, path: str) -> dict:
    manager = _manager(url, create=False)
    cursor = manager.database.cursor()
    cursor.execute(f"SELECT {', '.join(COLUMNS)} FROM comm_logs ORDER BY id")
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        while True:
            rows = cursor.fetchmany(5000)
            if not rows:
                break
            for row in rows:
                fh.write(json.dumps(dict(zip(COLUMNS, row, strict=True)), default=str) + "\n")
            n += len(rows)
    return {"rows": n}


def phase_lib_import(url: str, path: str) -> dict:
    from cardlink_lite import DataImporter

    manager = _manager(url, create=True)
    with open(path, "rb") as fh:
        result = DataImporter(manager).import_data(fh)
    return {"rows": result.tables["comm_logs"]["created"]}


def phase_raw_import(url: str, path: str) -> dict:
    manager = _manager(url, create=True)
    from cardlink_lite.models import OTASession

    OTASession.create(id=SESSION)
    p = _placeholder(manager)
    sql = (f"INSERT INTO comm_logs ({', '.join(COLUMNS)}) VALUES "
           f"({', '.join([p] * len(COLUMNS))})")
    database = manager.database
    n = 0
    with database.atomic(), open(path, encoding="utf-8") as fh:
        cursor = database.cursor()
        batch = []
        for line in fh:
            row = json.loads(line)
            batch.append(tuple(row[c] for c in COLUMNS))
            if len(batch) == 5000:
                cursor.executemany(sql, batch)
                n += len(batch)
                batch.clear()
        if batch:
            cursor.executemany(sql, batch)
            n += len(batch)
    return {"rows": n}


def phase_idle(url: str, path: str) -> dict:
    _manager(url, create=False).close()
    import cardlink_lite.transfer  # noqa: F401

    return {"rows": 0}


PHASES = {"idle": phase_idle,
          "raw export": phase_raw_export, "cardlink_lite export": phase_lib_export,
          "raw import": phase_raw_import, "cardlink_lite import": phase_lib_import}


def _child(name: str, url: str, path: str) -> None:
    start = time.perf_counter()
    info = PHASES[name](url, path)
    info["seconds"] = time.perf_counter() - start
    info["peak_rss_mb"] = _peak_rss_mb()
    print(json.dumps(info))


def _peak_rss_mb() -> float:
    # VmHWM belongs to this process image; ru_maxrss would also count the parent's
    # peak, which a forked child inherits.
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run(name: str, url: str, path: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--phase", name, "--url", url,
                          "--file", path], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{name} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--server", metavar="URL",
                        help="Use this database URL (it is wiped) instead of a temp SQLite file.")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        _child(args.phase, args.url, args.file)
        return
    with tempfile.TemporaryDirectory() as tmp:
        url = args.server or f"sqlite:///{tmp}/bench.db"
        seed(url, args.rows)
        files = {"raw": os.path.join(tmp, "raw.jsonl"), "lib": os.path.join(tmp, "lib.json")}
        print(f"{args.rows:,} comm_logs rows on {url.split('://')[0]}")
        print(f"{'phase':<22}{'rows':>12}{'seconds':>10}{'rows/s':>12}{'peak MB':>10}")
        for name in PHASES:
            path = files["lib"] if name.startswith("cardlink") else files["raw"]
            info = _run(name, url, path)
            rate = info["rows"] / info["seconds"] if info["rows"] else 0
            print(f"{name:<22}{info['rows']:>12,}{info['seconds']:>10.2f}"
                  f"{rate:>12,.0f}{info['peak_rss_mb']:>10.1f}")
        for key, path in files.items():
            print(f"{key} file: {os.path.getsize(path) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
