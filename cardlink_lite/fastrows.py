"""Model, tuple and dict rows built by one compiled function per result shape (fast reads)."""

from __future__ import annotations

import peewee

from .fields import EnumField, UTCDateTimeField, UUIDStrField, utc_from_text
from .models import BaseModel

__all__ = ["ROW_KINDS", "FastRows", "compile_builder"]

# Peewee turns each fetched row into a model (or dict, tuple) column by column: a Python
# call per converter, then setattr() per field through its descriptor. For a trace of
# thousands of APDUs that is most of the read time. The wrapper below produces the same
# values: per result shape it compiles one function holding the converters Peewee would
# use, skips a converter where Peewee's would give the driver's value back unchanged
# (an int for an IntegerField, a str for a CharField...), and fills ``__data__`` the way
# ``Model.__init__`` and the field descriptors do. Anything else falls back to Peewee.

# The Peewee row types FastRows builds, named as compile_builder() takes them.
ROW_KINDS = {peewee.ROW.MODEL: "model", peewee.ROW.TUPLE: "tuple", peewee.ROW.DICT: "dict"}
_FETCH = 500           # rows per fetchmany() when iterating
_BUILDERS: dict = {}   # (kind, model, keys, converters) -> compiled builder
_MAX_BUILDERS = 256


class FastRows(peewee.ModelDictCursorWrapper):
    """Peewee's cursor wrapper with rows built a batch at a time by a compiled function."""

    def __init__(self, cursor, model, select, kind: str):
        super().__init__(cursor, model, select)
        self.kind = kind
        # Model rows use identifier-safe keys (as ModelObjectCursorWrapper), dicts do not.
        self.valid_identifiers = kind == "model"

    def initialize(self):
        super().initialize()
        self._build = _builder(self.kind, self.model, self.unique_columns, self.converters)

    def process_row(self, row):
        return self._build((row,))[0]

    def _take(self, rows, done: bool) -> None:
        if rows:
            if not self.initialized:
                self.initialize()
                self.initialized = True
            built = self._build(rows)
            self.row_cache.extend(built)
            self.count += len(built)
        if done:
            self.populated = True
            self.cursor.close()

    def fill_cache(self, n=0):
        if n < 0:
            raise ValueError("Negative values are not supported.")
        if self.populated or (n and n <= self.count):
            return
        if not n:
            self._take(self.cursor.fetchall(), True)
        else:
            want = n - self.count
            rows = self.cursor.fetchmany(want)
            self._take(rows, len(rows) < want)

    def __iter__(self):
        if self.populated:
            return iter(self.row_cache)
        return self._iter_cached()

    def _iter_cached(self):
        index = 0
        while True:
            cache = self.row_cache
            while index < self.count:
                yield cache[index]
                index += 1
            if self.populated:
                return
            self.fill_cache(self.count + _FETCH)

    def iterator(self):
        cursor = self.cursor
        while True:
            rows = cursor.fetchmany(_FETCH)
            if rows:
                if not self.initialized:
                    self.initialize()
                    self.initialized = True
                built = self._build(rows)
                self.count += len(built)
                yield from built
            if len(rows) < _FETCH:
                self.populated = True
                cursor.close()
                return


def _native_type(converter):
    """The driver type a Peewee converter hands back unchanged (or None: always call it)."""
    field = getattr(converter, "__self__", None)
    func = getattr(converter, "__func__", None)
    if not isinstance(field, peewee.Field) or func is not type(field).python_value:
        return None
    if isinstance(field, peewee.ForeignKeyField):
        if func is not peewee.ForeignKeyField.python_value:
            return None
        return _native_type(field.rel_field.python_value)
    if isinstance(field, UUIDStrField):
        return str if func is UUIDStrField.python_value else None
    if func is not peewee.Field.python_value:
        return None
    adapt = type(field).adapt
    if adapt is peewee.IntegerField.adapt:
        return int
    if adapt is peewee.FloatField.adapt:
        return float
    if adapt is peewee._StringField.adapt:
        return str
    return None


