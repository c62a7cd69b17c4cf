"""Shared pieces of the CLI: the ``cli`` group, its state object and common helpers."""

from __future__ import annotations

import contextlib
import enum
import importlib
import json
import logging
import os
import re
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import click

from .. import __version__
from ..table_names import display_name

# Start-up stays light: ``--version``, ``--help`` and the command modules import click
# only; the library (Peewee, drivers, cryptography) is imported when a command runs.

__all__ = ["MAX_BIGINT", "CliState", "LazyChoice", "StoredText", "UtcDateTime", "cli", "confirm",
           "display_tables", "echo", "echo_json", "json_option", "pass_state", "progress_bar",
           "terminal_safe", "warn", "write_atomically", "yes_option"]


class CliState:
    """What the global options chose; opens the manager on first use."""

    def __init__(self, database_url: str | None, verbose: bool):
        self.database_url = database_url
        self.verbose = verbose
        self._manager = None

    def manager(self, check_schema: bool = True, create: bool = False, readonly: bool = False):
        """The open manager; with ``check_schema`` the store must exist and not be newer. Only
        ``create`` may create a missing SQLite file; ``readonly`` opens it read-only."""
        if self._manager is None:
            from ..config import DatabaseConfig
            from ..manager import DatabaseManager
            from ..migrations import get_current_revision

            config = DatabaseConfig(self.database_url, echo=self.verbose)
            path = config.sqlite_path
            if path is not None and not create and not path.exists():
                raise click.ClickException(
                    f"no database at {str(path)!r}; create it with: cardlink-db "
                    f"--database {config.safe_url} init")
            self._manager = DatabaseManager(config)
            self._manager.initialize(check_schema=check_schema, readonly=readonly)
            if check_schema and get_current_revision(manager=self._manager) is None:
                raise click.ClickException(f"{config.safe_url} has no cardlink schema yet; "
                                           "create it with: cardlink-db init")
        return self._manager

    def close(self) -> None:
        if self._manager is not None:
            self._manager.close()


# A quoted value this long in an error is a pasted or hostile one: shown as a short prefix.
_LONG_QUOTED = re.compile(r"'([^'\n]{101,})'|\"([^\"\n]{101,})\"")


# What a terminal acts on: C0 but newline and tab, DEL, C1, bidi overrides and isolates (and
# lone surrogates, which no terminal encoding can write).
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e"
                       "\u2066-\u2069\ud800-\udfff]")


def terminal_safe(text: str) -> str:
    """``text`` with every control a terminal acts on shown as ``\\x1b``/``\\u202e``: stored
    names come from imported files, and an OSC sequence in one must not set the title or
    the clipboard of the operator's terminal."""
    return _CONTROLS.sub(lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100
                         else f"\\u{ord(m[0]):04x}", text)


def echo(message: str = "", err: bool = False, nl: bool = True) -> None:
    """``click.echo`` for text that may hold stored values: controls shown escaped."""
    click.echo(terminal_safe(message), err=err, nl=nl)


def _shortened(message: str) -> str:
    """``message`` with every long quoted value cut to its first 40 characters (click's own
    errors and the library's quote values whole: ``No such command '<5,000 characters>'``),
    and its controls escaped."""
    return terminal_safe(_LONG_QUOTED.sub(lambda m: f"{(m[1] or m[2])[:40]!r}... "
                                      f"({len(m[1] or m[2]):,} long)", message))


