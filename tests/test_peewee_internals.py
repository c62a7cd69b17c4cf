"""Pins each Peewee behaviour cardlink_lite._peewee relies on (see pyproject's peewee pin)."""

import threading

import peewee
import pytest
from playhouse.pool import PooledSqliteDatabase

from cardlink_lite import _peewee
from cardlink_lite import db as cl_db
from cardlink_lite.models import Device


class Item(peewee.Model):
    name = peewee.CharField()
    parent = peewee.ForeignKeyField("self", null=True)

    class Meta:
        database = peewee.SqliteDatabase(":memory:")


@pytest.fixture
def items():
    db = Item._meta.database
    db.connect(reuse_if_open=True)
    db.create_tables([Item])
    yield Item
    db.drop_tables([Item])
    db.close()


def test_rows_are_built_with_the_row_flag(items, monkeypatch):
    items.create(name="a")
    seen = []
    original = items.__init__

    def spy(self, *args, **kwargs):
        seen.append(dict(kwargs))
        original(self, *args, **kwargs)

    monkeypatch.setattr(items, "__init__", spy)
    assert [i.name for i in items.select()] == ["a"]
    assert seen and seen[0].get(_peewee.ROW_FLAG)


def test_field_values_are_the_stored_values_without_a_query(items):
    parent = items.create(name="p")
    child = items.create(name="c", parent=parent)
    loaded = items.get_by_id(child.id)
    assert _peewee.field_values(loaded) == {"id": child.id, "name": "c", "parent": parent.id}
    assert "parent" not in loaded.__rel__  # no related row was fetched


def test_mark_clean_forgets_pending_changes(items):
    item = items(name="x")
    assert item.is_dirty()
    _peewee.mark_clean(item)
    assert not item.is_dirty() and item.dirty_fields == []
    item.name = "y"
    assert [f.name for f in item.dirty_fields] == ["name"]


def test_discard_connection_drops_a_dead_connection(items, tmp_path):
    db = peewee.SqliteDatabase(str(tmp_path / "x.db"))
    db.connect()
    conn = db.connection()
    _peewee.discard_connection(db)
    assert db.is_closed()
    db.connect()
    assert db.connection() is not conn
    db.close()


def test_the_pool_keeps_its_connections_in_in_use(tmp_path):
    db = PooledSqliteDatabase(str(tmp_path / "q.db"), max_connections=2)
    db.connect()
    assert db.conn_key(db.connection()) in db._in_use
    db.close()
    db.close_all()


def test_discard_connection_takes_a_pooled_connection_out_of_the_pool(tmp_path):
    db = PooledSqliteDatabase(str(tmp_path / "p.db"), max_connections=1, timeout=0.1)
    db.connect()
    conn = db.connection()
    _peewee.discard_connection(db)
    assert db.is_closed()
    db.connect()                      # the pool has room again: the old one is gone
    assert db.connection() is not conn
    db.close()
    db.close_all()


def test_model_builder_builds_what_peewee_builds(items):
    parent = items.create(name="p")
    items.create(name="c", parent=parent)
    query = items.select().order_by(items.id)
    expected = list(query)
    built = _peewee.model_builder(items, items._meta.sorted_fields)(
        items._meta.database.execute(query).fetchall())
    assert [vars(o) for o in built] == [dict(vars(o), is_stored=True) for o in expected]
    assert set(vars(expected[0])) == {"__data__", "_dirty", "__rel__"}  # all Peewee keeps
    assert built[1].parent.name == "p"            # the foreign key still loads lazily
    built[0].name = "edited"
    assert built[0].dirty_field_names == ["name"]


def test_driver_errors_turns_a_driver_error_into_peewees(items):
    import sqlite3

    with pytest.raises(peewee.IntegrityError) as caught, _peewee.driver_errors():
        raise sqlite3.IntegrityError("UNIQUE constraint failed: item.id")
    assert "UNIQUE constraint failed" in str(caught.value)
    with pytest.raises(KeyError), _peewee.driver_errors():
        raise KeyError("not a driver error: left alone")


class _Upper(peewee.CharField):
    def db_value(self, value):
        return None if value is None else str(value).upper()


class Tag(peewee.Model):
    code = _Upper()
    item = peewee.ForeignKeyField(Item, null=True)

    class Meta:
        database = Item._meta.database