def _expression(i: int, converter, names: dict) -> str:
    """Source for column ``i``'s value, given the row's values as v0, v1, ..."""
    v = f"v{i}"
    if converter is None:
        return v
    names[f"c{i}"] = converter
    field = getattr(converter, "__self__", None)
    func = getattr(converter, "__func__", None)
    if isinstance(field, UTCDateTimeField) and func is UTCDateTimeField.python_value:
        names["utc_from_text"] = utc_from_text
        return f"(utc_from_text({v}) if {v}.__class__ is str else c{i}({v}))"
    if isinstance(field, EnumField) and func is EnumField.python_value:
        # EnumField.python_value looks up str(value).lower(): the same for lower-case text.
        names[f"e{i}"] = dict(field._lookup)
        return (f"(e{i}[{v}] if {v}.__class__ is str and {v} in e{i} else c{i}({v}))")
    native = _native_type(converter)
    if native is not None:
        names[f"t{i}"] = native
        return f"({v} if {v} is None or {v}.__class__ is t{i} else c{i}({v}))"
    return f"c{i}({v})"


def compile_builder(kind: str, model, keys, converters):
    """A function turning a list of fetched rows into ``kind`` rows (model/tuple/dict)."""
    names: dict = {}
    values = [_expression(i, c, names) for i, c in enumerate(converters)]
    unpack = "".join(f"v{i}, " for i in range(len(converters)))
    for i, key in enumerate(keys):
        names[f"k{i}"] = key
    if kind == "tuple":
        item = "(" + "".join(f"{v}, " for v in values) + ")"
    else:
        item = "{" + ", ".join(f"k{i}: {v}" for i, v in enumerate(values)) + "}"
    if kind != "model":
        source = f"def build(rows):\n    return [{item} for ({unpack}) in rows]\n"
    elif _plain_model(model, keys):
        names["new"] = model.__new__
        names["M"] = model
        source = (
            "def build(rows):\n"
            "    out = []\n"
            "    append = out.append\n"
            f"    for ({unpack}) in rows:\n"
            "        obj = new(M)\n"
            f"        obj.__data__ = {item}\n"
            "        obj._dirty = set()\n"
            "        obj.__rel__ = {}\n"
            "        append(obj)\n"
            "    return out\n")
    else:
        names["M"] = model
        source = (
            "def build(rows):\n"
            "    out = []\n"
            f"    for ({unpack}) in rows:\n"
            f"        obj = M(__no_default__=1, **{item})\n"
            "        obj._dirty.clear()\n"
            "        out.append(obj)\n"
            "    return out\n")
    exec(compile(source, f"<cardlink_lite rows {kind}>", "exec"), names)  # noqa: S102
    return names["build"]


def _builder(kind: str, model, keys, converters):
    """The compiled builder for this shape, cached."""
    key = (kind, model, tuple(keys), tuple(converters))
    try:
        build = _BUILDERS.get(key)
    except TypeError:  # an unhashable converter: compile, do not cache
        return compile_builder(kind, model, keys, converters)
    if build is None:
        if len(_BUILDERS) >= _MAX_BUILDERS:
            _BUILDERS.clear()
        build = _BUILDERS[key] = compile_builder(kind, model, keys, converters)
    return build


def _plain_model(model, keys) -> bool:
    """True when building ``model`` from ``keys`` needs only what ``Model.__init__`` and
    the fields' descriptors do: fill ``__data__`` (no custom constructor, every key a
    plain field or a foreign key holding a raw id)."""
    if model.__init__ not in (BaseModel.__init__, peewee.Model.__init__):
        return False
    fields = model._meta.fields
    for key in keys:
        if key not in fields:
            return False
        accessor = None
        for klass in model.__mro__:
            if key in klass.__dict__:
                accessor = klass.__dict__[key]
                break
        if type(accessor) not in (peewee.FieldAccessor, peewee.ForeignKeyAccessor):
            return False
    return _INSTANCE_STATE == {"__data__", "_dirty", "__rel__"}


# What Peewee puts on a model instance it builds from a row; if a later Peewee adds
# anything, model rows go back to its own constructor.
_INSTANCE_STATE = set(vars(peewee.Model(__no_default__=1)))
