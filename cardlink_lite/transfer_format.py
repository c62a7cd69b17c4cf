"""What export and import agree on: the document's version, table names and column
keys, and where the rows are read from."""

from __future__ import annotations

import contextlib
import enum

import peewee

from .errors import ValidationError
from .models import ALL_MODELS, CardProfile, CommLog, Device, OTASession, Setting, TestResult

__all__ = [
    "FORMAT_VERSION",
    "TABLES",
    "ExportFormat",
    "resolve_tables",
]

FORMAT_VERSION = 1

# Document keys are the table names; the guide's short names are accepted too.
_SHORT_NAMES = {
    "devices": Device, "cards": CardProfile, "sessions": OTASession,
    "logs": CommLog, "tests": TestResult, "settings": Setting,
}
TABLES = [m._meta.table_name for m in ALL_MODELS]  # parents before children
_BY_NAME = {**{m._meta.table_name: m for m in ALL_MODELS}, **_SHORT_NAMES}


class ExportFormat(str, enum.Enum):
    JSON = "json"
    YAML = "yaml"


def resolve_tables(tables=None) -> list[type[peewee.Model]]:
    """Models for table names or the guide's short names, in dependency order."""
    if tables is None:
        return list(ALL_MODELS)
    if isinstance(tables, str):
        tables = [t for t in tables.split(",")]
    wanted = set()
    for name in tables:
        key = str(name).strip().lower()
        if key not in _BY_NAME:
            raise ValidationError(
                f"unknown table {name!r}; use any of {', '.join(_SHORT_NAMES)} "
                f"or {', '.join(TABLES)}"
            )
        wanted.add(_BY_NAME[key])
    if not wanted:
        raise ValidationError(f"no table named; use any of {', '.join(_SHORT_NAMES)}")
    return [m for m in ALL_MODELS if m in wanted]


def _database_of(source) -> peewee.Database:
    if isinstance(source, peewee.Database):
        return source
    database = getattr(source, "database", None)
    if database is None:
        raise TypeError("expected a UnitOfWork, a DatabaseManager or a Peewee database")
    ensure = getattr(getattr(source, "manager", source), "ensure_connection", None)
    if ensure is not None:
        ensure()
    return database


def _columns(model, include_keys: bool = False) -> list[peewee.Field]:
    return [f for f in model._meta.sorted_fields
            if include_keys or f.name not in model.secret_fields]


def _key(f: peewee.Field) -> str:
    # Foreign keys appear under their column name (device_id, card_iccid, session_id);
    # the encrypted PSK only ever leaves decrypted, as psk_key (hex).
    if f is CardProfile.psk_key_encrypted:
        return "psk_key"
    return f.column_name if isinstance(f, peewee.ForeignKeyField) else f.name


def _export_format(value) -> ExportFormat:
    try:
        return ExportFormat(str(getattr(value, "value", value)).lower())
    except ValueError:
        raise ValidationError(f"unknown format {value!r}; use json or yaml") from None


@contextlib.contextmanager
def _snapshot(database):
    """A read transaction so every table comes from the same moment, without blocking
    writers (SQLite: deferred, so no write lock; PostgreSQL: repeatable read)."""
    if database.in_transaction():
        yield
        return
    if isinstance(database, peewee.SqliteDatabase):
        with database.atomic(lock_type="DEFERRED"):
            yield
        return
    with database.atomic():
        if isinstance(database, peewee.PostgresqlDatabase):
            database.execute_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield
