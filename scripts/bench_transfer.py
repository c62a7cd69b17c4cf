"""Benchmark: export and import of N APDU log rows, cardlink_lite against the raw driver
doing the same work, interleaved, medians, each phase in its own process (peak RSS is its
own; "idle" is an interpreter with cardlink_lite imported and the database open).

- export: ``DataExporter.write`` (JSON Lines) vs a raw cursor's ``fetchmany`` written as
  JSON lines: >= 0.7x raw (the median of the rounds' ratios), < 50 MB RSS growth over idle;
- import: ``DataImporter.import_data`` of that JSON Lines file vs raw ``executemany`` of
  the same rows read from the same file (a timestamp parsed per row, as a lab script
  would): >= 0.8x raw, RSS growth at most the raw import's + 50 MB.

    python scripts/bench_transfer.py                       # 1,000,000 rows, temp SQLite
    python scripts/bench_transfer.py --rows 200000 --repeat 3
    python scripts/bench_transfer.py --rows 200000 --server postgresql://postgres@127.0.0.1/x

Prints a JSON line per target and exits 1 when one is missed or nothing was measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone

SESSION = "11111111-2222-4333-8444-555555555555"
COLUMNS = ("id", "session_id", "timestamp", "latency_ms", "direction", "raw_data",
           "decoded_data", "status_word", "status_message", "channel", "ins", "source_id")
EXPORT_RATIO, IMPORT_RATIO = 0.7, 0.8
EXPORT_GROWTH_MB, IMPORT_EXTRA_MB = 50, 50


def _manager(url: str, create: bool):
    from cardlink_lite import DatabaseManager

    manager = DatabaseManager(url)
    manager.initialize(check_schema=False)
    if create:
        manager.drop_tables()
        manager.create_tables()
    return manager


def _insert_sql(manager) -> str:
    p = "?" if manager.config.is_sqlite else "%s"
    return (f"INSERT INTO comm_logs ({', '.join(COLUMNS)}) VALUES "
            f"({', '.join([p] * len(COLUMNS))})")


def seed(url: str, rows: int) -> None:
    """One session and ``rows`` logs, inserted with the raw driver (not timed)."""
    manager = _manager(url, create=True)
    from cardlink_lite.models import OTASession

    OTASession.create(id=SESSION)
    t0 = datetime(2024, 11, 29, tzinfo=timezone.utc).replace(tzinfo=None)
    sql = _insert_sql(manager)
    database = manager.database
    batch = []
    with database.atomic():
        cursor = database.cursor()
        for i in range(1, rows + 1):
            even = i % 2 == 0
            batch.append((i, SESSION, t0 + timedelta(milliseconds=i), 0.5 * (i % 97),
                          "response" if even else "command",
                          "9000" if even else f"00A4040008A0000001510000{i % 256:02X}",
                          None if even else "SELECT ISD", "9000" if even else None,
                          None, 0, None if even else 0xA4, None))
            if len(batch) == 5000:
                cursor.executemany(sql, batch)
                batch.clear()
        if batch:
            cursor.executemany(sql, batch)
    manager.close()


_START = [0.0]


def _started() -> None:
    """The timed work starts now (after start-up, connection and table creation)."""
    _START[0] = time.perf_counter()


def phase_idle(url: str, path: str) -> dict:
    import cardlink_lite.transfer  # noqa: F401

    manager = _manager(url, create=False)
    manager.database.execute_sql("SELECT 1")
    manager.close()
    return {"rows": 0}


def phase_raw_export(url: str, path: str) -> dict:
    manager = _manager(url, create=False)
    _started()
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


def phase_lib_export(url: str, path: str) -> dict:
    from cardlink_lite import DataExporter

    manager = _manager(url, create=False)
    _started()
    with open(path, "w", encoding="utf-8") as fh:
        counts = DataExporter(manager).write(fh, tables=["sessions", "logs"], format="jsonl")
    return {"rows": counts["comm_logs"]}


def phase_raw_import(url: str, path: str) -> dict:
    """The same rows from the same file, as a lab script would write them."""
    manager = _manager(url, create=True)
    from cardlink_lite.models import OTASession

    OTASession.create(id=SESSION)
    sql = _insert_sql(manager)
    database = manager.database
    parse = datetime.fromisoformat
    _started()
    n = 0
    with database.atomic(), open(path, encoding="utf-8") as fh:
        cursor = database.cursor()
        batch = []
        table = None
        for line in fh:
            row = json.loads(line)
            if "table" in row or "format" in row or "row_counts" in row:
                table = row.get("table")
                continue
            if table != "comm_logs":
                continue
            row["timestamp"] = parse(row["timestamp"][:-1])
            batch.append(tuple(row[c] for c in COLUMNS))
            if len(batch) == 5000:
                cursor.executemany(sql, batch)
                n += len(batch)
                batch.clear()
        if batch:
            cursor.executemany(sql, batch)
            n += len(batch)
    return {"rows": n}


def phase_lib_import(url: str, path: str) -> dict:
    from cardlink_lite import DataImporter

    manager = _manager(url, create=True)
    _started()
    with open(path, "rb") as fh:
        result = DataImporter(manager).import_data(fh)
    return {"rows": result.tables["comm_logs"]["created"]}


PHASES = {"idle": phase_idle, "raw export": phase_raw_export,
          "cardlink_lite export": phase_lib_export, "raw import": phase_raw_import,
          "cardlink_lite import": phase_lib_import}


def _child(name: str, url: str, path: str) -> None:
    _started()
    info = PHASES[name](url, path)
    info["seconds"] = time.perf_counter() - _START[0]
    info["peak_rss_mb"] = _peak_rss_mb()
    print(json.dumps(info))


def _peak_rss_mb() -> float:
    # VmHWM belongs to this process image; ru_maxrss would also count the parent's.
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _run(name: str, url: str, path: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--phase", name, "--url", url,
                          "--file", path], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(url: str, rows: int, repeat: int, tmp: str) -> dict[str, list[dict]]:
    """Every phase ``repeat`` times, raw and cardlink_lite alternating who goes first."""
    seed(url, rows)
    files = {"raw": os.path.join(tmp, "raw.jsonl"), "lib": os.path.join(tmp, "lib.jsonl")}
    runs: dict[str, list[dict]] = {name: [] for name in PHASES}
    runs["idle"].append(_run("idle", url, files["raw"]))
    for round_ in range(repeat):
        for what in ("export", "import"):
            pair = [f"raw {what}", f"cardlink_lite {what}"]
            if round_ % 2:
                pair.reverse()
            for name in pair:
                # Exports read the seeded store; imports (which recreate the tables) come
                # after both exports of the round and read the library's JSON Lines file.
                path = files["raw"] if name == "raw export" else files["lib"]
                runs[name].append(_run(name, url, path))
        if round_ + 1 < repeat:
            seed(url, rows)  # the imports replaced the store: the next exports read it again
    return runs


def verdicts(runs: dict[str, list[dict]]) -> list[dict]:
    idle = runs["idle"][0]["peak_rss_mb"] if runs.get("idle") else 0.0
    results = []
    for what, target in (("export", EXPORT_RATIO), ("import", IMPORT_RATIO)):
        raw, lib = runs.get(f"raw {what}", []), runs.get(f"cardlink_lite {what}", [])
        if not raw or not lib or not all(r["rows"] for r in raw + lib):
            results.append({"bench": what, "ok": False, "problem": "nothing was measured"})
            continue
        raw_s = statistics.median(r["seconds"] for r in raw)
        lib_s = statistics.median(r["seconds"] for r in lib)
        rows = lib[0]["rows"]
        # The median of each round's ratio: a round's two runs are back to back, so a
        # load spike from other processes spoils one round, not every measurement.
        ratio = statistics.median(r["seconds"] / c["seconds"]
                                  for r, c in zip(raw, lib, strict=True))
        raw_growth = max(r["peak_rss_mb"] for r in raw) - idle
        lib_growth = max(r["peak_rss_mb"] for r in lib) - idle
        bound = EXPORT_GROWTH_MB if what == "export" else raw_growth + IMPORT_EXTRA_MB
        results.append({
            "bench": what, "rows": rows, "runs": len(lib),
            "raw_s": round(raw_s, 2), "cardlink_lite_s": round(lib_s, 2),
            "raw_rows_per_s": round(rows / raw_s), "cardlink_lite_rows_per_s": round(rows / lib_s),
            "ratio": round(ratio, 3), "target_ratio": target,
            "round_ratios": [round(r["seconds"] / c["seconds"], 3)
                             for r, c in zip(raw, lib, strict=True)],
            "raw_rss_growth_mb": round(raw_growth, 1),
            "cardlink_lite_rss_growth_mb": round(lib_growth, 1),
            "rss_growth_bound_mb": round(bound, 1),
            "ok": ratio >= target and lib_growth < bound and lib[0]["rows"] == raw[0]["rows"]})
    return results


def exit_code(results: list[dict]) -> int:
    """0 only when something was measured and every target held."""
    return 0 if results and all(r.get("ok") is True for r in results) else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=1, help="interleaved rounds (median)")
    parser.add_argument("--server", metavar="URL",
                        help="Use this database URL (it is wiped) instead of a temp SQLite file.")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        _child(args.phase, args.url, args.file)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        url = args.server or f"sqlite:///{tmp}/bench.db"
        results = verdicts(measure(url, args.rows, max(1, args.repeat), tmp))
    backend = url.split("://")[0].split("+")[0]
    for result in results:
        print(json.dumps({"backend": backend, **result}))
    return exit_code(results)


if __name__ == "__main__":
    sys.exit(main())
