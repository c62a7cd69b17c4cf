"""Per-call cost of the guide's repository reads against the same SQL run raw, side by side.

    python scripts/bench_reads.py                   # SQLite, a temporary file
    python scripts/bench_reads.py --url postgresql://postgres@127.0.0.1:5432/bench
    python scripts/bench_reads.py --url mysql://root@127.0.0.1:3306/bench --repeat 200

Each read is run once with the SQL Peewee emits captured; the raw side then runs exactly
those statements with the driver's own cursor on the same connection and converts the
values as a hand-written script would need them (aware UTC datetimes, enums, JSON, bools,
the summary dict of an aggregate), and both answers are checked equal. Timed interleaved,
medians of ``--repeat`` rounds, two ways:

- ``in_uow``: the repository call inside an open ``UnitOfWork`` (several reads in one
  ``with`` block, as the guide's samples do) against the raw statements inside the same
  open transaction. The targets (issue 16) apply here, to the repository read itself: a
  read returning <= 50 rows <= 2x raw; the 200-row session read <= 1.5x raw as
  tuples/dicts, <= 3x as models.
- ``per_call``: ``with UnitOfWork(manager) as uow: uow.<repo>.<read>(...)`` per call
  against raw ``BEGIN``; the statements; ``COMMIT``. Reported, no target: it adds a
  transaction per read, and Peewee's ``atomic()`` alone costs a few times a raw
  BEGIN/COMMIT pair (about 5 us against 2 us on SQLite), which a read of one row cannot
  hide.

``logs.session_query(...).tuples()`` is reported without a target too: it is a Peewee
query handed to the user to refine, so Peewee builds its SQL on every run.

``--url`` names a scratch database: its cardlink tables are dropped and created again.
Prints one JSON line per read and mode; exits non-zero when an ``in_uow`` target is
missed, an answer differs from the raw one, or nothing was measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone

SMALL_TARGET = 2.0              # a read of <= 50 rows
SESSION_TARGETS = {"tuples": 1.5, "dicts": 1.5, "models": 3.0}   # the 200-row session read
_TXN_WORDS = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")
_UTC = timezone.utc


# -- the store ---------------------------------------------------------------------
def _fill(manager) -> dict:
    """A bench's store: devices, cards, a fortnight of sessions, APDU traces, test runs,
    settings. Returns the ids the reads ask for."""
    from cardlink_lite import (
        CardProfile,
        CardType,
        Device,
        DeviceType,
        OTASession,
        Setting,
        TestResult,
    )
    from cardlink_lite.apdu import ApduLogWriter
    from cardlink_lite.models import SessionStatus, TestStatus

    now = datetime.now(_UTC).replace(microsecond=0)
    Device.insert_many([
        {"id": f"RF8M{i:07d}", "name": f"Bench phone {i}", "device_type": DeviceType.PHONE,
         "manufacturer": "Samsung", "model": "Galaxy", "imei": f"35{i:013d}",
         "iccid": f"8901{i:016d}", "connection_settings": {"adb": f"serial-{i}", "port": i},
         "last_seen": now - timedelta(minutes=i), "created_at": now - timedelta(days=40 - i),
         "updated_at": now} for i in range(40)]).execute()
    CardProfile.insert_many([
        {"iccid": f"8901{i:016d}", "imsi": f"3101{i:011d}", "card_type": CardType.USIM,
         "psk_identity": f"card_{i:03d}", "admin_url": "https://admin.example.com:8443/api",
         "trigger_config": {"sms": True, "tar": "B00001"}, "created_at": now,
         "updated_at": now} for i in range(40)]).execute()
    statuses = [SessionStatus.COMPLETED] * 6 + [SessionStatus.FAILED, SessionStatus.TIMEOUT,
                                                SessionStatus.ACTIVE, SessionStatus.PENDING]
    sessions = []
    for i in range(300):
        status = statuses[i % len(statuses)]
        created = now - timedelta(hours=i)
        sessions.append({
            "id": str(uuid.uuid4()), "device": f"RF8M{i % 40:07d}",
            "card": f"8901{i % 40:016d}", "session_type": "admin", "status": status,
            "created_at": created, "updated_at": created, "started_at": created,
            "duration_ms": 800 + i if status is SessionStatus.COMPLETED else None,
            "tls_alert": "handshake_failure" if status is SessionStatus.FAILED and i % 3
            else None})
    OTASession.insert_many(sessions).execute()
    sid = sessions[0]["id"]
    writer = ApduLogWriter(manager, batch_size=10_000, flush_interval=None)
    for s in sessions[:40]:
        writer.add_many(_trace(s["id"]))
    writer.close()
    runs = []
    for r in range(5):
        run_id = f"run-{r:03d}"
        runs.append(run_id)
        start = now - timedelta(days=5 - r)
        TestResult.insert_many([
            {"id": str(uuid.uuid4()), "run_id": run_id, "suite_name": "integration",
             "test_name": f"test_ota.py::test_{t}", "device": "RF8M0000000",
             "started_at": start + timedelta(seconds=t),
             "ended_at": start + timedelta(seconds=t, milliseconds=900), "duration_ms": 900,
             "status": (TestStatus.FAILED if t % 10 == 3 else TestStatus.SKIPPED
                        if t % 10 == 7 else TestStatus.PASSED),
             "created_at": start, "updated_at": start} for t in range(50)]).execute()
    Setting.insert_many([
        {"key": key, "value": value, "category": key.split(".")[0], "created_at": now,
         "updated_at": now}
        for key, value in (("server.port", 9443), ("server.timeout", 30),
                           ("retention.logs_days", 14), ("limits.max_sessions", 10))
    ]).execute()
    return {"device": "RF8M0000007", "card": "89010000000000000007", "session": sid,
            "run": runs[-1], "setting": "server.port"}


def _trace(session_id: str) -> list[tuple]:
    """200 APDU rows: commands and responses, 20 of them errors, 10 "more data" ones."""
    rows = []
    for i in range(100):
        rows.append((session_id, "command", f"00A4040008A0000001510000{i:02X}", "SELECT"))
        sw = "6A82" if i % 5 == 1 else "6110" if i % 10 == 4 else "9000"
        rows.append((session_id, "response", f"6F108408A000000151000000{sw}", None, sw,
                     "Success" if sw == "9000" else "other", 12.5))
    return rows


# -- the reads and what a raw script does with their rows ------------------------------
def _converters(model, columns):
    """Per column of ``model``'s ``columns``: the conversion a hand-written script needs."""
    from cardlink_lite.fields import EnumField, JSONField, UTCDateTimeField

    by_column = {f.column_name: f for f in model._meta.sorted_fields}
    out = []
    for column in columns:
        field = by_column[column]
        if isinstance(field, UTCDateTimeField):
            out.append(_utc)
        elif isinstance(field, EnumField):
            out.append(field.enum_class)
        elif isinstance(field, JSONField):
            out.append(json.loads)
        elif type(field).__name__ == "BooleanField":
            out.append(bool)
        elif type(field).__name__ == "BlobField" or "Blob" in type(field).__name__:
            out.append(bytes)
        else:
            out.append(None)
    return out


