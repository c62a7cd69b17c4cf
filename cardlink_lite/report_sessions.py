"""The report's OTA-session numbers: outcomes per day, device x card success, latency
per command, the newest sessions and one session's facts.

Aggregated in the database (GROUP BY, window functions for the percentiles); results are
sized by days, device x card pairs and commands, never by the stored APDUs. The models must
be bound to the store.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timedelta

import peewee
from peewee import fn

from .models import CardProfile, CommLog, Device, OTASession, SessionStatus
from .report_apdus import aware_utc, ins_name

__all__ = [
    "SESSION_OUTCOMES",
    "apdu_counts",
    "command_latency",
    "device_card_matrix",
    "outcomes_per_day",
    "recent_sessions",
    "session_facts",
    "session_window_start",
]

SESSION_OUTCOMES = ("completed", "failed", "timeout", "open")
_OPEN = (SessionStatus.PENDING.value, SessionStatus.ACTIVE.value)


def session_window_start(since: datetime | None, days: int = 30) -> datetime | None:
    """``since``, else ``days`` days before the newest session (None: no sessions)."""
    if since is not None:
        return since
    newest = OTASession.select(fn.MAX(OTASession.created_at)).scalar()
    if newest is None:
        return None
    newest = aware_utc(newest)
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
        row = rows.setdefault(ins, {"command": ins_name(ins), "count": int(count)})
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
                     "created_at": aware_utc(created), "duration_ms": duration,
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
        return aware_utc(value).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"
    if name.endswith("_ms"):
        return float(value)
    return str(value)


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


