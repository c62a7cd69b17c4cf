"""Key/value settings with built-in defaults and YAML round-trips (no cache: reads are exact)."""

from __future__ import annotations

from ..errors import ValidationError, quote
from ..models import Setting
from .base import BaseRepository, Statement, check_values

__all__ = ["SettingRepository", "SettingsRepository"]


_VALUE = Statement(lambda key: Setting.select(Setting.value).where(Setting.key == key))
_VALUE_FIELD = Setting.value


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

    def _stored(self) -> dict:
        """{key: (value, category, description)} of every stored setting."""
        query = self._select().select(Setting.key, Setting.value, Setting.category,
                                      Setting.description).tuples()
        return {key: (value, category, description)
                for key, value, category, description in self._list(query)}

    # -- reading -----------------------------------------------------------------
    def get_value(self, key: str, default=None):
        """The stored value of ``key``; else ``default``; else the built-in default."""
        # One indexed read: always what is committed (or written in this unit of work).
        rows = self._fetch(_VALUE, key)
        if rows and rows[0][0] is not None:
            return _VALUE_FIELD.python_value(rows[0][0])
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
        import yaml  # third-party and only needed here: keeps opening a store fast

        return yaml.safe_dump(self.get_all_settings(), default_flow_style=False,
                              sort_keys=True, allow_unicode=True)

    # -- writing -----------------------------------------------------------------
    def set_value(self, key: str, value, description: str | None = None,
                  category: str | None = None) -> Setting:
        """Store ``value`` under ``key``; a new key's category defaults to its prefix."""
        self._check(key, value)
        check_values(Setting, {"value": value, "description": description, "category": category})
        setting = self.get_by_id(key)
        new = setting is None
        if new:
            setting = Setting(key=key, description=description,
                              category=category or _category_of(key))
        else:
            if description is not None:
                setting.description = description
            if category is not None:
                setting.category = category
        setting.value = value
        with self._write(key):
            setting.save(force_insert=new)
        self._emit(self._event("UPDATED"), key,
                   {"value": value, "category": setting.category})
        return setting

    def import_yaml(self, yaml_str: str) -> int:
        """Set every key of a YAML mapping (as written by export_yaml); returns the count."""
        import yaml

        try:
            data = yaml.safe_load(yaml_str)
        except yaml.YAMLError as exc:
            raise ValidationError(f"settings YAML cannot be parsed: {exc}") from None
        if data is None:
            return 0
        if not isinstance(data, dict):
            raise ValidationError("settings YAML must be a mapping of key: value lines, "
                                  f"not a {type(data).__name__}")
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
        for key in keys:
            self._emit(self._event("UPDATED"), key,
                       {"value": self.DEFAULTS.get(key), "reset": True})
        return len(keys)

    def _check(self, key, value) -> None:
        if not isinstance(key, str) or not key.strip() or len(key) > 128:
            raise ValidationError(f"a setting key must be a non-empty string of at most 128 "
                                  f"characters; got {quote(key)}")
        default = self.DEFAULTS.get(key)
        if default is None or value is None:
            return
        expected = type(default)
        ok = isinstance(value, bool) if expected is bool else (
            isinstance(value, expected) and not isinstance(value, bool))
        if not ok:
            raise ValidationError(f"setting {key!r} must be a {expected.__name__} like its "
                                  f"default {default!r}; got {quote(value)}")


SettingRepository = SettingsRepository