_fromiso = datetime.fromisoformat
_combine = datetime.combine


def _utc(value):
    # SQLite: the stored naive-UTC text; the servers: a naive datetime. Fastest spellings.
    if type(value) is str:
        return _fromiso(value + "+00:00")
    return _combine(value.date(), value.time(), _UTC)


def _convert_rows(rows, converters) -> list[tuple]:
    pairs = [(i, c) for i, c in enumerate(converters) if c is not None]
    out = []
    for row in rows:
        row = list(row)
        for i, convert in pairs:
            value = row[i]
            if value is not None:
                row[i] = convert(value)
        out.append(tuple(row))
    return out


def _model_rows(model):
    columns = [f.column_name for f in model._meta.sorted_fields]
    converters = _converters(model, columns)
    return lambda results: _convert_rows(results[0], converters)


def _values(objs) -> list[tuple]:
    from cardlink_lite._peewee import field_values

    return [tuple(field_values(o).values()) for o in objs]


def _statistics(results) -> dict:
    # get_statistics' answer from its GROUP BY rows, as a script would compute it.
    by_status, completed_ms, timed = {}, 0, 0
    for status, _alert, _por, _admin, count, total_ms, n_timed in results[0]:
        by_status[status] = by_status.get(status, 0) + int(count)
        if status == "completed":
            completed_ms += int(total_ms or 0)
            timed += int(n_timed or 0)
    ended = sum(by_status.get(s, 0) for s in ("completed", "failed", "timeout"))
    return {"total": sum(by_status.values()),
            "success_rate": 100.0 * by_status.get("completed", 0) / ended if ended else 0.0,
            "avg_duration_ms": completed_ms / timed if timed else 0.0}


