"""The one bulk-insert path: statements built once, sized to the backend, COPY on
PostgreSQL, refused rows isolated."""

import sqlite3
from datetime import datetime, timedelta, timezone

import peewee
import pytest

from cardlink_lite import CardProfile, CommDirection, CommLog, OTASession, UnitOfWork
from cardlink_lite.apdu import LOG_FIELDS, ApduLogWriter
from cardlink_lite.batch_insert import (
    COPY_THRESHOLD,
    InsertPlan,
    insert,
    insert_isolating,
    insert_rows,
    plan_for,
)
from cardlink_lite.crypto import encrypt_psk, generate_key
from tests.repository_helpers import count_queries

_FIELDS = [CommLog.session, CommLog.timestamp, CommLog.direction, CommLog.raw_data,
           CommLog.decoded_data]


@pytest.fixture
def session(manager):
    return OTASession.create(session_type="test")


def _rows(session_id, n, decoded=None):
    return [(session_id, "2024-11-29 10:00:00", "command", f"{i:08X}", decoded)
            for i in range(n)]


def _raws(session_id):
    return [r.raw_data for r in CommLog.select().where(CommLog.session == session_id)
            .order_by(CommLog.id)]


def _inserts(statements):
    return [s for s in statements if s.lstrip().upper().startswith("INSERT")]


def test_statement_is_built_once_per_size_and_chunks_are_powers_of_two(manager, session):
    plan = plan_for(manager.database, CommLog, LOG_FIELDS)
    assert plan is plan_for(manager.database, CommLog, list(LOG_FIELDS))  # cached
    writer = ApduLogWriter(manager, session_id=session.id, batch_size=10_000,
                           flush_interval=None)
    for i in range(plan.rows_per_statement + 37):
        writer.command(f"{i:08X}")
    with count_queries(manager) as statements:
        writer.flush()
    # Full statements, then 37 = 32 + 4 + 1 from cached power-of-two statements (COPY
    # on PostgreSQL for this many rows).
    if manager.backend != "postgresql":
        sizes = [s.count("(") - 1 for s in _inserts(statements)]
        assert sizes == [plan.rows_per_statement, 32, 4, 1]
    first = plan.sql(32)
    writer.add_many([(session.id, "command", "00")] * 32)
    writer.flush()
    assert plan.sql(32) is first  # reused, not rebuilt
    assert len(_raws(session.id)) == plan.rows_per_statement + 37 + 32


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_sqlite_rows_per_statement_follow_the_connections_limit(manager):
    conn = manager.database.connection()
    limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    wide = [CommLog.raw_data] * 40
    assert InsertPlan(manager.database, CommLog, wide).rows_per_statement == min(
        1000, limit // 40)
    conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 100)
    try:
        assert InsertPlan(manager.database, CommLog, wide).rows_per_statement == 2
    finally:
        conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, limit)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_sqlite_without_getlimit_assumes_the_old_default(manager, monkeypatch):
    class Old:  # sqlite3 before Python 3.11 cannot tell its limit
        pass

    monkeypatch.setattr(manager.database, "connection", lambda: Old())
    assert InsertPlan(manager.database, CommLog, [CommLog.raw_data] * 10).rows_per_statement \
        == 99


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_postgresql_binds_at_most_65535_parameters(manager):
    assert InsertPlan(manager.database, CommLog, [CommLog.raw_data] * 100).rows_per_statement \
        == 655


@pytest.mark.parametrize("backend", ["mysql"], indirect=True)
def test_mariadb_statements_stay_inside_max_allowed_packet(manager, session):
    packet = manager.database.execute_sql("SELECT @@max_allowed_packet").fetchone()[0]
    plan = InsertPlan(manager.database, CommLog, _FIELDS)
    assert plan.byte_budget == packet // 3
    plan.byte_budget = 100_000  # as if the server took 300 kB packets
    big = "x" * 30_000
    with manager.database.atomic(), count_queries(manager) as statements:
        insert(plan, plan.flatten(_rows(session.id, 20, decoded=big)))
    assert len(_raws(session.id)) == 20
    # Three rows of 30 kB fit in 100 kB, but statements hold a power of two: two at most.
    assert all(s.count("(") - 1 <= 2 for s in _inserts(statements))


def test_statement_size_counts_long_text_and_bounds_short_values(manager, session):
    plan = InsertPlan(manager.database, CommLog, _FIELDS)
    small = plan.size(plan.flatten(_rows(session.id, 2)), 0, 2)
    large = plan.size(plan.flatten(_rows(session.id, 2, decoded="é" * 1000)), 0, 2)
    assert large - small == 2 * 4 * 1000  # non-ASCII: up to 4 bytes a character


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_postgresql_copies_big_batches_with_awkward_text_intact(manager, session):
    plan = plan_for(manager.database, CommLog, _FIELDS)
    awkward = "tab\there\nnew line\\back slash\r\\N"
    rows = _rows(session.id, COPY_THRESHOLD, decoded=awkward)
    with manager.database.atomic(), count_queries(manager) as statements:
        insert(plan, plan.flatten(rows))
    assert _inserts(statements) == []  # COPY, not INSERT
    decoded = {r.decoded_data for r in CommLog.select()}
    assert decoded == {awkward}
    assert len(_raws(session.id)) == COPY_THRESHOLD


