"""The report's test-run numbers: SQL aggregates over the runs of one suite.

Every function returns plain dicts and lists sized by what the report shows (runs in the
window, the flakiest and slowest tests), never by the number of stored results: the
database groups and counts. The models must be bound to the store.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from peewee import Case, fn

from .models import TestResult, TestRun
from .report_apdus import aware_utc
from .repositories import TestRepository

__all__ = [
    "STATUSES",
    "compare_newest",
    "flaky_tests",
    "run_labels",
    "run_window",
    "slowest_tests",
    "suite_names",
]

STATUSES = ("passed", "failed", "error", "skipped")
_FAILING = ("failed", "error")


def suite_names() -> list[str]:
    """Suites with results, the one with the newest result first."""
    newest = fn.MAX(TestResult.started_at)
    query = (TestResult.select(TestResult.suite_name, newest)
             .group_by(TestResult.suite_name)
             .order_by(newest.desc(), TestResult.suite_name))
    return [name for name, _ in query.tuples()]


def run_window(suite: str, runs: int, since: datetime | None = None) -> list[dict]:
    """The suite's newest ``runs`` runs (started at or after ``since``), oldest first, with
    counts per status, summed test time, wall time and how each run ended.

    Runs are the ``test_runs`` records and the run ids of results without one; counts come
    from the results (one GROUP BY query) and, for a run without results, from its record.
    """
    started = fn.MIN(TestResult.started_at)
    query = (TestResult
             .select(TestResult.run_id, started, fn.MAX(TestResult.ended_at),
                     fn.COUNT(TestResult.id), fn.SUM(TestResult.duration_ms),
                     *[_count(TestResult.status, s) for s in STATUSES])
             .where(TestResult.suite_name == suite)
             .group_by(TestResult.run_id)
             .order_by(started.desc(), TestResult.run_id.desc())
             .limit(runs))
    if since is not None:
        query = query.where(TestResult.started_at >= since)
    found = {}
    for run_id, first, last, total, total_ms, *counts in query.tuples():
        run = {"run_id": run_id, "started_at": aware_utc(first), "ended_at": aware_utc(last),
               "total": int(total), "duration_ms": int(total_ms or 0), "ending": None,
               "labels": {}, "context": {}}
        run.update({s: int(c or 0) for s, c in zip(STATUSES, counts, strict=True)})
        found[run_id] = run
    records = TestRun.select().where(TestRun.suite_name == suite)
    if since is not None:
        records = records.where(TestRun.started_at >= since)
    records = list(records.order_by(TestRun.started_at.desc(), TestRun.id.desc()).limit(runs))
    missing = [r for r in found if r not in {t.id for t in records}]
    if missing:
        records += list(TestRun.select().where(TestRun.id.in_(missing)))
    for record in records:
        run = found.get(record.id)
        if run is None:  # a run without results (none collected, or none recorded yet)
            run = found[record.id] = {
                "run_id": record.id, "started_at": aware_utc(record.started_at),
                "ended_at": aware_utc(record.finished_at), "duration_ms": 0,
                "total": record.total or 0,
                **{s: getattr(record, s) or 0 for s in STATUSES}}
        run["ending"] = str(record.ending) if record.ending is not None else None
        run["labels"] = record.labels if isinstance(record.labels, dict) else {}
        run["context"] = record.context if isinstance(record.context, dict) else {}
        if record.started_at is not None and run["started_at"] is None:
            run["started_at"] = aware_utc(record.started_at)
    out = sorted(found.values(), key=lambda r: (r["started_at"] is not None,
                                                 r["started_at"] or 0, r["run_id"]),
                 reverse=True)[:runs]
    for run in out:
        first, last = run["started_at"], run["ended_at"]
        run["wall_ms"] = int((last - first).total_seconds() * 1000) if first and last else 0
        run["pass_rate"] = 100.0 * run["passed"] / run["total"] if run["total"] else 0.0
    out.reverse()
    return out


def run_labels(suite: str, run_ids: list[str]) -> dict[str, dict]:
    """The devices and cards each run's results were recorded on, and those its record's
    labels name."""
    labels = {r: {"devices": set(), "cards": set()} for r in run_ids}
    if not run_ids:
        return labels
    for run_id, said in TestRun.select(TestRun.id, TestRun.labels).where(
            TestRun.id.in_(run_ids)).tuples():
        said = said if isinstance(said, dict) else {}
        for key, kind in (("device", "devices"), ("card", "cards")):
            if said.get(key):
                labels[run_id][kind].add(str(said[key]))
    query = (TestResult.select(TestResult.run_id, TestResult.device, TestResult.card)
             .where((TestResult.suite_name == suite) & TestResult.run_id.in_(run_ids))
             .distinct())
    for run_id, device, card in query.tuples():
        if device is not None:
            labels[run_id]["devices"].add(device)
        if card is not None:
            labels[run_id]["cards"].add(card)
    return labels


def compare_newest(run_ids: list[str]) -> dict | None:
    """The store's ``compare_runs`` of the newest run against the one before it."""
    if len(run_ids) < 2:
        return None
    return TestRepository().compare_runs(run_ids[-2], run_ids[-1])


