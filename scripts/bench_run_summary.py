"""Time the pytest plugin's end-of-run work on a store with a long history.

    python scripts/bench_run_summary.py                      # 50 runs x 5,000 tests, SQLite
    python scripts/bench_run_summary.py --url mysql://root@127.0.0.1:3306/bench
    python scripts/bench_run_summary.py --url postgresql://postgres@127.0.0.1:5432/bench

What is timed is what the plugin calls once the tests are done, through the same
functions: ``finish_run`` (pytest_sessionfinish: the run's counts and how it ended) and
``run_history`` (the terminal summary: the latest comparable run, the comparison with it,
the flaky tests of the window). Target (issue 14): <= 100 ms with 50 runs of 5,000 tests
stored. The raw reference, timed interleaved with it on the same connection, is one
``SELECT COUNT(*)`` of the newest run's results. ``--url`` names an existing, empty
database. Exits non-zero when the target is missed, an answer is wrong, or nothing was
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
        # in the newest run test 1 fails (the one regression), and the last test is
        # renamed (one new test, one removed).
        failing = {0} if (runs - 1 - r) % 2 else set()
        if r == runs - 1:
            failing.add(1)
        TestRun.create(id=run_id, suite_name=SUITE, started_at=when,
                       finished_at=when + timedelta(minutes=5), ending=RunEnding.COMPLETE,
                       exit_status=1 if failing else 0, total=tests,
                       passed=tests - len(failing), failed=len(failing))
        last = "test_new" if r == runs - 1 else f"test_{tests - 1}"
        rows = [{"id": str(uuid.uuid4()), "run_id": run_id, "suite_name": SUITE,
                 "test_name": f"test_mod.py::{last if t == tests - 1 else f'test_{t}'}",
                 "started_at": when,
                 "duration_ms": 3, "status": "failed" if t in failing else "passed"}
                for t in range(tests)]
        for chunk in range(0, len(rows), 500):
            TestResult.insert_many(rows[chunk:chunk + 500]).execute()
    return ids


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--tests", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--url", help="an existing, empty database (default: a temp SQLite file)")
    args = parser.parse_args(argv)
    if args.runs < 2 or args.tests < 2 or args.repeat < 1:
        parser.error("--runs and --tests must be at least 2, --repeat at least 1")

    from cardlink_lite import DatabaseManager
    from cardlink_lite.models import RunEnding, TestRun
    from cardlink_lite.pytest_recorder import finish_run, run_history

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
            finish_run(manager, newest, RunEnding.COMPLETE, 1, None)
            answers["base"], answers["comparison"], answers["flaky"] = run_history(
                manager, SUITE, newest, 5)
            answers["base"] = answers["base"].id if answers["base"] else None

        raw_sql = "SELECT COUNT(*) FROM test_results WHERE run_id = " + \
            ("?" if manager.config.is_sqlite else "%s")

        def raw():
            manager.database.execute_sql(raw_sql, (newest,)).fetchone()

        summary()  # warm-up
        raw()
        samples = {summary: [], raw: []}
        for _ in range(args.repeat):  # interleaved, so both see the same machine
            for call, times in samples.items():
                begin = time.perf_counter()
                call()
                times.append((time.perf_counter() - begin) * 1000)
        summary_ms = statistics.median(samples[summary])
        raw_ms = statistics.median(samples[raw])
        record = TestRun.get_by_id(newest)
        answers["record"] = (record.total, record.passed, record.failed)
        manager.close()

    problems = []
    regressions = [str(r) for r in answers["comparison"].get("regressions", [])]
    if answers["base"] != ids[-2]:
        problems.append(f"compared with {answers['base']}, expected {ids[-2]}")
    if len(regressions) != 1 or "test_1" not in regressions[0]:
        problems.append(f"regressions {regressions[:3]}, expected test_1 only")
    comparison = answers["comparison"]
    if (comparison.get("fixed"), comparison.get("new_tests"), comparison.get("removed_tests")) \
            != (["test_mod.py::test_0"], ["test_mod.py::test_new"],
                [f"test_mod.py::test_{args.tests - 1}"]):
        problems.append(f"fixed/new/removed are {comparison.get('fixed')}, "
                        f"{comparison.get('new_tests')}, {comparison.get('removed_tests')}")
    if answers["flaky"] != ["test_mod.py::test_0", "test_mod.py::test_1"]:
        problems.append(f"flaky tests {answers['flaky'][:3]}, expected test_0 and test_1")
    if answers["record"] != (args.tests, args.tests - 1, 1):
        problems.append(f"the run's record counts {answers['record']} (total, passed, failed)")
    if not summary_ms:
        problems.append("nothing was measured")
    elif summary_ms > TARGET_MS:
        problems.append(f"summary took {summary_ms:.1f} ms (target <= {TARGET_MS:.0f} ms)")
    print(json.dumps({"backend": url.split(":", 1)[0], "runs": args.runs, "tests": args.tests,
                      "fill_s": round(fill_s, 1), "summary_ms": round(summary_ms, 1),
                      "raw_count_ms": round(raw_ms, 2),
                      "ratio_to_raw_count": round(summary_ms / raw_ms, 1) if raw_ms else None,
                      "target_ms": TARGET_MS, "load_average": round(os.getloadavg()[0], 1),
                      "cpus": os.cpu_count(), "ok": not problems, "problems": problems}))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
