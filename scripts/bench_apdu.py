"""Benchmark every APDU ingest path against the raw drivers, in the same run, and print ratios.

    python scripts/bench_apdu.py            # SQLite 200,000 and 1,000,000 rows, servers 200,000
    python scripts/bench_apdu.py --quick    # SQLite 200,000 rows, servers 40,000, no export
    python scripts/bench_apdu.py --rows 300000 --backends sqlite --only insert
    python scripts/bench_apdu.py --server-rows 200000 --backends postgresql,mysql --only insert

The ingest paths: the writer (``ApduLogWriter.add`` per row, as ``apdu_logger`` does) and
the guide's ``uow.logs.add_log_batch(rows)`` + ``uow.logs.flush_batch()``, one unit of
work per 10,000 rows. The raw side is what a hand-written lab script does with the same
rows: stamp each row, then the driver's own bulk call (``sqlite3`` executemany, psycopg2
``execute_values``, pymysql ``executemany``), committing every 10,000 rows. Each side
starts from an empty table; sides alternate within a round (in a rotating order) and the
ratio compares medians over ``--rounds`` rounds; every side must leave the same rows.
Servers: the local MariaDB and PostgreSQL of tests/servers.py (root / postgres on
127.0.0.1), in a database created for the run and dropped after.

Targets (issue 16): every ingest path >= 1.0x raw sqlite3 executemany on SQLite at 200k
and 1M rows; >= 0.9x execute_values / pymysql executemany on PostgreSQL / MariaDB; a
200-row session read as tuples/dicts <= 1.5x raw, as models <= 3x; JSON-lines export of
every row: peak RSS growth < 50 MB and >= 0.7x a raw cursor stream. Exits non-zero when a
target is missed or nothing was measured.
"""

from __future__ import annotations

import argparse
import contextlib
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

TXN_ROWS = 10_000  # every side commits every this many rows
_COLUMNS = ("session_id, timestamp, latency_ms, direction, raw_data, decoded_data, "
            "status_word, status_message")
_LABELS = {"sqlite": "sqlite", "postgresql": "postgresql", "mysql": "mariadb"}
_TARGETS = {"sqlite": (1.0, "raw sqlite3 executemany"),
            "postgresql": (0.9, "psycopg2 execute_values"),
            "mysql": (0.9, "pymysql executemany")}
# What every side must have written (timestamps differ, the rest must not).
_CHECK_SQL = ("SELECT COUNT(*), COUNT(DISTINCT raw_data), SUM(LENGTH(raw_data)), "
              "COUNT(status_word), COUNT(decoded_data), SUM(latency_ms) FROM comm_logs")


def _rows(n: int, session_id: str) -> list[tuple]:
    """The guide's log tuples: (session_id, direction, raw_data, decoded_data,
    status_word, status_message, latency_ms)."""
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


