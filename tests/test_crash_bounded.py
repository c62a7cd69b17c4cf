"""Crash-bounded loss on SQLite: kill -9 while logging, and two processes logging at once."""

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import peewee

from cardlink_lite import DatabaseManager, OTASession

_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "kill_loop.py"


def _kill_loop():
    spec = importlib.util.spec_from_file_location("kill_loop", _SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kill_9_loses_at_most_the_flush_under_way(tmp_path):
    report = _kill_loop().kill_loop(str(tmp_path / "kill.db"), kills=5, batch=200,
                                    min_s=0.0, max_s=0.5)
    assert report["problems"] == []
    assert report["acknowledged_flushes"] > 0


def test_check_notices_a_half_applied_flush(tmp_path):
    module = _kill_loop()
    path = tmp_path / "half.db"
    manager = DatabaseManager(f"sqlite:///{path}").initialize(check_schema=False)
    manager.create_tables()
    session = OTASession.create()
    for _ in range(3):  # flush 0:0 with 3 of its 4 rows, never acknowledged
        manager.database.execute_sql(
            "INSERT INTO comm_logs (session_id, timestamp, direction, raw_data, decoded_data)"
            " VALUES (?, '2024-01-01 00:00:00', 'command', '00', '0:0')", (session.id,))
    manager.close()
    problems = module.check(str(path), {0: -1}, batch=4)
    assert problems == ["flush 0:0 is half-applied: 3 of 4 rows"]


def test_two_processes_log_into_one_file_without_lock_errors(tmp_path):
    url = f"sqlite:///{tmp_path}/shared.db"
    manager = DatabaseManager(url).initialize(check_schema=False)
    manager.create_tables()
    sessions = [OTASession.create().id for _ in range(2)]
    manager.close()
    script = textwrap.dedent("""
        import sys
        from cardlink_lite import DatabaseManager
        from cardlink_lite.apdu import ApduLogWriter
        manager = DatabaseManager(sys.argv[1]).initialize()
        writer = ApduLogWriter(manager, session_id=sys.argv[2], batch_size=50,
                               flush_interval=0.05)
        for i in range(3000):
            writer.command(f"00B0{i:04X}")
        writer.close()
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, url, sid],
                              stderr=subprocess.PIPE, text=True) for sid in sessions]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "locked" not in err
    db = peewee.SqliteDatabase(f"{tmp_path}/shared.db")
    counts = dict(db.execute_sql(
        "SELECT session_id, COUNT(*) FROM comm_logs GROUP BY session_id").fetchall())
    assert counts == {sid: 3000 for sid in sessions}
    assert db.execute_sql("PRAGMA integrity_check").fetchone()[0] == "ok"
