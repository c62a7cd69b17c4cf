"""The report's numbers: SQL aggregates over test runs, OTA sessions and one session's APDUs.

Every function returns plain dicts and lists sized by what the report shows (runs in the
window, device x card pairs, command names), never by the number of stored rows: the
database groups and counts, and APDUs are streamed. The models must be bound to the store.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timedelta

import peewee
from peewee import Case, fn

from .fields import stored_utc, utc_from_text
from .models import CardProfile, CommLog, Device, OTASession, SessionStatus, TestResult
from .repositories import TestRepository
from .status_words import describe_status_word

__all__ = [
    "apdu_counts",
    "command_latency",
    "compare_newest",
    "device_card_matrix",
    "flaky_tests",
    "outcomes_per_day",
    "recent_sessions",
    "run_labels",
    "run_window",
    "session_exchanges",
    "session_facts",
    "session_window_start",
    "slowest_tests",
    "suite_names",
    "sw_kind",
]

STATUSES = ("passed", "failed", "error", "skipped")
_FAILING = ("failed", "error")
SESSION_OUTCOMES = ("completed", "failed", "timeout", "open")
_OPEN = (SessionStatus.PENDING.value, SessionStatus.ACTIVE.value)


# -- test runs ------------------------------------------------------------------------
def suite_names() -> list[str]:
    """Suites with results, the one with the newest result first."""
    newest = fn.MAX(TestResult.started_at)
    query = (TestResult.select(TestResult.suite_name, newest)
             .group_by(TestResult.suite_name)
             .order_by(newest.desc(), TestResult.suite_name))
    return [name for name, _ in query.tuples()]


def run_window(suite: str, runs: int, since: datetime | None = None) -> list[dict]:
    """The suite's newest ``runs`` runs (started at or after ``since``), oldest first, with
    counts per status, summed test time and wall time. One GROUP BY query."""
    started = fn.MIN(TestResult.started_at)
    query = (TestResult
             .select(TestResult.run_id, started, fn.MAX(TestResult.ended_at),
                     fn.COUNT(TestResult.id), fn.SUM(TestResult.duration_ms),
                     *[_count(TestResult.status, s) for s in STATUSES])
             .where(TestResult.suite_name == suite)
             .group_by(TestResult.run_id)
             .order_by(started.desc(), TestResult.run_id.desc())
             .limit(runs))
    if since is not None:
        query = query.where(TestResult.started_at >= since)
    out = []
    for run_id, first, last, total, total_ms, *counts in query.tuples():
        first, last = _aware(first), _aware(last)
        run = {"run_id": run_id, "started_at": first, "ended_at": last,
               "total": int(total), "duration_ms": int(total_ms or 0),
               "wall_ms": int((last - first).total_seconds() * 1000) if first and last else 0}
        run.update({s: int(c or 0) for s, c in zip(STATUSES, counts, strict=True)})
        run["pass_rate"] = 100.0 * run["passed"] / run["total"] if run["total"] else 0.0
        out.append(run)
    out.reverse()
    return out


def run_labels(suite: str, run_ids: list[str]) -> dict[str, dict]:
    """The devices and cards each run's results were recorded on."""
    labels = {r: {"devices": set(), "cards": set()} for r in run_ids}
    if not run_ids:
        return labels
    query = (TestResult.select(TestResult.run_id, TestResult.device, TestResult.card)
             .where((TestResult.suite_name == suite) & TestResult.run_id.in_(run_ids))
             .distinct())
    for run_id, device, card in query.tuples():
        if device is not None:
            labels[run_id]["devices"].add(device)
        if card is not None:
            labels[run_id]["cards"].add(card)
    return labels


def compare_newest(run_ids: list[str]) -> dict | None:
    """The store's ``compare_runs`` of the newest run against the one before it."""
    if len(run_ids) < 2:
        return None
    return TestRepository().compare_runs(run_ids[-2], run_ids[-1])


