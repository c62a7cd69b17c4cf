"""Schema 0003 on a populated store: every row survives up and down on every backend, and
existing commands get their channel and INS from raw_data (in chunks, with progress)."""

from __future__ import annotations

import importlib.util
import logging

import peewee

from cardlink_lite import CardProfile, TestResult, downgrade, run_migrations
from cardlink_lite import migrations as mig
from cardlink_lite.recording import record_session
from cardlink_lite.unit_of_work import UnitOfWork

pytest_plugins = ["tests.repository_fixtures"]

# (command hex, channel, INS) the writer derives and the migration must derive again.
COMMANDS = [
    ("00A4040007A0000000871002", 0, 0xA4),
    ("80E60C00", 0, 0xE6),          # INSTALL
    ("84E60C00", 0, 0xE6),          # INSTALL with secure messaging
    ("01B0000008", 1, 0xB0),        # READ BINARY on logical channel 1
    ("C3F2400002", 7, 0xF2),        # further interindustry class: channel 4 + 3
    ("A0A40000023F00", 0, 0xA4),    # GSM 11.11 class
    ("00C0...", 0, 0xC0),           # an elided sample keeps its header
    ("FFFFFF", None, 0xFF),         # PPS: no channel
]


def _fill(manager) -> None:
    """A store as a bench leaves it, written through the API."""
    with UnitOfWork(manager) as uow:
        uow.devices.register("RF8M33", device_type="phone", name="Bench phone")
        uow.cards.create_with_psk(CardProfile(iccid="8901001", psk_identity="card_001"),
                                  b"\x01" * 16)
        uow.tests.create(TestResult(id="00000000-0000-4000-8000-000000000001", run_id="r1",
                                    suite_name="ota", test_name="t1", status="passed"))
        uow.settings.set_value("bench.name", {"room": 3})
    for trigger in ("sms-pp", None):
        with record_session(manager, device_id="RF8M33", card_iccid="8901001",
                            session_type="scp81", trigger=trigger) as s:
            s.set_tls_info("PSK-AES128-CBC-SHA256", "card_001", version="TLSv1.2",
                           handshake_ms=12.5)
            for raw, _, _ in COMMANDS:
                s.command(raw)
                s.response("9000", latency_ms=1.5)


_KEYS = {"devices": "id", "card_profiles": "iccid", "ota_sessions": "id", "comm_logs": "id",
         "test_results": "id", "settings": "key"}


def _rows(manager, columns: dict | None = None) -> dict:
    """Every row of every 0002 table by key, as {column: value} (values as the driver
    returns them) for ``columns`` per table (default: all it has now)."""
    db = manager.database
    dump = {}
    for table, key in _KEYS.items():
        names = sorted(columns[table] if columns else (c.name for c in db.get_columns(table)))
        rows = db.execute_sql(
            f"SELECT {', '.join(_quote(db, c) for c in names)} FROM {_quote(db, table)}"
        ).fetchall()
        dump[table] = {
            row[names.index(key)]: {c: bytes(v) if isinstance(v, memoryview) else v
                                    for c, v in zip(names, row, strict=True)}
            for row in rows}
    return dump


def _columns(manager) -> dict:
    return {t: {c.name for c in manager.database.get_columns(t)} for t in _KEYS}


def _project(dump: dict, columns: dict) -> dict:
    return {t: {k: {c: v for c, v in row.items() if c in columns[t]} for k, row in rows.items()}
            for t, rows in dump.items()}


def _quote(db, name: str) -> str:
    return db.get_sql_context().sql(peewee.Entity(name)).query()[0]


def _migration_module():
    spec = importlib.util.spec_from_file_location(
        "m0003", mig.MIGRATIONS_DIR / "0003_ota_facts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_M0003 = _migration_module()

def _headers(manager) -> list:
    return manager.database.execute_sql(
        "SELECT raw_data, channel, ins FROM comm_logs WHERE direction = 'command' "
        "ORDER BY id").fetchall()


def test_0003_down_and_up_keep_every_row_and_derive_headers(empty_manager, fernet_key,
                                                            caplog):
    manager = empty_manager
    run_migrations(manager=manager)
    _fill(manager)
    expected = [(raw, channel, ins) for raw, channel, ins in COMMANDS] * 2
    assert [tuple(r) for r in _headers(manager)] == expected  # the writer's values
    at_head = _rows(manager)
    assert len(at_head["comm_logs"]) == 4 * len(COMMANDS)

    later = mig.get_applied_revisions(manager)[2:]  # 0003 and anything after it
    assert downgrade(steps=len(later), manager=manager) == list(reversed(later))
    assert mig.get_current_revision(manager=manager) == "0002_comm_log_session_time"
    older = _columns(manager)
    assert not older["comm_logs"] & {"channel", "ins", "source_id"}
    before = _project(at_head, older)  # what 0002 has: all of it kept
    assert _rows(manager, older) == before
    assert "replay_counters" not in manager.database.get_tables()

    with caplog.at_level(logging.INFO, logger="cardlink_lite.migrations"):
        assert run_migrations("0003", manager=manager) == ["0003_ota_facts"]
    assert _rows(manager, older) == before
    assert [tuple(r) for r in _headers(manager)] == expected
    assert _progress(caplog) == [
        "0003: deriving channel and INS of 16 command rows from raw_data",
        "0003: 16/16 command rows done"]

    # In chunks: a progress line per chunk, rows without a header left alone.
    caplog.clear()
    manager.database.execute_sql("UPDATE comm_logs SET channel = NULL, ins = NULL")
    with caplog.at_level(logging.INFO, logger="cardlink_lite.migrations"):
        assert _M0003.backfill_headers(manager.database, chunk=5) == 16
    assert [tuple(r) for r in _headers(manager)] == expected
    assert _progress(caplog)[1:] == [f"0003: {n}/16 command rows done" for n in (5, 10, 15, 16)]

    downgrade(manager=manager)
    assert _rows(manager, older) == before
    assert run_migrations(manager=manager) == later
    assert _rows(manager, older) == before
    assert [tuple(r) for r in _headers(manager)] == expected
    with UnitOfWork(manager) as uow:  # the API reads the migrated store
        sessions = uow.sessions.find_by_card("8901001")
        # 0003's own facts went with down(); up() does not invent them; older ones stay.
        assert [(s.trigger, s.tls_version, s.tls_cipher_suite) for s in sessions] == [
            (None, None, "PSK-AES128-CBC-SHA256")] * 2
        assert uow.cards.get_psk_key_by_identity("card_001") == b"\x01" * 16


def _progress(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "command rows" in r.getMessage()]