class _Group(click.Group):
    """Turns library errors into one-line ``Error:`` messages (tracebacks only with -v)."""

    def make_context(self, *args, **kwargs):
        try:
            return super().make_context(*args, **kwargs)
        except click.ClickException as exc:  # a bad global option
            exc.message = _shortened(exc.message)
            raise

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            exc.message = _shortened(exc.message)
            raise
        except (BrokenPipeError, click.exceptions.Exit, click.exceptions.Abort):
            raise  # BrokenPipeError: the reader went away (``| head``), main() leaves quietly
        except Exception as exc:
            if getattr(ctx.obj, "verbose", False):
                raise
            from ..errors import first_line, with_hint

            message = with_hint(first_line(exc))
            if isinstance(exc, OSError) and exc.filename:
                message = (f"cannot use {str(exc.filename)!r}: {exc.strerror or exc}; check "
                           "that the directory exists and is writable")
            # A library or Peewee error, told apart without importing either up front.
            ours = any(cls.__module__.split(".")[0] in ("cardlink_lite", "peewee")
                       for cls in type(exc).__mro__)
            if ours or isinstance(exc, OSError):
                raise click.ClickException(_shortened(message)) from None
            # A bug: still one line; the traceback with -v.
            raise click.ClickException(f"unexpected {type(exc).__name__}: {message}; rerun "
                                       "with -v for the traceback and report it") from None
        finally:
            if isinstance(ctx.obj, CliState):
                ctx.obj.close()


# Peewee (and playhouse.migrate, through postgres_ext) import every database driver
# installed, each under ``try: ... except ImportError``; a CLI process serves one URL, so it
# keeps the other backends' drivers out (their import alone costs ~50 ms).
_DRIVERS = {"mysql": ("pymysql", "MySQLdb"),
            "postgresql": ("psycopg2", "psycopg", "psycopg2cffi")}
_SCHEME_PREFIXES = {"mysql": ("mysql", "mariadb"), "postgresql": ("postgres",)}


def _backend_of(url: str | None) -> str | None:
    scheme = (url or os.environ.get("CARDLINK_DB_DRIVER") or "sqlite").split(":", 1)[0].lower()
    if scheme == "sqlite":
        return "sqlite"
    for backend, prefixes in _SCHEME_PREFIXES.items():
        if scheme.startswith(prefixes):
            return backend
    return None  # the config refuses it with the accepted schemes


def _keep_other_drivers_out(url: str | None) -> None:
    """Before Peewee is first imported: ``import`` of another backend's driver fails."""
    backend = _backend_of(url)
    if "peewee" in sys.modules or backend is None:
        return  # too late to matter (e.g. a test process), or a URL the config refuses
    for other, names in _DRIVERS.items():
        if other != backend:
            for name in names:
                sys.modules.setdefault(name, None)  # None: ``import name`` raises ImportError


pass_state = click.make_pass_decorator(CliState)


class LazyChoice(click.Choice):
    """A Choice of ``fixed`` values plus a library constant (``"module.NAME"``), loaded when
    the option is used or its help shown, not when the CLI starts."""

    def __init__(self, *fixed: str, source: str):
        self._fixed, self._source, self._loaded = fixed, source, None
        super().__init__(fixed)

    @property
    def choices(self):
        if self._loaded is None:
            module, name = self._source.rsplit(".", 1)
            values = getattr(importlib.import_module(f"cardlink_lite.{module}"), name)
            self._loaded = (*self._fixed, *values)
        return self._loaded

    @choices.setter
    def choices(self, value):  # click.Choice.__init__ assigns the fixed values
        pass


class UtcDateTime(click.DateTime):
    """A UTC date or time (2024-11-29, 2024-11-29T08:00), given back timezone-aware."""

    def __init__(self):
        super().__init__(["%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M",
                          "%Y-%m-%d %H:%M:%S"])

    def convert(self, value, param, ctx):
        try:
            return super().convert(value, param, ctx).replace(tzinfo=timezone.utc)
        except click.BadParameter:
            from ..errors import quote

            self.fail(f"{quote(value)} is not a date or time; use 2024-11-29 or "
                      "2024-11-29T08:00 (UTC)", param, ctx)


class StoredText(click.ParamType):
    """Text for the column ``"Model.field"``: a value it cannot hold is bad input naming the
    option (exit 2), not a failed query naming the column."""

    name = "text"

    def __init__(self, column: str):
        self._column = column

    def convert(self, value, param, ctx):
        from .. import models
        from ..errors import ValidationError

        model, name = self._column.split(".")
        field = getattr(models, model)._meta.fields[name]
        try:
            field.db_value(value)  # the column's own checks: length, NUL, lone surrogates
        except ValidationError as exc:
            self.fail(str(exc).removeprefix(f"{field.name} "), param, ctx)
        return value