def test_no_returning_clause(manager):
    assert "RETURNING" not in plan_for(manager.database, CommLog, LOG_FIELDS).sql(2).upper()


def test_a_field_with_a_default_left_out_is_refused(manager):
    plan = InsertPlan(manager.database, CommLog, [CommLog.session, CommLog.direction,
                                                  CommLog.raw_data])  # no timestamp
    with pytest.raises(ValueError, match="default"):
        plan.sql(1)


def test_rows_are_converted_by_the_fields(manager, session):
    insert_rows(manager.database, CommLog, [CommLog.session, CommLog.timestamp,
                                            CommLog.direction, CommLog.raw_data],
                [(session, datetime(2024, 11, 29, 10, tzinfo=timezone(timedelta(hours=2))),
                  CommDirection.RESPONSE, "9000")])
    (row,) = CommLog.select()
    assert row.session_id == session.id and row.direction.value == "response"
    assert row.timestamp.isoformat() == "2024-11-29T08:00:00+00:00"


def test_an_sql_expression_as_a_value_goes_through_peewee(manager, session):
    insert_rows(manager.database, CommLog, [CommLog.session, CommLog.timestamp,
                                            CommLog.direction, CommLog.raw_data],
                [(session.id, "2024-11-29 10:00:00", "command", peewee.fn.UPPER("00a4"))])
    assert _raws(session.id) == ["00A4"]


def test_refused_rows_are_isolated_and_every_other_row_written(manager, session):
    ghost = "123e4567-e89b-12d3-a456-426614174000"
    rows = _rows(session.id, 9)
    rows[3] = (ghost,) + rows[3][1:]
    rows[7] = (ghost,) + rows[7][1:]
    plan = plan_for(manager.database, CommLog, _FIELDS)
    flat = plan.flatten(rows)
    with manager.database.atomic():
        written, rejected = insert_isolating(
            plan, flat, lambda exc: isinstance(exc, peewee.IntegrityError))
    assert [r[3] for r, _exc in rejected] == ["00000003", "00000007"]
    assert all(isinstance(exc, peewee.IntegrityError) for _r, exc in rejected)
    assert len(written) == 7 * plan.width
    assert _raws(session.id) == [f"{i:08X}" for i in range(9) if i not in (3, 7)]


def test_an_error_not_about_the_rows_is_raised(manager, session):
    plan = plan_for(manager.database, CommLog, _FIELDS)
    flat = plan.flatten(_rows("123e4567-e89b-12d3-a456-426614174000", 2))
    with pytest.raises(peewee.IntegrityError), manager.database.atomic():
        insert_isolating(plan, flat, lambda exc: False)
    assert CommLog.select().count() == 0


@pytest.mark.parametrize("rows", [1, 2, 3, 1000])
def test_statements_are_what_insert_many_builds(manager, rows):
    plan = InsertPlan(manager.database, CommLog, LOG_FIELDS)
    query = CommLog.insert_many([(None,) * len(LOG_FIELDS)] * rows,
                                fields=list(LOG_FIELDS)).returning()
    assert plan.sql(rows) == manager.database.get_sql_context().sql(query).query()[0]


@pytest.mark.parametrize("backend", ["mysql"], indirect=True)
def test_mariadb_values_are_inlined_as_the_driver_writes_them(manager, session):
    # batch_insert escapes with pymysql's Connection.escape: the same text its
    # cursor.mogrify (what execute sends) gives, for every type the store writes.
    conn = manager.database.connection()
    values = ["it's", "back\\slash", "100%", "\x00nul", "é", None, 7, 2.5, 1e300, True,
              datetime(2024, 11, 29, 10, 0, 0, 123000), b"\x00\xff"]
    with conn.cursor() as cursor:
        for value in values:
            assert conn.escape(value) == cursor.mogrify("%s", (value,)), value
    awkward = ["it's", "back\\slash", "100% %s %(x)s", "é"]
    rows = [(session.id, "2024-11-29 10:00:00", "command", f"{i:02X}", text)
            for i, text in enumerate(awkward)]
    insert_rows(manager.database, CommLog, _FIELDS, rows)
    assert [r.decoded_data for r in CommLog.select().order_by(CommLog.id)] == awkward


@pytest.mark.parametrize("backend", ["mysql"], indirect=True)
def test_secret_fields_are_never_inlined_into_the_statement_text(manager, monkeypatch):
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", generate_key())
    secret = encrypt_psk(b"\x13\x37" * 16)
    with UnitOfWork(manager) as uow, count_queries(manager) as statements:
        uow.cards.create_all([CardProfile(iccid="8901000000000000001",
                                          psk_key_encrypted=secret)])
    assert CardProfile.get().psk_key_encrypted == secret
    assert not [s for s in statements if secret.hex().upper() in s.upper()]
