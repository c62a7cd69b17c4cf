"""Kill -9 loop: a process logging APDUs is SIGKILLed at random moments; check what survived.

Every flush writes ``--batch`` rows tagged ``run:flush`` in decoded_data, and the child
prints the tag after the flush returns. After each kill the database must pass
``PRAGMA integrity_check``, every tag must be complete or absent (a flush is all or
nothing), every acknowledged flush must be there, and at most the flush under way
may be missing.

    python scripts/kill_loop.py --kills 200            # the full loop
    python scripts/kill_loop.py --kills 5 --batch 200  # what tests/test_crash_bounded.py runs
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter


def child(url: str, session_id: str, run: int, batch: int) -> None:
    from cardlink_lite import DatabaseManager
    from cardlink_lite.apdu import ApduLogWriter

    manager = DatabaseManager(url).initialize()
    writer = ApduLogWriter(manager, session_id=session_id, batch_size=batch * 2,
                           flush_interval=None)
    flush = 0
    while True:
        tag = f"{run}:{flush}"
        for i in range(batch):
            if i % 2:
                writer.response("9000", latency_ms=1.5, decoded=tag)
            else:
                writer.command(f"00B0{i:04X}00", tag)
        writer.flush()
        print(tag, flush=True)
        flush += 1


def check(path: str, acknowledged: dict[int, int], batch: int) -> list[str]:
    """Problems found in the database after the kills (empty when all is well)."""
    conn = sqlite3.connect(path)
    problems = []
    integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    if integrity != "ok":
        problems.append(f"integrity_check: {integrity}")
    counts = Counter(dict(conn.execute(
        "SELECT decoded_data, COUNT(*) FROM comm_logs GROUP BY decoded_data").fetchall()))
    conn.close()
    for tag, count in counts.items():
        if count != batch:
            problems.append(f"flush {tag} is half-applied: {count} of {batch} rows")
    for run, last in acknowledged.items():
        for flush in range(last + 1):
            if counts.get(f"{run}:{flush}") != batch:
                problems.append(f"acknowledged flush {run}:{flush} is missing")
        extra = [t for t in counts if t.startswith(f"{run}:") and int(t.split(":")[1]) > last + 1]
        if extra:
            problems.append(f"run {run} has flushes never started: {extra[:3]}")
    return problems


def kill_loop(path: str, kills: int, batch: int, min_s: float = 0.0,
              max_s: float = 0.8, wait_for_flush: bool = True) -> dict:
    from cardlink_lite import DatabaseManager, OTASession

    url = f"sqlite:///{path}"
    manager = DatabaseManager(url).initialize(check_schema=False)
    manager.create_tables()
    session_id = OTASession.create(session_type="kill-loop").id
    manager.close()
    acknowledged: dict[int, int] = {}
    for run in range(kills):
        proc = subprocess.Popen(
            [sys.executable, __file__, "--child", url, session_id, str(run), str(batch)],
            stdout=subprocess.PIPE, text=True,
        )
        # Wait for the first acknowledged flush (an event, not a guess at start-up time),
        # then kill at a random moment of the flushes that follow.
        first = proc.stdout.readline() if wait_for_flush else ""
        time.sleep(random.uniform(min_s, max_s))
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        acked = [int(line.split(":")[1]) for line in (first + out).split()]
        acknowledged[run] = acked[-1] if acked else -1
    acked_total = sum(v + 1 for v in acknowledged.values())
    problems = check(path, acknowledged, batch)
    if acked_total == 0:
        # Every child died before its first flush: nothing was put to the test.
        problems.append(f"no flush was acknowledged in {kills} kills, so nothing was checked; "
                        "the logging process was killed or died before its first flush")
    return {"kills": kills, "acknowledged_flushes": acked_total, "problems": problems}


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=_positive, default=200,
                        help="how many times to SIGKILL the logging process (default 200)")
    parser.add_argument("--batch", type=_positive, default=500,
                        help="rows per flush in the logging process (default 500)")
    parser.add_argument("--db", help="SQLite file (default: a temporary one)")
    parser.add_argument("--child", nargs=4, metavar=("URL", "SESSION", "RUN", "BATCH"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        url, session_id, run, batch = args.child
        child(url, session_id, int(run), int(batch))
        return
    path = args.db or os.path.join(tempfile.mkdtemp(), "kill.db")
    report = kill_loop(path, args.kills, args.batch)
    print(json.dumps(report, indent=2, default=str))
    sys.exit(1 if report["problems"] else 0)


if __name__ == "__main__":
    main()