MAX_BIGINT = 2**63 - 1  # the upper bound of every count option: a BIGINT on every backend

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
yes_option = click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")


def confirm(question: str, change: str) -> None:
    """Ask ``question`` on a terminal (no: ``Aborted!``); without one, refuse in one line
    naming the ``change`` and --yes."""
    if not sys.stdin.isatty():
        raise click.ClickException(f"{change} and there is no terminal to confirm it; rerun "
                                   "with --yes (or --dry-run to look first)")
    click.confirm(question, abort=True, err=True)


def display_tables(per_table: dict) -> dict:
    """``per_table`` keyed by the guide's table names instead of the SQL ones."""
    return {display_name(name): value for name, value in per_table.items()}


def _json_value(value):
    if isinstance(value, datetime):
        from ..fields import iso_utc  # the one time format of all output

        return iso_utc(value, millis=True)
    return value.value if isinstance(value, enum.Enum) else str(value)


def echo_json(payload) -> None:
    click.echo(json.dumps(payload, indent=2, default=_json_value))


def warn(message: str) -> None:
    echo(message, err=True)


def progress_bar(length: int, label: str):
    """A progress bar on stderr when it is a terminal; otherwise nothing at all."""
    if not sys.stderr.isatty() or length <= 0:
        return contextlib.nullcontext(None)
    return click.progressbar(length=length, label=terminal_safe(label), file=sys.stderr)


def write_atomically(path, write, param_hint: str = "--output", mode: int = 0o600,
                     check_existing=None):
    """Write through a temp file (0600 until done) in the same directory, renamed into place
    with ``mode``; ``-`` is stdout. A symlink is written through to the file it names. Refused
    before ``write`` runs: an empty path, a missing directory, the SQLite store the command
    reads (or its -wal/-shm/-journal), and an existing file ``check_existing`` says no to."""
    if str(path) == "-":
        return write(sys.stdout)
    if not str(path):
        raise click.BadParameter("an empty path names no file; give a file name, or - for "
                                 "stdout", param_hint=param_hint)
    target = Path(os.path.realpath(path))
    if target in _store_files():
        raise click.BadParameter(f"{str(path)!r} is the database this command reads (or one "
                                 "of its files); choose another path", param_hint=param_hint)
    directory = target.parent
    if not directory.is_dir():
        shown = Path(path).parent if str(Path(path).parent) else Path(".")
        raise click.BadParameter(
            f"directory {str(shown)!r} does not exist; create it or choose another path",
            param_hint=param_hint)
    if check_existing is not None and target.is_file():
        refusal = check_existing(target)
        if refusal:
            raise click.BadParameter(f"{str(path)!r} {refusal}", param_hint=param_hint)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:  # name the user's path, never our temp file
        raise click.ClickException(
            f"cannot write {str(path)!r}: {exc.strerror}; check that the directory "
            "is writable or choose another path") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            result = write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return result


def _store_files() -> set[Path]:
    """The real paths of the SQLite store this command opens and its side files (none for a
    server, or when no command state is found)."""
    ctx = click.get_current_context(silent=True)
    state = ctx.find_object(CliState) if ctx else None
    if state is None:
        return set()
    from ..config import DatabaseConfig

    try:
        store = DatabaseConfig(state.database_url).sqlite_path
    except Exception:  # a bad URL: the command's own opening of it says what is wrong
        return set()
    if store is None:
        return set()
    store = os.path.realpath(store)
    return {Path(store + suffix) for suffix in ("", "-wal", "-shm", "-journal")}


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--database", "-d", "database_url", envvar="DATABASE_URL", metavar="URL",
              help="Database URL (default: $DATABASE_URL, else sqlite:///data/cardlink.db).")
@click.option("--verbose", "-v", is_flag=True, help="Log SQL (secrets redacted); show tracebacks.")
@click.version_option(__version__, prog_name="cardlink-db")
@click.pass_context
def cli(ctx, database_url, verbose):
    """Manage a cardlink_lite OTA test-bench database.

    Example:

    \b
        cardlink-db --database sqlite:///bench.db init
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    _keep_other_drivers_out(database_url)
    ctx.obj = CliState(database_url, verbose)
