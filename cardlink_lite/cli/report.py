"""``report``: one self-contained HTML file of run trends, sessions and APDU timelines."""

from __future__ import annotations

import uuid
from pathlib import Path

import click

from .base import CliState, StoredText, UtcDateTime, cli, pass_state, write_atomically

__all__ = ["report"]

# The generator meta near the top of every report (report.html.j2).
_GENERATOR = b'<meta name="generator" content="cardlink-lite report">'


@cli.command()
@click.option("--suite", "-s", type=StoredText("TestResult.suite_name"), metavar="NAME",
              help="Suite whose runs are shown (default: the one with the newest result).")
@click.option("--runs", "-n", default=20, show_default=True,  # REPORT_DEFAULTS["runs"]
              type=click.IntRange(min=1, max=1000), help="Newest runs of the suite to show.")
@click.option("--since", type=UtcDateTime(), metavar="DATE",
              help="Leave out runs and sessions before this UTC date or time "
                   "(2024-11-29 or 2024-11-29T08:00).")
@click.option("--session", "sessions", multiple=True, metavar="ID",
              help="Draw this session's APDU timeline (repeatable; default: the newest "
                   "session and the newest failed one).")
@click.option("--output", "-o", default="report.html", show_default=True,
              type=click.Path(dir_okay=False, writable=True),
              help="The HTML file to write (- for stdout); an existing file is replaced only "
                   "if it is a cardlink report.")
@click.option("--force", is_flag=True, help="Replace an existing file that is not a report.")
# Checked as free text is (Device.notes: no NUL, no lone surrogate): the page is UTF-8.
@click.option("--title", type=StoredText("Device.notes"), metavar="TEXT",
              help="Heading of the page.")
@pass_state
def report(state: CliState, suite, runs, since, sessions, output, force, title):
    """Write one HTML file that opens offline: run trends, flaky and slow tests, session
    outcomes per device and card, latency per command and APDU timelines.

    Example:

    \b
        cardlink-db report -o report.html
        cardlink-db report --suite nightly --runs 50 --since 2024-11-01
        cardlink-db report --session 3f2c9a1e-8b7d-4c1a-9e2f-0a1b2c3d4e5f -o session.html
    """
    try:  # the report's template engine is the optional extra cardlink-lite[report]
        from ..report import build_report
    except ModuleNotFoundError as exc:
        if exc.name not in ("jinja2", "markupsafe"):
            raise
        raise click.ClickException(
            "the HTML report needs Jinja2; install it with: pip install 'cardlink-lite[report]'"
        ) from None
    for value in sessions:
        try:
            uuid.UUID(value)
        except ValueError:
            raise click.BadParameter(
                f"{value[:40]!r} is not a session id; session ids are UUIDs like "
                "3f2c9a1e-8b7d-4c1a-9e2f-0a1b2c3d4e5f", param_hint="--session") from None
    write_atomically(output, lambda fh: fh.write(build_report(
        state.manager(readonly=True), suite=suite, runs=runs, since=since,
        sessions=list(sessions) or None, title=title)), mode=0o644,
        check_existing=None if force else _not_a_report)
    if output == "-":
        return
    click.echo(f"wrote {output} ({Path(output).stat().st_size / 1024:,.0f} KiB); open it in "
               "a browser")


def _not_a_report(path: Path) -> str | None:
    """Why ``path`` must not be replaced without --force (None: an earlier report, or empty)."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
    if not head or _GENERATOR in head:
        return None
    return "exists and is not a cardlink report; choose another path, or pass --force to " \
           "replace it"