def _run_summary(results) -> dict:
    out = {"passed": 0, "failed": 0, "skipped": 0, "duration_ms": 0}
    starts, ends = [], []
    for status, count, total_ms, first, last in results[0]:
        out[status] = out.get(status, 0) + int(count)
        out["duration_ms"] += int(total_ms or 0)
        starts.append(_utc(first))
        ends.append(_utc(last))
    out["started_at"], out["ended_at"] = min(starts), max(ends)
    return out


def _cases(ids: dict) -> list[dict]:
    """Each read: the call, what to compare of its answer, the raw side's conversion."""
    from cardlink_lite import CardProfile, CommLog, Device, OTASession, TestResult

    sid = ids["session"]
    log_rows = _model_rows(CommLog)
    log_columns = [f.column_name for f in CommLog._meta.sorted_fields]
    log_names = CommLog._meta.sorted_field_names
    at = log_columns.index("timestamp")

    def trace_tuples(results):
        # The fast session read's own shape: every column as the driver gives it, the
        # timestamp an aware datetime.
        return [r[:at] + (_utc(r[at]),) + r[at + 1:] for r in results[0]]

    def trace_dicts(results):
        return [dict(zip(log_names, r[:at] + (_utc(r[at]),) + r[at + 1:], strict=True))
                for r in results[0]]

    def page(results):
        return results[0][0][0], _model_rows(Device)(results[1:])

    def stat_view(s):
        return {k: s[k] for k in ("total", "success_rate", "avg_duration_ms")}

    def summary_view(s):
        return {k: s[k] for k in ("passed", "failed", "skipped", "duration_ms",
                                  "started_at", "ended_at")}

    return [
        {"read": "devices.get_by_id", "rows": 1, "target": SMALL_TARGET,
         "call": lambda uow: uow.devices.get_by_id(ids["device"]),
         "ours": lambda d: _values([d]), "raw": _model_rows(Device)},
        {"read": "cards.get_by_id", "rows": 1, "target": SMALL_TARGET,
         "call": lambda uow: uow.cards.get_by_id(ids["card"]),
         "ours": lambda c: _values([c]), "raw": _model_rows(CardProfile)},
        {"read": "sessions.get_by_id", "rows": 1, "target": SMALL_TARGET,
         "call": lambda uow: uow.sessions.get_by_id(sid),
         "ours": lambda s: _values([s]), "raw": _model_rows(OTASession)},
        {"read": "settings.get_value", "rows": 1, "target": SMALL_TARGET,
         "call": lambda uow: uow.settings.get_value(ids["setting"]),
         "ours": lambda v: v, "raw": lambda results: json.loads(results[0][0][0])},
        {"read": "sessions.get_statistics(days=30)", "rows": 8, "target": SMALL_TARGET,
         "call": lambda uow: uow.sessions.get_statistics(days=30),
         "ours": stat_view, "raw": _statistics},
        {"read": "tests.get_run_summary", "rows": 3, "target": SMALL_TARGET,
         "call": lambda uow: uow.tests.get_run_summary(ids["run"]),
         "ours": summary_view, "raw": _run_summary},
        {"read": "tests.find_by_run", "rows": 50, "target": SMALL_TARGET,
         "call": lambda uow: uow.tests.find_by_run(ids["run"]),
         "ours": _values, "raw": _model_rows(TestResult)},
        {"read": "sessions.find_by_device", "rows": 8, "target": SMALL_TARGET,
         "call": lambda uow: uow.sessions.find_by_device(ids["device"]),
         "ours": _values, "raw": _model_rows(OTASession)},
        {"read": "logs.find_errors", "rows": 20, "target": SMALL_TARGET,
         "call": lambda uow: uow.logs.find_errors(sid),
         "ours": _values, "raw": log_rows},
        {"read": "devices.paginate(page=1, per_page=20)", "rows": 21, "target": SMALL_TARGET,
         "call": lambda uow: uow.devices.paginate(page=1, per_page=20, order_by="created_at",
                                                  descending=True),
         "ours": lambda p: (p.total, _values(p.items)), "raw": page},
        {"read": "logs.find_by_session (200 rows, models)", "rows": 200,
         "target": SESSION_TARGETS["models"],
         "call": lambda uow: uow.logs.find_by_session(sid), "ours": _values, "raw": log_rows},
        {"read": "logs.session_rows (200 rows, tuples)", "rows": 200,
         "target": SESSION_TARGETS["tuples"],
         "call": lambda uow: uow.logs.session_rows(sid), "ours": list, "raw": trace_tuples},
        {"read": "logs.session_rows (200 rows, dicts)", "rows": 200,
         "target": SESSION_TARGETS["dicts"],
         "call": lambda uow: uow.logs.session_rows(sid, as_dicts=True), "ours": list,
         "raw": trace_dicts},
        # Peewee's own path (the query is the user's to refine, so its SQL is built per
        # run): reported, no target.
        {"read": "logs.session_query(...).tuples() (200 rows)", "rows": 200,
         "target": None,
         "call": lambda uow: list(uow.logs.session_query(sid).tuples()), "ours": list,
         "raw": trace_tuples},
    ]


