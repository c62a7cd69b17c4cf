"""Time the pytest plugin's end-of-run summary queries on a store with a long history.

    python scripts/bench_run_summary.py                      # 50 runs x 5,000 tests, SQLite
    python scripts/bench_run_summary.py --url mysql://root@127.0.0.1:3306/bench

The summary is what the plugin asks the store after a run: the latest comparable run of
the suite, the comparison with it, and the flaky tests of the window. Target (issue 14):
<= 100 ms with 50 runs of 5,000 tests stored. The raw reference, timed in the same run, is
one ``SELECT COUNT(*)`` of the newest run's results on the same connection. ``--url`` names
an existing, empty database. Exits non-zero when the target is missed, an answer is wrong,
or nothing was measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone

TARGET_MS = 100.0
SUITE = "bench_suite"


def _fill(runs: int, tests: int) -> list[str]:
    from cardlink_lite import TestResult, TestRun
    from cardlink_lite.models import RunEnding

    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    ids = []
    for r in range(runs):
        run_id = f"run-{r:03d}"
        ids.append(run_id)
        when = start + timedelta(hours=r)
        # Test 0 flips every run (flaky; it passes in the newest run, so it is "fixed");
        # in the newest run test 1 fails (the one regression).
        failing = {0} if (runs - 1 - r) % 2 else set()
        if r == runs - 1:
            failing.add(1)
        TestRun.create(id=run_id, suite_name=SUITE, started_at=when,
                       finished_at=when + timedelta(minutes=5), ending=RunEnding.COMPLETE,
                       exit_status=1 if failing else 0, total=tests,
                       passed=tests - len(failing), failed=len(failing))
        rows = [{"id": str(uuid.uuid4()), "run_id": run_id, "suite_name": SUITE,
                 "test_name": f"test_mod.py::test_{t}", "started_at": when,
                 "duration_ms": 3, "status": "failed" if t in failing else "passed"}
                for t in range(tests)]
        for chunk in range(0, len(rows), 500):
            TestResult.insert_many(rows[chunk:chunk + 500]).execute()
    return ids


def _median_ms(call, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        begin = time.perf_counter()
        call()
        samples.append((time.perf_counter() - begin) * 1000)
    return statistics.median(samples)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--tests", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--url", help="an existing, empty database (default: a temp SQLite file)")
    args = parser.parse_args(argv)
    if args.runs < 2 or args.tests < 2 or args.repeat < 1:
        parser.error("--runs and --tests must be at least 2, --repeat at least 1")

    from cardlink_lite import DatabaseManager, UnitOfWork

    with tempfile.TemporaryDirectory() as tmp:
        url = args.url or f"sqlite:///{os.path.join(tmp, 'runs.db')}"
        manager = DatabaseManager(url).initialize(check_schema=False)
        manager.create_tables()
        begin = time.perf_counter()
        with manager.atomic():
            ids = _fill(args.runs, args.tests)
        fill_s = time.perf_counter() - begin
        newest = ids[-1]
        answers = {}

        def summary():
            # What the plugin's summary asks (pytest_recorder._history).
            with UnitOfWork(manager, readonly=True) as uow:
                base = uow.tests.latest_comparable_run(SUITE, exclude=newest)
                answers["base"] = base.id if base else None
                answers["comparison"] = uow.tests.compare_runs(base.id, newest)
                answers["flaky"] = uow.tests.flaky_tests(SUITE, window=5)

        def raw():
            manager.database.execute_sql(
                "SELECT COUNT(*) FROM test_results WHERE run_id = %s"
                if not url.startswith("sqlite") else
                "SELECT COUNT(*) FROM test_results WHERE run_id = ?", (newest,)).fetchone()

        summary()  # warm-up
        summary_ms = _median_ms(summary, args.repeat)
        raw_ms = _median_ms(raw, args.repeat)
        manager.close()

    problems = []
    regressions = [str(r) for r in answers["comparison"].get("regressions", [])]
    if answers["base"] != ids[-2]:
        problems.append(f"compared with {answers['base']}, expected {ids[-2]}")
    if len(regressions) != 1 or "test_1" not in regressions[0]:
        problems.append(f"regressions {regressions[:3]}, expected test_1 only")
    if not any("test_0" in str(f) for f in answers["flaky"]):
        problems.append("test_0 (flips every run) is not in the flaky list")
    if not summary_ms:
        problems.append("nothing was measured")
    elif summary_ms > TARGET_MS:
        problems.append(f"summary took {summary_ms:.1f} ms (target <= {TARGET_MS:.0f} ms)")
    print(json.dumps({"backend": url.split(":", 1)[0], "runs": args.runs, "tests": args.tests,
                      "fill_s": round(fill_s, 1), "summary_ms": round(summary_ms, 1),
                      "raw_count_ms": round(raw_ms, 2),
                      "ratio_to_raw_count": round(summary_ms / raw_ms, 1) if raw_ms else None,
                      "target_ms": TARGET_MS, "ok": not problems, "problems": problems}))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
