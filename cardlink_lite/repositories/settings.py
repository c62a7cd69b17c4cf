"""Key/value settings with built-in defaults, YAML round-trips and a process-wide read cache."""

from __future__ import annotations

import threading
import time
import weakref

import yaml

from ..errors import ValidationError
from ..models import Setting
from .base import BaseRepository

__all__ = ["SettingRepository", "SettingsRepository"]

# Reads are cached per database; writes in this process clear it at once. Another
# process's writes are seen after at most this many seconds.
CACHE_SECONDS = 5.0


class _Cache:
    """Every stored setting of one database, as {key: (value, category, description)}."""

    def __init__(self):
        self._lock = threading.Lock()
        self._entries = weakref.WeakKeyDictionary()   # database -> (loaded_at, rows)
        self._generation = 0

    def generation(self) -> int:
        return self._generation

    def get(self, database):
        with self._lock:
            entry = self._entries.get(database)
        if entry and time.monotonic() - entry[0] < CACHE_SECONDS:
            return entry[1]
        return None

    def put(self, database, rows: dict, generation: int) -> None:
        with self._lock:
            # A write since the read began makes this snapshot stale: do not keep it.
            if generation == self._generation:
                self._entries[database] = (time.monotonic(), rows)

    def clear(self, database=None) -> None:
        with self._lock:
            self._generation += 1
            if database is None:
                self._entries.clear()
            else:
                self._entries.pop(database, None)


_cache = _Cache()
_dirty = threading.local()   # databases with uncommitted settings writes in this thread


def _category_of(key: str) -> str:
    return key.split(".", 1)[0] if "." in key else "general"


class SettingsRepository(BaseRepository):
    """Settings: ``get_value`` falls back from the stored value to ``DEFAULTS``."""

    model = Setting
    entity_type = "setting"
    event_fields = ("category",)

    DEFAULTS = {
        "server.port": 8443,
        "server.timeout": 60,
        "dashboard.port": 8080,
        "dashboard.enabled": True,
        "metrics.port": 9090,
        "metrics.enabled": True,
        "retention.logs_days": 30,
        "retention.sessions_days": 90,
    }

    # -- cache -----------------------------------------------------------------
    def _dirty_set(self) -> set:
        if not hasattr(_dirty, "databases"):
            _dirty.databases = weakref.WeakSet()
        return _dirty.databases

    def _stored(self) -> dict:
        """{key: (value, category, description)} of every stored setting."""
        database = self.database
        uncommitted = database in self._dirty_set()
        if uncommitted and not database.in_transaction():
            self._dirty_set().discard(database)
            uncommitted = False
        if not uncommitted:
            rows = _cache.get(database)
            if rows is not None:
                return rows
        generation = _cache.generation()
        query = self._select().select(Setting.key, Setting.value, Setting.category,
                                      Setting.description).tuples()
        rows = {key: (value, category, description)
                for key, value, category, description in self._list(query)}
        if not uncommitted:
            _cache.put(database, rows, generation)
        return rows

    def _changed(self) -> None:
        # Called after each write: this thread reads past the cache until commit/rollback.
        self._dirty_set().add(self.database)
        _cache.clear(self.database)

    def _transaction_ended(self) -> None:
        # Commit: others must now see the new values. Rollback: forget what we read.
        database = self.database
        if database in self._dirty_set():
            _cache.clear(database)
            if not database.in_transaction():
                self._dirty_set().discard(database)

    # -- reading -----------------------------------------------------------------
    def get_value(self, key: str, default=None):
        """The stored value of ``key``; else ``default``; else the built-in default."""
        stored = self._stored().get(key)
        if stored is not None and stored[0] is not None:
            return stored[0]
        return default if default is not None else self.DEFAULTS.get(key)

    def get_by_category(self, category: str) -> dict:
        """{key: value} of the stored settings in ``category``."""
        return {key: value for key, (value, cat, _desc) in sorted(self._stored().items())
                if cat == category}

    def get_all_settings(self) -> dict:
        """Every default, overridden by every stored value, sorted by key."""
        merged = dict(self.DEFAULTS)
        merged.update({key: value for key, (value, _c, _d) in self._stored().items()})
        return dict(sorted(merged.items()))

    def export_yaml(self) -> str:
        """All settings (defaults included) as a readable YAML mapping."""
        return yaml.safe_dump(self.get_all_settings(), default_flow_style=False,
                              sort_keys=True, allow_unicode=True)

    # -- writing -----------------------------------------------------------------
    def set_value(self, key: str, value, description: str | None = None,
                  category: str | None = None) -> Setting:
        """Store ``value`` under ``key``; a new key's category defaults to its prefix."""
        self._check(key, value)
        setting = self.get_by_id(key)
        if setting is None:
            setting = Setting(key=key, value=value, description=description,
                              category=category or _category_of(key))
            with self._write(key):
                setting.save(force_insert=True)
        else:
            setting.value = value
            if description is not None:
                setting.description = description
            if category is not None:
                setting.category = category
            with self._write(key):
                setting.save()
        self._changed()
        self._emit(self._event("UPDATED"), key,
                   {"value": value, "category": setting.category})
        return setting

    def import_yaml(self, yaml_str: str) -> int:
        """Set every key of a YAML mapping (as written by export_yaml); returns the count."""
        try:
            data = yaml.safe_load(yaml_str)
        except yaml.YAMLError as exc:
            raise ValidationError(f"settings YAML cannot be parsed: {exc}") from None
        if data is None:
            return 0
        if not isinstance(data, dict):
            raise ValidationError(
                "settings YAML must be a mapping of key: value lines, "
                f"not a {type(data).__name__}"
            )
        for key, value in data.items():
            self._check(key, value)
        for key, value in data.items():
            self.set_value(key, value)
        return len(data)

    def reset_to_defaults(self, category: str | None = None) -> int:
        """Delete stored settings (of ``category``) so defaults apply; returns the count."""
        query = self._select().select(Setting.key)
        if category is not None:
            query = query.where(Setting.category == category)
        keys = [row[0] for row in self._list(query.tuples())]
        if not keys:
            return 0
        with self._write():
            self.model.delete().where(Setting.key.in_(keys)).execute()
        self._changed()
        for key in keys:
            self._emit(self._event("UPDATED"), key,
                       {"value": self.DEFAULTS.get(key), "reset": True})
        return len(keys)

    # The generic writers must also clear the cache.
    def create(self, obj=None, **fields):
        obj = super().create(obj, **fields)
        self._changed()
        return obj

    def create_all(self, objs) -> list:
        objs = super().create_all(objs)
        self._changed()
        return objs

    def update(self, obj):
        obj = super().update(obj)
        self._changed()
        return obj

    def delete_by_id(self, id) -> bool:
        deleted = super().delete_by_id(id)
        self._changed()
        return deleted

    def _check(self, key, value) -> None:
        if not isinstance(key, str) or not key.strip() or len(key) > 128:
            raise ValidationError(
                f"a setting key must be a non-empty string of at most 128 characters; got {key!r}"
            )
        default = self.DEFAULTS.get(key)
        if default is None or value is None:
            return
        expected = type(default)
        ok = isinstance(value, bool) if expected is bool else (
            isinstance(value, expected) and not isinstance(value, bool))
        if not ok:
            raise ValidationError(
                f"setting {key!r} must be a {expected.__name__} like its default "
                f"{default!r}; got {value!r}"
            )


SettingRepository = SettingsRepository