def flaky_tests(suite: str, run_ids: list[str], limit: int) -> tuple[int, list[dict]]:
    """Tests that both passed and failed in the window: how many, and the ``limit`` with
    the most flips, each with its status per run (oldest first; None: not run)."""
    if not run_ids:
        return 0, []
    passed = _count(TestResult.status, "passed")
    failing = fn.SUM(Case(None, [(TestResult.status.in_(list(_FAILING)), 1)], 0))
    query = (TestResult.select(TestResult.test_name, failing)
             .where((TestResult.suite_name == suite) & TestResult.run_id.in_(run_ids))
             .group_by(TestResult.test_name)
             .having((passed > 0) & (failing > 0))
             .order_by(failing.desc(), TestResult.test_name))
    candidates = [name for name, _ in query.tuples()]
    # Flips need the order of runs; rank a bounded number of candidates by them.
    shown = candidates[:max(limit * 4, limit)]
    statuses = _statuses(suite, run_ids, shown)
    position = {r: i for i, r in enumerate(run_ids)}
    rows = []
    for name in shown:
        cells: list = [None] * len(run_ids)
        for run_id, status in statuses.get(name, []):
            cells[position[run_id]] = status
        seen = [c for c in cells if c in ("passed", *_FAILING)]
        flips = sum(1 for a, b in zip(seen, seen[1:], strict=False)
                    if (a == "passed") != (b == "passed"))
        rows.append({"name": name, "cells": cells, "flips": flips,
                     "failures": sum(1 for c in cells if c in _FAILING)})
    rows.sort(key=lambda r: (-r["flips"], -r["failures"], r["name"]))
    return len(candidates), rows[:limit]


def slowest_tests(suite: str, run_ids: list[str], limit: int) -> list[dict]:
    """The ``limit`` tests with the longest mean duration, with their duration per run."""
    if not run_ids:
        return []
    mean = fn.AVG(TestResult.duration_ms)
    in_window = (TestResult.suite_name == suite) & TestResult.run_id.in_(run_ids)
    query = (TestResult.select(TestResult.test_name, mean, fn.MAX(TestResult.duration_ms))
             .where(in_window & TestResult.duration_ms.is_null(False))
             .group_by(TestResult.test_name)
             .order_by(mean.desc(), TestResult.test_name)
             .limit(limit))
    rows = [{"name": n, "mean_ms": float(m or 0), "max_ms": int(x or 0)}
            for n, m, x in query.tuples()]
    if not rows:
        return rows
    per_run = (TestResult.select(TestResult.run_id, TestResult.test_name,
                                 fn.MAX(TestResult.duration_ms))
               .where(in_window & TestResult.test_name.in_([r["name"] for r in rows]))
               .group_by(TestResult.run_id, TestResult.test_name))
    position = {r: i for i, r in enumerate(run_ids)}
    series = {r["name"]: [None] * len(run_ids) for r in rows}
    for run_id, name, duration in per_run.tuples():
        series[name][position[run_id]] = None if duration is None else int(duration)
    for row in rows:
        row["durations"] = series[row["name"]]
    return rows


def _statuses(suite, run_ids, names) -> dict[str, list]:
    if not names:
        return {}
    query = (TestResult.select(TestResult.test_name, TestResult.run_id, TestResult.status)
             .where((TestResult.suite_name == suite) & TestResult.run_id.in_(run_ids)
                    & TestResult.test_name.in_(names))
             .order_by(TestResult.started_at, TestResult.created_at, TestResult.id))
    out = defaultdict(list)
    for name, run_id, status in query.tuples():  # the last result of a name in a run wins
        out[name].append((run_id, str(status)))
    return out


# -- sessions -------------------------------------------------------------------------
def session_window_start(since: datetime | None, days: int = 30) -> datetime | None:
    """``since``, else ``days`` days before the newest session (None: no sessions)."""
    if since is not None:
        return since
    newest = OTASession.select(fn.MAX(OTASession.created_at)).scalar()
    if newest is None:
        return None
    newest = _aware(newest)
    return newest.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days - 1)


def outcomes_per_day(start: datetime) -> list[dict]:
    """Sessions created each day since ``start``: counts per outcome (pending and active
    count as ``open``). One GROUP BY query."""
    day = fn.DATE(OTASession.created_at)
    query = (OTASession.select(day, OTASession.status, fn.COUNT(OTASession.id))
             .where(OTASession.created_at >= start)
             .group_by(day, OTASession.status)
             .order_by(day))
    days: dict[str, dict] = {}
    for value, status, count in query.tuples():
        key = str(value)[:10]
        row = days.setdefault(key, {"day": key, **dict.fromkeys(SESSION_OUTCOMES, 0)})
        row[_outcome(status)] += int(count)
    for row in days.values():
        row["total"] = sum(row[o] for o in SESSION_OUTCOMES)
    return list(days.values())


