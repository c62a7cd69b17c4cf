"""The package's one bulk-insert path: multi-row INSERTs built once, sized to the backend,
COPY on PostgreSQL, refused rows bisected. Values come flattened in field order, as stored."""

from __future__ import annotations

import datetime
import decimal
import io
import sqlite3
import threading
import uuid
import weakref

import peewee

from ._peewee import driver_errors

__all__ = ["COPY_THRESHOLD", "InsertPlan", "insert", "insert_isolating", "insert_rows",
           "plan_for"]

# Rows per statement at most on SQLite and PostgreSQL (measured: bigger statements stop
# paying off). MariaDB takes fewer, bigger statements better (bench_apdu, 100k APDU
# rows: 1,000-row statements 1.17x the time of 6,000-row ones): there only the parameter
# bound and max_allowed_packet limit a statement.
MAX_ROWS_PER_STATEMENT = 1000
COPY_THRESHOLD = 2000          # PostgreSQL: COPY beats multi-row INSERT from here on
_SQLITE_VARIABLES = 999        # SQLite < 3.32's limit: the floor when it cannot be asked
_POSTGRES_PARAMETERS = 65535   # the protocol's Bind message counts parameters in 16 bits
_MYSQL_PARAMETERS = 65535      # MariaDB's own bound for one statement
_ROW_OVERHEAD = 16             # bytes per value besides its text: quotes, comma, escapes
# Types whose str() is their COPY text (a value of any other type: INSERT statements).
_COPY_PLAIN = frozenset({int, float, decimal.Decimal, uuid.UUID, datetime.datetime,
                         datetime.date, datetime.time})


