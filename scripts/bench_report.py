"""Build time, file size and memory of the HTML report on a full-size SQLite store.

The store: ``--runs`` runs x ``--tests`` tests of one suite (a flaky test, a regression)
and one session of ``--apdus`` APDUs on two logical channels. Targets (issue 15): the
build takes at most 2 s and the file is at most 2 MB. For scale it also times the raw
sqlite3 driver reading the rows the report summarises (every result of the window and the
session's APDUs) and prints the ratio. Then ``--extra-apdus`` more APDUs are stored in
other sessions and the build's peak Python memory is measured again: it must stay flat
(at most 1.5x). Exits non-zero when a target is missed or nothing was measured. Example:

    python scripts/bench_report.py --runs 50 --tests 1000 --apdus 2000
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
import tracemalloc
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cardlink_lite import (
    ApduLogWriter,
    DatabaseConfig,
    DatabaseManager,
    OTASession,
    SessionStatus,
    TestResult,
    TestStatus,
    UnitOfWork,
)
from cardlink_lite.report import build_report

TARGET_SECONDS = 2.0
TARGET_BYTES = 2 * 1024 * 1024
TARGET_MEMORY_RATIO = 1.5
T0 = datetime(2024, 11, 1, tzinfo=timezone.utc)


def _fill_runs(manager, runs: int, tests: int) -> None:
    for r in range(runs):
        start = T0 + timedelta(days=r)
        rows = []
        for t in range(tests):
            status = TestStatus.PASSED
            if t == 7 and r % 2:  # flaky
                status = TestStatus.FAILED
            if t == 11 and r == runs - 1:  # the newest run's regression
                status = TestStatus.FAILED
            if t % 97 == 0 and r % 5 == 0:
                status = TestStatus.SKIPPED
            duration = 20 + (t * 37) % 900 + r
            rows.append(TestResult(
                run_id=f"run-{r:03d}", suite_name="nightly", test_name=f"test_case_{t:04d}",
                status=status, device_id=None, card_iccid=None,
                started_at=start + timedelta(milliseconds=t * 50),
                ended_at=start + timedelta(milliseconds=t * 50 + duration),
                duration_ms=duration))
        with UnitOfWork(manager) as uow:
            uow.tests.create_all(rows)


def _fill_session(manager, apdus: int, day: int = 0) -> str:
    start = T0 + timedelta(days=day)
    with UnitOfWork(manager) as uow:
        session = uow.sessions.create(OTASession(
            status=SessionStatus.COMPLETED, session_type="bench", created_at=start,
            started_at=start, ended_at=start + timedelta(seconds=30), duration_ms=30000,
            tls_cipher_suite="TLS_PSK_WITH_AES_128_CBC_SHA256"))
    writer = ApduLogWriter(manager, session.id, batch_size=1000, flush_interval=None)
    at = start
    for i in range(apdus // 2):
        channel = i % 2
        writer.command(f"0{channel}B0{i % 256:02X}0010", f"READ BINARY {i}", timestamp=at)
        at += timedelta(milliseconds=3 + i % 7)
        sw = "9000" if i % 50 else "6A82"
        writer.response("00112233445566778899AABBCCDDEEFF" + sw, latency_ms=3.0 + i % 7,
                        timestamp=at)
        at += timedelta(milliseconds=1)
    writer.close()
    return str(session.id)


def _raw_read(path: Path, session_id: str, runs: int) -> float:
    """The raw driver reading what the report summarises: the window's results, the APDUs."""
    start = time.perf_counter()
    conn = sqlite3.connect(path)
    try:
        ids = [r for (r,) in conn.execute(
            "SELECT run_id FROM test_results WHERE suite_name = ? GROUP BY run_id "
            "ORDER BY MIN(started_at) DESC LIMIT ?", ("nightly", runs))]
        marks = ",".join("?" * len(ids))
        rows = conn.execute(
            f"SELECT run_id, test_name, status, duration_ms FROM test_results "
            f"WHERE suite_name = ? AND run_id IN ({marks})", ("nightly", *ids)).fetchall()
        logs = conn.execute(
            "SELECT timestamp, direction, raw_data, decoded_data, status_word, latency_ms "
            "FROM comm_logs WHERE session_id = ? ORDER BY timestamp, id",
            (session_id,)).fetchall()
    finally:
        conn.close()
    assert rows and logs
    return time.perf_counter() - start


def _build(manager, session_id, runs, repeat) -> tuple[float, str]:
    times, page = [], ""
    for _ in range(repeat):
        start = time.perf_counter()
        page = build_report(manager, runs=runs, sessions=[session_id])
        times.append(time.perf_counter() - start)
    return statistics.median(times), page


def _peak_memory(manager, session_id, runs) -> int:
    tracemalloc.start()
    try:
        build_report(manager, runs=runs, sessions=[session_id])
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--tests", type=int, default=1000)
    parser.add_argument("--apdus", type=int, default=2000)
    parser.add_argument("--extra-apdus", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", metavar="FILE", help="Also write the report to FILE.")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        manager = DatabaseManager(DatabaseConfig(f"sqlite:///{path}"))
        manager.initialize(check_schema=False)
        manager.create_tables()
        started = time.perf_counter()
        _fill_runs(manager, args.runs, args.tests)
        session_id = _fill_session(manager, args.apdus)
        print(f"store: {args.runs} runs x {args.tests} tests, one session of {args.apdus} "
              f"APDUs (filled in {time.perf_counter() - started:.1f} s)")
        raw = statistics.median(_raw_read(path, session_id, args.runs)
                                for _ in range(args.repeat))
        seconds, page = _build(manager, session_id, args.runs, args.repeat)
        size = len(page.encode("utf-8"))
        if args.keep:
            Path(args.keep).write_text(page, encoding="utf-8")
        memory = _peak_memory(manager, session_id, args.runs)
        for day in range(1, 11):  # more APDUs stored, in sessions the report does not draw
            _fill_session(manager, args.extra_apdus // 10, day=day)
        memory_more = _peak_memory(manager, session_id, args.runs)
        seconds_more, _ = _build(manager, session_id, args.runs, 1)
        manager.close()
    ratio = memory_more / memory if memory else float("inf")
    print(f"build: {seconds:.3f} s (median of {args.repeat}; target <= {TARGET_SECONDS} s); "
          f"raw sqlite3 read of the same rows {raw:.3f} s; ratio {seconds / raw:.1f}x")
    print(f"size: {size / 1024 / 1024:.2f} MB (target <= 2 MB)")
    print(f"peak Python memory of a build: {memory / 1024 / 1024:.1f} MB; with "
          f"{args.extra_apdus:,} more APDUs stored: {memory_more / 1024 / 1024:.1f} MB "
          f"(ratio {ratio:.2f}, target <= {TARGET_MEMORY_RATIO}); build then {seconds_more:.3f} s")
    print("(timings are noisy on a shared 2-core machine)")
    misses = []
    if not seconds or not raw or not memory:
        misses.append("nothing was measured")
    if seconds > TARGET_SECONDS:
        misses.append(f"build took {seconds:.2f} s")
    if size > TARGET_BYTES:
        misses.append(f"file is {size / 1024 / 1024:.2f} MB")
    if ratio > TARGET_MEMORY_RATIO:
        misses.append(f"memory grew {ratio:.2f}x with the stored APDUs")
    if misses:
        print("MISSED: " + "; ".join(misses))
        return 1
    print("all targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