def device_card_matrix(start: datetime) -> list[dict]:
    """Per device x card pair: counts per outcome, success rate (completed out of ended)
    and the most frequent failure cause."""
    cause_columns = _cause_columns()
    query = (OTASession.select(OTASession.device, OTASession.card, OTASession.status,
                               *cause_columns, fn.COUNT(OTASession.id))
             .where(OTASession.created_at >= start)
             .group_by(OTASession.device, OTASession.card, OTASession.status, *cause_columns))
    pairs: dict[tuple, dict] = {}
    causes: dict[tuple, Counter] = defaultdict(Counter)
    for device, card, status, *rest in query.tuples():
        count = int(rest[-1])
        key = (device, card)
        row = pairs.setdefault(key, {"device": device, "card": card,
                                     **dict.fromkeys(SESSION_OUTCOMES, 0)})
        outcome = _outcome(status)
        row[outcome] += count
        if outcome in ("failed", "timeout"):
            cause = _cause(outcome, dict(zip(_CAUSE_NAMES, rest[:-1], strict=True)))
            causes[key][cause] += count
    out = []
    for key, row in pairs.items():
        ended = row["completed"] + row["failed"] + row["timeout"]
        row["total"] = ended + row["open"]
        row["ended"] = ended
        row["rate"] = 100.0 * row["completed"] / ended if ended else None
        top = causes[key].most_common(1)
        row["cause"], row["cause_count"] = top[0] if top else (None, 0)
        out.append(row)
    out.sort(key=lambda r: (r["device"] or "", r["card"] or ""))
    return out


def command_latency(start: datetime, limit: int = 40) -> list[dict]:
    """Per command (its INS byte): responses, median and p95 of the response latency,
    nearest-rank, computed with window functions in the database (at most two rows per
    command come back). The ``limit`` commands with the most responses, slowest first."""
    over = {"partition_by": [CommLog.session], "order_by": [CommLog.timestamp, CommLog.id]}
    paired = (CommLog
              .select(CommLog.direction, CommLog.latency_ms,
                      fn.LAG(CommLog.direction).over(**over).alias("prev_direction"),
                      fn.LAG(fn.UPPER(fn.SUBSTR(CommLog.raw_data, 3, 2))).over(**over)
                      .alias("ins"))
              .join(OTASession, on=(CommLog.session == OTASession.id))
              .where(OTASession.created_at >= start)
              .alias("paired"))
    ranked = (peewee.Select(
        from_list=[paired],
        columns=[paired.c.ins, paired.c.latency_ms,
                 fn.ROW_NUMBER().over(partition_by=[paired.c.ins],
                                      order_by=[paired.c.latency_ms]).alias("rn"),
                 fn.COUNT(peewee.SQL("*")).over(partition_by=[paired.c.ins]).alias("n")])
        .where((paired.c.direction == "response") & paired.c.latency_ms.is_null(False)
               & (paired.c.prev_direction == "command"))
        .alias("ranked"))
    rn, n = ranked.c.rn, ranked.c.n
    median = (rn * 2 >= n) & ((rn - 1) * 2 < n)
    p95 = (rn * 100 >= n * 95) & ((rn - 1) * 100 < n * 95)
    picked = peewee.Select(
        from_list=[ranked], columns=[ranked.c.ins, ranked.c.latency_ms, rn, n],
    ).where(median | p95).bind(CommLog._meta.database)
    rows: dict[str, dict] = {}
    for ins, latency, rank, count in picked.tuples():
        row = rows.setdefault(ins, {"command": _ins_name(ins), "count": int(count)})
        rank, count = int(rank), int(count)
        if rank * 2 >= count and (rank - 1) * 2 < count:
            row["median_ms"] = float(latency)
        if rank * 100 >= count * 95 and (rank - 1) * 100 < count * 95:
            row["p95_ms"] = float(latency)
    out = sorted(rows.values(), key=lambda r: (-r["count"], r["command"]))[:limit]
    out.sort(key=lambda r: (-r.get("p95_ms", 0), r["command"]))
    return out


def recent_sessions(start: datetime, limit: int) -> list[dict]:
    """The newest ``limit`` sessions since ``start`` with their APDU counts."""
    query = (OTASession.select(OTASession.id, OTASession.device, OTASession.card,
                               OTASession.session_type, OTASession.status,
                               OTASession.created_at, OTASession.duration_ms,
                               *_cause_columns())
             .where(OTASession.created_at >= start)
             .order_by(OTASession.created_at.desc(), OTASession.id.desc())
             .limit(limit))
    rows = []
    for sid, device, card, kind, status, created, duration, *causes in query.tuples():
        outcome = _outcome(status)
        cause_values = dict(zip(_CAUSE_NAMES, causes, strict=True))
        rows.append({"id": str(sid), "device": device, "card": card, "type": kind,
                     "status": str(status), "outcome": outcome,
                     "created_at": _aware(created), "duration_ms": duration,
                     "cause": _cause(outcome, cause_values)
                     if outcome in ("failed", "timeout") else None})
    counts = apdu_counts([r["id"] for r in rows])
    for row in rows:
        row["apdus"] = counts.get(row["id"], 0)
    return rows


