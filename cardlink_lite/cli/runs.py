"""``runs list|show|compare|junit``: the test runs the pytest plugin and lab scripts record."""

from __future__ import annotations

import contextlib

import click

from .base import (
    MAX_BIGINT,
    CliState,
    StoredText,
    cli,
    echo,
    echo_json,
    json_option,
    pass_state,
    write_atomically,
)

__all__ = ["runs_group"]

_MESSAGE_WIDTH = 100
_RUN_ID = StoredText("TestResult.run_id")


@cli.group("runs")
def runs_group():
    """Test runs: list them, show one, compare two, export JUnit XML.

    Example:

    \b
        cardlink-db runs list --suite integration
    """


@runs_group.command("list")
@click.option("--limit", "-n", default=20, show_default=True,
              type=click.IntRange(min=1, max=MAX_BIGINT),
              help="Newest runs to list.")
@click.option("--suite", "-s", "suite_name", type=StoredText("TestResult.suite_name"),
              metavar="NAME", help="Only runs of this suite.")
@json_option
@pass_state
def list_command(state: CliState, limit, suite_name, as_json):
    """List recorded runs, newest first, with counts per status.

    Example:

    \b
        cardlink-db runs list -n 5 --json
    """
    with _tests(state) as tests:
        runs = tests.list_runs(limit=limit, suite_name=suite_name)
    if as_json:
        echo_json(runs)
        return
    if not runs:
        echo("no runs recorded")
        return
    echo(f"{'RUN ID':<38} {'SUITE':<20} {'STARTED':<20} {'ENDED':<17} {'TOTAL':>6} "
         f"{'PASS':>6} {'FAIL':>6} {'ERR':>5} {'SKIP':>5} {'RATE':>6}")
    for run in runs:
        started = run["started_at"].strftime("%Y-%m-%d %H:%M:%S") if run["started_at"] else ""
        echo(f"{run['run_id']:<38} {run['suite_name'][:20]:<20} {started:<20} "
             f"{run['ending']:<17} {run['total']:>6} {run['passed']:>6} {run['failed']:>6} "
             f"{run['error']:>5} {run['skipped']:>5} {run['success_rate']:>5.1f}%")


@runs_group.command("show")
@click.argument("run_id", type=_RUN_ID)
@json_option
@pass_state
def show_command(state: CliState, run_id, as_json):
    """Show a run's summary and its failed and errored tests.

    Example:

    \b
        cardlink-db runs show 5f56c8b2-134d-4e2f-a4f8-c20f5474508d
    """
    with _tests(state) as tests:
        record = tests.get_run_record(run_id)
        # A run with a record and no results (nothing selected, stopped before its first
        # test ended) is shown; an id with neither is an error.
        summary = tests.get_run_summary(run_id) if record else _summary_or_fail(tests, run_id)
        summary["run"] = record
        results = tests.find_by_run(run_id) if as_json else tests.find_failures(run_id)
        rows = [_result_dict(r) for r in results]
        sessions = tests.linked_sessions(run_id)
    if as_json:
        echo_json({"summary": summary, "results": rows,
                   "sessions": [{"session_id": s, "test_name": t} for s, t in sessions]})
        return
    echo(f"run {run_id}: {summary['total']} tests, {summary['passed']} passed, "
         f"{summary['failed']} failed, {summary['error']} error, "
         f"{summary['skipped']} skipped ({summary['success_rate']:.1f}% passed), "
         f"{summary['duration_ms'] / 1000:.2f} s")
    if record:
        status = record["exit_status"]
        echo(f"  ended: {record['ending']}"
             + (f" ({record['selection']})" if record["selection"] else "")
             + (f", exit status {status}" if status is not None else ""))
        for title, values in (("context", record["context"]), ("labels", record["labels"])):
            if values:
                echo(f"  {title}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
    for session_id, test_name in sessions:
        echo(f"  session {session_id} driven by {test_name}")
    for row in rows:
        message = (row["error_message"] or "").splitlines()[0:1]
        echo(f"  {row['status'].upper():<6} {row['test_name']}"
             + (f" - {message[0][:_MESSAGE_WIDTH]}" if message else ""))


@runs_group.command("compare")
@click.argument("run_a", type=_RUN_ID)
@click.argument("run_b", type=_RUN_ID)
@json_option
@pass_state
def compare_command(state: CliState, run_a, run_b, as_json):
    """Compare run A (before) with run B (after): regressions, fixes, new and removed tests.

    Example:

    \b
        cardlink-db runs compare nightly-41 nightly-42
    """
    with _tests(state) as tests:
        _summary_or_fail(tests, run_a)
        _summary_or_fail(tests, run_b)
        comparison = tests.compare_runs(run_a, run_b)
    if as_json:
        echo_json(comparison)
        return
    for key, label in (("regressions", "regressions (passed -> failed/error)"),
                       ("fixed", "fixed (failed/error -> passed)"),
                       ("new_tests", "new tests"), ("removed_tests", "removed tests")):
        names = comparison[key]
        echo(f"{label}: {len(names)}")
        for name in names:
            echo(f"  {name}")


@runs_group.command("junit")
@click.argument("run_id", type=_RUN_ID)
@click.option("--output", "-o", type=click.Path(dir_okay=False),
              help="Write to this file (mode 0600) instead of stdout.")
@pass_state
def junit_command(state: CliState, run_id, output):
    """Export a run as JUnit XML (the Jenkins xUnit junit-10 schema).

    Example:

    \b
        cardlink-db runs junit nightly-42 -o results.xml
    """
    with _tests(state) as tests:
        _summary_or_fail(tests, run_id)
        xml = tests.export_junit_xml(run_id)
    if output is None:
        click.echo(xml, nl=not xml.endswith("\n"))  # a file format: kept exact, like --json
        return
    write_atomically(output, lambda handle: handle.write(xml))
    echo(f"wrote {output}", err=True)


@contextlib.contextmanager
def _tests(state: CliState):
    from ..unit_of_work import UnitOfWork

    with UnitOfWork(state.manager(readonly=True)) as uow:
        yield uow.tests


def _summary_or_fail(tests, run_id: str) -> dict:
    summary = tests.get_run_summary(run_id)
    if not summary["total"]:
        raise click.ClickException(
            f"no results recorded for run {run_id!r}; see the run ids with: cardlink-db runs list"
        )
    return summary


_RESULT_FIELDS = ("id", "test_name", "status", "started_at", "ended_at", "duration_ms",
                  "device_id", "card_iccid", "error_message", "assertions", "metadata")


def _result_dict(result) -> dict:
    row = {name: getattr(result, name) for name in _RESULT_FIELDS}
    row["status"] = getattr(result.status, "value", result.status)
    return row