def _clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) since ``start``."""
    wall, cpu = _clocks()
    return wall - start[0], cpu - start[1]


def _writer_side(manager, rows) -> tuple[float, float]:
    from cardlink_lite.apdu import ApduLogWriter

    writer = ApduLogWriter(manager, batch_size=TXN_ROWS, flush_interval=None)
    add = writer.add
    start = _clocks()
    for r in rows:
        add(*r)
    writer.close()
    return _since(start)


def _guide_side(manager, rows) -> tuple[float, float]:
    from cardlink_lite import UnitOfWork

    start = _clocks()
    for i in range(0, len(rows), TXN_ROWS):
        with UnitOfWork(manager) as uow:
            uow.logs.add_log_batch(rows[i:i + TXN_ROWS])
            uow.logs.flush_batch()
    return _since(start)


def _raw_tuples(rows):
    from cardlink_lite.apdu import now_text

    # A raw logger stamps rows too: same cheap timestamp text as the writer.
    return [(r[0], now_text(), r[6], r[1], r[2], r[3], r[4], r[5]) for r in rows]


def _raw_side(conn, insert_chunk, rows) -> tuple[float, float]:
    start = _clocks()
    data = _raw_tuples(rows)
    with contextlib.closing(conn.cursor()) as cur:
        for i in range(0, len(data), TXN_ROWS):
            insert_chunk(cur, data[i:i + TXN_ROWS])
            conn.commit()
    return _since(start)


class _SqliteTarget:
    """A fresh SQLite file for each run."""

    backend = "sqlite"

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.count = 0

    def run(self, side: str, n: int) -> tuple[tuple[float, float], tuple]:
        import sqlite3

        self.count += 1
        path = os.path.join(self.workdir, f"insert-{self.count}.db")
        manager, sid = _manager(f"sqlite:///{path}")
        rows = _rows(n, sid)
        try:
            if side == "raw":
                manager.close()
                conn = sqlite3.connect(path)
                conn.execute("PRAGMA synchronous=NORMAL")  # as the manager sets it
                sql = f"INSERT INTO comm_logs ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                seconds = _raw_side(conn, lambda cur, chunk: cur.executemany(sql, chunk), rows)
                check = conn.execute(_CHECK_SQL).fetchone()
                conn.close()
            else:
                seconds = (_writer_side if side == "writer" else _guide_side)(manager, rows)
                check = manager.database.execute_sql(_CHECK_SQL).fetchone()
        finally:
            manager.close()
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(path + suffix):
                    os.unlink(path + suffix)
        return seconds, tuple(check)

    def close(self) -> None:
        pass


class _ServerTarget:
    """One database on a local server for the whole bench; the table emptied before each run."""

    def __init__(self, backend: str):
        from tests import servers

        self.backend = backend
        self.name = f"bench_{uuid.uuid4().hex[:8]}"
        servers.create_database(backend, self.name)
        self.manager, self.sid = _manager(servers.url(backend, self.name))

    def _connect(self):
        if self.backend == "postgresql":
            import psycopg2

            return psycopg2.connect(dbname=self.name, user="postgres", host="127.0.0.1")
        import pymysql

        return pymysql.connect(host="127.0.0.1", user="root", database=self.name)

    def _insert_chunk(self):
        if self.backend == "postgresql":
            import psycopg2.extras

            sql = f"INSERT INTO comm_logs ({_COLUMNS}) VALUES %s"
            return lambda cur, chunk: psycopg2.extras.execute_values(cur, sql, chunk,
                                                                     page_size=1000)
        sql = f"INSERT INTO comm_logs ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        return lambda cur, chunk: cur.executemany(sql, chunk)

    def run(self, side: str, n: int) -> tuple[tuple[float, float], tuple]:
        database = self.manager.database
        database.execute_sql("TRUNCATE TABLE comm_logs")  # every side starts empty
        rows = _rows(n, self.sid)
        if side == "raw":
            conn = self._connect()
            seconds = _raw_side(conn, self._insert_chunk(), rows)
            conn.close()
        else:
            seconds = (_writer_side if side == "writer" else _guide_side)(self.manager, rows)
        check = database.execute_sql(_CHECK_SQL).fetchone()
        return seconds, tuple(float(v or 0) for v in check)

    def close(self) -> None:
        from tests import servers

        self.manager.close()
        servers.drop_database(self.backend, self.name)


def bench_insert(target, n: int, rounds: int, clock: str) -> list[dict]:
    """Interleaved rounds of raw, writer and guide on ``target``; one line per ingest path.

    ``clock`` is what the verdict compares: "wall", or "cpu" (this process's CPU time:
    on SQLite all the work is in this process and a commit does not wait for the disk
    with synchronous=NORMAL in WAL mode, so it is the wall time of a machine with no
    noisy neighbour). Both ratios are printed.
    """
    sides = ["raw", "writer", "guide"]
    wall: dict[str, list[float]] = {side: [] for side in sides}
    cpu: dict[str, list[float]] = {side: [] for side in sides}
    checks: dict[str, set] = {side: set() for side in sides}
    for r in range(rounds):
        order = sides[r % 3:] + sides[:r % 3]  # no side always runs first
        for side in order:
            (took, used), check = target.run(side, n)
            wall[side].append(took)
            cpu[side].append(used)
            checks[side].add(tuple(round(float(v or 0), 3) for v in check))
    target_ratio, baseline = _TARGETS[target.backend]
    raw_wall, raw_cpu = statistics.median(wall["raw"]), statistics.median(cpu["raw"])
    out = []
    for side, label in (("writer", "writer (ApduLogWriter.add)"),
                        ("guide", "guide (add_log_batch + flush_batch)")):
        ours_wall, ours_cpu = statistics.median(wall[side]), statistics.median(cpu[side])
        wall_ratio = raw_wall / ours_wall  # throughput ratios
        cpu_ratio = raw_cpu / ours_cpu
        ratio = cpu_ratio if clock == "cpu" else wall_ratio
        same = checks[side] == checks["raw"] and len(checks[side]) == 1
        line = {"bench": f"{_LABELS[target.backend]} insert: {label}", "rows": n,
                "rounds": rounds, "baseline": baseline, "verdict_clock": clock,
                "raw_rows_per_s": round(n / raw_wall), "cardlink_rows_per_s": round(n / ours_wall),
                "wall_ratio": round(wall_ratio, 2), "cpu_ratio": round(cpu_ratio, 2),
                "wall_ratios_by_round": [round(a / b, 2) for a, b in
                                         zip(wall["raw"], wall[side], strict=True)],
                "cpu_ratios_by_round": [round(a / b, 2) for a, b in
                                        zip(cpu["raw"], cpu[side], strict=True)],
                "target": f">= {target_ratio}x ({clock})", "ok": ratio >= target_ratio and same}
        if not same:
            line["problem"] = (f"rows differ from the raw side's: {sorted(checks[side])} vs "
                               f"{sorted(checks['raw'])}")
        out.append(line)
    return out


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
            # Printed, not gated: session_query() is the query a user refines further, so
            # Peewee builds its SQL on every run; the target is the session read's.
            ("tuples (peewee .tuples())", lambda: list(logs.session_query(sid).tuples()), 1,
             None),
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
                        "ok": target is None or t / raw <= target,
                        "bare_fetchall_ms": round(fetch * 1e3, 3),
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", help="SQLite rows, comma-separated sizes "
                        "(default 200000,1000000; --quick 200000)")
    parser.add_argument("--server-rows", type=int,
                        help="MariaDB/PostgreSQL rows (default 200000; --quick 40000)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds per size; ratios compare medians")
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--sqlite-clock", choices=("cpu", "wall"), default="cpu",
                        help="what the SQLite verdicts compare (servers: always wall time); "
                             "cpu: this process's CPU time, robust to noisy neighbours")
    parser.add_argument("--backends", default="sqlite,postgresql,mysql")
    parser.add_argument("--only", default="insert,read,export",
                        help="which benches to run (comma-separated)")
    parser.add_argument("--export-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.export_child:
        _export_child(*args.export_child)
        return 0
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sizes = [int(n) for n in (args.rows or ("200000" if args.quick else "200000,1000000"))
             .split(",")]
    server_rows = args.server_rows or (40_000 if args.quick else 200_000)
    backends = args.backends.split(",")
    only = args.only.split(",")
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        if "insert" in only:
            for backend in backends:
                if backend == "sqlite":
                    for n in sizes:
                        results.extend(bench_insert(_SqliteTarget(workdir), n, args.rounds,
                                                    args.sqlite_clock))
                    continue
                target = _ServerTarget(backend)
                try:
                    results.extend(bench_insert(target, server_rows, args.rounds, "wall"))
                finally:
                    target.close()
        if "sqlite" in backends:
            if "read" in only:
                results.extend(bench_session_read(workdir))
            if "export" in only:
                results.append(bench_export(100_000 if args.quick else max(sizes), workdir))
    for r in results:
        print(json.dumps(r), flush=True)
    return exit_code(results)


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
    sys.exit(main())
