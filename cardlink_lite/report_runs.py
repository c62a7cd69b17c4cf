"""The report's test-run numbers: SQL aggregates over one suite's runs, sized by what the
report shows, not by the stored results. The models must be bound to the store."""

from __future__ import annotations

from datetime import datetime

from peewee import Case, fn

from .models import TestResult, TestRun
from .report_apdus import aware_utc

__all__ = ["STATUSES", "flaky_tests", "run_window", "slowest_tests", "suite_names"]

STATUSES = ("passed", "failed", "error", "skipped")
_FAILING = ("failed", "error")
# Endings of runs that ran every test (None: results without a run record), as
# TestRepository.latest_comparable_run reads them.
_COMPARABLE = (None, "complete", "unknown")


def suite_names() -> list[str]:
    """Suites with results, the one with the newest result first."""
    newest = fn.MAX(TestResult.started_at)
    query = (TestResult.select(TestResult.suite_name, newest)
             .group_by(TestResult.suite_name)
             .order_by(newest.desc(), TestResult.suite_name))
    return [name for name, _ in query.tuples()]


def run_window(suite: str, runs: int, since: datetime | None = None) -> list[dict]:
    """The suite's newest ``runs`` runs since ``since``, oldest first, with counts per status,
    times, ending, devices and cards (README: "Report numbers")."""
    started = fn.MIN(TestResult.started_at)
    query = (TestResult
             .select(TestResult.run_id, started, fn.MAX(TestResult.ended_at),
                     fn.COUNT(TestResult.id), fn.SUM(TestResult.duration_ms),
                     *[_count(TestResult.status, s) for s in STATUSES])
             .where(TestResult.suite_name == suite)
             .group_by(TestResult.run_id)
             .order_by(started.desc(), TestResult.run_id.desc())
             .limit(runs))
    records = TestRun.select().where(TestRun.suite_name == suite)
    if since is not None:
        query = query.where(TestResult.started_at >= since)
        records = records.where(TestRun.started_at >= since)
    found = {run_id: _run(run_id, first, last, total, total_ms, counts)
             for run_id, first, last, total, total_ms, *counts in query.tuples()}
    records = list(records.order_by(TestRun.started_at.desc(), TestRun.id.desc()).limit(runs))
    missing = sorted(set(found) - {r.id for r in records})
    if missing:
        records += list(TestRun.select().where(TestRun.id.in_(missing)))
    for record in records:
        run = found.get(record.id)
        if run is None:  # a run without results (none collected, or none recorded yet)
            run = found[record.id] = _run(record.id, record.started_at, record.finished_at,
                                          record.total, 0, [getattr(record, s) for s in STATUSES])
        said = record.labels if isinstance(record.labels, dict) else {}
        for key in ("device", "card"):  # a label may hold any JSON value
            if said.get(key):
                run[f"{key}s"].add(str(said[key]))
        run["ending"] = str(record.ending) if record.ending is not None else None
        run["context"] = record.context if isinstance(record.context, dict) else {}
        if run["started_at"] is None:
            run["started_at"] = aware_utc(record.started_at)
    window = sorted(found.values(), key=lambda r: (r["started_at"] is not None,
                                                    r["started_at"] or 0, r["run_id"]),
                    reverse=True)[:runs]
    by_id = {run["run_id"]: run for run in window}
    places = (TestResult.select(TestResult.run_id, TestResult.device, TestResult.card)
              .where((TestResult.suite_name == suite) & TestResult.run_id.in_(list(by_id)))
              .distinct())
    for run_id, device, card in places.tuples():  # and the devices and cards its labels name
        by_id[run_id]["devices"].add(device)
        by_id[run_id]["cards"].add(card)
    for run in window:
        run["complete"] = run["ending"] in _COMPARABLE
        first, last = run["started_at"], run["ended_at"]
        run["wall_ms"] = int((last - first).total_seconds() * 1000) if first and last else 0
        run["pass_rate"] = 100.0 * run["passed"] / run["total"] if run["total"] else 0.0
        run["devices"] = sorted(str(d) for d in run["devices"] if d)
        run["cards"] = sorted(str(c) for c in run["cards"] if c)
    return window[::-1]


def _run(run_id, started, ended, total, total_ms, counts) -> dict:
    return {"run_id": run_id, "started_at": aware_utc(started), "ended_at": aware_utc(ended),
            "total": int(total or 0), "duration_ms": int(total_ms or 0), "ending": None,
            "context": {}, "devices": set(), "cards": set(),
            **{s: int(c or 0) for s, c in zip(STATUSES, counts, strict=True)}}


def flaky_tests(suite: str, run_ids: list[str], limit: int) -> tuple[int, list[dict]]:
    """How many tests both passed and failed in the window, and the ``limit`` with the most
    flips, each with its status per run (None: not run)."""
    if not run_ids:
        return 0, []
    in_window = (TestResult.suite_name == suite) & TestResult.run_id.in_(run_ids)
    failing = fn.SUM(Case(None, [(TestResult.status.in_(list(_FAILING)), 1)], 0))
    query = (TestResult.select(TestResult.test_name, failing)
             .where(in_window)
             .group_by(TestResult.test_name)
             .having((_count(TestResult.status, "passed") > 0) & (failing > 0))
             .order_by(failing.desc(), TestResult.test_name))
    candidates = [name for name, _ in query.tuples()]
    shown = candidates[:limit * 4]  # flips need the order of runs: rank a bounded number
    statuses = (TestResult.select(TestResult.test_name, TestResult.run_id, TestResult.status)
                .where(in_window & TestResult.test_name.in_(shown))
                .order_by(TestResult.started_at, TestResult.created_at, TestResult.id))
    rows = []
    for name, cells in _per_run(statuses.tuples(), run_ids, shown).items():
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
    names = [r["name"] for r in rows]
    per_run = (TestResult.select(TestResult.test_name, TestResult.run_id,
                                 fn.MAX(TestResult.duration_ms))
               .where(in_window & TestResult.test_name.in_(names))
               .group_by(TestResult.run_id, TestResult.test_name))
    durations = _per_run(per_run.tuples(), run_ids, names)
    return [{**row, "durations": durations[row["name"]]} for row in rows]


def _per_run(rows, run_ids: list[str], names: list[str]) -> dict[str, list]:
    """name -> its value in each run (None: not run); a name's last row in a run wins."""
    position = {r: i for i, r in enumerate(run_ids)}
    cells = {name: [None] * len(run_ids) for name in names}
    for name, run_id, value in rows:
        cells[name][position[run_id]] = value
    return cells


def _count(field, value):
    return fn.SUM(Case(None, [(field == value, 1)], 0))
