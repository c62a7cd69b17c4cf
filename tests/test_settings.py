"""SettingsRepository: default fallback, categories, YAML round-trips, reset and caching."""

from __future__ import annotations

import threading

import pytest
import yaml

from cardlink_lite import Device, Setting, UnitOfWork, ValidationError
from cardlink_lite.repositories import SettingRepository, SettingsRepository
from tests.repository_helpers import committed_ids

pytest_plugins = ["tests.repository_fixtures"]


def test_defaults_on_an_empty_table(manager):
    with UnitOfWork(manager) as uow:
        assert uow.settings.get_value("server.port") == 8443
        assert uow.settings.get_value("unknown.key") is None
        assert uow.settings.get_value("unknown.key", default=10) == 10
        assert uow.settings.get_all_settings() == dict(sorted(SettingsRepository.DEFAULTS.items()))
        assert uow.settings.get_by_category("retention") == {}
        assert uow.settings.reset_to_defaults() == 0
    assert SettingRepository is SettingsRepository
    assert SettingsRepository.DEFAULTS["retention.logs_days"] == 30


def test_fallback_chain(manager):
    with UnitOfWork(manager) as uow:
        uow.settings.set_value("server.port", 9443)
        uow.settings.set_value("max_sessions_per_device", 3)
        uow.settings.set_value("nullable", None)
        assert uow.settings.get_value("server.port") == 9443             # stored
        assert uow.settings.get_value("server.port", default=1) == 9443  # stored beats argument
        assert uow.settings.get_value("max_sessions_per_device", default=10) == 3
        assert uow.settings.get_value("nullable", default=7) == 7         # NULL -> argument
        assert uow.settings.get_value("server.timeout", default=5) == 5   # argument beats default
        assert uow.settings.get_value("server.timeout") == 60             # built-in default


def test_set_value_creates_then_updates(manager, events):
    with UnitOfWork(manager) as uow:
        created = uow.settings.set_value(key="log_retention_days", value=90,
                                         description="Days to retain APDU logs",
                                         category="retention")
        assert isinstance(created, Setting) and created.category == "retention"
        uow.settings.set_value("log_retention_days", 45)       # keeps description/category
        stored = uow.settings.get("log_retention_days")
        assert (stored.value, stored.description, stored.category) == (
            45, "Days to retain APDU logs", "retention")
        assert uow.settings.set_value("dashboard.theme", "dark").category == "dashboard"
        assert uow.settings.set_value("plain", {"a": [1, 2]}).category == "general"
        assert uow.settings.get_value("plain") == {"a": [1, 2]}
    assert events.types() == ["setting_updated"] * 4
    assert events.events[1].entity_id == "log_retention_days"
    assert events.events[1].data == {"value": 45, "category": "retention"}


def test_set_value_validation(manager):
    with UnitOfWork(manager) as uow:
        for key in ("", "   ", None, "k" * 129):
            with pytest.raises(ValidationError, match="setting key"):
                uow.settings.set_value(key, 1)
        with pytest.raises(ValidationError, match="'server.port' must be a int"):
            uow.settings.set_value("server.port", "8443")
        with pytest.raises(ValidationError, match="must be a bool"):
            uow.settings.set_value("dashboard.enabled", 1)
        with pytest.raises(ValidationError, match="JSON"):
            uow.settings.set_value("blob", object())
        assert uow.settings.count() == 0


def test_get_by_category_and_all_settings(manager):
    with UnitOfWork(manager) as uow:
        uow.settings.set_value("retention.logs_days", 7)
        uow.settings.set_value("custom", "x", category="retention")
        uow.settings.set_value("other", 1)
        assert uow.settings.get_by_category("retention") == {"custom": "x",
                                                             "retention.logs_days": 7}
        merged = uow.settings.get_all_settings()
        assert merged["retention.logs_days"] == 7 and merged["server.port"] == 8443
        assert merged["other"] == 1 and list(merged) == sorted(merged)


def test_yaml_round_trip(manager, tmp_path):
    with UnitOfWork(manager) as uow:
        uow.settings.set_value("retention.logs_days", 14)
        uow.settings.set_value("lab.name", "Bench 3 – Zürich")
        uow.settings.set_value("lab.tags", ["ota", "bip"])
        text = uow.settings.export_yaml()
        assert "retention.logs_days: 14" in text and "Zürich" in text
        assert yaml.safe_load(text) == uow.settings.get_all_settings()
    with UnitOfWork(manager) as uow:
        uow.settings.reset_to_defaults()
        assert uow.settings.import_yaml(text) == len(yaml.safe_load(text))
        assert uow.settings.get_value("lab.tags") == ["ota", "bip"]
        assert uow.settings.export_yaml() == text


def test_import_yaml_rejects_bad_documents(manager):
    with UnitOfWork(manager) as uow:
        assert uow.settings.import_yaml("") == 0
        with pytest.raises(ValidationError, match="mapping"):
            uow.settings.import_yaml("- a\n- b\n")
        with pytest.raises(ValidationError, match="cannot be parsed"):
            uow.settings.import_yaml("a: [1, 2\n")
        with pytest.raises(ValidationError, match="cannot be parsed"):   # safe_load only
            uow.settings.import_yaml("x: !!python/object/apply:os.system ['true']\n")
        # One invalid value: nothing of the document is applied.
        with pytest.raises(ValidationError, match="server.port"):
            uow.settings.import_yaml("a: 1\nserver.port: high\n")
        assert uow.settings.count() == 0


