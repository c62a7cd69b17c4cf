"""The report's OTA-session numbers, aggregated in the database and sized by days, device x
card pairs and commands, not by the stored APDUs. The models must be bound to the store."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import date, datetime, timedelta

import peewee
from peewee import fn

from .models import CardProfile, CommLog, Device, OTASession, SessionStatus
from .report_apdus import aware_utc, ins_name

__all__ = ["SESSION_OUTCOMES", "command_latency", "device_card_matrix", "outcomes_per_day",
           "recent_sessions", "session_facts", "session_window_start"]

SESSION_OUTCOMES = ("completed", "failed", "timeout", "open")
_OPEN = (SessionStatus.PENDING.value, SessionStatus.ACTIVE.value)
# What a failed or timed-out session says about why, in the order _cause reads them.
_CAUSES = (OTASession.tls_alert, OTASession.por_status, OTASession.admin_script_status,
           OTASession.error_code)


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
    """Sessions created each day from ``start``'s first day with one to the last, counted
    per outcome (pending and active count as ``open``)."""
    day = fn.DATE(OTASession.created_at)
    query = (OTASession.select(day, OTASession.status, fn.COUNT(OTASession.id))
             .where(OTASession.created_at >= start)
             .group_by(day, OTASession.status))
    counts: dict[date, Counter] = defaultdict(Counter)
    for value, status, count in query.tuples():
        counts[date.fromisoformat(str(value)[:10])][_outcome(status)] += int(count)
    if not counts:
        return []
    first = min(counts)
    days = [first + timedelta(days=i) for i in range((max(counts) - first).days + 1)]
    return [{"day": d.isoformat(), "total": sum(counts[d].values()),
             **{o: counts[d][o] for o in SESSION_OUTCOMES}} for d in days]


def device_card_matrix(start: datetime) -> dict:
    """Sessions per device x card pair: ``devices``, ``cards`` and ``rows`` of cells (None: no
    sessions) with counts per outcome, success rate (completed out of ended) and the most
    frequent failure cause."""
    query = (OTASession.select(OTASession.device, OTASession.card, OTASession.status,
                               *_CAUSES, fn.COUNT(OTASession.id))
             .where(OTASession.created_at >= start)
             .group_by(OTASession.device, OTASession.card, OTASession.status, *_CAUSES))
    pairs: dict[tuple, dict] = {}
    causes: dict[tuple, Counter] = defaultdict(Counter)
    for device, card, status, *said, count in query.tuples():
        row = pairs.setdefault((device, card), {"device": device, "card": card,
                                                **dict.fromkeys(SESSION_OUTCOMES, 0)})
        row[_outcome(status)] += int(count)
        cause = _cause(status, *said)
        if cause:
            causes[device, card][cause] += int(count)
    for key, row in pairs.items():
        row["ended"] = row["completed"] + row["failed"] + row["timeout"]
        row["rate"] = 100.0 * row["completed"] / row["ended"] if row["ended"] else None
        row["cause"], row["cause_count"] = (causes[key].most_common(1) or [(None, 0)])[0]
    devices = sorted({d for d, _ in pairs}, key=_none_last)
    cards = sorted({c for _, c in pairs}, key=_none_last)
    return {"devices": devices, "cards": cards,
            "rows": [[pairs.get((d, c)) for c in cards] for d in devices]}


def _none_last(value):
    return value is None, value or ""


def command_latency(start: datetime, limit: int = 40) -> list[dict]:
    """Responses, nearest-rank median and p95 latency of the ``limit`` commands (by INS) with
    the most responses, slowest first; window functions send back two rows per command."""
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
    picked = peewee.Select(
        from_list=[ranked], columns=[ranked.c.ins, ranked.c.latency_ms, rn, n],
    ).where(_at_rank(rn, n, 50) | _at_rank(rn, n, 95)).bind(CommLog._meta.database)
    rows: dict[str, dict] = {}
    for ins, latency, rank, count in picked.tuples():
        row = rows.setdefault(ins, {"command": ins_name(ins), "count": int(count)})
        for key, percent in (("median_ms", 50), ("p95_ms", 95)):
            if _at_rank(int(rank), int(count), percent):
                row[key] = float(latency)
    out = sorted(rows.values(), key=lambda r: (-r["count"], r["command"]))[:limit]
    return sorted(out, key=lambda r: (-r.get("p95_ms", 0), r["command"]))


def _at_rank(rank, count, percent):
    """Whether ``rank`` (1-based, of ``count``) holds the nearest-rank percentile, in SQL or
    in numbers."""
    return (rank * 100 >= count * percent) & ((rank - 1) * 100 < count * percent)


def recent_sessions(start: datetime, limit: int) -> list[dict]:
    """The newest ``limit`` sessions since ``start`` with their APDU counts."""
    apdus = CommLog.select(fn.COUNT(CommLog.id)).where(CommLog.session == OTASession.id)
    query = (OTASession.select(OTASession.id, OTASession.device, OTASession.card,
                               OTASession.session_type, OTASession.status,
                               OTASession.created_at, OTASession.duration_ms, apdus, *_CAUSES)
             .where(OTASession.created_at >= start)
             .order_by(OTASession.created_at.desc(), OTASession.id.desc())
             .limit(limit))
    return [{"id": str(sid), "device": device, "card": card, "type": kind,
             "status": str(status), "outcome": _outcome(status),
             "created_at": aware_utc(created), "duration_ms": duration, "apdus": int(count),
             "cause": _cause(status, *said)}
            for sid, device, card, kind, status, created, duration, count, *said
            in query.tuples()]


def session_facts(session_id: str) -> dict | None:
    """One session, its device and card (None where the store has none)."""
    session = OTASession.get_or_none(OTASession.id == session_id)
    if session is None:
        return None
    return {"id": str(session.id), "status": str(session.status),
            "outcome": _outcome(session.status), "session": session,
            "device": session.device_id and Device.get_or_none(Device.id == session.device_id),
            "card": session.card_iccid and CardProfile.get_or_none(
                CardProfile.iccid == session.card_iccid)}


def _cause(status, tls_alert, por_status, admin_script_status, error_code) -> str | None:
    outcome = _outcome(status)
    if outcome not in ("failed", "timeout"):
        return None
    if tls_alert:
        return f"TLS alert {tls_alert}"
    if por_status and str(por_status) != "por-ok":
        return f"PoR {por_status}"
    if admin_script_status and str(admin_script_status) != "ok":
        return f"admin script {admin_script_status}"
    return str(error_code) if error_code else outcome


def _outcome(status) -> str:
    status = str(status)
    return "open" if status in _OPEN else status
