"""The exception hierarchy, and translation of Peewee/driver errors into it."""

from __future__ import annotations

import re

import peewee
from playhouse.pool import MaxConnectionsExceeded

__all__ = ["ConfigurationError", "ConnectionError", "DatabaseError", "EncryptionError",
           "IntegrityError", "KeyFormatError", "MigrationError", "NotFoundError",
           "PoolExhaustedError",
           "RejectedRowsError",
           "SchemaVersionMismatch", "ValidationError", "first_line", "is_transient", "quote",
           "translate_error", "with_hint"]


class DatabaseError(Exception):
    """Root of every error cardlink_lite raises."""


class ConfigurationError(DatabaseError, ValueError):
    """The database configuration cannot be used."""


class ConnectionError(DatabaseError):  # noqa: A001 - the guide's name
    """The database server could not be reached or refused us."""


class PoolExhaustedError(ConnectionError):
    """Every connection of the pool is in use. (Peewee's error wrapper, which renames driver
    errors by class name, lets this name through: the caller gets it as it is.)"""


class MigrationError(DatabaseError):
    """A schema migration could not be planned or applied."""


class SchemaVersionMismatch(MigrationError):
    """The database was migrated by a newer cardlink_lite than this one."""


class IntegrityError(DatabaseError):
    """A constraint was violated (duplicate key, missing parent row...)."""


class NotFoundError(DatabaseError, LookupError):
    """The requested row does not exist."""


class ValidationError(DatabaseError, ValueError):
    """A value was rejected before it reached the database."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = list(problems or [])


class KeyFormatError(ValidationError):
    """A value no key of its table can be (an id that is not a UUID): no row has it."""


class RejectedRowsError(DatabaseError):
    """The database refused some rows of a batch; the others were written. ``rejected``:
    ``(row dict, reason)`` pairs; ``written``: how many rows of the batch were stored."""

    def __init__(self, message: str, rejected: list | None = None, written: int = 0):
        super().__init__(message)
        self.rejected = list(rejected or [])
        self.written = written


class EncryptionError(DatabaseError):
    """A PSK could not be encrypted or decrypted."""


def quote(value, limit: int = 40) -> str:
    """``value`` for an error message: a short prefix of its repr, so an error never
    echoes a huge value (nor walks a deeply nested one)."""
    if isinstance(value, str | bytes | bytearray):
        if len(value) > limit:
            return repr(value[:limit]) + f"... ({len(value):,} long)"
        return repr(value)
    if isinstance(value, int) and value.bit_length() > 128:  # repr() would be slow, or refuse
        return f"a {value.bit_length():,}-bit integer"
    if isinstance(value, dict | list | tuple | set):
        return f"a {type(value).__name__} of {len(value):,} items"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


_DUPLICATE = re.compile(r"duplicate|unique", re.I)
_FK = re.compile(r"foreign key", re.I)
_LOST = re.compile(r"connect|server|closed|gone away|terminat|broken pipe|^\(0, ''\)$",
                   re.I)
_BUSY = re.compile(r"database is locked|database is busy|deadlock|lock wait timeout|"
                   r"could not serialize", re.I)


# Driver messages a user can act on, and what to do about each.
_HINTS = (
    (re.compile(r"database is locked|database is busy", re.I),
     "another process holds the write lock; retry, or raise ?timeout= (seconds to wait, e.g. "
     "sqlite:///bench.db?timeout=120)"),
    (re.compile(r"no such table|table '[^']*' doesn't exist|relation \"[^\"]*\" does not exist",
                re.I),
     "the database lacks cardlink tables; create them with: cardlink-db init (or migrate), "
     "or recreate missing ones with: cardlink-db check --repair"),
    (re.compile(r"readonly database", re.I),
     "the file or its directory is read-only (a WAL store writes its -shm file even to "
     "read); read it with ?immutable=1 (sqlite:///bench.db?immutable=1) while nothing "
     "writes to it, or copy it somewhere writable"),
)


def with_hint(text: str) -> str:
    """``text`` followed by what to do, when it is a driver message a user can act on."""
    for pattern, hint in _HINTS:
        if pattern.search(text) and hint not in text:
            return f"{text}; {hint}"
    return text


def _original(exc: BaseException) -> BaseException:
    """The failure that started it all: a rollback that fails while an error is being
    handled (MySQL's savepoint rollback on a dead connection says only ``(0, '')``)
    hides the real cause in ``__context__``; a lost connection there wins."""
    current, seen = exc, []
    while current is not None and current not in seen and len(seen) < 8:
        if (isinstance(current, peewee.InterfaceError | peewee.OperationalError)
                and _LOST.search(first_line(current))):
            return current
        seen.append(current)
        current = current.__context__ or current.__cause__
    return exc


def is_transient(exc: BaseException) -> bool:
    """True for failures not tied to the rows being written: a lost connection, a lock."""
    exc = _original(exc)
    if isinstance(exc, ConnectionError):
        return True
    return (isinstance(exc, peewee.InterfaceError | peewee.OperationalError)
            and bool(_LOST.search(first_line(exc)) or _BUSY.search(first_line(exc))))


def translate_error(exc: Exception, entity: str = "row", key: object = None) -> DatabaseError:
    """Return the cardlink_lite error for a Peewee/driver error (caller raises it ``from exc``)."""
    if isinstance(exc, DatabaseError):
        return exc
    exc = _original(exc)
    what = f"{entity} {key!r}" if key is not None else entity
    text = first_line(exc)
    if isinstance(exc, MaxConnectionsExceeded):
        return PoolExhaustedError(
            f"no free database connection for {what}: every connection of the pool is in "
            "use and none came back in time; raise DatabaseConfig's pool_size or "
            "max_overflow, or close the connections of threads that are done "
            "(manager.database.close())")
    if isinstance(exc, peewee.IntegrityError):
        if _DUPLICATE.search(text):
            return IntegrityError(f"duplicate {what}: a {entity} with that key already exists")
        if _FK.search(text):
            return IntegrityError(
                f"{what} refers to a row that does not exist (foreign key): {_clean(text)}"
            )
        if "null" in text.lower():
            return IntegrityError(f"{what} is missing a required value: {_clean(text)}")
        return IntegrityError(f"{what} violates a constraint: {_clean(text)}")
    if isinstance(exc, peewee.InterfaceError | peewee.OperationalError) and _LOST.search(text):
        if text == "(0, '')":  # PyMySQL on a connection an earlier failure closed
            text = "the connection was closed by an earlier failure (the server dropped it)"
        return ConnectionError(f"lost the database connection while using {what}: {_clean(text)}")
    return DatabaseError(with_hint(f"database error on {what}: {_clean(text)}"))


def _clean(text: str) -> str:
    # Driver messages sometimes echo the statement's values (MySQL quotes the
    # duplicate key); keep the first line only and never anything after DETAIL.
    return text.split("DETAIL:")[0].strip()
