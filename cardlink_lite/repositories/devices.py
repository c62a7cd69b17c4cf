"""Phones and modems of the bench: lookups, search, discovery and liveness."""

from __future__ import annotations

import operator
from datetime import datetime, timedelta
from functools import reduce
from numbers import Real

from peewee import fn

from .._peewee import NullsLow
from ..errors import ValidationError, quote
from ..fields import iso_utc, utc_now
from ..models import Device, DeviceType
from .base import BaseRepository, check_values

__all__ = ["DeviceMatches", "DeviceRepository"]

_MAX_HOURS = 24 * 365 * 1000  # back to the 11th century: a date every backend stores
_SEARCHED = ("id", "name", "manufacturer", "model", "imei", "imsi", "iccid")


class DeviceMatches(list):
    """The devices holding one ICCID: a list (the design) whose attributes read through to
    ``first``, the most recently seen (the guide). Empty, it is falsy and has no attributes."""

    @property
    def first(self) -> Device | None:
        return self[0] if self else None

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        if not self:
            raise AttributeError(
                f"no device holds this ICCID, so there is no {name!r}; test the result "
                "(`if devices:`) before reading device fields"
            )
        return getattr(self[0], name)


class DeviceRepository(BaseRepository):
    """Devices: find by type, activity, recency, ICCID; search; register on discovery."""

    model = Device
    entity_type = "device"
    event_fields = ("device_type", "name")

    def find_by_type(self, device_type) -> list[Device]:
        """Devices of ``device_type`` (a DeviceType, or its value/name)."""
        return self.find_by(device_type=Device.device_type.coerce_member(device_type))

    def find_phones(self) -> list[Device]:
        return self.find_by_type(DeviceType.PHONE)

    def find_modems(self) -> list[Device]:
        return self.find_by_type(DeviceType.MODEM)

    def find_active(self) -> list[Device]:
        return self.find_by(is_active=True)

    def find_recent(self, hours: float = 24) -> list[Device]:
        """Devices seen within the last ``hours`` hours, most recent first."""
        if isinstance(hours, bool) or not isinstance(hours, Real) or \
                not 0 <= hours <= _MAX_HOURS:
            raise ValidationError(f"hours must be a number from 0 to {_MAX_HOURS:,} (1000 "
                                  f"years); got {quote(hours)}", problems=["hours"])
        cutoff = utc_now() - timedelta(hours=hours)
        query = (self._select(Device.last_seen >= cutoff)
                 .order_by(Device.last_seen.desc(), Device.id))
        return self._list(query)

    def search(self, query: str) -> list[Device]:
        """Devices whose id, name, manufacturer, model, IMEI, IMSI or ICCID contains ``query``
        (case-insensitive; ``%`` and ``_`` match themselves)."""
        if not isinstance(query, str):
            raise ValidationError(f"search text must be a string; got {type(query).__name__}")
        # LOWER(...) LIKE: case-insensitive on every backend; Peewee escapes % and _.
        text = query.lower()
        match = reduce(operator.or_, [fn.LOWER(getattr(Device, f)).contains(text)
                                      for f in _SEARCHED])
        return self._list(self._select(match).order_by(Device.id))

    def find_by_iccid(self, iccid: str) -> DeviceMatches:
        """Devices holding card ``iccid``, most recently seen first (see DeviceMatches)."""
        query = (self._select(Device.iccid == iccid)
                 .order_by(NullsLow(Device.last_seen, descending=True), Device.id))
        return DeviceMatches(self._list(query))

    def update_last_seen(self, device_id: str, when=None) -> bool:
        """Stamp ``last_seen`` (now, or ``when``); False if there is no such device."""
        when = when or utc_now()
        stamp = iso_utc(when) if isinstance(when, datetime) else str(when)
        return self._set(device_id, {"last_seen": stamp}, last_seen=when)

    def deactivate(self, device_id: str) -> bool:
        """Mark a device inactive; False if there is no such device."""
        return self._set(device_id, {"is_active": False}, is_active=False)

    def activate(self, device_id: str) -> bool:
        """Mark a device active again; False if there is no such device."""
        return self._set(device_id, {"is_active": True}, is_active=True)

    def _set(self, device_id: str, event_data: dict, **values) -> bool:
        """One UPDATE of the device and its DEVICE_UPDATED event; False if there is none."""
        changed = self._update_where(device_id, Device.id == device_id, **values)
        if changed:
            self._emit(self._event("UPDATED"), device_id, event_data)
        return bool(changed)

    def register(self, id: str, **info) -> Device:  # noqa: A002 - the column's name
        """Create (``device_type`` required) or update a device as a controller discovers it;
        stamps ``last_seen`` and marks it active."""
        if not id:
            raise ValidationError("a device id is required to register a device (e.g. its serial)")
        info.pop("id", None)
        fields = Device._check_kwargs(info)  # unknown fields -> ValidationError before any query
        check_values(Device, fields)
        now = utc_now()
        device = self.get_by_id(id)
        if device is None:
            if info.get("device_type") is None:
                raise ValidationError(
                    f"device {id!r} is new: pass device_type='phone' or 'modem' to register it")
            return self.create(Device(id=id, last_seen=now, is_active=True, **info))
        for name, value in fields.items():
            setattr(device, name, value)
        device.last_seen = now
        device.is_active = True
        return self.update(device)
