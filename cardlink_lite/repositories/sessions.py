"""SessionRepository: the OTA session lifecycle, session queries and session statistics."""

from __future__ import annotations

import logging
import math
from datetime import date, datetime, time, timedelta, timezone

import peewee
from peewee import fn

from ..errors import ValidationError
from ..events import EventType
from ..fields import to_utc_ms, utc_now
from ..models import AdminScriptStatus, OTASession, PoRStatus, SessionStatus
from ..tls_alerts import tls_alert
from .base import BaseRepository, one_of, positive_int
from .counters import counter_value

__all__ = ["SessionRepository"]

logger = logging.getLogger("cardlink_lite.sessions")

# A session may only move forward: pending -> active -> one of the terminal states.
_OPEN = (SessionStatus.PENDING, SessionStatus.ACTIVE)
_TERMINAL = (SessionStatus.COMPLETED, SessionStatus.FAILED, SessionStatus.TIMEOUT)
_ERROR_CODE_MAX = OTASession.error_code.max_length
_TLS_NAMED = ("tls_cipher_suite", "tls_psk_identity")  # in events as cipher_suite, psk_identity


class SessionRepository(BaseRepository):
    """OTA sessions: lifecycle, OTA facts, queries, statistics. A transition is one conditional
    UPDATE (racing callers cannot both win); an ended session is final (first outcome wins)."""

    model = OTASession
    entity_type = "session"
    event_fields = ("status", "device_id", "card_iccid", "session_type")

    # -- lifecycle -------------------------------------------------------------
    def create_session(self, device_id: str | None = None, card_iccid: str | None = None,
                       session_type: str | None = None, *, trigger=None) -> OTASession:
        """A new pending session; ``trigger``: sms-pp, push-sms, bip, manual, scheduled, other."""
        if session_type is not None:
            session_type = _checked(OTASession.session_type, session_type)
        fields = {} if trigger is None else {"trigger": trigger}  # none: as before 0003
        return self.create(OTASession(device_id=device_id, card_iccid=card_iccid,
                                      session_type=session_type,
                                      status=SessionStatus.PENDING, **fields))

    def start_session(self, session_id) -> bool:
        """pending -> active, stamping ``started_at``; emits SESSION_UPDATED."""
        now = utc_now()
        changed = bool(self._update(session_id, (SessionStatus.PENDING,),
                                    status=SessionStatus.ACTIVE, started_at=now, updated_at=now))
        if changed:
            self._emit(EventType.SESSION_UPDATED, str(session_id),
                       {"status": SessionStatus.ACTIVE.value, "started_at": now.isoformat()})
        return changed

    def set_tls_info(self, session_id, cipher_suite: str | None = None,
                     psk_identity: str | None = None, *, cipher: str | None = None,
                     version: str | None = None, handshake_ms: float | None = None,
                     alert=None) -> bool:
        """Record the PSK-TLS handshake's cipher suite (the guide's ``cipher``), PSK identity,
        version, time in ms and TLS alert (code, name or both); None leaves a column as is."""
        cipher_suite = one_of("cipher_suite", cipher_suite, "cipher", cipher)
        values = {}
        if cipher_suite is not None:
            values["tls_cipher_suite"] = _checked(OTASession.tls_cipher_suite, cipher_suite)
        if psk_identity is not None:
            values["tls_psk_identity"] = _checked(OTASession.tls_psk_identity, psk_identity)
        if version is not None:
            values["tls_version"] = _checked(OTASession.tls_version, version)
        if handshake_ms is not None:
            values["tls_handshake_ms"] = _milliseconds("handshake_ms", handshake_ms)
        if alert is not None:
            values["tls_alert_code"], values["tls_alert"] = tls_alert(alert)
        if not values:
            raise ValidationError("set_tls_info() needs at least one of cipher_suite (or cipher), "
                                  "psk_identity, version, handshake_ms, alert")
        data = {"cipher_suite": cipher_suite, "psk_identity": psk_identity,
                **{k: v for k, v in values.items() if k not in _TLS_NAMED}}
        return self._set(session_id, values, data)

    def set_scp80(self, session_id, *, tar=None, spi=None, kic=None, kid=None,
                  counter: int | None = None) -> bool:
        """Record the SCP80 (ETSI TS 102 225) TAR, SPI, KIc, KID (hex text or bytes) and the
        5-byte counter of the session's command packet; None leaves a column as is."""
        values = {}
        for name, value, size in (("tar", tar, 3), ("spi", spi, 2), ("kic", kic, 1),
                                  ("kid", kid, 1)):
            if value is not None:
                values[name] = _hex_bytes(name, value, size)
        if counter is not None:
            values["counter"] = counter_value(counter, "counter must be")
        if not values:
            raise ValidationError("set_scp80() needs at least one of tar, spi, kic, kid, counter")
        return self._set(session_id, values, dict(values))

    def set_por(self, session_id, status) -> bool:
        """Record the Proof-of-Receipt status: a PoRStatus, its value or name, or the ETSI
        TS 102 225 status byte (0x00-0x0C)."""
        return self._set_member(session_id, OTASession.por_status, _por_status(status),
                                _POR_NEEDED)

    def set_admin_status(self, session_id, status) -> bool:
        """Record the SCP81 ``X-Admin-Script-Status`` (ok, unknown-application,
        not-a-security-domain, security-error)."""
        return self._set_member(session_id, OTASession.admin_script_status, status,
                                "set_admin_status() needs a status such as 'ok'")

    def set_trigger(self, session_id, trigger) -> bool:
        """Record what started the session (sms-pp, push-sms, bip, manual, scheduled)."""
        return self._set_member(session_id, OTASession.trigger, trigger,
                                "set_trigger() needs a trigger such as 'sms-pp'")

    def complete_session(self, session_id) -> bool:
        """-> completed, stamping ``ended_at`` and ``duration_ms`` (from ``started_at``)."""
        return self._finish(session_id, SessionStatus.COMPLETED)

    def fail_session(self, session_id, error_code: str | None = None,
                     message: str | None = None, *, error_message: str | None = None) -> bool:
        """-> failed with an error code (cut to the column's 32 characters, so recording a
        failure never fails itself) and message (``error_message`` is the design's name)."""
        message = one_of("message", message, "error_message", error_message)
        code = None if error_code is None else _storable(error_code)[:_ERROR_CODE_MAX]
        return self._finish(session_id, SessionStatus.FAILED, error_code=code,
                            error_message=_storable(message))

    def timeout_session(self, session_id, message: str | None = None) -> bool:
        """-> timeout, with error code ``TIMEOUT`` and an optional message."""
        return self._finish(session_id, SessionStatus.TIMEOUT, error_code="TIMEOUT",
                            error_message=_storable(message))

    # -- queries -----------------------------------------------------------------
    def find_by_device(self, device_id: str, limit: int | None = 100) -> list[OTASession]:
        """The device's sessions, newest first."""
        return self._newest(OTASession.device, device_id, limit)

    def find_by_card(self, iccid: str, limit: int | None = 100) -> list[OTASession]:
        """The card's sessions, newest first."""
        return self._newest(OTASession.card, iccid, limit)

    def find_by_status(self, status, limit: int | None = None) -> list[OTASession]:
        """Sessions in ``status`` (member, value or name), newest first."""
        return self._newest(OTASession.status, OTASession.status.coerce_member(status), limit)

    def find_by_trigger(self, trigger, limit: int | None = None) -> list[OTASession]:
        """Sessions started by ``trigger`` (member, value or name), newest first."""
        return self._newest(OTASession.trigger, OTASession.trigger.coerce_member(trigger),
                            limit)

    def find_by_por_status(self, status, limit: int | None = None) -> list[OTASession]:
        """Sessions whose Proof of Receipt said ``status``, newest first."""
        return self._newest(OTASession.por_status, _por_status(status), limit)

    def find_active(self) -> list[OTASession]:
        """Sessions currently active, newest first."""
        return self.find_by_status(SessionStatus.ACTIVE)

    def find_by_date_range(self, start: datetime | date | None = None,
                           end: datetime | date | None = None,
                           limit: int | None = None) -> list[OTASession]:
        """Sessions created between ``start`` and ``end`` inclusive (naive: local time; a date:
        a whole UTC day; None: open), newest first."""
        conditions = []
        if start is not None:
            conditions.append(OTASession.created_at >= _as_utc("start", start))
        if end is not None:
            if isinstance(end, date) and not isinstance(end, datetime):
                # A date as the end means the whole of that day.
                conditions.append(OTASession.created_at < _as_utc("end", end + timedelta(1)))
            else:
                conditions.append(OTASession.created_at <= _as_utc("end", end))
        return self._recent(conditions, limit)

    # -- statistics ----------------------------------------------------------------
    def get_statistics(self, days: int | None = 7) -> dict:
        """Counts per status, average duration, success rate and failures by cause of the
        sessions created in the last ``days`` days (None: all), in one GROUP BY query."""
        since = None
        if days is None:
            rows = self._fetch(self._statement("statistics", _statistics_query))
        else:
            days = positive_int("days", days, allow_zero=True, most=365_000)  # 1000 years
            since = utc_now() - timedelta(days=days)
            rows = self._fetch(self._statement("statistics_since", lambda start: (
                _statistics_query().where(OTASession.created_at >= start))), since)
        by_status = {s.value: 0 for s in SessionStatus}
        failures = {"tls_alert": {}, "por_status": {}, "admin_script_status": {},
                    "timeout": 0, "other": 0}
        duration_sum = duration_count = 0
        for status, alert, por, admin, count, total_ms, timed in rows:
            status = OTASession.status.coerce_member(status)
            by_status[status.value] += int(count)
            if status is SessionStatus.COMPLETED:
                duration_sum += int(total_ms or 0)
                duration_count += int(timed or 0)
            elif status in (SessionStatus.FAILED, SessionStatus.TIMEOUT):
                _count_failure(failures, status, alert, por, admin, int(count))
        total = sum(by_status.values())
        ended = sum(by_status[s.value] for s in _TERMINAL)
        completed = by_status[SessionStatus.COMPLETED.value]
        return {"period_days": days, "since": since, "total": total, "total_sessions": total,
                "by_status": by_status,
                "avg_duration_ms": duration_sum / duration_count if duration_count else 0.0,
                "success_rate": 100.0 * completed / ended if ended else 0.0,
                "failures_by_cause": failures}

    # -- internals -----------------------------------------------------------------
    def _set(self, session_id, values: dict, data: dict) -> bool:
        rows = self._update(session_id, None, **values)
        # MySQL counts only rows whose values changed: an identical re-send reads 0.
        found = bool(rows) or self.exists(session_id)
        if found:
            self._emit(EventType.SESSION_UPDATED, str(session_id), data)
        return found

    def _set_member(self, session_id, field, value, missing: str) -> bool:
        member = field.coerce_member(value)
        if member is None:
            raise ValidationError(missing)
        return self._set(session_id, {field.name: member}, {field.name: member.value})

    def _newest(self, field, value, limit) -> list[OTASession]:
        """Sessions whose ``field`` is ``value``, newest first (one statement per field)."""
        if value is None:
            return self._recent([field.is_null()], limit)
        if limit is None:
            return self._load(self._statement(("newest", field.name), lambda v: (
                _newest_first(OTASession.select().where(field == v)))), value)
        limit = positive_int("limit", limit, allow_zero=True)
        return self._load(self._statement(("newest_limit", field.name), lambda v, n: (
            _newest_first(OTASession.select().where(field == v)).limit(n))), value, limit)

    def _recent(self, conditions: list, limit) -> list[OTASession]:
        query = _newest_first(self._select(*conditions))
        if limit is not None:
            query = query.limit(positive_int("limit", limit, allow_zero=True))
        return self._list(query)

    def _update(self, session_id, allowed, **values) -> int:
        """One UPDATE of the session, if its status is in ``allowed`` (None: any)."""
        match = OTASession.id == session_id
        if allowed is not None:
            match &= OTASession.status.in_(list(allowed))
        return self._update_where(session_id, match, **values)

    def _finish(self, session_id, status: SessionStatus, **values) -> bool:
        self._touch()
        with self._wrap(session_id):
            row = (OTASession.select(OTASession.status, OTASession.started_at)
                   .where(OTASession.id == session_id).tuples().first())
        if row is None:
            return False
        current, started_at = OTASession.status.coerce_member(row[0]), row[1]
        if current in _TERMINAL:
            logger.info("session %s is already %s; %s ignored", session_id, current.value,
                        status.value)
            return False
        now = utc_now()
        duration = None
        if started_at is not None:
            duration = max(0, round((now - started_at).total_seconds() * 1000))
        changed = bool(self._update(session_id, _OPEN, status=status, ended_at=now,
                                    duration_ms=duration, updated_at=now, **values))
        if changed:
            data = {"status": status.value, "ended_at": now.isoformat(),
                    "duration_ms": duration}
            if "error_code" in values:
                data["error_code"] = values["error_code"]
            self._emit(EventType.SESSION_COMPLETED, str(session_id), data)
        return changed


