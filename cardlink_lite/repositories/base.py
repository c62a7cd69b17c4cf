"""The generic repository every entity repository extends: CRUD, counting, pagination."""

from __future__ import annotations

import contextlib
import inspect
import math
import weakref
from dataclasses import dataclass
from typing import Any

import peewee

from .._peewee import NullsLow, Param, Slot, field_values, mark_clean, model_builder
from ..batch_insert import insert_rows
from ..errors import KeyFormatError, NotFoundError, ValidationError, quote, translate_error
from ..events import EventType, get_emitter
from ..fields import utc_now

__all__ = ["BaseRepository", "Page", "Statement"]


class Statement:
    """A read whose SQL Peewee builds once per database (that costs more than a small read).
    Each parameter of ``build`` is one argument, converted by the compared field's ``db_value``;
    an argument must not change the SQL's shape (no None for ``==``, no lists)."""

    def __init__(self, build, model: type[peewee.Model] | None = None):
        self._build = build
        self._arity = len(inspect.signature(build).parameters)
        # Fetched rows -> ``model`` instances (the query must be ``model.select()``).
        self.to_models = None if model is None else \
            model_builder(model, model._meta.sorted_fields)
        self._sql: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._last = (None, None)  # (weak reference to the database, its compiled form)

    def _compiled(self, database) -> tuple:
        compiled = self._sql.get(database)
        if compiled is None:
            query = self._build(*(Param(i) for i in range(self._arity)))
            sql, params = database.get_sql_context().sql(query).query()
            # Where each argument goes: its index and the conversion Peewee would apply.
            slots = tuple((at, p.index, p.converter) for at, p in enumerate(params)
                          if type(p) is Slot)
            compiled = self._sql[database] = (sql, params, slots)
        self._last = (weakref.ref(database), compiled)
        return compiled

    def execute(self, database, args: tuple = ()):
        """Run it with ``args`` on ``database`` (a real one, not the proxy); the cursor."""
        last, compiled = self._last
        if last is None or last() is not database:  # usually one database: no lookup
            compiled = self._compiled(database)
        sql, params, slots = compiled
        values = list(params)
        for at, index, convert in slots:
            value = args[index]
            values[at] = value if convert is None else convert(value)
        return database.execute_sql(sql, values)


_STATEMENTS: dict = {}


def statement(key, build, model=None) -> Statement:
    """The :class:`Statement` kept under ``key`` (made from ``build`` the first time)."""
    found = _STATEMENTS.get(key)
    if found is None:
        found = _STATEMENTS[key] = Statement(build, model)
    return found


@dataclass
class Page:
    """One page of results and where it sits among all pages."""

    items: list
    total: int
    page: int
    per_page: int
    pages: int

    @property
    def total_items(self) -> int:
        return self.total

    @property
    def total_pages(self) -> int:
        return self.pages

    @property
    def has_next(self) -> bool:
        return self.page < self.pages

    @property
    def has_prev(self) -> bool:
        return self.page > 1

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