def apdu_counts(session_ids: list[str]) -> dict[str, int]:
    if not session_ids:
        return {}
    query = (CommLog.select(CommLog.session, fn.COUNT(CommLog.id))
             .where(CommLog.session.in_(session_ids))
             .group_by(CommLog.session))
    return {str(s): int(c) for s, c in query.tuples()}


def session_facts(session_id: str) -> dict | None:
    """What the store knows about one session, its device and card, as label -> value."""
    session = OTASession.get_or_none(OTASession.id == session_id)
    if session is None:
        return None
    device = Device.get_or_none(Device.id == session.device_id) if session.device_id else None
    card = (CardProfile.get_or_none(CardProfile.iccid == session.card_iccid)
            if session.card_iccid else None)
    facts = {
        "id": str(session.id),
        "status": str(session.status),
        "outcome": _outcome(session.status),
        "device": session.device_id,
        "card": session.card_iccid,
        "created_at": session.created_at,
        "rows": [],
    }
    add = facts["rows"].append
    if device is not None:
        add(("Device", " · ".join(str(v) for v in (
            device.id, device.name, device.manufacturer, device.model,
            device.firmware_version) if v)))
    elif session.device_id:
        add(("Device", session.device_id))
    if card is not None:
        add(("Card", " · ".join(str(v) for v in (card.iccid, card.card_type, card.imsi) if v)))
    elif session.card_iccid:
        add(("Card", session.card_iccid))
    for label, name in _FACT_FIELDS:
        value = getattr(session, name, None)
        if value is not None and value != "":
            add((label, _fact_text(name, value)))
    return facts


_FACT_FIELDS = [
    ("Type", "session_type"), ("Trigger", "trigger"), ("Status", "status"),
    ("Started", "started_at"), ("Ended", "ended_at"), ("Duration", "duration_ms"),
    ("TLS version", "tls_version"), ("Cipher suite", "tls_cipher_suite"),
    ("PSK identity", "tls_psk_identity"), ("TLS handshake", "tls_handshake_ms"),
    ("TLS alert", "tls_alert"), ("TLS alert code", "tls_alert_code"),
    ("Admin script status", "admin_script_status"), ("TAR", "tar"), ("SPI", "spi"),
    ("KIc", "kic"), ("KID", "kid"), ("Counter", "counter"), ("PoR status", "por_status"),
    ("Error code", "error_code"), ("Error message", "error_message"),
]


def _fact_text(name: str, value):
    """Times as text; durations stay numbers (the report formats them)."""
    if isinstance(value, datetime):
        return _aware(value).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"
    if name.endswith("_ms"):
        return float(value)
    return str(value)


def session_exchanges(session_id: str, limit: int):
    """The session's APDUs paired into exchanges (a command and the response after it),
    in order, streamed: yields at most ``limit`` exchange dicts, then one dict
    ``{"more": N}`` if rows were left out."""
    columns = [CommLog.timestamp, CommLog.direction, CommLog.raw_data, CommLog.decoded_data,
               CommLog.status_word, CommLog.latency_ms]
    has_channel = "channel" in CommLog._meta.fields
    if has_channel:
        columns.append(CommLog._meta.fields["channel"])
    query = (CommLog.select(*columns).where(CommLog.session == session_id)
             .order_by(CommLog.timestamp, CommLog.id))
    ready: list[dict] = []
    shown = left = 0
    pending = None
    for row in query.tuples().iterator():
        timestamp, direction, raw, decoded, sw, latency = row[:6]
        direction = str(direction)
        if direction == "response" and pending is not None:
            _add_response(pending, raw, decoded, sw, latency)
            ready.append(pending)
            pending = None
        else:
            if pending is not None:  # a command without a response
                ready.append(pending)
                pending = None
            new = _exchange(timestamp, direction, raw, decoded, sw, latency,
                            row[6] if has_channel else None)
            if direction == "command":
                pending = new
            else:
                ready.append(new)
        for exchange in ready:
            if shown < limit:
                shown += 1
                yield exchange
            else:
                left += 1
        ready.clear()
    if pending is not None:
        if shown < limit:
            yield pending
        else:
            left += 1
    if left:
        yield {"more": left}