# -- measuring ---------------------------------------------------------------------
def _capture(manager, call) -> list[tuple]:
    """The statements (SQL, params) one call runs, transaction control left out."""
    from cardlink_lite import UnitOfWork

    seen = []

    def hook(event):
        if not event.sql.lstrip().upper().startswith(_TXN_WORDS):
            seen.append((event.sql, tuple(event.params or ())))

    database = manager.database
    with UnitOfWork(manager) as uow:  # the read's own statements, not the unit of work's
        database.query_hooks.append(hook)
        try:
            call(uow)
        finally:
            database.query_hooks.remove(hook)
    return seen


def _raw_runner(manager, statements, convert):
    database = manager.database

    def raw():
        cursor = database.connection().cursor()
        results = []
        for sql, params in statements:
            cursor.execute(sql, params)
            results.append(cursor.fetchall())
        return convert(results)

    def raw_txn():
        cursor = database.connection().cursor()
        cursor.execute("BEGIN")
        results = []
        for sql, params in statements:
            cursor.execute(sql, params)
            results.append(cursor.fetchall())
        cursor.execute("COMMIT")
        return convert(results)

    return raw, raw_txn


def _timed(fn, samples: list) -> None:
    start = time.perf_counter()
    fn()
    samples.append(time.perf_counter() - start)


