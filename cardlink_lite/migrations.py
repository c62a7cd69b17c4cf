"""Glue over playhouse.migrations.Runner: revisions, dry runs, half-applied detection."""

from __future__ import annotations

import contextlib
import functools
import json
import re
from datetime import datetime, timezone
from pathlib import Path

import peewee
from playhouse.migrations import MigrationError as _PlayhouseMigrationError
from playhouse.migrations import Runner

from .db import bound_models, get_manager
from .errors import MigrationError, SchemaVersionMismatch, first_line
from .models import ALL_MODELS

__all__ = ["HISTORY_TABLE", "MIGRATIONS_DIR", "check_no_pending", "check_schema_version",
           "create_schema", "downgrade", "drop_schema", "get_applied_revisions",
           "get_current_revision", "get_head_revision", "get_pending_revisions", "half_applied",
           "plan_sql", "resolve_half_applied", "resolve_revision", "run_backfills",
           "run_migrations"]

HISTORY_TABLE = "cardlink_migrations"
JOURNAL_TABLE = "cardlink_migration_journal"


def _find_migrations_dir() -> Path:
    installed = Path(__file__).parent / "schema_migrations"  # inside the wheel
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parent.parent / "schema_migrations"  # a source checkout


MIGRATIONS_DIR = _find_migrations_dir()
_READS = re.compile(r"^\s*(SELECT|SHOW|DESCRIBE|PRAGMA|WITH|EXPLAIN)\b", re.I)
_TXN = re.compile(r"^\s*(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE)\b", re.I)
# A data statement is journaled once per table: a backfill runs thousands of them, their
# parameters are not recorded, and a repeatable backfill() finishes the work.
_DATA = re.compile(r"^\s*(INSERT\s+INTO|UPDATE|DELETE\s+FROM|REPLACE\s+INTO)\s+(\S+)", re.I)
_PG_LOCK_KEY = 0x636C6D6967  # "clmig": pg_advisory_lock's key for migrating
_LOCK_WAIT = 600  # seconds a MariaDB/MySQL process waits for another one's migration
_RESOLVE_HINT = (
    "Undo or finish its changes by hand (see `cardlink-db status`), then run "
    "`cardlink-db migrate --resolve {name} --as rolled-back` (or `--as applied`)"
)


class _Journal(peewee.Model):
    """A migration under way on a backend whose DDL commits as it goes (MySQL/MariaDB)."""

    name = peewee.CharField(max_length=255, primary_key=True)
    direction = peewee.CharField(max_length=8)
    started_at = peewee.CharField(max_length=40)
    operations = peewee.TextField(default="[]")
    error = peewee.TextField(null=True)

    class Meta:
        table_name = JOURNAL_TABLE


