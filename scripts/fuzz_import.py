"""The long run of the import property test: many malformed documents through the CLI.

Each document (drawn by tests/import_fuzz.py: truncations, wrong types, huge and tiny
numbers, NaN/Infinity, deep nesting, odd Unicode and control characters, duplicate keys,
YAML aliases) is imported with ``--dry-run`` and for real. Every one must fail with exit
code 1 or 2, exactly one ``Error:`` line, no traceback, and leave the store unchanged.

    python scripts/fuzz_import.py --cases 3000
    python scripts/fuzz_import.py --cases 500 --database mysql://root@127.0.0.1:3306/fuzz

Prints the counts as JSON and exits 1 on any failure (or when no case ran).
"""

from __future__ import annotations

import argparse
import collections
import json
import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402

from cardlink_lite import DatabaseConfig, DatabaseManager  # noqa: E402
from cardlink_lite.transfer import DataExporter  # noqa: E402
from tests.import_fuzz import check_case, malformed  # noqa: E402
from tests.transfer_helpers import checksums, populate  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=3000, help="documents to try")
    parser.add_argument("--database", help="an EMPTY database URL (default: a temp SQLite)")
    parser.add_argument("--show", type=int, default=5, help="failures to print in full")
    args = parser.parse_args(argv)
    if args.cases < 1:
        parser.error("--cases must be at least 1")
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database or f"sqlite:///{tmp}/fuzz.db"
        manager = DatabaseManager(DatabaseConfig(url))
        manager.initialize(check_schema=False)
        manager.create_tables()
        populate(manager)
        base = json.loads(DataExporter(manager).export_all())
        before = checksums(manager)
        counts = collections.Counter()
        kinds = collections.Counter()
        shown = []
        started = time.monotonic()

        @settings(max_examples=args.cases, deadline=None, database=None,
                  phases=[Phase.generate], suppress_health_check=list(HealthCheck))
        @given(malformed(base))
        def run(case):
            counts["cases"] += 1
            kinds[case.name.split(" ")[0].split("[")[0]] += 1
            outcome = check_case(case, url, pathlib.Path(tmp), manager, before)
            for problem in outcome.problems:
                key = ("tracebacks" if "traceback" in problem else
                       "stores_changed" if "store changed" in problem else
                       "dry_run_disagreed" if "dry run exit" in problem else
                       "wrong_exit_code" if "exit code" in problem else
                       "error_lines_not_one" if "Error: lines" in problem else "other")
                counts[key] += 1
            if outcome.problems:
                counts["failed_cases"] += 1
                if len(shown) < args.show:
                    shown.append({"case": case.name, "problems": outcome.problems,
                                  "document": case.text[:300]})
            if "stores_changed" in counts:  # later cases would all report it again
                before.update(checksums(manager))

        run()
        manager.close()
    report = {"cases": counts["cases"], "failed_cases": counts["failed_cases"],
              "tracebacks": counts["tracebacks"], "stores_changed": counts["stores_changed"],
              "dry_run_disagreed": counts["dry_run_disagreed"],
              "wrong_exit_code": counts["wrong_exit_code"],
              "error_lines_not_one": counts["error_lines_not_one"], "other": counts["other"],
              "seconds": round(time.monotonic() - started, 1),
              "kinds": dict(kinds.most_common(12)), "failures": shown}
    print(json.dumps(report, indent=2))
    return 0 if counts["cases"] and not counts["failed_cases"] else 1


if __name__ == "__main__":
    sys.exit(main())
