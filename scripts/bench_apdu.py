"""Benchmark the APDU log writer against the raw drivers, in the same run, and print ratios.

    python scripts/bench_apdu.py            # full size: SQLite 1,000,000 rows, servers 200,000
    python scripts/bench_apdu.py --quick    # a tenth of that
    python scripts/bench_apdu.py --rows 300000 --backends sqlite

Targets (issue 5): SQLite writer >= 1.0x raw sqlite3 executemany; PostgreSQL >= 0.9x
execute_values; MariaDB >= 0.9x pymysql executemany; a 200-row session read as
tuples/dicts <= 1.5x raw, as models <= 3x; JSON-lines export of every row: peak RSS
growth < 50 MB and >= 0.7x a raw cursor stream.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime

TXN_ROWS = 10_000  # both sides commit every this many rows
_COLUMNS = ("session_id, timestamp, latency_ms, direction, raw_data, decoded_data, "
            "status_word, status_message")


def _rows(n: int, session_id: str) -> list[tuple]:
    out = []
    for i in range(n):
        if i % 2 == 0:
            out.append((session_id, "command", f"00A4040008A0000001510000{i % 256:02X}",
                        "SELECT ISD", None, None, None))
        else:
            out.append((session_id, "response", "6F108408A000000151000000A5049F6501FF9000",
                        None, "9000", "Success: normal ending of the command", 12.5))
    return out


def _manager(url: str):
    from cardlink_lite import DatabaseManager, OTASession

    manager = DatabaseManager(url).initialize(check_schema=False)
    manager.drop_tables()
    manager.create_tables()
    session_id = OTASession.create(session_type="bench").id
    return manager, session_id


def _empty_logs(manager) -> None:
    manager.database.execute_sql("TRUNCATE TABLE comm_logs")


def _writer_run(manager, rows) -> float:
    from cardlink_lite.apdu import ApduLogWriter

    writer = ApduLogWriter(manager, batch_size=TXN_ROWS, flush_interval=None)
    add = writer.add
    start = time.perf_counter()
    for r in rows:
        add(*r)
    writer.close()
    return time.perf_counter() - start


def _raw_tuples(rows):
    from cardlink_lite.apdu_rows import now_text

    # A raw logger stamps rows too: same cheap timestamp text as the writer.
    return [(r[0], now_text(), r[6], r[1], r[2], r[3], r[4], r[5]) for r in rows]


def bench_sqlite(n: int, workdir: str) -> dict:
    import sqlite3

    rows = None
    results = {}
    for label in ("raw", "writer"):
        path = os.path.join(workdir, f"{label}.db")
        manager, sid = _manager(f"sqlite:///{path}")
        rows = _rows(n, sid)
        if label == "writer":
            results[label] = _writer_run(manager, rows)
        else:
            manager.close()
            conn = sqlite3.connect(path, isolation_level=None)
            conn.execute("PRAGMA synchronous=NORMAL")
            sql = f"INSERT INTO comm_logs ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            start = time.perf_counter()
            data = _raw_tuples(rows)
            for i in range(0, n, TXN_ROWS):
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(sql, data[i:i + TXN_ROWS])
                conn.execute("COMMIT")
            results[label] = time.perf_counter() - start
            conn.close()
        manager.close()
    return _ratio("sqlite insert", n, results["raw"], results["writer"],
                  "raw sqlite3 executemany", 1.0)


def _server_insert(backend: str, n: int, connect, insert_chunk) -> tuple[float, float]:
    """(raw seconds, writer seconds) for ``n`` rows into a fresh database on ``backend``."""
    from tests import servers

    name = f"bench_{uuid.uuid4().hex[:8]}"
    servers.create_database(backend, name)
    try:
        manager, sid = _manager(servers.url(backend, name))
        rows = _rows(n, sid)
        data = _raw_tuples(rows)
        conn = connect(name)
        start = time.perf_counter()
        with conn.cursor() as cur:
            for i in range(0, n, TXN_ROWS):
                insert_chunk(cur, data[i:i + TXN_ROWS])
                conn.commit()
        raw = time.perf_counter() - start
        conn.close()
        _empty_logs(manager)  # both sides start from an empty table
        writer = _writer_run(manager, rows)
        manager.close()
    finally:
        servers.drop_database(backend, name)
    return raw, writer


def bench_postgresql(n: int) -> dict:
    import psycopg2
    import psycopg2.extras

    def insert(cur, chunk):
        psycopg2.extras.execute_values(
            cur, f"INSERT INTO comm_logs ({_COLUMNS}) VALUES %s", chunk, page_size=1000)

    raw, writer = _server_insert(
        "postgresql", n,
        lambda name: psycopg2.connect(dbname=name, user="postgres", host="127.0.0.1"), insert)
    return _ratio("postgresql insert", n, raw, writer, "psycopg2 execute_values", 0.9)


def bench_mysql(n: int) -> dict:
    import pymysql

    sql = f"INSERT INTO comm_logs ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
    raw, writer = _server_insert(
        "mysql", n,
        lambda name: pymysql.connect(host="127.0.0.1", user="root", database=name),
        lambda cur, chunk: cur.executemany(sql, chunk))
    return _ratio("mariadb insert", n, raw, writer, "pymysql executemany", 0.9)


def bench_session_read(workdir: str, repeat: int = 300) -> list[dict]:
    import sqlite3

    from cardlink_lite import UnitOfWork
    from cardlink_lite.apdu import ApduLogWriter

    path = os.path.join(workdir, "read.db")
    manager, sid = _manager(f"sqlite:///{path}")
    writer = ApduLogWriter(manager, batch_size=10_000, flush_interval=None)
    for _other in range(50):  # other sessions around it, as in a real store
        from cardlink_lite import OTASession

        osid = OTASession.create().id
        writer.add_many(_rows(200, osid))
    writer.add_many(_rows(200, sid))
    writer.close()
    conn = sqlite3.connect(path)
    from cardlink_lite import CommLog

    columns = [f.column_name for f in CommLog._meta.sorted_fields]  # every model column
    names = CommLog._meta.sorted_field_names
    at = columns.index("timestamp")
    raw_sql = (f"SELECT {', '.join(columns)} FROM comm_logs WHERE session_id = ? "
               "ORDER BY timestamp, id")

    def timed(fns):
        # Interleaved rounds: a noisy neighbour on a shared machine hits every side alike.
        samples = [[] for _ in fns]
        for _ in range(repeat):
            for fn, got in zip(fns, samples, strict=True):
                start = time.perf_counter()
                fn()
                got.append(time.perf_counter() - start)
        return [statistics.median(got) for got in samples]

    # The raw side must hand back the same Python values as cardlink_lite: SQLite gives
    # the timestamp as its stored text (naive UTC), cardlink_lite an aware UTC datetime,
    # so the raw side converts it too, with the fastest spelling we know (C fromisoformat
    # of text+"+00:00"; ".replace(tzinfo=utc)" costs ten times more on 3.11).
    utc_text = datetime.fromisoformat

    def raw_fetch():
        return conn.execute(raw_sql, (sid,)).fetchall()

    def raw_tuples():
        return [r[:at] + (utc_text(r[at] + "+00:00"),) + r[at + 1:]
                for r in conn.execute(raw_sql, (sid,)).fetchall()]

    def raw_dicts():
        return [dict(zip(names, r[:at] + (utc_text(r[at] + "+00:00"),) + r[at + 1:],
                         strict=True))
                for r in conn.execute(raw_sql, (sid,)).fetchall()]

    out = []
    with UnitOfWork(manager) as uow:
        logs = uow.logs
        # Same values on both sides (directions compare equal: CommDirection is a str enum).
        assert logs.session_rows(sid) == raw_tuples()
        assert logs.session_rows(sid, as_dicts=True) == raw_dicts()
        assert list(logs.session_query(sid).tuples()) == raw_tuples()
        assert [tuple(m.__data__.values()) for m in logs.find_by_session(sid)] == raw_tuples()
        cases = (
            ("tuples (session_rows)", lambda: logs.session_rows(sid), 1, 1.5),
            ("dicts (session_rows)", lambda: logs.session_rows(sid, as_dicts=True), 2, 1.5),
            ("tuples (peewee .tuples())", lambda: list(logs.session_query(sid).tuples()), 1,
             1.5),
            ("models (find_by_session)", lambda: logs.find_by_session(sid), 1, 3.0),
        )
        raw_what = ("", "fetchall + aware datetime", "fetchall + aware datetime + dict display")
        times = timed([raw_fetch, raw_tuples, raw_dicts] + [c[1] for c in cases])
        fetch = times[0]
        for (label, _fn, base, target), t in zip(cases, times[3:], strict=True):
            raw = times[base]
            out.append({"bench": f"read 200 rows as {label}", "raw": raw_what[base],
                        "raw_ms": round(raw * 1e3, 3), "cardlink_ms": round(t * 1e3, 3),
                        "time_ratio": round(t / raw, 2), "target_max_time_ratio": target,
                        "ok": t / raw <= target, "bare_fetchall_ms": round(fetch * 1e3, 3),
                        "ratio_vs_bare_fetchall": round(t / fetch, 2)})
    conn.close()
    manager.close()
    return out


_peak = [0]


def _rss_kb() -> int:
    # Current resident set (VmRSS); ru_maxrss cannot give a baseline after start-up.
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _sample_rss(stop) -> None:
    while not stop.wait(0.05):
        _peak[0] = max(_peak[0], _rss_kb())


def _export_child(path: str, mode: str, target: str) -> None:
    import threading

    stop = threading.Event()
    threading.Thread(target=_sample_rss, args=(stop,), daemon=True).start()
    import sqlite3

    # Both sides start from the same baseline, the interpreter with cardlink_lite
    # imported (~30 MB of modules a program that exports has loaded anyway); opening the
    # database is inside the measured part on both sides.
    from cardlink_lite import DatabaseManager, UnitOfWork

    base = _rss_kb()
    out = open(target, "w")  # noqa: SIM115
    start = time.perf_counter()
    if mode == "raw":
        # What a raw-driver user writes to produce the same lines: the stored timestamp
        # text (naive UTC) made ISO-8601 with its offset, as cardlink_lite exports it.
        conn = sqlite3.connect(path)
        cur = conn.execute("SELECT timestamp, direction, raw_data, decoded_data, status_word, "
                           "status_message, latency_ms FROM comm_logs ORDER BY id")
        count = 0
        dumps = json.dumps
        for ts, direction, raw, decoded, sw, message, latency in cur:
            out.write(dumps({"timestamp": ts.replace(" ", "T", 1) + "+00:00",
                             "direction": direction, "raw_data": raw, "decoded_data": decoded,
                             "status_word": sw, "status_message": message,
                             "latency_ms": latency}))
            out.write("\n")
            count += 1
    else:
        manager = DatabaseManager(f"sqlite:///{path}").initialize()
        with UnitOfWork(manager) as uow:
            count = uow.logs.write_jsonl(out)
    out.close()
    seconds = time.perf_counter() - start
    stop.set()
    peak = max(_peak[0], _rss_kb())
    print(json.dumps({"count": count, "seconds": seconds, "rss_growth_mb": (peak - base) / 1024}))


def _digest(path: str) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def bench_export(n: int, workdir: str) -> dict:
    path = os.path.join(workdir, "export.db")
    manager, sid = _manager(f"sqlite:///{path}")
    from cardlink_lite.apdu import ApduLogWriter

    writer = ApduLogWriter(manager, batch_size=50_000, flush_interval=None)
    for start in range(0, n, 50_000):
        writer.add_many(_rows(min(50_000, n - start), sid))
    writer.close()
    manager.close()
    got = {}
    digests = {}
    for mode in ("raw", "cardlink"):
        target = os.path.join(workdir, f"export-{mode}.jsonl")
        proc = subprocess.run([sys.executable, __file__, "--export-child", path, mode, target],
                              capture_output=True, text=True, check=True)
        got[mode] = json.loads(proc.stdout)
        digests[mode] = _digest(target)
        os.unlink(target)
    # Both sides must have written the very same bytes.
    assert digests["raw"] == digests["cardlink"], "raw and cardlink_lite exports differ"
    raw, ours = got["raw"], got["cardlink"]
    return {"bench": "export to JSON lines", "rows": n,
            "raw": "sqlite3 cursor loop, same lines (checked byte for byte), default 2 MB cache",
            "raw_rows_per_s": round(n / raw["seconds"]),
            "cardlink_rows_per_s": round(n / ours["seconds"]),
            "throughput_ratio": round(raw["seconds"] / ours["seconds"], 2),
            "raw_rss_growth_mb": round(raw["rss_growth_mb"], 1),
            "cardlink_rss_growth_mb": round(ours["rss_growth_mb"], 1),
            "target": ">= 0.7x and < 50 MB",
            "ok": raw["seconds"] / ours["seconds"] >= 0.7 and ours["rss_growth_mb"] < 50}


def _ratio(name, n, raw, ours, baseline, target) -> dict:
    ratio = raw / ours  # throughput ratio
    return {"bench": name, "rows": n, "baseline": baseline,
            "raw_rows_per_s": round(n / raw), "cardlink_rows_per_s": round(n / ours),
            "throughput_ratio": round(ratio, 2), "target": f">= {target}x",
            "ok": ratio >= target}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, help="SQLite rows (servers get a fifth)")
    parser.add_argument("--quick", action="store_true", help="a tenth of the full size")
    parser.add_argument("--backends", default="sqlite,postgresql,mysql")
    parser.add_argument("--only", default="insert,read,export",
                        help="which benches to run (comma-separated)")
    parser.add_argument("--export-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.export_child:
        _export_child(*args.export_child)
        return
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sqlite_rows = args.rows or (100_000 if args.quick else 1_000_000)
    server_rows = max(1, sqlite_rows // 5)
    backends = args.backends.split(",")
    with tempfile.TemporaryDirectory() as workdir:
        results = []
        only = args.only.split(",")
        if "insert" in only:
            if "sqlite" in backends:
                results.append(bench_sqlite(sqlite_rows, workdir))
            if "postgresql" in backends:
                results.append(bench_postgresql(server_rows))
            if "mysql" in backends:
                results.append(bench_mysql(server_rows))
        if "sqlite" in backends:
            if "read" in only:
                results.extend(bench_session_read(workdir))
            if "export" in only:
                results.append(bench_export(sqlite_rows, workdir))
    for r in results:
        print(json.dumps(r))
    sys.exit(exit_code(results))


def exit_code(results: list[dict]) -> int:
    """0 only when something was measured and every line met its target."""
    if not results:
        print("nothing was measured: check --only and --backends", file=sys.stderr)
        return 1
    missed = [r.get("bench", r.get("backend", "?")) for r in results if r.get("ok") is not True]
    if missed:
        print(f"missed target: {', '.join(map(str, missed))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    main()