def bench(manager, repeat: int, only: str | None = None) -> list[dict]:
    from cardlink_lite import UnitOfWork

    with manager.atomic():
        ids = _fill(manager)
    cases = [c for c in _cases(ids) if not only or only in c["read"]]
    problems = {}
    for case in cases:
        case["statements"] = _capture(manager, case["call"])
        case["raw_fn"], case["raw_txn_fn"] = _raw_runner(manager, case["statements"],
                                                         case["raw"])
        with UnitOfWork(manager) as uow:
            ours = case["ours"](case["call"](uow))
            raw = case["raw_fn"]()
        if ours != raw:
            problems[case["read"]] = f"answer differs from the raw one: {str(ours)[:200]}"
        for key in ("in_uow", "raw", "per_call", "raw_txn"):
            case[key] = []

    def per_call(call):
        def run():
            with UnitOfWork(manager) as uow:
                return call(uow)
        return run

    for case in cases:
        case["per_call_fn"] = per_call(case["call"])
    for r in range(repeat):
        # Interleaved: every side of every read in each round, which side first alternating,
        # so a noisy neighbour on a shared machine hits them alike.
        flip = r % 2
        with UnitOfWork(manager) as uow:
            for case in cases:
                call = case["call"]
                pair = [(lambda c=call: c(uow), case["in_uow"]), (case["raw_fn"], case["raw"])]
                for fn, samples in pair[::-1] if flip else pair:
                    _timed(fn, samples)
        for case in cases:
            pair = [(case["per_call_fn"], case["per_call"]),
                    (case["raw_txn_fn"], case["raw_txn"])]
            for fn, samples in pair[::-1] if flip else pair:
                _timed(fn, samples)
    out = []
    for case in cases:
        for mode, ours_key, raw_key, raw_what in (
                ("in_uow", "in_uow", "raw", "the statements"),
                ("per_call", "per_call", "raw_txn", "BEGIN; the statements; COMMIT")):
            ours_s = statistics.median(case[ours_key]) if case[ours_key] else 0.0
            raw_s = statistics.median(case[raw_key]) if case[raw_key] else 0.0
            ratio = ours_s / raw_s if raw_s else None
            target = case["target"] if mode == "in_uow" else None  # see the docstring
            problem = problems.get(case["read"])
            if ratio is None:
                problem = problem or "nothing was measured"
            elif target is not None and ratio > target:
                problem = problem or f"{ratio:.2f}x raw (target <= {target}x)"
            out.append({"backend": manager.config.backend, "read": case["read"],
                        "mode": mode, "rows": case["rows"],
                        "statements": len(case["statements"]), "raw": raw_what,
                        "raw_us": round(raw_s * 1e6, 1), "cardlink_us": round(ours_s * 1e6, 1),
                        "ratio": round(ratio, 2) if ratio else None,
                        "target_max_ratio": target, "ok": problem is None,
                        **({"problem": problem} if problem else {})})
    return out


def exit_code(results: list[dict]) -> int:
    """0 only when something was measured and every line met its target (lines without
    a target: only that they were measured and answered right)."""
    if not any(r.get("target_max_ratio") for r in results):
        print("nothing was measured", file=sys.stderr)
        return 1
    missed = [f"{r.get('read', '?')} [{r.get('mode', '?')}]" for r in results
              if r.get("ok") is not True]
    if missed:
        print(f"missed target: {', '.join(missed)}", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a scratch database (default: a temporary SQLite file)")
    parser.add_argument("--repeat", type=int, default=300, help="rounds (default 300)")
    parser.add_argument("--only", help="only the reads whose name contains this text")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from cardlink_lite import DatabaseManager

    with tempfile.TemporaryDirectory() as tmp:
        url = args.url or f"sqlite:///{os.path.join(tmp, 'reads.db')}"
        manager = DatabaseManager(url).initialize(check_schema=False)
        try:
            manager.drop_tables()
            manager.create_tables()
            results = bench(manager, args.repeat, args.only)
        finally:
            manager.close()
    for line in results:
        print(json.dumps(line))
    return exit_code(results)


if __name__ == "__main__":
    sys.exit(main())
