"""Two stores in one process (a bench SQLite file, a team server): a unit of work on one
reads and writes only that one, nested in a unit of work on the other or next to one in
another thread; plain model code keeps the process-wide binding."""

from __future__ import annotations

import threading

import pytest

from cardlink_lite import DatabaseManager, Device, UnitOfWork
from cardlink_lite.maintenance import collect_stats
from cardlink_lite.traces.load import import_trace


@pytest.fixture
def bench(tmp_path):
    """The bench's SQLite store, next to the team store (``manager``) of the backend tested."""
    bench = DatabaseManager(f"sqlite:///{tmp_path}/bench.db?timeout=5")
    bench.initialize(check_schema=False)
    bench.create_tables()
    yield bench
    bench.close()


@pytest.fixture
def team(bench, manager):
    manager.bind()  # the team store was opened first: point the models back at it
    return manager


def _rows(manager) -> dict:
    cursor = manager.database.execute_sql("SELECT id, notes FROM devices ORDER BY id")
    return dict(cursor.fetchall())


def _seen(manager) -> list:
    cursor = manager.database.execute_sql("SELECT id FROM devices WHERE last_seen IS NOT NULL")
    return [row[0] for row in cursor.fetchall()]


def test_nested_units_of_work_on_two_stores_keep_their_own_rows(bench, team):
    with UnitOfWork(bench) as uow:
        uow.devices.create(Device(id="PHONE1", device_type="phone", notes="bench"))
    with UnitOfWork(bench) as outer:
        phone = outer.devices.get("PHONE1")
        with UnitOfWork(team) as inner:
            inner.devices.create(Device(id=phone.id, device_type="phone", notes="copied"))
        outer.devices.create(Device(id="PHONE1-marker", device_type="phone"))
        outer.devices.update_last_seen("PHONE1")
        phone.notes = "copied to the team store"  # a tracked object, saved at commit
    assert _rows(bench) == {"PHONE1": "copied to the team store", "PHONE1-marker": None}
    assert _rows(team) == {"PHONE1": "copied"}
    assert (_seen(bench), _seen(team)) == (["PHONE1"], [])


def test_units_of_work_in_two_threads_keep_their_own_rows(bench, team):
    # Lockstep: A opens its unit, B opens, writes and commits on its store, then A writes.
    a_open, b_done = threading.Event(), threading.Event()
    errors = []

    def on_bench():
        try:
            with UnitOfWork(bench) as uow:
                uow.devices.get_all()
                a_open.set()
                b_done.wait()
                uow.devices.create(Device(id="A1", device_type="phone"))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            a_open.set()

    def on_team():
        a_open.wait()
        try:
            with UnitOfWork(team) as uow:
                uow.devices.create(Device(id="B1", device_type="phone"))
        finally:
            b_done.set()

    threads = [threading.Thread(target=on_bench), threading.Thread(target=on_team)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert list(_rows(bench)) == ["A1"]
    assert list(_rows(team)) == ["B1"]


def test_many_units_of_work_in_two_threads_keep_their_own_rows(bench, team):
    def work(manager, tag):
        for i in range(60):
            with UnitOfWork(manager) as uow:
                device = uow.devices.create(Device(id=f"{tag}{i:03}", device_type="phone"))
                device.notes = tag  # saved through the models at commit

    threads = [threading.Thread(target=work, args=(bench, "A")),
               threading.Thread(target=work, args=(team, "B"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert _rows(bench) == {f"A{i:03}": "A" for i in range(60)}
    assert _rows(team) == {f"B{i:03}": "B" for i in range(60)}


def test_plain_models_keep_the_process_wide_store_around_units_of_work(bench, team):
    with UnitOfWork(bench) as uow:
        uow.devices.create(Device(id="A1", device_type="phone"))
        Device.create(id="A2", device_type="phone")  # inside: the unit's store
    Device.create(id="B1", device_type="phone")       # after: the process-wide one again
    with bench.atomic():
        Device.create(id="A3", device_type="phone")
    assert [d.id for d in Device.select().order_by(Device.id)] == ["B1"]
    assert list(_rows(bench)) == ["A1", "A2", "A3"]


def test_functions_given_a_manager_use_its_store_inside_another_unit_of_work(bench, team):
    with UnitOfWork(bench) as uow:
        uow.devices.create(Device(id="A1", device_type="phone"))
        assert collect_stats(team)["tables"]["devices"] == 0
        team.drop_tables()
        team.create_tables()
        assert collect_stats(bench)["tables"]["devices"] == 1
    assert list(_rows(bench)) == ["A1"]
    assert set(team.database.get_tables()) >= {"devices", "card_profiles"}


def test_a_trace_imported_into_one_store_lands_there_inside_a_unit_of_work_on_another(
        bench, team, tmp_path):
    path = tmp_path / "log.txt"
    path.write_text("00A40004023F00\n9000\n")
    with UnitOfWork(team) as uow:
        uow.devices.create(Device(id="B1", device_type="phone"))
        summary = import_trace(bench, path)
    count = "SELECT COUNT(*) FROM {}"
    assert [bench.database.execute_sql(count.format(t)).fetchone()[0]
            for t in ("ota_sessions", "comm_logs", "trace_sources")] == [1, 2, 1]
    assert [team.database.execute_sql(count.format(t)).fetchone()[0]
            for t in ("ota_sessions", "comm_logs", "trace_sources")] == [0, 0, 0]
    assert summary.sessions and list(_rows(team)) == ["B1"]