def test_reset_to_defaults(manager, events):
    with UnitOfWork(manager) as uow:
        uow.settings.set_value("retention.logs_days", 7)
        uow.settings.set_value("log_retention_days", 90, category="retention")
        uow.settings.set_value("server.port", 1)
    events.clear()
    with UnitOfWork(manager) as uow:
        assert uow.settings.reset_to_defaults(category="retention") == 2
        assert uow.settings.get_value("retention.logs_days") == 30
        assert uow.settings.get_value("server.port") == 1
        assert uow.settings.reset_to_defaults(category="nothing") == 0
        assert uow.settings.reset_to_defaults() == 1
        assert uow.settings.get_value("server.port") == 8443
    assert sorted(e.entity_id for e in events.events) == [
        "log_retention_days", "retention.logs_days", "server.port"]
    assert all(e.data["reset"] for e in events.events)


def test_every_read_is_exact_and_one_query(manager):
    with UnitOfWork(manager) as uow:
        uow.settings.set_value("a", 1)
    queries = []
    manager.database.query_hooks.append(lambda e: queries.append(e.sql))
    try:
        with UnitOfWork(manager) as uow:
            before = len(queries)
            for _ in range(5):
                assert uow.settings.get_value("a") == 1
            assert len(queries) == before + 5           # no cache: one read each
            with UnitOfWork(manager) as inner:          # a write in the same transaction
                inner.settings.set_value("a", 2)
            assert uow.settings.get_value("a") == 2
        with UnitOfWork(manager) as uow:
            assert uow.settings.get_value("a") == 2
    finally:
        manager.database.query_hooks.pop()


def test_rollback_forgets_an_uncommitted_value(manager):
    with UnitOfWork(manager) as uow:
        uow.settings.set_value("a", 1)
    with UnitOfWork(manager) as uow:
        uow.settings.set_value("a", 99)
        assert uow.settings.get_value("a") == 99      # own write visible in-transaction
        uow.rollback()
        assert uow.settings.get_value("a") == 1
    with UnitOfWork(manager) as uow:
        assert uow.settings.get_value("a") == 1 == uow.settings.get("a").value


@pytest.mark.parametrize("backend", ["mysql", "postgresql"], indirect=True)  # SQLite readers
def test_an_uncommitted_value_is_not_shared(manager):                       # wait on the lock
    with UnitOfWork(manager) as uow:
        uow.settings.set_value("a", 1)
    seen = []

    def reader():
        with UnitOfWork(manager) as other:
            seen.append(other.settings.get_value("a"))

    with UnitOfWork(manager) as uow:
        uow.settings.set_value("a", 50)
        uow.settings.get_value("a")
        thread = threading.Thread(target=reader)
        thread.start()
        thread.join()
        assert seen == [1]                            # the other thread saw the committed value
    with UnitOfWork(manager) as uow:
        assert uow.settings.get_value("a") == 50 == uow.settings.get("a").value


def test_rollback_in_the_middle(manager):
    with UnitOfWork(manager) as uow:
        uow.settings.set_value("keep", 1)
        uow.commit()
        uow.settings.set_value("drop", 2)
        uow.settings.reset_to_defaults()
        uow.rollback()
        assert uow.settings.get_value("keep") == 1 and uow.settings.get_value("drop") is None
    assert committed_ids(manager, Setting) == {"keep"}


def test_a_refused_set_value_leaves_the_unit_of_work_committable(manager):
    with UnitOfWork(manager) as uow:
        uow.settings.set_value("retention.logs_days", 30)
    with UnitOfWork(manager) as uow:
        uow.devices.create(Device(id="NEW-PHONE", device_type="phone"))
        with pytest.raises(ValidationError, match="description must be at most 256"):
            uow.settings.set_value("retention.logs_days", 60, description="d" * 300)
        with pytest.raises(ValidationError, match="category must be at most 64"):
            uow.settings.set_value("retention.logs_days", 60, category="c" * 65)
        uow.settings.set_value("retention.sessions_days", 120)
    assert committed_ids(manager) == {"NEW-PHONE"}
    with UnitOfWork(manager) as uow:
        assert uow.settings.get_value("retention.logs_days") == 30
        assert uow.settings.get_value("retention.sessions_days") == 120
        assert uow.settings.get_by_id("retention.logs_days").description is None


def test_errors_quote_only_a_prefix_of_a_long_key_or_value(manager):
    with UnitOfWork(manager) as uow:
        with pytest.raises(ValidationError) as caught:
            uow.settings.set_value("server.port", "8443" + "x" * 5000)
        assert str(caught.value) == (
            "setting 'server.port' must be a int like its default 8443; got "
            f"'8443{'x' * 36}'... (5,004 long)")
        with pytest.raises(ValidationError) as caught:
            uow.settings.set_value("k" * 3000, 1)
        assert str(caught.value).endswith(f"got '{'k' * 40}'... (3,000 long)")
        with pytest.raises(ValidationError) as caught:
            uow.settings.import_yaml("server.port: '" + "9" * 5000 + "'\n")
        assert len(str(caught.value)) < 150