def _exchange(timestamp, direction, raw, decoded, sw, latency, channel) -> dict:
    exchange = {"at": _aware(timestamp), "kind": direction, "command": None,
                "name": decoded, "response": None, "sw": None, "sw_kind": None,
                "meaning": None, "latency_ms": None, "channel": channel}
    if direction == "command":
        exchange["command"] = raw
        if channel is None:
            exchange["channel"] = _channel_from_cla(raw)
        if not decoded:
            exchange["name"] = _ins_name(raw[2:4] if raw else None)
    elif direction == "response":
        _add_response(exchange, raw, None, sw, latency)
        exchange["name"] = decoded or "response without a command"
    else:
        exchange["name"] = decoded or direction.upper()
        exchange["response"] = raw
    return exchange


def _add_response(exchange, raw, decoded, sw, latency) -> None:
    exchange["response"] = raw
    sw = sw or (raw[-4:] if raw and len(raw) >= 4 and not raw.endswith("...") else None)
    if sw:
        try:
            exchange["meaning"] = describe_status_word(sw)
            exchange["sw"] = sw.upper()
            exchange["sw_kind"] = sw_kind(sw)
        except ValueError:
            exchange["sw"] = None
    exchange["latency_ms"] = None if latency is None else float(latency)
    if decoded and not exchange.get("decoded"):
        exchange["decoded"] = decoded


def sw_kind(sw: str) -> str:
    """success, more (more data / a pending proactive command), warning or error."""
    sw = sw.upper()
    if sw == "9000" or sw.startswith("92"):
        return "success"
    if sw.startswith(("61", "9F", "91")) or sw in ("6310", "62F1"):
        return "more"
    if sw.startswith(("62", "63", "6C")):
        return "warning"
    return "error"


def _channel_from_cla(raw: str | None):
    """The logical channel a command's CLA byte names (ISO 7816-4 5.4.1), or None."""
    try:
        cla = int(raw[:2], 16)
    except (TypeError, ValueError):
        return None
    if cla == 0xFF:
        return None
    if cla & 0x40:  # further interindustry values: channels 4-19
        return 4 + (cla & 0x0F)
    return cla & 0x03


# Instruction names for commands logged without one (ISO 7816-4, TS 102 221, GP).
_INS_NAMES = {
    "04": "DEACTIVATE FILE", "0E": "ERASE BINARY", "10": "TERMINAL PROFILE",
    "12": "FETCH", "14": "TERMINAL RESPONSE", "20": "VERIFY", "24": "CHANGE PIN",
    "2C": "UNBLOCK PIN", "32": "INCREASE", "44": "ACTIVATE FILE", "50": "INITIALIZE UPDATE",
    "70": "MANAGE CHANNEL", "73": "MANAGE SECURE CHANNEL", "75": "TRANSACT DATA",
    "82": "EXTERNAL AUTHENTICATE", "84": "GET CHALLENGE", "88": "AUTHENTICATE",
    "A2": "SEARCH RECORD", "A4": "SELECT", "AA": "TERMINAL CAPABILITY",
    "B0": "READ BINARY", "B2": "READ RECORD", "C0": "GET RESPONSE", "C2": "ENVELOPE",
    "CA": "GET DATA", "CB": "GET DATA", "D6": "UPDATE BINARY", "D8": "PUT KEY",
    "DC": "UPDATE RECORD", "E2": "STORE DATA", "E4": "DELETE", "E6": "INSTALL",
    "E8": "LOAD", "F0": "SET STATUS", "F2": "GET STATUS", "F8": "SUSPEND UICC",
}


def _ins_name(ins) -> str:
    if not ins:
        return "(unknown command)"
    ins = str(ins).upper()
    name = _INS_NAMES.get(ins)
    return f"{name} (INS {ins})" if name else f"INS {ins}"


# -- helpers --------------------------------------------------------------------------
_CAUSE_NAMES = ["tls_alert", "por_status", "admin_script_status", "error_code"]


def _cause_columns() -> list:
    """The optional outcome columns this schema has (schema 0003 adds TLS/PoR/admin)."""
    fields = OTASession._meta.fields
    return [fields[n] if n in fields else peewee.Value(None).alias(n) for n in _CAUSE_NAMES]


def _cause(outcome: str, values: dict) -> str:
    alert = values.get("tls_alert")
    if alert:
        return f"TLS alert {alert}"
    por = values.get("por_status")
    if por and str(por) != "por-ok":
        return f"PoR {por}"
    script = values.get("admin_script_status")
    if script and str(script) != "ok":
        return f"admin script {script}"
    code = values.get("error_code")
    if code:
        return str(code)
    return outcome


def _outcome(status) -> str:
    status = str(status)
    return "open" if status in _OPEN else status


def _count(field, value):
    return fn.SUM(Case(None, [(field == value, 1)], 0))


def _aware(value):
    if isinstance(value, str):
        return utc_from_text(value)
    return stored_utc(value) if isinstance(value, datetime) else value