def _statistics_query():
    causes = (OTASession.tls_alert, OTASession.por_status, OTASession.admin_script_status)
    return (OTASession
            .select(OTASession.status, *causes, fn.COUNT(OTASession.id),
                    fn.SUM(OTASession.duration_ms), fn.COUNT(OTASession.duration_ms))
            .group_by(OTASession.status, *causes))


def _newest_first(query):
    return query.order_by(OTASession.created_at.desc(), OTASession.id.desc())


def _count_failure(failures: dict, status, alert, por, admin, count: int) -> None:
    por = OTASession.por_status.python_value(por)
    admin = OTASession.admin_script_status.python_value(admin)
    if alert:
        group, key = failures["tls_alert"], alert
    elif por is not None and por is not PoRStatus.POR_OK:
        group, key = failures["por_status"], str(por)
    elif admin is not None and admin is not AdminScriptStatus.OK:
        group, key = failures["admin_script_status"], str(admin)
    else:
        failures["timeout" if status is SessionStatus.TIMEOUT else "other"] += count
        return
    group[key] = group.get(key, 0) + count


def _checked(field: peewee.CharField, value) -> str:
    """``value`` as text, checked now (length, NUL) by the field rather than at commit."""
    return field.db_value(str(value))


def _storable(text):
    # PostgreSQL text cannot hold NUL (an exception's message may): the same escape everywhere.
    return None if text is None else str(text).replace("\x00", "\\x00")


