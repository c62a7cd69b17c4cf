"""``init``, ``migrate`` and ``status``: creating and versioning the schema."""

from __future__ import annotations

from datetime import datetime

import click

from .base import (
    CliState,
    cli,
    confirm,
    display_tables,
    echo,
    echo_json,
    json_option,
    pass_state,
    yes_option,
)

__all__ = ["init", "migrate", "status"]


@cli.command()
@click.option("--force", is_flag=True,
              help="Drop every table and all data first (the explicit request: no question).")
@click.option("--yes", "-y", is_flag=True, hidden=True)  # accepted: older scripts pass it
@pass_state
def init(state: CliState, force: bool, yes: bool):
    """Create the database and its schema; without --force existing data is kept.

    Example:

    \b
        cardlink-db init
        cardlink-db --database postgresql://bench@db/cardlink init --force
    """
    from .. import migrations
    from ..models import ALL_MODELS

    manager = state.manager(check_schema=False, create=True)
    if force:
        manager.drop_tables()
    manager.create_tables()  # migrates a store that has a schema
    revision = migrations.get_current_revision(manager=manager)
    echo(f"Initialized {manager.config.backend_name} database {manager.config.safe_url}")
    echo(f"  {len(ALL_MODELS)} tables, schema revision {revision}")
    echo("Next steps:")
    echo("  cardlink-db status          # check the connection and revision")
    echo("  cardlink-db keys generate   # make a CARDLINK_ENCRYPTION_KEY for PSKs")


@cli.command()
@click.option("--revision", "-r", metavar="REV",
              help="Go to this revision (name or number): forward, or back after asking.")
@click.option("--dry-run", is_flag=True, help="Print the SQL that would run; change nothing.")
@click.option("--resolve", metavar="REV",
              help="Clear a half-applied migration after fixing it by hand (needs --as).")
@click.option("--as", "resolved_as", type=click.Choice(["applied", "rolled-back"]),
              help="With --resolve: what you made of the half-applied migration.")
@yes_option
@pass_state
def migrate(state: CliState, revision, dry_run, resolve, resolved_as, yes):
    """Apply pending schema migrations (or go back to an earlier revision).

    Example:

    \b
        cardlink-db migrate --dry-run
        cardlink-db migrate --revision 0001
    """
    from .. import migrations
    from ..errors import MigrationError
    from ..fields import iso_utc

    if resolved_as and not resolve:
        raise click.UsageError("--as needs --resolve REV: the half-applied migration to record")
    try:
        target = migrations.resolve_revision(revision) if revision else None
    except MigrationError as exc:
        raise click.BadParameter(str(exc), param_hint="'--revision' / '-r'") from None
    manager = state.manager(check_schema=False, create=True)
    if resolve:
        if not resolved_as:
            raise click.UsageError("--resolve needs --as applied or --as rolled-back")
        filled = migrations.resolve_half_applied(resolve, resolved_as == "applied",
                                                 manager=manager)
        echo(f"Recorded {resolve} as {resolved_as}.")
        _print_filled(filled)
        return
    _print_revision("Before", manager)
    history = migrations.get_applied_revisions(manager=manager)
    newer = history[history.index(target) + 1:] if target in history else []
    names = ", ".join(reversed(newer))
    if dry_run:
        statements = migrations.plan_sql(revision, manager=manager)
        if not statements:
            echo("Nothing to do: the schema is up to date.")
        for sql, params in statements:
            shown = [iso_utc(p, millis=True) if isinstance(p, datetime) else p
                     for p in params or ()]
            echo(sql + ";" + (f"  -- params: {shown}" if shown else ""))
        reverting = f"would revert {names}; " if newer else ""
        echo(f"-- dry run: {reverting}{len(statements)} statements, nothing was changed")
        return
    if newer:  # an earlier revision: revert what came after it
        if not yes:
            confirm(f"Revert {names} (their down() may drop columns and data)?",
                    f"migrate --revision {revision} would revert {names}")
        for name in migrations.downgrade(steps=len(newer), manager=manager):
            echo(f"Reverted {name}")
        _print_revision("After", manager)
        return
    applied = migrations.run_migrations(revision, manager=manager)
    for name in applied:
        echo(f"Applied {name}")
    filled = migrations.run_backfills(manager=manager)
    if not applied and not filled:
        target = f"already at {revision}" if revision else "the schema is up to date"
        echo(f"Nothing to do: {target}.")
    _print_filled(filled)
    _print_revision("After", manager)


def _print_filled(filled: dict) -> None:
    for name, count in filled.items():
        echo(f"Filled {count:,} rows left by {name}")


def _print_revision(label: str, manager) -> None:
    from .. import migrations

    current = migrations.get_current_revision(manager=manager)
    pending = migrations.get_pending_revisions(manager=manager)
    echo(f"{label}: revision {current or '(none)'}, {len(pending)} pending")


@cli.command()
@click.option("--verbose", "-v", "detail", is_flag=True, help="Add row counts per table.")
@json_option
@pass_state
def status(state: CliState, detail: bool, as_json: bool):
    """Show backend, URL (password hidden), schema revision and pending migrations.

    Example:

    \b
        cardlink-db status --verbose
    """
    from .. import migrations
    from ..errors import SchemaVersionMismatch

    manager = state.manager(check_schema=False, readonly=True)
    mismatch = None
    try:
        migrations.check_schema_version(manager=manager)
    except SchemaVersionMismatch as exc:
        mismatch = exc
    info = {
        "backend": manager.config.backend_name,
        "url": manager.config.safe_url,
        "current_revision": migrations.get_current_revision(manager=manager),
        "head_revision": migrations.get_head_revision(),
        "pending_migrations": migrations.get_pending_revisions(manager=manager),
        "half_applied": [{**entry, "started_at": _stamp_text(entry["started_at"])}
                         for entry in migrations.half_applied(manager=manager)],
    }
    if detail or state.verbose:
        info["tables"] = display_tables(manager.table_counts())
    if as_json:
        echo_json(info)
    else:
        echo("Database Status")
        echo("===============")
        echo(f"Backend: {info['backend']}")
        echo(f"URL: {info['url']}")
        echo(f"Current Revision: {info['current_revision'] or '(none)'}")
        echo(f"Pending Migrations: {len(info['pending_migrations'])}")
        for entry in info["half_applied"]:
            echo(f"HALF-APPLIED: {entry['name']} ({entry['direction']}) started "
                 f"{entry['started_at']}; {len(entry['operations'])} statements committed:")
            for sql in entry["operations"]:
                echo(f"    {sql}")
        if "tables" in info:
            echo("\nTables:")
            for table, count in info["tables"].items():
                echo(f"  {table}: {count:,} rows")
    if mismatch is not None:
        raise mismatch
    if info["half_applied"]:
        raise click.ClickException("a migration is half-applied; fix it by hand, then run "
                                   "cardlink-db migrate --resolve REV --as applied|rolled-back")


def _stamp_text(text: str) -> str:
    """A stored ISO timestamp in the output's one format (left as is if unreadable)."""
    from ..fields import iso_utc

    try:
        return iso_utc(datetime.fromisoformat(text), millis=True)
    except (TypeError, ValueError):
        return text
