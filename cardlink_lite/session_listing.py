"""The sessions an operator looks for: filtered by device, card, status and date, newest first."""

from __future__ import annotations

from datetime import datetime, timezone

import peewee

from .db import bound_models
from .fields import to_utc_ms
from .models import CommLog, OTASession, SessionStatus

__all__ = ["list_sessions"]

# The keys of a listed session, in order (then "logs").
_COLUMNS = ("id", "created_at", "started_at", "ended_at", "status", "session_type", "device_id",
            "card_iccid", "duration_ms", "error_code")


def list_sessions(manager, device_id: str | None = None, card_iccid: str | None = None,
                  status: SessionStatus | str | None = None, since: datetime | None = None,
                  limit: int = 50) -> list[dict]:
    """Sessions matching every filter given, newest first, each with its APDU row count
    (``logs``); a naive ``since`` is UTC (the CLI's dates are)."""
    manager.ensure_connection()
    with bound_models(manager.database):
        query = OTASession.select().order_by(OTASession.created_at.desc(),
                                             OTASession.id).limit(limit)
        if device_id is not None:
            query = query.where(OTASession.device == device_id)
        if card_iccid is not None:
            query = query.where(OTASession.card == card_iccid)
        if status is not None:
            query = query.where(OTASession.status == SessionStatus(status))
        if since is not None:
            if since.tzinfo is None:
                since = since.replace(tzinfo=timezone.utc)
            query = query.where(OTASession.created_at >= to_utc_ms(since))
        sessions = list(query)
        ids = [s.id for s in sessions]
        counts = dict(CommLog.select(CommLog.session, peewee.fn.COUNT(CommLog.id))
                      .where(CommLog.session.in_(ids)).group_by(CommLog.session).tuples()
                      ) if ids else {}
    return [{**{name: getattr(s, name) for name in _COLUMNS}, "status": s.status.value,
             "logs": counts.get(s.id, 0)} for s in sessions]
