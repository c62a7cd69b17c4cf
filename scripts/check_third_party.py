"""Record a real third-party test suite with the plugin and check it against pytest's junitxml.

Downloads the package's sdist (which ships its tests), runs them with and without xdist
under ``--junitxml`` and ``--cardlink-db``, and checks that the store has one result per
``<testcase>`` with the same outcomes, that ``cardlink-db runs junit`` output validates
against junit-10.xsd with the same counts, and that every test id (classname + name) has
the same outcome in both documents. Exits non-zero on any mismatch. Example:

    python scripts/check_third_party.py --package more-itertools --workers 2
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path

from lxml import etree

from cardlink_lite import DatabaseConfig, DatabaseManager
from cardlink_lite.unit_of_work import UnitOfWork

XSD = Path(__file__).resolve().parents[1] / "tests" / "data" / "junit-10.xsd"
_KINDS = ("failed", "error", "skipped")


def _download(package: str, into: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary",
                    ":all:", "--dest", str(into), package], check=True, capture_output=True)
    (sdist,) = into.glob("*.tar.gz")
    with tarfile.open(sdist) as tar:
        tar.extractall(into, filter="data")
    return next(p for p in into.iterdir() if p.is_dir())


def _junit_counts(root) -> Counter:
    """Outcomes of the ``<testcase>`` elements of a junit document, like the store counts."""
    counts: Counter = Counter()
    for (_, _, kind), count in _outcomes_by_id(root).items():
        counts[kind] += count
        counts["total"] += count
    return counts


def _outcomes_by_id(root) -> Counter:
    """``(classname, name, outcome)`` of every ``<testcase>`` (a multiset: pytest writes a
    teardown error after a failure as a second testcase with the same names)."""
    found: Counter = Counter()
    for case in root.iter("testcase"):
        tags = {child.tag for child in case}
        kind = ("error" if "error" in tags else "failed" if "failure" in tags
                else "skipped" if "skipped" in tags else "passed")
        found[(case.get("classname") or "", case.get("name") or "", kind)] += 1
    return found


def id_mismatches(pytest_root, ours_root) -> list[str]:
    """One line per test id whose outcomes differ between pytest's junitxml and ours."""
    theirs, ours = _outcomes_by_id(pytest_root), _outcomes_by_id(ours_root)
    by_id: dict[tuple[str, str], tuple[list, list]] = {}
    for side, found in enumerate((theirs, ours)):
        for (classname, name, kind), count in found.items():
            by_id.setdefault((classname, name), ([], []))[side].extend([kind] * count)
    problems = []
    for (classname, name), (want, got) in sorted(by_id.items()):
        if sorted(want) != sorted(got):
            problems.append(f"{classname}::{name}: pytest {','.join(sorted(want)) or 'absent'}"
                            f", runs junit {','.join(sorted(got)) or 'absent'}")
    return problems


def _run(source: Path, url: str, run_id: str, suite: str, junit: Path, extra: list[str]):
    tests = "tests" if (source / "tests").is_dir() else "."
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", tests,
           f"--junitxml={junit}", "--cardlink-db", url, "--cardlink-run-id", run_id,
           "--cardlink-suite", suite, *extra]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=source, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    tail = [ln for ln in done.stdout.splitlines() if ln.strip()][-1:]
    print(f"  pytest {' '.join(extra) or '(no xdist)'}: exit {done.returncode}, "
          f"{tail[0] if tail else ''} ({elapsed:.1f} s)")
    if "not recorded" in done.stdout:
        print("  !! the plugin reported results it could not record")
    return done


def _store_counts(url: str, run_id: str) -> Counter:
    manager = DatabaseManager(DatabaseConfig(url))
    manager.initialize(check_schema=False)
    try:
        with UnitOfWork(manager) as uow:
            summary = uow.tests.get_run_summary(run_id)
            names = [r.test_name for r in uow.tests.find_by_run(run_id)]
    finally:
        manager.close()
    counts = Counter({k: summary[k] for k in ("passed", *_KINDS)})
    counts["total"] = summary["total"]
    counts["duplicates"] = len(names) - len(set(names))
    return counts


def _export(url: str, run_id: str, out: Path) -> tuple[Counter, etree._Element]:
    subprocess.run([sys.executable, "-m", "cardlink_lite", "--database", url, "runs", "junit",
                    run_id, "-o", str(out)], check=True, capture_output=True)
    schema = etree.XMLSchema(etree.parse(str(XSD)))
    doc = etree.parse(str(out))
    if not schema.validate(doc):
        raise SystemExit(f"{out} does not validate against {XSD}: {schema.error_log}")
    counts = _junit_counts(doc.getroot())
    suites = doc.getroot().findall("testsuite")
    declared = sum(int(s.get("tests")) for s in suites)
    if declared != counts["total"]:
        raise SystemExit(f"{out}: tests={declared} but {counts['total']} <testcase> elements")
    return counts, doc.getroot()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", default="more-itertools")
    parser.add_argument("--workers", default="2", help="xdist workers for the second run")
    parser.add_argument("--database", help="results database URL (default: a temp SQLite)")
    args = parser.parse_args(argv)
    ok = True
    with tempfile.TemporaryDirectory(prefix="cardlink-3p-") as tmp:
        tmp = Path(tmp)
        source = _download(args.package, tmp / "src")
        url = args.database or f"sqlite:///{tmp}/results.db"
        print(f"{source.name}: tests from its sdist; results in {DatabaseConfig(url).safe_url}")
        for label, extra in (("serial", []), (f"xdist-{args.workers}", ["-n", args.workers])):
            run_id = f"{source.name}-{label}-{int(time.time())}"
            junit = tmp / f"pytest-{label}.xml"
            _run(source, url, run_id, args.package, junit, extra)
            pytest_root = etree.parse(str(junit)).getroot()
            pytest_counts = _junit_counts(pytest_root)
            stored = _store_counts(url, run_id)
            exported, ours_root = _export(url, run_id, tmp / f"cardlink-{label}.xml")
            print(f"  {'':>22} {'total':>7} {'passed':>7} {'failed':>7} {'error':>7} "
                  f"{'skipped':>7}")
            for name, counts in (("pytest --junitxml", pytest_counts),
                                 ("recorded (store)", stored),
                                 ("runs junit (xsd ok)", exported)):
                print(f"  {name:>22} " + " ".join(f"{counts.get(k, 0):>7}" for k in
                                                 ("total", "passed", *_KINDS)))
            same = all(pytest_counts.get(k, 0) == stored.get(k, 0) == exported.get(k, 0)
                       for k in ("total", "passed", *_KINDS))
            if stored["duplicates"]:
                print(f"  !! {stored['duplicates']} test names recorded twice")
            same = same and not stored["duplicates"]
            problems = id_mismatches(pytest_root, ours_root)
            print(f"  per test id (classname + name -> outcome): {len(problems)} mismatches")
            for line in problems[:10]:
                print(f"  !! {line}")
            same = same and not problems
            print(f"  {label}: {'MATCH' if same else 'MISMATCH'} (run id {run_id})")
            ok = ok and same
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