def flaky_tests(suite: str, run_ids: list[str], limit: int) -> tuple[int, list[dict]]:
    """Tests that both passed and failed in the window: how many, and the ``limit`` with
    the most flips, each with its status per run (oldest first; None: not run)."""
    if not run_ids:
        return 0, []
    passed = _count(TestResult.status, "passed")
    failing = fn.SUM(Case(None, [(TestResult.status.in_(list(_FAILING)), 1)], 0))
    query = (TestResult.select(TestResult.test_name, failing)
             .where((TestResult.suite_name == suite) & TestResult.run_id.in_(run_ids))
             .group_by(TestResult.test_name)
             .having((passed > 0) & (failing > 0))
             .order_by(failing.desc(), TestResult.test_name))
    candidates = [name for name, _ in query.tuples()]
    # Flips need the order of runs; rank a bounded number of candidates by them.
    shown = candidates[:max(limit * 4, limit)]
    statuses = _statuses(suite, run_ids, shown)
    position = {r: i for i, r in enumerate(run_ids)}
    rows = []
    for name in shown:
        cells: list = [None] * len(run_ids)
        for run_id, status in statuses.get(name, []):
            cells[position[run_id]] = status
        seen = [c for c in cells if c in ("passed", *_FAILING)]
        flips = sum(1 for a, b in zip(seen, seen[1:], strict=False)
                    if (a == "passed") != (b == "passed"))
        rows.append({"name": name, "cells": cells, "flips": flips,
                     "failures": sum(1 for c in cells if c in _FAILING)})
    rows.sort(key=lambda r: (-r["flips"], -r["failures"], r["name"]))
    return len(candidates), rows[:limit]


def slowest_tests(suite: str, run_ids: list[str], limit: int) -> list[dict]:
    """The ``limit`` tests with the longest mean duration, with their duration per run."""
    if not run_ids:
        return []
    mean = fn.AVG(TestResult.duration_ms)
    in_window = (TestResult.suite_name == suite) & TestResult.run_id.in_(run_ids)
    query = (TestResult.select(TestResult.test_name, mean, fn.MAX(TestResult.duration_ms))
             .where(in_window & TestResult.duration_ms.is_null(False))
             .group_by(TestResult.test_name)
             .order_by(mean.desc(), TestResult.test_name)
             .limit(limit))
    rows = [{"name": n, "mean_ms": float(m or 0), "max_ms": int(x or 0)}
            for n, m, x in query.tuples()]
    if not rows:
        return rows
    per_run = (TestResult.select(TestResult.run_id, TestResult.test_name,
                                 fn.MAX(TestResult.duration_ms))
               .where(in_window & TestResult.test_name.in_([r["name"] for r in rows]))
               .group_by(TestResult.run_id, TestResult.test_name))
    position = {r: i for i, r in enumerate(run_ids)}
    series = {r["name"]: [None] * len(run_ids) for r in rows}
    for run_id, name, duration in per_run.tuples():
        series[name][position[run_id]] = None if duration is None else int(duration)
    for row in rows:
        row["durations"] = series[row["name"]]
    return rows


def _statuses(suite, run_ids, names) -> dict[str, list]:
    if not names:
        return {}
    query = (TestResult.select(TestResult.test_name, TestResult.run_id, TestResult.status)
             .where((TestResult.suite_name == suite) & TestResult.run_id.in_(run_ids)
                    & TestResult.test_name.in_(names))
             .order_by(TestResult.started_at, TestResult.created_at, TestResult.id))
    out = defaultdict(list)
    for name, run_id, status in query.tuples():  # the last result of a name in a run wins
        out[name].append((run_id, str(status)))
    return out


def _count(field, value):
    return fn.SUM(Case(None, [(field == value, 1)], 0))
