"""``export``, ``import``, ``purge``, ``stats``, ``backup`` and ``check``: the operator's data."""

from __future__ import annotations

import os
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import click

from .base import (
    MAX_BIGINT,
    CliState,
    cli,
    confirm,
    display_tables,
    echo,
    echo_json,
    json_option,
    pass_state,
    progress_bar,
    warn,
    write_atomically,
    yes_option,
)

__all__ = ["backup", "check", "export_command", "import_command", "purge", "stats"]

_FORMATS = click.Choice(["json", "jsonl", "yaml"], case_sensitive=False)
_EXTENSIONS = {".json": "json", ".jsonl": "jsonl", ".yaml": "yaml", ".yml": "yaml"}
_SHOWN_PROBLEMS = 20
_FIRST_DAY = datetime(1, 1, 1, tzinfo=timezone.utc)


def _format_for(path: str | None, given: str | None) -> str | None:
    if given:
        return given.lower()
    return _EXTENSIONS.get(Path(path).suffix.lower()) if path else None


@cli.command("export")
@click.option("--format", "-f", "fmt", type=_FORMATS,
              help="json, jsonl (JSON Lines: imported a line at a time) or yaml "
                   "(default: from the --output extension, else json).")
@click.option("--tables", "-t", metavar="LIST",
              help="Comma-separated tables (default: all): devices,cards,sessions,traces,"
                   "logs,tests,settings,counters,runs.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="File (default: stdout).")
@click.option("--include-keys", is_flag=True, help="Add decrypted PSK keys (hex): a secret file.")
@pass_state
def export_command(state: CliState, fmt, tables, output, include_keys):
    """Export the database (every table by default) as JSON, JSON Lines or YAML.

    Example:

    \b
        cardlink-db export --output backup.json
        cardlink-db export --output big-store.jsonl
        cardlink-db export --format yaml --tables devices,cards
    """
    from .. import crypto
    from ..errors import ValidationError
    from ..transfer import DataExporter, resolve_tables

    try:
        resolve_tables(tables)
    except ValidationError as exc:
        raise click.BadParameter(str(exc), param_hint="--tables") from None
    output = None if output == "-" else output
    fmt = _format_for(output, fmt) or "json"
    manager = state.manager(readonly=True)
    exporter = DataExporter(manager)
    if include_keys:
        # Decide before the first byte: stdout cannot be taken back.
        opened = crypto.check_keys(manager)
        if opened["unreadable"]:
            raise click.ClickException(
                f"{len(opened['unreadable'])} PSK(s) cannot be opened with the configured "
                "keys; add the old key to CARDLINK_ENCRYPTION_KEYS (see cardlink-db keys check)")
        where_to = "the file is created mode 0600" if output is not None else "it goes to stdout"
        warn(f"Warning: this export holds decrypted PSK keys; store it like a secret "
             f"({where_to}).")
    with progress_bar(sum(exporter.count_rows(tables).values()), "Exporting") as bar:
        def write(fh):
            return exporter.write(fh, tables=tables, format=fmt, include_keys=include_keys,
                                  progress=None if bar is None else lambda _t, n: bar.update(n))

        counts = write_atomically(output, write) if output is not None else write(sys.stdout)
        sys.stdout.flush()
    shown = ", ".join(f"{table} {n:,}" for table, n in display_tables(counts).items())
    warn(f"Exported {sum(counts.values()):,} rows ({shown}) to {output or 'stdout'}")


@cli.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option("--format", "-f", "fmt", type=_FORMATS,
              help="json, jsonl or yaml (default: from the extension, else from the "
                   "content).")
@click.option("--conflict", type=click.Choice(["skip", "overwrite", "merge"]), default="skip",
              show_default=True,
              help="Existing rows: skip them, overwrite them, or merge in non-null fields.")
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@yes_option
@json_option
@pass_state
def import_command(state: CliState, file, fmt, conflict, dry_run, yes, as_json):
    """Import a file written by export; all or nothing. Changes to existing rows are
    confirmed first (--yes skips the question).

    Example:

    \b
        cardlink-db import backup.json
        cardlink-db import --conflict merge --dry-run backup.yaml
        cardlink-db import --conflict overwrite --yes backup.json
    """
    from ..errors import ValidationError
    from ..transfer import DataImporter

    importer = DataImporter(state.manager())
    fmt = _format_for(file, fmt)

    def run(dry: bool, label: str):
        with click.open_file(file, "rb") as fh:  # JSON Lines: read a line at a time
            size = os.fstat(fh.fileno()).st_size if fh.seekable() else 0
            with progress_bar(size, label) as bar:
                source = fh if bar is None else _ReadProgress(fh, bar)
                return importer.import_data(source, format=fmt, conflict_mode=conflict,
                                            dry_run=dry)

    try:
        if conflict != "skip" and not dry_run and not yes:
            if file == "-":  # the file is stdin: read once, and no terminal to answer
                raise click.UsageError(f"--conflict {conflict} from stdin cannot be "
                                       "previewed and confirmed; pass --yes, or give a file")
            _confirm_changes(file, conflict, run(True, "Previewing"))
        result = run(dry_run, "Checking" if dry_run else "Importing")
    except ValidationError as exc:
        for line in exc.problems[:_SHOWN_PROBLEMS]:
            warn(f"  {line}")
        if len(exc.problems) > _SHOWN_PROBLEMS:
            warn(f"  ... {len(exc.problems) - _SHOWN_PROBLEMS} more")
        raise click.ClickException(str(exc)) from None
    if as_json:
        echo_json({**result.to_dict(), "tables": display_tables(result.tables)})
    verb = "Would import" if dry_run else "Imported"
    _print_import(f"{verb} {file} ({conflict}): {_counts_text(result.to_dict())}", result)
    if dry_run:
        warn("Dry run: nothing was changed.")


def _print_import(headline: str, result) -> None:
    warn(headline)
    for table, counts in display_tables(result.tables).items():
        warn(f"  {table}: {_counts_text(counts)}")
    for note in result.notes:
        warn(f"  {note}")


def _counts_text(counts: dict) -> str:
    return ", ".join(f"{counts.get(what, 0):,} {what}"
                     for what in ("created", "updated", "unchanged", "skipped"))


def _confirm_changes(file: str, conflict: str, preview) -> None:
    if not preview.updated:
        return  # only new rows: nothing existing is at stake
    _print_import(f"Preview of {file} ({conflict}): {preview.created:,} to create, "
                  f"{preview.updated:,} existing to change, {preview.unchanged:,} unchanged",
                  preview)
    confirm(f"Change {preview.updated:,} existing row(s)?",
            f"--conflict {conflict} would change {preview.updated:,} existing row(s)")


class _ReadProgress:
    """A binary file that moves a progress bar by the bytes read."""

    def __init__(self, fh, bar):
        self._fh, self._bar = fh, bar

    def readline(self, *args) -> bytes:
        line = self._fh.readline(*args)
        self._bar.update(len(line))
        return line

    def read(self, *args) -> bytes:
        data = self._fh.read(*args)
        self._bar.update(len(data))
        return data


@cli.command()
@click.option("--older-than", "days", type=click.IntRange(min=0, max=MAX_BIGINT), required=True,
              metavar="DAYS", help="Delete rows older than this many days (more days than "
                                   "the calendar has: everything).")
@click.option("--tables", "-t", default="logs", show_default=True, metavar="LIST",
              help="Comma-separated: logs,sessions,tests (a session takes its logs along).")
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted.")
@click.option("--vacuum", is_flag=True, help="SQLite: run a full VACUUM afterwards.")
# A chunk's ids are one IN list: SQLite takes 32,766 values, PostgreSQL 65,535.
@click.option("--chunk-size", type=click.IntRange(min=1, max=30000), default=5000,
              show_default=True, help="Rows deleted per short transaction.")
@yes_option
@json_option
@pass_state
def purge(state: CliState, days, tables, dry_run, vacuum, chunk_size, yes, as_json):
    """Delete old logs, sessions or test results, in short chunks.

    Example:

    \b
        cardlink-db purge --older-than 90 --tables logs
        cardlink-db purge --older-than 30 --tables sessions,logs --yes
    """
    from .. import retention
    from ..errors import ValidationError
    from ..fields import utc_now

    try:
        retention.resolve_purge_tables(tables)
    except ValidationError as exc:
        raise click.BadParameter(str(exc), param_hint="--tables") from None
    manager = state.manager()
    manager.ensure_connection()
    database = manager.database
    now = utc_now()
    cutoff = now - timedelta(days=min(days, (now - _FIRST_DAY).days))
    planned = retention.plan_purge(database, tables, cutoff)
    # The same keys whatever happens: zeros and null where nothing was done.
    report = {"cutoff": cutoff, "dry_run": dry_run, "would_delete": planned,
              "deleted": dict.fromkeys(planned, 0), "space": None}
    total = sum(planned.values())
    if dry_run or total == 0:
        if as_json:
            echo_json(report)
        else:
            _print_plan(planned, cutoff)
            echo("Dry run: nothing was deleted." if dry_run else "Nothing to purge.")
        return
    if not yes:
        _print_plan(planned, cutoff, err=True)
        confirm("Delete these rows?", f"purge would delete {total:,} rows")
    with progress_bar(total, "Purging") as bar:  # every row, a session's logs included
        report["deleted"] = deleted = retention.purge(
            database, tables, cutoff, chunk_size,
            progress=None if bar is None else lambda _t, n: bar.update(n))
    if manager.config.is_sqlite:
        report["space"] = retention.reclaim_space(database, full=vacuum)
    if as_json:
        echo_json(report)
        return
    shown = ", ".join(f"{_LABELS.get(key, key)} {n:,}" for key, n in deleted.items())
    echo(f"Deleted {sum(deleted.values()):,} rows ({shown}).")
    space = report["space"]
    if space:
        freed = max(0, space["bytes_before"] - space["bytes_after"])
        echo(f"Reclaimed {freed / (1024 * 1024):.2f} MB ({space['method']}).")


def _print_plan(planned: dict, cutoff, err: bool = False) -> None:
    # isoformat: strftime writes the year 1 as "1"
    echo(f"Rows older than {cutoff.isoformat(' ')[:16]} UTC:", err=err)
    for table, n in planned.items():
        echo(f"  {_LABELS.get(table, table)}: {n:,}", err=err)


_LABELS = {"logs_of_sessions": "logs of those sessions"}


@cli.command()
@json_option
@pass_state
def stats(state: CliState, as_json):
    """Row counts, database size, recent activity and session success rate.

    Example:

    \b
        cardlink-db stats --json
    """
    from .. import maintenance

    info = maintenance.collect_stats(state.manager(readonly=True))
    if as_json:
        echo_json(info)
        return
    echo("Tables:")
    for table, n in info["tables"].items():
        echo(f"  {table}: {n:,}")
    echo(f"Database size: {info['database_size_mb']:.2f} MB")
    recent = info["recent_activity"]
    echo(f"Last 24 h: {recent['sessions_last_24h']:,} sessions, "
         f"{recent['tests_last_24h']:,} tests")
    echo(f"Session success rate: {info['session_success_rate']:.1f}%")
    causes = info["session_failures_by_cause"]
    lines = [f"  {label} {name}: {n:,}" for key, label in _CAUSES
             for name, n in sorted(causes[key].items())]
    lines += [f"  {key}: {causes[key]:,}" for key in ("timeout", "other") if causes[key]]
    if lines:
        echo("\n".join(["Session failures by cause:", *lines]))


_CAUSES = (("tls_alert", "TLS alert"), ("por_status", "PoR"),
           ("admin_script_status", "admin script status"))


@cli.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Replace PATH if it exists.")
@json_option
@pass_state
def backup(state: CliState, path, force, as_json):
    """Copy a live SQLite database to PATH (mode 0600) with SQLite's online backup.

    Example:

    \b
        cardlink-db backup backups/cardlink-$(date +%F).db
    """
    from .. import maintenance

    # A file copy needs no schema knowledge: a store a newer tool migrated is backed up too
    # (before upgrading the tool is exactly when a backup is wanted).
    manager = state.manager(check_schema=False, readonly=True)
    info = maintenance.backup_database(manager, path, overwrite=force)
    if as_json:
        echo_json(info)
    else:
        echo(f"Backed up to {info['path']} ({info['bytes'] / (1024 * 1024):.2f} MB)")


@cli.command()
@click.option("--quick", is_flag=True,
              help="SQLite quick_check instead of the full integrity check (big stores).")
@click.option("--repair", is_flag=True, help="Recreate missing tables and indexes first.")
@json_option
@pass_state
def check(state: CliState, quick, repair, as_json):
    """Check integrity (SQLite), tables, indexes and the schema revision; exit 1 on problems.

    Example:

    \b
        cardlink-db check
        cardlink-db check --quick --json
        cardlink-db check --repair
    """
    from .. import maintenance

    manager = state.manager(check_schema=False, readonly=not repair)
    repaired = maintenance.repair_database(manager) if repair else []
    report = maintenance.check_database(manager, quick=quick)
    if repair:
        report["repaired"] = repaired
    if as_json:
        echo_json(report)
    else:
        for what in repaired:
            echo(f"REPAIRED: recreated {what}")
        for line in report["problems"]:
            echo(f"PROBLEM: {line}")
        if report["ok"]:
            echo(f"OK: {report['backend']} database passed every check")
        echo(f"Checked in {report['seconds']:.2f} s ({report['checks']['mode']} check)")
    if not report["ok"]:
        raise click.ClickException(f"{len(report['problems'])} problem(s) found")
