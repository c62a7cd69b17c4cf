"""TestRepository: test results grouped by run, run summaries, comparisons and JUnit XML."""

from __future__ import annotations

from datetime import datetime, timedelta

from peewee import JOIN, SQL, Case, Value, chunked, fn

from ..errors import ValidationError, quote
from ..fields import to_utc_ms, utc_now
from ..junit import build_junit_xml
from ..models import RunEnding, TestResult, TestRun, TestStatus
from .base import BaseRepository, positive_int, statement

__all__ = ["TestRepository"]

_FAILING = (TestStatus.FAILED, TestStatus.ERROR)
_COUNTED = ("passed", "failed", "skipped", "error")


class TestRepository(BaseRepository):
    """Results of test runs (a run: the results sharing a ``run_id``); rates are percent passed."""

    __test__ = False  # not a pytest test class

    model = TestResult
    entity_type = "test_result"
    event_fields = ("run_id", "suite_name", "test_name", "status")

    def create_result(self, run_id: str, suite_name: str, test_name: str, status,
                      started_at: datetime | None = None, device_id: str | None = None,
                      card_iccid: str | None = None, ended_at: datetime | None = None,
                      duration_ms: int | None = None, error_message: str | None = None,
                      assertions=None, metadata=None) -> TestResult:
        """Record one result (TEST_RESULT_CREATED after commit); missing times are derived from
        the others (``ended_at`` defaults to now), NUL is stored as ``\\x00``."""
        for name, value in (("run_id", run_id), ("suite_name", suite_name),
                            ("test_name", test_name)):
            _check_text(name, value)
        started_at, ended_at, duration_ms = _timing(started_at, ended_at, duration_ms)
        result = self.create(TestResult(
            run_id=run_id, suite_name=suite_name, test_name=test_name, status=status,
            device_id=device_id, card_iccid=card_iccid, started_at=started_at,
            ended_at=ended_at, duration_ms=duration_ms, error_message=_storable(error_message),
            assertions=assertions, metadata=metadata,
        ))
        self._count_in_run(result)
        return result

    def finish_run(self, run_id: str, ending, exit_status: int | None = None,
                   selection: str | None = None) -> int:
        """Close the run's record (how it ended, its counts); the records updated (0 or 1)."""
        ending = TestRun.ending.coerce_member(ending)
        self._touch(write=True)
        summary = self.get_run_summary(run_id)
        with self._write(run_id):
            return TestRun.update(
                finished_at=utc_now(), ending=ending, exit_status=exit_status,
                selection=selection, updated_at=utc_now(),
                **{key: summary[key] for key in ("total", *_COUNTED)},
            ).where(TestRun.id == run_id).execute()

    def find_by_run(self, run_id: str) -> list[TestResult]:
        """The run's results in the order they started."""
        if run_id is None:
            return []  # run_id is never NULL
        return self._load(self._statement("by_run", lambda run: TestResult.select().where(
            TestResult.run_id == run).order_by(*_RUN_ORDER)), run_id)

    def find_by_suite(self, suite_name: str, limit: int | None = 100) -> list[TestResult]:
        """The suite's results, newest first."""
        query = (self._select(TestResult.suite_name == suite_name)
                 .order_by(TestResult.started_at.desc(), TestResult.created_at.desc(),
                           TestResult.id.desc()))
        if limit is not None:
            query = query.limit(positive_int("limit", limit, allow_zero=True))
        return self._list(query)

    def find_by_status(self, status, run_id: str | None = None) -> list[TestResult]:
        """Results with ``status`` (member, value or name), of one run if given."""
        status = TestResult.status.coerce_member(status)
        return self._in_order(TestResult.status == status, run_id)

    def find_failures(self, run_id: str | None = None) -> list[TestResult]:
        """Failed and errored results (of one run if given), in the order they started."""
        return self._in_order(TestResult.status.in_(list(_FAILING)), run_id)

    def linked_sessions(self, run_id: str) -> list[tuple[str, str]]:
        """``(session id, test name)`` of the run's results linked to an OTA session."""
        query = (TestResult.select(TestResult.session, TestResult.test_name)
                 .where((TestResult.run_id == run_id) & TestResult.session.is_null(False))
                 .order_by(*_RUN_ORDER))
        return self._list(query.tuples())

    def tests_for_session(self, session_id: str) -> list[tuple[str, str]]:
        """``(test name, run id)`` of the results that drove ``session_id``."""
        query = (TestResult.select(TestResult.test_name, TestResult.run_id)
                 .where(TestResult.session == session_id)
                 .order_by(TestResult.started_at, TestResult.id))
        return self._list(query.tuples())

    def get_run_summary(self, run_id: str) -> dict:
        """Counts per status, summed ``duration_ms``, first start, last end and pass rate;
        an unknown run gives zeros and None times."""
        summary = {"run_id": run_id, **dict.fromkeys(_COUNTED, 0), "duration_ms": 0}
        starts, ends = [], []
        when = TestResult.started_at.python_value
        rows = []
        if run_id is not None:
            rows = self._fetch(statement((TestResult, "run_summary"), _summary_query), run_id)
        for status, count, total_ms, first, last in rows:
            summary[TestResult.status.coerce_member(status).value] += int(count)
            summary["duration_ms"] += int(total_ms or 0)
            starts += [when(first)] if first is not None else []
            ends += [when(last)] if last is not None else []
        summary["total"] = sum(summary[s] for s in _COUNTED)
        summary["started_at"] = _when(min(starts, default=None))
        summary["ended_at"] = _when(max(ends, default=None))
        rate = _percent(summary["passed"], summary["total"])
        summary["success_rate"] = summary["pass_rate"] = rate
        return summary

    def compare_runs(self, run_id1: str, run_id2: str) -> dict:
        """Sorted test names: ``regressions`` (``new_failures``) passed then failed,
        ``improvements`` (``fixed``) the reverse, ``new_tests``/``removed_tests`` in one run
        only. A rerun counts with its last result."""
        runs = [run_id1, run_id2]
        self._touch()
        # Only a test that failed in one of the runs can be a regression or a fix, so only
        # theirs are read, and the names only one run has come from an anti-join.
        failed = (TestResult.select(TestResult.test_name).distinct()
                  .where(TestResult.run_id.in_(runs) & TestResult.status.in_(list(_FAILING))))
        names = [name for (name,) in self._list(failed.tuples())]
        # The same id twice compares the run with itself (all unchanged).
        by_run: dict[str, dict[str, TestStatus]] = {run_id1: {}, run_id2: {}}
        for chunk in chunked(names, _MAX_NAMES):
            query = (TestResult.select(TestResult.run_id, TestResult.test_name,
                                       TestResult.status)
                     .where(TestResult.run_id.in_(runs) & TestResult.test_name.in_(chunk))
                     .order_by(*_RUN_ORDER))
            for run_id, name, status in self._list(query.tuples()):
                if run_id in by_run:  # MariaDB's PAD SPACE matches "x " to "x"
                    by_run[run_id][name] = TestResult.status.coerce_member(status)
        before, after = by_run[run_id1], by_run[run_id2]
        common = before.keys() & after.keys()
        regressions = sorted(n for n in common
                             if before[n] == TestStatus.PASSED and after[n] in _FAILING)
        improvements = sorted(n for n in common
                              if before[n] in _FAILING and after[n] == TestStatus.PASSED)
        new_tests, removed_tests = set(), set()
        for added, name in self._list(_only_in(run_id2, run_id1, True)
                                      .union_all(_only_in(run_id1, run_id2, False)).tuples()):
            (new_tests if added else removed_tests).add(name)
        return {"run_id1": run_id1, "run_id2": run_id2, "regressions": regressions,
                "new_failures": list(regressions), "improvements": improvements,
                "fixed": list(improvements), "new_tests": sorted(new_tests),
                "removed_tests": sorted(removed_tests)}

    def list_runs(self, limit: int | None = 20, suite_name: str | None = None) -> list[dict]:
        """One summary per run (a record without results too), newest first; ``suite_name``
        narrows both the runs and the counts to that suite. A run of several suites shows the
        first by name and their number (``suites``)."""
        results = (TestResult
                   .select(TestResult.run_id, fn.MIN(TestResult.suite_name),
                           fn.COUNT(TestResult.suite_name.distinct()),
                           fn.MIN(TestResult.started_at), fn.MAX(TestResult.ended_at),
                           fn.COUNT(TestResult.id), fn.SUM(TestResult.duration_ms),
                           fn.MAX(TestRun.ending), fn.MAX(TestRun.selection),
                           *[fn.SUM(Case(None, [(TestResult.status == s, 1)], 0))
                             for s in _COUNTED])
                   .join(TestRun, JOIN.LEFT_OUTER, on=(TestRun.id == TestResult.run_id))
                   .group_by(TestResult.run_id))
        own = TestResult.alias()
        empty = (TestRun
                 .select(TestRun.id, TestRun.suite_name, Value(0), TestRun.started_at,
                         TestRun.finished_at, Value(0), Value(0), TestRun.ending,
                         TestRun.selection, *[Value(0) for _ in _COUNTED])
                 .where(~fn.EXISTS(own.select(SQL("1")).where(own.run_id == TestRun.id))))
        if suite_name is not None:
            results = results.where(TestResult.suite_name == suite_name)
            empty = empty.where(TestRun.suite_name == suite_name)
        # Positions, not names: the two parts name their columns differently.
        query = results.union_all(empty).order_by(SQL("4 DESC"), SQL("1 DESC"))
        if limit is not None:
            query = query.limit(positive_int("limit", limit, allow_zero=True))
        self._touch()
        runs = []
        for row in self._list(query.tuples()):
            run_id, first_suite, suites, first, last, total, total_ms, ending, selection, \
                *counts = row
            run = {"run_id": run_id, "suite_name": first_suite, "suites": int(suites),
                   "started_at": _when(first), "ended_at": _when(last),
                   "total": int(total), "duration_ms": int(total_ms or 0),
                   "ending": str(getattr(ending, "value", ending) or RunEnding.UNKNOWN.value),
                   "selection": selection}
            run.update({s: int(c or 0) for s, c in zip(_COUNTED, counts, strict=True)})
            run["success_rate"] = run["pass_rate"] = _percent(run["passed"], run["total"])
            runs.append(run)
        return runs

    def get_run_record(self, run_id: str) -> dict | None:
        """How the run ended and what it ran in (its ``test_runs`` row), or None."""
        self._touch()
        found = self._list(TestRun.select().where(TestRun.id == run_id))
        if not found:
            return None
        run = found[0]
        return {"ending": run.ending.value, "exit_status": run.exit_status,
                "selection": run.selection, "started_at": run.started_at,
                "finished_at": run.finished_at, "context": run.context or {},
                "labels": run.labels or {}}

    def latest_comparable_run(self, suite_name: str, exclude: str | None = None):
        """The suite's newest ``complete`` (or ``unknown``) ``TestRun`` with results but
        ``exclude``, or None."""
        self._touch()
        query = (TestRun.select()
                 .where((TestRun.suite_name == suite_name)
                        & TestRun.ending.in_([RunEnding.COMPLETE, RunEnding.UNKNOWN])
                        & (TestRun.total > 0))
                 .order_by(TestRun.started_at.desc(), TestRun.id.desc()).limit(1))
        if exclude is not None:
            query = query.where(TestRun.id != exclude)
        found = self._list(query)
        return found[0] if found else None

    def flaky_tests(self, suite_name: str, window: int = 5) -> list[str]:
        """The suite's tests that both passed and failed (or passed after a rerun) in its last
        ``window`` runs that were not cut short."""
        window = positive_int("window", window)
        self._touch()
        run_ids = self._window(suite_name, window)
        if not run_ids:
            return []
        failing, flaky = set(), set()
        suspects = (TestResult.select(TestResult.test_name, TestResult.status,
                                      TestResult.suite_name)
                    .where(TestResult.run_id.in_(run_ids)
                           & (TestResult.status.in_(list(_FAILING))
                              | ((TestResult.status == TestStatus.PASSED)
                                 & (TestResult.attempts > 1)))))
        # The suite is checked here, not in SQL: a planner without statistics would take
        # the suite's index (every result of the suite) over the run's.
        for name, status, suite in self._list(suspects.tuples()):
            if suite == suite_name:
                is_pass = TestResult.status.coerce_member(status) == TestStatus.PASSED
                (flaky if is_pass else failing).add(name)
        for chunk in chunked(sorted(failing - flaky), _MAX_NAMES):
            # The status is checked here too: SQLite would otherwise read every pass of
            # the window through idx_test_run_outcome rather than these names' results.
            results = (TestResult.select(TestResult.test_name, TestResult.status,
                                         TestResult.suite_name).distinct()
                       .where(TestResult.run_id.in_(run_ids) & TestResult.test_name.in_(chunk)))
            flaky.update(name for name, status, suite in self._list(results.tuples())
                         if suite == suite_name and TestResult.status.coerce_member(status)
                         == TestStatus.PASSED)
        return sorted(flaky)

    def _window(self, suite_name: str, window: int) -> list[str]:
        """Ids of the suite's last ``window`` runs that were not cut short, newest first."""
        records = (TestRun.select(TestRun.id)
                   .where((TestRun.suite_name == suite_name)
                          & TestRun.ending.not_in(list(_CUT_SHORT)))
                   .order_by(TestRun.started_at.desc(), TestRun.id.desc())
                   .limit(window))
        run_ids = [r for (r,) in self._list(records.tuples())]
        if len(run_ids) == window:
            return run_ids
        # Fewer records than the window: results may have been written without one (model
        # inserts, imports), so take the runs from the results, as before runs had records.
        cut_short = TestRun.select(TestRun.id).where(TestRun.ending.in_(list(_CUT_SHORT)))
        recent = (TestResult.select(TestResult.run_id)
                  .where((TestResult.suite_name == suite_name)
                         & TestResult.run_id.not_in(cut_short))
                  .group_by(TestResult.run_id)
                  .order_by(fn.MAX(TestResult.started_at).desc(), TestResult.run_id.desc())
                  .limit(window))
        # Fetched first: MariaDB refuses LIMIT inside an IN (...) subquery.
        return [r for (r,) in self._list(recent.tuples())]

    def export_junit_xml(self, run_id: str) -> str:
        """The run as JUnit XML (Jenkins xUnit junit-10.xsd), one testsuite per suite name; an
        unknown run gives an empty ``<testsuites>``."""
        query = (TestResult.select(TestResult.suite_name, TestResult.test_name,
                                   TestResult.status, TestResult.duration_ms,
                                   TestResult.error_message, TestResult.started_at,
                                   TestResult.metadata)
                 .where(TestResult.run_id == run_id).order_by(*_RUN_ORDER))
        self._touch()
        return build_junit_xml(run_id, self._list(query))

    def _count_in_run(self, result: TestResult) -> None:
        """Create the run's record (ending ``unknown``) if needed, widen its times, count it."""
        status = TestResult.status.coerce_member(result.status).value
        started, ended = result.started_at, result.ended_at or result.started_at
        with self._write(result.run_id):
            (TestRun.insert(id=result.run_id, suite_name=result.suite_name, started_at=started,
                            finished_at=ended, ending=RunEnding.UNKNOWN)
             .on_conflict_ignore().execute())
            TestRun.update(
                total=TestRun.total + 1,
                **{status: getattr(TestRun, status) + 1},
                started_at=Case(None, [(TestRun.started_at > started,
                                        TestRun.started_at.to_value(started))],
                                TestRun.started_at),
                finished_at=Case(None, [(TestRun.finished_at.is_null()
                                         | (TestRun.finished_at < ended),
                                         TestRun.finished_at.to_value(ended))],
                                 TestRun.finished_at),
                updated_at=utc_now(),
            ).where(TestRun.id == result.run_id).execute()

    def _in_order(self, condition, run_id) -> list[TestResult]:
        query = self._select(condition)
        if run_id is not None:
            query = query.where(TestResult.run_id == run_id)
        return self._list(query.order_by(*_RUN_ORDER))


