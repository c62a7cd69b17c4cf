"""Time "every INSTALL (80E6…) in the store" against a one-session read (issue 12).

    python scripts/bench_search_hex.py                         # 1,000,000 rows, SQLite
    python scripts/bench_search_hex.py --rows 100000 --url mysql://root@127.0.0.1:3306/bench

``search_hex("80E60C", header=True)`` goes through the ``ins`` index of schema 0003; the
target is at most 10x the time of ``find_by_session`` for one 400-row session of the same
store. The store holds as many INSTALL commands as a session holds rows, spread over all
sessions, so both queries return the same number of rows and the ratio is the cost of
finding them. The plain "contains anywhere" scan is timed too, for reference. ``--url`` names an
existing, empty database (the script creates the tables). Prints one JSON line per query and
exits non-zero when the target is missed, a query returns the wrong rows, or nothing was
measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

TARGET_RATIO = 10.0
SESSION_ROWS = 400  # 200 exchanges per session


def _median_ms(call, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def _fill(manager, rows: int, install_every: int) -> list[str]:
    from cardlink_lite import OTASession
    from cardlink_lite.apdu import ApduLogWriter

    sessions = []
    writer = ApduLogWriter(manager, batch_size=5000, flush_interval=None)
    exchanges = rows // 2
    for n in range(exchanges):
        if n % (SESSION_ROWS // 2) == 0:
            writer.flush()
            sessions.append(OTASession.create(session_type="bench").id)
        sid = sessions[-1]
        if n % install_every == 0:
            writer.command("80E60C00" + "12" * 20, session_id=sid)
        else:
            writer.command(f"00B0{n % 0xFFFF:04X}00", session_id=sid)
        writer.response("9000", latency_ms=1.0, session_id=sid)
    writer.close()
    return sessions


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--url", help="an existing, empty database (default: a temp SQLite file)")
    args = parser.parse_args(argv)
    if args.rows < SESSION_ROWS * 2 or args.repeat < 1:
        parser.error(f"--rows must be at least {SESSION_ROWS * 2} and --repeat at least 1")

    from cardlink_lite import DatabaseManager, UnitOfWork

    with tempfile.TemporaryDirectory() as tmp:
        url = args.url or f"sqlite:///{os.path.join(tmp, 'search.db')}"
        manager = DatabaseManager(url).initialize(check_schema=False)
        manager.create_tables()
        start = time.perf_counter()
        exchanges = args.rows // 2
        install_every = max(1, exchanges // SESSION_ROWS)
        sessions = _fill(manager, args.rows, install_every)
        fill_s = time.perf_counter() - start
        expected = (exchanges + install_every - 1) // install_every
        one = sessions[len(sessions) // 2]
        with UnitOfWork(manager, readonly=True) as uow:
            found = uow.logs.search_hex("80E60C", header=True)
            session_rows = uow.logs.find_by_session(one)
            session_ms = _median_ms(lambda: uow.logs.find_by_session(one), args.repeat)
            header_ms = _median_ms(lambda: uow.logs.search_hex("80E60C", header=True),
                                   args.repeat)
            scan_ms = _median_ms(lambda: uow.logs.search_hex("80E60C"), max(1, args.repeat // 3))
        manager.close()

    problems = []
    if len(found) != expected:
        problems.append(f"header search found {len(found)} rows, expected {expected}")
    if len(session_rows) != SESSION_ROWS:
        problems.append(f"session read found {len(session_rows)} rows, expected {SESSION_ROWS}")
    ratio = header_ms / session_ms if session_ms else float("inf")
    if not session_ms or not header_ms:
        problems.append("nothing was measured")
    elif ratio > TARGET_RATIO:
        problems.append(f"header search is {ratio:.1f}x a one-session read (target <= "
                        f"{TARGET_RATIO:.0f}x)")
    backend = url.split(":", 1)[0]
    print(json.dumps({"backend": backend, "rows": args.rows, "fill_s": round(fill_s, 1),
                      "install_rows": len(found), "one_session_ms": round(session_ms, 2),
                      "header_search_ms": round(header_ms, 2),
                      "contains_scan_ms": round(scan_ms, 2), "ratio": round(ratio, 2),
                      "target": TARGET_RATIO, "ok": not problems, "problems": problems}))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