class BaseRepository:
    """CRUD over one model inside a unit of work; events are queued until it commits."""

    model: type[peewee.Model] = None
    entity_type = "row"
    # Fields copied into the data of this entity's events (never secrets).
    event_fields: tuple[str, ...] = ()
    # True: create_all() emits one <ENTITY>_CREATED event with the count, not one per row.
    bulk_event = False
    # True: objects this repository hands out are saved by the unit of work if changed.
    tracks_objects = True

    def __init__(self, uow=None):
        self._uow = uow

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"

    # -- plumbing ------------------------------------------------------------
    @property
    def database(self) -> peewee.Database:
        return self.model._meta.database if self._uow is None else self._uow.database

    def _touch(self, write: bool = False) -> None:
        # A unit of work used without ``with`` opens its transaction on first use; a
        # write tells it to take the write lock (SQLite) or refuse (readonly=True).
        if self._uow is not None:
            self._uow.begin_if_needed(write)

    def _event(self, suffix: str) -> EventType | None:
        return EventType.__members__.get(f"{self.entity_type.upper()}_{suffix}")

    def _emit(self, event_type, entity_id, data=None) -> None:
        if event_type is None:
            return
        if self._uow is not None:
            self._uow.queue_event(event_type, self.entity_type, entity_id, data)
        else:
            get_emitter().emit(event_type, self.entity_type, entity_id, data)

    def _event_data(self, obj) -> dict:
        return {name: plain_value(getattr(obj, name, None)) for name in self.event_fields}

    def _field(self, name: str) -> peewee.Field:
        if isinstance(name, peewee.Field):
            return name
        field = self.model.field_for(name)
        if field is None:
            known = sorted(set(self.model._meta.fields) | set(self.model.aliases))
            raise ValidationError(
                f"{self.model.__name__} has no field {name!r}; use one of: {', '.join(known)}",
                problems=[name],
            )
        return field

    @contextlib.contextmanager
    def _wrap(self, key=None):
        """Translate Peewee/driver errors into cardlink_lite errors naming the entity."""
        try:
            yield
        except peewee.PeeweeException as exc:
            raise translate_error(exc, self.entity_type, key) from exc

    @contextlib.contextmanager
    def _write(self, key=None):
        """A savepoint around one write: PostgreSQL aborts the whole transaction on an error."""
        self._touch(write=True)
        with self._wrap(key), self.database.atomic():
            yield

    def _where(self, query, criteria: dict):
        for name, value in criteria.items():
            field = self._field(name)
            if value is None:
                query = query.where(field.is_null())
            elif isinstance(value, list | tuple | set | frozenset):
                query = query.where(field.in_([_in_64_bits(name, v) for v in value]))
            else:
                query = query.where(field == _in_64_bits(name, value))
        return query

    def _order(self, order_by, descending: bool = False):
        if order_by is None:
            field = self.model._meta.primary_key
        else:
            name = order_by
            if isinstance(name, str) and name.startswith("-"):
                name, descending = name[1:], not descending
            field = self._field(name)
            if field.null:  # NULL below every value on every backend, as SQLite sorts it
                return NullsLow(field, descending)
        return field.desc() if descending else field.asc()

    def _reading(self) -> peewee.Database:
        """Before any read: open the unit of work's transaction if needed. Returns the
        database to read (the real one: statements' SQL differs per database)."""
        uow = self._uow
        if uow is None:
            database = self.model._meta.database
        else:
            uow.begin_if_needed(False)  # as _touch(), one call less per read
            database = uow.database
        if isinstance(database, peewee.DatabaseProxy):
            database = database.obj
        return database

    def _fetch(self, statement: Statement, *args) -> list:
        """Run a :class:`Statement`; its rows as the driver gives them."""
        database = self._reading()
        try:  # (not self._wrap(): a generator context manager costs more than a small read)
            return statement.execute(database, args).fetchall()
        except peewee.PeeweeException as exc:
            raise translate_error(exc, self.entity_type) from exc

    def _load(self, statement: Statement, *args) -> list:
        """Run a :class:`Statement` made with ``model=``; its rows as tracked models."""
        objs = statement.to_models(self._fetch(statement, *args))
        if objs:
            self._track(objs)
        return objs

    def _statement(self, name, build) -> Statement:
        """This repository's model's statement ``name`` (``build`` makes it the first time)."""
        return statement((self.model, name), build, self.model)

    def _select(self, *criteria_exprs):
        self._reading()
        query = self.model.select()
        return query.where(*criteria_exprs) if criteria_exprs else query

    def _update_where(self, key, expr, **values) -> int:
        """One UPDATE of the rows matching ``expr`` (bumping updated_at); returns the count."""
        if "updated_at" in self.model._meta.fields:
            values.setdefault("updated_at", utc_now())
        with self._write(key):
            return self.model.update(**values).where(expr).execute()

    def _list(self, query) -> list:
        with self._wrap():
            rows = list(query)
        if rows and isinstance(rows[0], self.model):
            self._track(rows)
        return rows

    def _track(self, objs) -> None:
        """Hand ``objs`` to the unit of work: their changes are saved when it commits."""
        if self.tracks_objects and self._uow is not None:
            self._uow.track(self, objs)

    def save_changes(self, obj) -> int:
        """Write ``obj``'s changed fields (and ``updated_at``); emits UPDATED when a row
        changed. Returns the number of rows written (0: nothing changed, or no row)."""
        changed = obj.dirty_fields
        if not changed:
            return 0
        key = obj.get_id()
        with self._write(key):
            rows = obj.save(only=changed)
        if rows:
            self._emit(self._event("UPDATED"), key, self._event_data(obj))
        return rows

    # -- reading -------------------------------------------------------------
    def get_by_id(self, id) -> Any | None:
        """The row with primary key ``id``, or None (an id that cannot be a key: None too)."""
        model = self.model
        try:
            found = self._load(self._statement("by_id", lambda key: model.select().where(
                model._meta.primary_key == key).limit(1)), _key(id))
        except KeyFormatError:
            return None
        return found[0] if found else None

    def get(self, id):
        """The row with primary key ``id``; NotFoundError if there is none."""
        obj = self.get_by_id(id)
        if obj is None:
            raise NotFoundError(
                f"{self.entity_type} {id!r} not found; check the id "
                f"(list them with get_all() or search())"
            )
        return obj

    def get_all(self, limit: int | None = None) -> list:
        """Every row (the first ``limit`` ones), in primary-key order."""
        model = self.model
        if limit is None:
            return self._load(self._statement("all", lambda: model.select().order_by(
                model._meta.primary_key)))
        limit = positive_int("limit", limit, allow_zero=True)
        return self._load(self._statement("all_limit", lambda n: model.select().order_by(
            model._meta.primary_key).limit(n)), limit)

    def find_by(self, **criteria) -> list:
        """Rows whose fields equal the given values (None matches NULL, a list means IN)."""
        return self._list(self._where(self._select(), criteria).order_by(self._order(None)))

    def find_one_by(self, **criteria):
        """The first row matching ``criteria``, or None."""
        query = self._where(self._select(), criteria).order_by(self._order(None))
        rows = self._list(query.limit(1))
        return rows[0] if rows else None

    def exists(self, id) -> bool:
        model = self.model
        try:
            return bool(self._fetch(statement((model, "exists"), lambda key: model.select(
                peewee.SQL("1")).where(model._meta.primary_key == key).limit(1)), _key(id)))
        except KeyFormatError:
            return False

    def count(self) -> int:
        model = self.model
        return self._fetch(statement((model, "count"), lambda: model.select(
            peewee.fn.COUNT(peewee.SQL("*")))))[0][0]

    def count_by(self, **criteria) -> int:
        query = self._where(self._select(), criteria)
        with self._wrap():
            return query.count()

    def paginate(self, page: int = 1, per_page: int = 20, order_by=None,
                 descending: bool = False) -> Page:
        """Page ``page`` (from 1) of ``per_page`` rows ordered by ``order_by`` (default: key)."""
        per_page = positive_int("per_page", per_page)
        page = positive_int("page", page, most=MAX_ROWS // per_page)  # the OFFSET fits too
        order = [self._order(order_by, descending)]
        if order_by is not None:
            order.append(self.model._meta.primary_key)  # ties: a stable order across pages
        model = self.model
        total = self.count()
        # One statement per order asked for; page size and offset are its parameters.
        field = order[0].node  # the field resolved from order_by (a name, alias or Field)
        shape = (field.model, field.name, order[0].direction, order_by is None)
        items = self._load(self._statement(("page", shape), lambda n, skip: model.select()
                                             .order_by(*order).limit(n).offset(skip)),
                             per_page, (page - 1) * per_page)
        return Page(items=items, total=total, page=page, per_page=per_page,
                    pages=math.ceil(total / per_page))

    # -- writing -------------------------------------------------------------
    def _coerce(self, obj=None, fields: dict | None = None):
        if obj is None:
            obj = dict(fields or {})
        elif fields:
            raise ValidationError(
                f"pass either a {self.model.__name__} or keyword fields to create(), not both"
            )
        if isinstance(obj, dict):
            obj = self.model(**obj)
        if not isinstance(obj, self.model):
            raise ValidationError(
                f"expected a {self.model.__name__}, got {type(obj).__name__}; "
                f"build one with {self.model.__name__}(...)"
            )
        return obj

    def create(self, obj=None, **fields):
        """Insert ``obj`` (a model instance, or keyword fields); returns it. An object already
        stored (loaded, or created earlier) is not inserted again: its changes are saved."""
        obj = self._coerce(obj, fields)
        if obj.is_stored and (self.save_changes(obj) or (
                not obj.is_dirty() and self.exists(obj.get_id()))):
            self._track((obj,))
            return obj
        with self._write(obj.get_id()):
            obj.save(force_insert=True)
        self._track((obj,))
        self._emit(self._event("CREATED"), obj.get_id(), self._event_data(obj))
        return obj

    def create_all(self, objs) -> list:
        """Insert many rows in one transaction (batch_insert); returns them. Auto-increment
        ids are not read back (use create() when you need them)."""
        objs = [self._coerce(o) for o in objs]
        if not objs:
            return objs
        meta = self.model._meta
        pk = meta.primary_key
        data = [field_values(o) for o in objs]
        fields = [f for f in meta.sorted_fields
                  if not (f is pk and isinstance(f, peewee.AutoField)
                          and all(d.get(f.name) is None for d in data))]
        rows = [tuple(d.get(f.name) for f in fields) for d in data]
        with self._write():
            insert_rows(self.database, self.model, fields, rows)
        for o in objs:
            mark_clean(o)
            o.is_stored = True
        self._track(objs)
        event = self._event("CREATED")
        if self.bulk_event:
            self._emit(event, None, {"count": len(objs)})
        else:
            for o in objs:
                self._emit(event, o.get_id(), self._event_data(o))
        return objs

    def update(self, obj):
        """Save the changes made to ``obj``; NotFoundError if its row is gone."""
        obj = self._coerce(obj)
        key = obj.get_id()
        with self._write(key):
            rows = obj.save()
        if not rows:
            raise NotFoundError(
                f"{self.entity_type} {key!r} not found; create() it before updating it"
            )
        self._track((obj,))
        self._emit(self._event("UPDATED"), key, self._event_data(obj))
        return obj

    def delete(self, obj) -> bool:
        """Delete ``obj``'s row; True if a row was deleted."""
        obj = self._coerce(obj)
        deleted = self.delete_by_id(obj.get_id())
        obj.is_stored = False
        return deleted

    def delete_by_id(self, id) -> bool:
        """Delete the row with primary key ``id``; False if there was none."""
        try:
            with self._write(id):
                rows = self.model.delete().where(
                    self.model._meta.primary_key == _key(id)).execute()
        except KeyFormatError:
            return False
        if rows:
            self._emit(self._event("DELETED"), id)
        return bool(rows)


def check_values(model, values: dict) -> None:
    """Run each field's own checks (``db_value``: length, NUL, JSON...) on ``values`` before a
    tracked object takes them: one its save refuses would fail the unit of work's commit."""
    for name, value in values.items():
        if value is not None:
            model.field_for(name).db_value(value)


# The largest LIMIT or OFFSET every backend takes (a signed 64-bit integer).
MAX_ROWS = 2**63 - 1


def _in_64_bits(name: str, value):
    """A search value every backend can compare: an int must fit a signed 64-bit integer
    (SQLite's driver raises OverflowError past it)."""
    if isinstance(value, int) and not -MAX_ROWS - 1 <= value <= MAX_ROWS:
        raise KeyFormatError(f"{name} must be a 64-bit integer (from {-MAX_ROWS - 1:,} to "
                             f"{MAX_ROWS:,}); got {quote(value)}", problems=[name])
    return value


def _key(value):
    """A primary key to look up: past 64 bits no row has it (KeyFormatError)."""
    return _in_64_bits("id", value)


def positive_int(name: str, value, allow_zero: bool = False, most: int = MAX_ROWS) -> int:
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= most:
        raise ValidationError(f"{name} must be an integer from {low} to {most:,}; "
                              f"got {quote(value)}", problems=[name])
    return value


def one_of(name: str, value, other_name: str, other):
    """The value given under either spelling (the guide's or the design's); both, and
    different, is a mistake."""
    if value is not None and other is not None and value != other:
        raise ValidationError(f"give {name} or {other_name}, not both with different values")
    return value if value is not None else other


def plain_value(value):
    # Event data stays JSON-friendly: enums as their value, datetimes as ISO text.
    if hasattr(value, "value") and isinstance(value, str):
        return value.value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value