def test_param_leaves_a_slot_with_the_converter_peewee_applies_there(items):
    db = items._meta.database

    def build(code, item, n):
        return Tag.select().where((Tag.code == code) & (Tag.item == item)).limit(n)

    sql, params = db.get_sql_context().sql(build(*map(_peewee.Param, range(3)))).query()
    item = items.create(name="x")
    args = ("ab", item, 2)
    expected = db.get_sql_context().sql(build(*args)).query()
    assert sql == expected[0]
    assert [type(p) for p in params] == [_peewee.Slot] * 3
    assert [p.index for p in params] == [0, 1, 2]
    assert params[2].converter is None  # LIMIT: no field, no conversion
    values = [p.converter(args[p.index]) if p.converter else args[p.index] for p in params]
    assert values == expected[1] == ["AB", item.id, 2]


def test_set_field_type_changes_the_ddl():
    db = peewee.SqliteDatabase(":memory:", field_types={"EXACT": "TEXT"})
    _peewee.set_field_type(db, "EXACT", "BLOB")
    assert db.get_context_options()["field_types"]["EXACT"] == "BLOB"


def test_watch_savepoints_reports_each_savepoint_and_how_it_ended(items):
    db = peewee.SqliteDatabase(":memory:")
    seen = []
    _peewee.watch_savepoints(db, lambda d: seen.append(("begun", d is db)),
                             lambda d, released, reopened: seen.append((released, reopened)))
    with db.atomic():
        assert db.transaction_depth() == 1
        with db.atomic() as savepoint:
            assert isinstance(savepoint, peewee._savepoint)
            assert db.transaction_depth() == 1   # Peewee keeps savepoints off its stack
            savepoint.rollback()
            savepoint.commit()
        with pytest.raises(RuntimeError), db.atomic():
            raise RuntimeError
    assert seen == [("begun", True), (False, True), (True, True), (True, False),
                    ("begun", True), (False, False)]


def test_the_proxy_target_is_read_and_set_through_obj(tmp_path):
    # cardlink_lite.db._Proxy makes ``obj`` a property (this thread's binding, else the
    # process-wide one): Peewee must assign it in initialize() and read it on every use.
    first, second = (peewee.SqliteDatabase(str(tmp_path / name)) for name in ("a.db", "b.db"))
    saved = cl_db.process_binding()
    try:
        cl_db.database_proxy.initialize(first)
        assert cl_db.process_binding() is first and Device._meta.database is cl_db.database_proxy
        with cl_db.bound_models(second):
            assert cl_db.database_proxy.database == second.database      # __getattr__
            with Device._meta.database.atomic():                         # _atomic(proxy)
                assert second.in_transaction() and not first.in_transaction()
        assert cl_db.database_proxy.obj is first
    finally:
        cl_db.database_proxy.initialize(saved)


def test_thread_state_holds_each_threads_own_transaction_stack(tmp_path):
    db = peewee.SqliteDatabase(str(tmp_path / "t.db"))
    state = _peewee.thread_state(db)
    assert state.transactions == []
    with db.atomic() as outer:
        with db.atomic():  # a savepoint: not on the stack
            stack = state.transactions
            assert stack == [outer]
        seen = []
        thread = threading.Thread(target=lambda: seen.append(state.transactions))
        thread.start()
        thread.join()
        assert seen == [[]] and seen[0] is not stack
    assert stack == [] and state.transactions is stack  # the same list, now empty
    db.close()



@pytest.mark.parametrize(("database", "asc", "desc"), [
    (peewee.SqliteDatabase(":memory:"), "ASC NULLS FIRST", "DESC NULLS LAST"),
    (peewee.PostgresqlDatabase(None), "ASC NULLS FIRST", "DESC NULLS LAST"),
    (peewee.MySQLDatabase(None), "ASC", "DESC"),  # no CASE stand-in: NULL is low already
], ids=["sqlite", "postgresql", "mysql"])
def test_nulls_low_writes_the_clause_only_where_the_sql_context_has_it(database, asc, desc):
    def order_sql(descending):
        query = Device.select(Device.id).order_by(
            _peewee.NullsLow(Device.last_seen, descending), Device.id)
        sql = database.get_sql_context().sql(query).query()[0]
        return sql.split(" ORDER BY ")[1].split(", ")[0].split(" ", 1)[1]

    assert (order_sql(False), order_sql(True)) == (asc, desc)


def test_connected_hook_sees_each_connection_a_pool_hands_out(tmp_path):
    seen = []

    class Hooked(_peewee.ConnectedHook, PooledSqliteDatabase):
        def connected(self, conn):
            seen.append(conn)

    db = Hooked(str(tmp_path / "hook.db"), max_connections=2)
    db.connect()
    first = db.connection()
    db.close()  # back to the pool
    db.connect()
    assert seen == [first, first] and db.connection() is first
    db.close()