_RUN_ORDER = (TestResult.started_at, TestResult.created_at, TestResult.id)
_CUT_SHORT = (RunEnding.INTERRUPTED, RunEnding.UNFINISHED)
_MAX_NAMES = 500  # test names per IN (...) list


def _summary_query(run_id):
    return (TestResult
            .select(TestResult.status, fn.COUNT(TestResult.id), fn.SUM(TestResult.duration_ms),
                    fn.MIN(TestResult.started_at), fn.MAX(TestResult.ended_at))
            .where(TestResult.run_id == run_id)
            .group_by(TestResult.status))


def _only_in(run_id: str, other: str, added: bool):
    """The names ``run_id`` has and ``other`` has not (an anti-join), tagged with ``added``."""
    theirs = TestResult.alias()
    return (TestResult.select(Value(1 if added else 0), TestResult.test_name)
            .where((TestResult.run_id == run_id)
                   & ~fn.EXISTS(theirs.select(SQL("1"))
                                .where((theirs.run_id == other)
                                       & (theirs.test_name == TestResult.test_name)))))


def _percent(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else 0.0


def _when(value):
    """An aggregated or UNION ALL datetime as aware UTC (the driver may give text)."""
    if value is None:
        return None
    value = TestResult.started_at.python_value(value)
    return to_utc_ms(value) if isinstance(value, datetime) else value


def _storable(text):
    # PostgreSQL text cannot hold NUL; store the same escape everywhere.
    return text.replace("\x00", "\\x00") if isinstance(text, str) else text


def _check_text(name: str, value) -> None:
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{name} must be a non-empty string; got {quote(value)}")
    getattr(TestResult, name).db_value(value)  # NUL and length: the field's own rules


# The longest time two storable timestamps can be apart (0001-01-01..9999-12-31).
_MAX_DURATION_MS = (datetime.max - datetime.min) // timedelta(milliseconds=1)


def _timing(started_at, ended_at, duration_ms):
    """Fill in whichever of start, end and duration is missing."""
    if duration_ms is not None:
        if isinstance(duration_ms, bool) or not isinstance(duration_ms, int | float) \
                or not 0 <= duration_ms <= _MAX_DURATION_MS:
            raise ValidationError(
                f"duration_ms must be a number of milliseconds from 0 to {_MAX_DURATION_MS:,} "
                f"(0001-01-01 to 9999-12-31); got {quote(duration_ms)}", problems=["duration_ms"])
        duration_ms = round(duration_ms)
    started_at = to_utc_ms(started_at) if started_at is not None else None
    ended_at = to_utc_ms(ended_at) if ended_at is not None else None
    try:
        if ended_at is None:
            if started_at is not None and duration_ms is not None:
                ended_at = started_at + timedelta(milliseconds=duration_ms)
            else:
                ended_at = utc_now()
        if started_at is None:
            started_at = ended_at - timedelta(milliseconds=duration_ms or 0)
    except OverflowError:
        raise ValidationError(
            f"duration_ms {duration_ms:,} puts the test's start or end outside "
            "0001-01-01..9999-12-31", problems=["duration_ms"]) from None
    if duration_ms is None:
        duration_ms = round((ended_at - started_at).total_seconds() * 1000)
        if duration_ms < 0:
            raise ValidationError(
                f"ended_at ({ended_at.isoformat()}) is before started_at "
                f"({started_at.isoformat()}); swap them or pass duration_ms"
            )
    return started_at, ended_at, duration_ms