class InsertPlan:
    """The INSERT statements of ``fields`` into ``model`` on one database, and their size."""

    def __init__(self, database: peewee.Database, model, fields):
        self.database = database
        self.model = model
        self.fields = tuple(fields)
        self.width = len(self.fields)
        self.converters = tuple(f.db_value for f in self.fields)
        self.is_postgres = isinstance(database, peewee.PostgresqlDatabase)
        self.is_mysql = isinstance(database, peewee.MySQLDatabase)
        self.secret = bool(getattr(model, "secret_fields", ()))
        self.byte_budget = 0  # MariaDB/MySQL: the most bytes one statement may take
        # Long text is counted value by value in a statement's size, the rest at its bound.
        self._long = tuple(i for i, f in enumerate(self.fields)
                           if isinstance(f, peewee.TextField | peewee.BlobField)
                           or (getattr(f, "max_length", None) or 0) > 64)
        self._fixed = sum(4 * (getattr(f, "max_length", None) or 12)
                          for i, f in enumerate(self.fields) if i not in self._long)
        self._fixed += _ROW_OVERHEAD * self.width
        cap = MAX_ROWS_PER_STATEMENT
        if isinstance(database, peewee.SqliteDatabase):
            conn = database.connection()
            variables = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) \
                if hasattr(conn, "getlimit") else _SQLITE_VARIABLES  # getlimit: Python >= 3.11
        elif self.is_mysql:
            packet = database.execute_sql("SELECT @@max_allowed_packet").fetchone()[0]
            # Escaping can double a value: keep a statement well inside one packet.
            self.byte_budget = int(packet) // 3
            variables = cap = _MYSQL_PARAMETERS
        else:
            variables = _POSTGRES_PARAMETERS
        self.rows_per_statement = max(1, min(cap, variables // max(1, self.width)))
        self._sql: dict[int, str] = {}
        self._row_sql: tuple | None = None
        self._copy_sql: str | None = None

    def sql(self, rows: int) -> str:
        """The INSERT of ``rows`` rows (built on first use)."""
        sql = self._sql.get(rows)
        if sql is None:
            if self._row_sql is None:
                one, two = self._build(1), self._build(2)
                # Peewee writes n rows as the one-row statement plus ", (?, ...)" n-1
                # times: repeat that instead of building n rows of nodes (a 1000-row
                # statement takes Peewee ~0.1 s). Anything else: Peewee builds each size.
                extra = two[len(one):]
                group = one[len(one) - len(extra) + 2:]
                self._row_sql = (one, extra) if two.startswith(one) and extra == ", " + group \
                    else (None, None)
            one, extra = self._row_sql
            sql = self._build(rows) if one is None else one + extra * (rows - 1)
            self._sql[rows] = sql
        return sql

    def _build(self, rows: int) -> str:
        query = self.model.insert_many([(None,) * self.width] * rows,
                                       fields=list(self.fields)).returning()
        sql, params = self.database.get_sql_context().sql(query).query()
        if len(params) != rows * self.width:
            # insert_many added a column (a default of a field left out): the cached
            # statement would bind values to the wrong columns.
            raise ValueError(f"the insert into {self.model.__name__} needs every field "
                             "with a default in its field list")
        return sql

    def copy_sql(self) -> str:
        """``COPY table (columns) FROM STDIN`` (PostgreSQL)."""
        if self._copy_sql is None:
            ctx = self.database.get_sql_context()
            columns = peewee.EnclosedNodeList([peewee.Entity(f.column_name)
                                               for f in self.fields])
            ctx.literal("COPY ").sql(peewee.Entity(self.model._meta.table_name))
            ctx.literal(" ").sql(columns).literal(" FROM STDIN")
            self._copy_sql = ctx.query()[0]
        return self._copy_sql

    def flatten(self, rows) -> list:
        """Row tuples (field order, as on the model) flattened, each value through ``db_value``."""
        converters = self.converters
        return [convert(value) for row in rows
                for convert, value in zip(converters, row, strict=True)]

    def size(self, flat: list, start: int, rows: int) -> int:
        """Bytes ``rows`` rows from ``flat[start:]`` may take in a statement (UTF-8: <= 4/char)."""
        total = self._fixed * rows
        end = start + rows * self.width
        for offset in self._long:
            for value in flat[start + offset:end:self.width]:
                if value:
                    total += len(value) if type(value) is str and value.isascii() \
                        else 4 * len(value)
        return total


_plans: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_plans_lock = threading.Lock()


def plan_for(database: peewee.Database, model, fields) -> InsertPlan:
    """The (cached) :class:`InsertPlan` of ``fields`` into ``model`` on ``database``."""
    if isinstance(database, peewee.DatabaseProxy):
        database = database.obj
    key = (model, tuple(f.name for f in fields))
    with _plans_lock:
        plans = _plans.setdefault(database, {})
        if key not in plans:
            plans[key] = InsertPlan(database, model, fields)
        return plans[key]


def insert(plan: InsertPlan, flat: list) -> None:
    """Write the rows of ``flat``; the caller owns the transaction."""
    width = plan.width
    rows = len(flat) // width
    database = plan.database
    if plan.is_postgres and rows >= COPY_THRESHOLD:
        text = _copy_text(flat, width)
        if text is not None:
            with driver_errors():
                cursor = database.cursor()
                if hasattr(cursor, "copy_expert"):
                    cursor.copy_expert(plan.copy_sql(), text)
                    return
    full = plan.rows_per_statement
    budget = plan.byte_budget
    execute = database.execute_sql
    # Inlined values show in the statement query hooks see (the slow-query log): never
    # for a model with secret fields.
    escape = database.connection().escape if plan.is_mysql and not plan.secret else None
    start = 0
    while rows:
        # Full statements, then powers of two: a handful of statements cover every size.
        count = full if rows >= full else 1 << (rows.bit_length() - 1)
        if budget:
            while count > 1 and plan.size(flat, start, count) > budget:
                count >>= 1
        end = start + count * width
        if escape is None:
            execute(plan.sql(count), flat[start:end])
        else:  # % doubled for pymysql's empty parameter tuple
            execute((plan.sql(count) % _literals(escape, flat[start:end])).replace("%", "%%"), ())
        start = end
        rows -= count


def _literals(escape, values: list) -> tuple:
    """MariaDB/MySQL (pymysql inlines values): what the driver's ``escape`` would send, each
    distinct text escaped once (a batch repeats its session, directions, status words...)."""
    text: dict[str, str] = {}
    out = []
    append = out.append
    for value in values:
        if value is None:
            append("NULL")
        elif type(value) is str:
            literal = text.get(value)
            if literal is None:
                literal = text[value] = escape(value)
            append(literal)
        else:
            append(escape(value))
    return tuple(out)


def insert_rows(database: peewee.Database, model, fields, rows) -> None:
    """Write row tuples (values as on the model, in ``fields`` order), converted as
    ``insert_many`` does."""
    plan = plan_for(database, model, fields)
    if any(isinstance(value, peewee.Node) and not isinstance(value, peewee.Model)
           for row in rows for value in row):
        # An SQL expression as a value: only Peewee can put it into the statement.
        for chunk in peewee.chunked(rows, plan.rows_per_statement):
            model.insert_many(chunk, fields=list(fields)).execute(plan.database)
        return
    insert(plan, plan.flatten(rows))


def insert_isolating(plan: InsertPlan, flat: list, refused) -> tuple[list, list]:
    """Write every row of ``flat`` the database takes, bisecting in savepoints; returns
    (values written, [(row values, error)]). ``refused(exc)``: False raises ``exc``."""
    database = plan.database
    width = plan.width
    written: list = []
    rejected: list = []

    def attempt(part: list) -> None:
        try:
            with database.atomic():
                insert(plan, part)
            written.extend(part)
            return
        except Exception as exc:
            if not refused(exc):
                raise
            if len(part) == width:
                rejected.append((tuple(part), exc))
                return
        half = len(part) // width // 2 * width
        attempt(part[:half])
        attempt(part[half:])

    with database.atomic():
        attempt(flat)
    return written, rejected


def _copy_text(flat: list, width: int) -> io.StringIO | None:
    """``flat`` in PostgreSQL COPY text format; None if a value has no plain text spelling."""
    out = []
    append = out.append
    for i in range(0, len(flat), width):
        fields = []
        for value in flat[i:i + width]:
            if value is None:
                fields.append("\\N")
            elif isinstance(value, str):  # str enums too
                if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
                    value = (value.replace("\\", "\\\\").replace("\t", "\\t")
                             .replace("\n", "\\n").replace("\r", "\\r"))
                fields.append(value)
            elif type(value) is bool:
                fields.append("t" if value else "f")
            elif type(value) in _COPY_PLAIN:
                fields.append(str(value))
            else:
                return None
        append("\t".join(fields))
    append("")
    return io.StringIO("\n".join(out))