def _milliseconds(name: str, value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if not 0 <= number < math.inf:  # also refuses NaN
        raise ValidationError(f"{name} must be a finite number of milliseconds >= 0; "
                              f"got {str(value)[:24]!r}")
    return number


def _hex_bytes(name: str, value, size: int) -> str:
    if isinstance(value, bytes | bytearray):
        value = bytes(value).hex()
    elif isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 256 ** size:
        value = f"{value:0{size * 2}X}"
    text = "".join(str(value).split()).upper()
    if len(text) != size * 2 or any(c not in "0123456789ABCDEF" for c in text):
        raise ValidationError(f"{name} must be {size} byte{'s' if size > 1 else ''} as "
                              f"{size * 2} hex digits; got {str(value)[:24]!r}")
    return text


_POR_NEEDED = "a PoR status is needed, such as 'por-ok' or 'counter-low'"
_POR_BY_BYTE = list(PoRStatus)  # ETSI TS 102 225 response status 0x00-0x0C, in order


def _por_status(status) -> PoRStatus:
    if isinstance(status, int) and not isinstance(status, bool):
        if 0 <= status < len(_POR_BY_BYTE):
            return _POR_BY_BYTE[status]
        raise ValidationError("a PoR response status byte is "
                              f"0x00-0x{len(_POR_BY_BYTE) - 1:02X}; got {status!r}")
    member = OTASession.por_status.coerce_member(status)
    if member is None:
        raise ValidationError(_POR_NEEDED)
    return member


def _as_utc(name: str, value) -> datetime:
    if isinstance(value, datetime):
        return to_utc_ms(value)
    if isinstance(value, date):
        return datetime.combine(value, time(), tzinfo=timezone.utc)
    raise ValidationError(f"{name} must be a datetime or a date; got {value!r}")