class _Runner(Runner):
    """Runner that journals non-transactional migrations so a half-applied one is visible:
    the whole plan is checked, then run one at a time through playhouse's public up/down."""

    def up(self, target=None, fake=False):
        rows = [m for m in self.status() if m.path is not None]
        names = [m.name for m in rows]
        if target is not None and target not in names:
            raise _PlayhouseMigrationError(f'unknown migration "{target}".')
        if target is not None:
            rows = rows[:names.index(target) + 1]
        plan = [self._checked(m, "up") for m in rows if not m.applied]
        return self._apply(plan, "up", fake, functools.partial(super().up, fake=fake))

    def down(self, target=None):
        return self._apply(self.down_plan(target), "down", False, super().down)

    def down_plan(self, target=None) -> list[tuple]:
        """(name, module) of what ``down(target)`` reverts, newest first; each migration's
        ``check_down(db)`` refuses data its down() would fail on, before any of them runs."""
        rows = [m for m in reversed(self.status()) if m.applied]
        names = [m.name for m in rows]
        if target is not None and target not in names:
            raise _PlayhouseMigrationError(f'"{target}" is not an applied migration.')
        rows = rows[:1 if target is None else names.index(target) + 1]
        plan = [self._checked(m, "down") for m in rows]
        for _name, module in plan:
            if getattr(module, "check_down", None) is not None:
                module.check_down(self.database)
        return plan

    @staticmethod
    def _checked(migration, direction: str) -> tuple:
        if migration.path is None:
            raise _PlayhouseMigrationError(
                f'cannot revert "{migration.name}": migration file is missing.')
        module = migration.load()
        if getattr(module, direction, None) is None:
            raise _PlayhouseMigrationError(f"{migration.name} does not define {direction}().")
        return migration.name, module

    def _apply(self, plan, direction, fake, step) -> list[str]:
        for name, module in plan:
            if fake or (self.migrator.transactional_ddl and getattr(module, "atomic", True)):
                step(name)
            else:
                self._journaled(name, direction, step)
        return [name for name, _module in plan]

    def _journaled(self, name, direction, step) -> None:
        _Journal.bind(self.database)
        _Journal.create_table(safe=True)
        _Journal.create(name=name, direction=direction,
                        started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        done: list[str] = []

        def record(event):  # saved after each statement: autocommitted, it survives a kill
            if event.exception is None and not _READS.match(event.sql) \
                    and JOURNAL_TABLE not in event.sql and HISTORY_TABLE not in event.sql:
                data = _DATA.match(event.sql)
                entry = f"{data.group(1).upper()} {data.group(2)} … (data)" if data else event.sql
                if data is None or entry not in done:
                    done.append(entry)
                    (_Journal.update(operations=json.dumps(done))
                     .where(_Journal.name == name).execute())

        self.database.query_hooks.append(record)
        try:
            step(name)
        except Exception as exc:
            if not done:  # nothing reached the server: an ordinary failure, nothing to resolve
                with contextlib.suppress(peewee.PeeweeException):
                    _Journal.delete().where(_Journal.name == name).execute()
                raise MigrationError(f"migration {name} ({direction}) failed and changed "
                                     f"nothing: {first_line(exc)}") from exc
            (_Journal.update(operations=json.dumps(done), error=first_line(exc))
             .where(_Journal.name == name).execute())
            raise MigrationError(
                f"migration {name} ({direction}) failed after {len(done)} of its statements "
                f"had been applied and committed by the server: {first_line(exc)}. "
                f"{_RESOLVE_HINT.format(name=name)}"
            ) from exc
        finally:
            self.database.query_hooks.remove(record)
        _Journal.delete().where(_Journal.name == name).execute()


def _runner(manager, directory=None) -> _Runner:
    return _runner_on(manager.database, directory)


def _runner_on(database, directory=None) -> _Runner:
    return _Runner(database, str(directory or MIGRATIONS_DIR), table_name=HISTORY_TABLE)


def _revisions(directory=None) -> list[str]:
    return [p.stem for p in sorted(Path(directory or MIGRATIONS_DIR).glob("[0-9]*.py"))]


def get_head_revision(directory=None) -> str | None:
    """The newest revision this code knows."""
    revisions = _revisions(directory)
    return revisions[-1] if revisions else None


def get_applied_revisions(manager=None, directory=None) -> list[str]:
    """Applied revisions, oldest first."""
    runner = _runner(manager or get_manager(), directory)
    return [m.name for m in runner.status() if m.applied]


def get_current_revision(manager=None, directory=None) -> str | None:
    """The newest applied revision, or None on an empty database."""
    applied = get_applied_revisions(manager, directory)
    return applied[-1] if applied else None


def get_pending_revisions(manager=None, directory=None) -> list[str]:
    """Revisions in the code not yet applied to the database."""
    runner = _runner(manager or get_manager(), directory)
    return [m.name for m in runner.status() if not m.applied]


def check_schema_version(manager=None, directory=None) -> None:
    """Raise SchemaVersionMismatch if the database was migrated by newer code."""
    manager = manager or get_manager()
    known = _revisions(directory)
    unknown = [n for n in get_applied_revisions(manager, directory) if n not in known]
    if unknown:
        raise SchemaVersionMismatch(
            f"the database is at schema revision {unknown[-1]}, newer than the newest this "
            f"cardlink_lite knows ({known[-1] if known else 'none'}); upgrade cardlink-lite, "
            "or point it at a database it created"
        )


def check_no_pending(database, action: str, directory=None) -> None:
    """MigrationError in one line if ``database`` has migrations to apply: ``action`` needs
    the tables the models describe."""
    status = _runner_on(database, directory).status()
    pending = [m.name for m in status if not m.applied]
    if pending:
        applied = [m.name for m in status if m.applied]
        raise MigrationError(
            f"the database is at schema revision {applied[-1] if applied else '(none)'}, "
            f"{len(pending)} pending: run `cardlink-db migrate` before {action}")


def half_applied(manager=None) -> list[dict]:
    """Migrations that failed or were killed halfway on a non-transactional backend."""
    database = (manager or get_manager()).database
    if JOURNAL_TABLE not in database.get_tables():
        return []
    _Journal.bind(database)
    return [{"name": j.name, "direction": j.direction, "started_at": j.started_at,
             "operations": json.loads(j.operations), "error": j.error}
            for j in _Journal.select().order_by(_Journal.name)]


def resolve_half_applied(name: str, applied: bool, manager=None) -> dict[str, int]:
    """Mark a half-applied migration as fixed by hand: recorded as applied or not at all.
    An upgrade resolved as applied runs its ``backfill`` again; returns the rows it filled."""
    manager = manager or get_manager()
    entries = {e["name"]: e for e in half_applied(manager)}
    if name not in entries:
        raise MigrationError(f"{name} is not recorded as half-applied; nothing to resolve")
    runner = _runner(manager)
    history = runner.History
    with manager.database.atomic():
        history.create_table(safe=True)
        history.delete().where(history.name == name).execute()
        if applied == (entries[name]["direction"] == "up"):
            history.create(name=name)
        _Journal.delete().where(_Journal.name == name).execute()
    if not (applied and entries[name]["direction"] == "up"):
        return {}
    with _translated("backfill"):
        return _backfill(runner, [m for m in runner.status() if m.name == name])


def run_backfills(manager=None, directory=None) -> dict[str, int]:
    """Run again the ``backfill(db)`` of each applied migration that has one (it fills only
    rows still missing their data, e.g. after a kill); returns the rows each filled."""
    manager = manager or get_manager()
    _refuse_unsafe_state(manager)
    runner = _runner(manager, directory)
    with _translated("backfill"):
        return _backfill(runner, [m for m in runner.status() if m.applied])


def _backfill(runner, migrations) -> dict[str, int]:
    filled = {}
    for migration in migrations:
        step = getattr(migration.load(), "backfill", None) if migration.path else None
        count = step(runner.database) if step is not None else 0
        if count:
            filled[migration.name] = count
    return filled


def _refuse_unsafe_state(manager) -> None:
    database = manager.database
    conn = database.connection() if manager.config.is_sqlite else None
    if database.in_transaction() or (conn is not None and conn.in_transaction):
        raise MigrationError(
            "migrations must not run inside an open transaction (on SQLite a table rebuild "
            "inside one deletes child rows through ON DELETE CASCADE); commit or roll back "
            "first"
        )
    pending = half_applied(manager)
    if pending:
        entry = pending[0]
        raise MigrationError(
            f"migration {entry['name']} was half-applied ({len(entry['operations'])} "
            f"statements committed, then: {entry['error'] or 'interrupted'}). "
            f"{_RESOLVE_HINT.format(name=entry['name'])}"
        )


def resolve_revision(target: str | None, directory=None) -> str | None:
    """The full revision name for ``target`` (a name, its number, or a unique prefix)."""
    if target is None:
        return None
    names = _revisions(directory)
    matches = [n for n in names if n == target or n.split("_", 1)[0] == target
               or n.startswith(target)]
    if len(matches) != 1:
        raise MigrationError(
            f"Target revision not found: {target!r}; known revisions: {', '.join(names)}"
        )
    return matches[0]


def run_migrations(target: str | None = None, manager=None, directory=None) -> list[str]:
    """Apply pending migrations (up to ``target``); returns the revisions applied."""
    manager = manager or get_manager()
    target = resolve_revision(target, directory)
    with _translated("migration"), _migration_lock(manager):  # pending: read once it is held
        check_schema_version(manager, directory)
        return _runner(manager, directory).up(target)


@contextlib.contextmanager
def _migration_lock(manager):
    """One migrating process per store: processes started together (parallel CI jobs) wait
    for it, then find nothing pending. Released when the connection ends, too."""
    database = manager.database
    if manager.config.is_sqlite:
        # The write lock (BEGIN IMMEDIATE) for the whole run, foreign keys off before it:
        # they can only be switched outside a transaction (a table rebuild must not cascade).
        _refuse_unsafe_state(manager)
        enforced = database.pragma("foreign_keys")
        database.pragma("foreign_keys", 0)
        try:
            with database.atomic():
                yield
        finally:
            if enforced:
                database.pragma("foreign_keys", 1)
        return
    name = f"cardlink_migrate:{manager.config.database_name}"[:64]
    if manager.config.is_postgresql:  # advisory locks are per database
        database.execute_sql("SELECT pg_advisory_lock(%s)", (_PG_LOCK_KEY,))
        release = "SELECT pg_advisory_unlock(%s)", (_PG_LOCK_KEY,)
    else:  # GET_LOCK names are server-wide: the database name is part of it
        got = database.execute_sql("SELECT GET_LOCK(%s, %s)", (name, _LOCK_WAIT)).fetchone()
        if not got or got[0] != 1:
            raise MigrationError(
                f"another process has been migrating this database for over {_LOCK_WAIT} s; "
                "let it finish (see `cardlink-db status`), then run `cardlink-db migrate`")
        release = "SELECT RELEASE_LOCK(%s)", (name,)
    try:
        _refuse_unsafe_state(manager)  # a half-applied migration, seen only with the lock
        yield
    finally:
        with contextlib.suppress(peewee.PeeweeException):  # a lost connection released it
            database.execute_sql(*release)


def downgrade(steps: int = 1, manager=None, directory=None) -> list[str]:
    """Revert the newest ``steps`` applied migrations; returns the revisions reverted."""
    manager = manager or get_manager()
    _refuse_unsafe_state(manager)
    applied = get_applied_revisions(manager, directory)
    if steps < 1 or not applied:
        return []
    target = applied[-min(steps, len(applied))]
    with _translated("downgrade"):
        return _runner(manager, directory).down(target)


@contextlib.contextmanager
def _translated(action: str):
    try:
        yield
    except _PlayhouseMigrationError as exc:
        raise MigrationError(str(exc)) from exc
    except MigrationError:
        raise
    except Exception as exc:
        raise MigrationError(f"{action} failed and was rolled back: {first_line(exc)}") from exc


def plan_sql(target: str | None = None, manager=None, directory=None) -> list[tuple[str, list]]:
    """The statements ``migrate --revision target`` would execute (going back when
    ``target`` is applied and newer ones are too), without changing the database."""
    manager = manager or get_manager()
    check_schema_version(manager, directory)
    _refuse_unsafe_state(manager)
    target = resolve_revision(target, directory)
    applied = get_applied_revisions(manager, directory)
    newer = applied[applied.index(target) + 1:] if target in applied else []
    with _translated("dry run"):
        return _planned(_runner(manager, directory), target, newer[0] if newer else None,
                        directory)


def _planned(runner, target, down_to, directory) -> list[tuple[str, list]]:
    """What ``runner`` would execute going up to ``target``, or down through ``down_to``."""
    database = runner.database
    captured: list[tuple[str, list]] = []
    if runner.migrator.transactional_ddl:
        # Run for real inside a transaction, watch, and roll everything back.
        def watch(event):
            if not _READS.match(event.sql) and not _TXN.match(event.sql):
                captured.append((event.sql, list(event.params or ())))

        database.query_hooks.append(watch)
        try:
            with database.atomic() as transaction:
                if down_to:
                    runner.down(down_to)
                else:
                    runner.up(target)
                transaction.rollback()
        finally:
            database.query_hooks.remove(watch)
        return captured
    # DDL commits on its own here: record the writes instead of sending them.
    if down_to:
        runner.down_plan(down_to)  # its data checks only read
    real = database.execute_sql

    def record(sql, params=None):
        if _READS.match(sql):
            return real(sql, params)
        captured.append((sql, list(params or ())))
        return real("SELECT 1 FROM DUAL WHERE 1 = 0")

    database.execute_sql = record
    try:
        plain = Runner(database, str(directory or MIGRATIONS_DIR), table_name=HISTORY_TABLE)
        if down_to:
            plain.down(down_to)
        else:
            plain.up(target)
    finally:
        del database.execute_sql
    return captured


def create_schema(manager) -> None:
    """Build the newest schema from the models and record every migration as applied."""
    database = manager.database
    runner = _runner(manager)
    if runner.applied():
        run_migrations(manager=manager)
        return
    _refuse_unsafe_state(manager)
    with bound_models(database), database.atomic():
        database.create_tables(ALL_MODELS, safe=True)
    runner.fake()


def drop_schema(manager) -> None:
    """Drop the store's tables, its migration history and any journal."""
    database = manager.database
    with bound_models(database):
        database.drop_tables(ALL_MODELS, safe=True)
    for table in (HISTORY_TABLE, JOURNAL_TABLE):
        quoted = database.get_sql_context().sql(peewee.Entity(table)).query()[0]
        database.execute_sql(f"DROP TABLE IF EXISTS {quoted}")

