"""cardlink_lite: the data store of a SIM/UICC over-the-air test bench, built on Peewee.
Public names load their module on first use, so ``import cardlink_lite`` (the CLI's
``--version``, the idle pytest plugin) loads neither Peewee nor a database driver."""

import importlib

__version__ = "0.1.0"

# The module that defines them -> public names.
_PUBLIC = {
    "apdu": ("ApduLogWriter", "apdu_logger"),
    "config": ("DatabaseConfig",),
    "counters": ("next_counter", "peek_counter", "set_counter"),
    "crypto": ("generate_key",),
    "db": ("database_proxy", "get_manager"),
    "errors": ("ConfigurationError", "ConnectionError", "DatabaseError", "EncryptionError",
               "IntegrityError", "MigrationError", "NotFoundError", "SchemaVersionMismatch",
               "ValidationError"),
    "events": ("DatabaseEvent", "DatabaseEventEmitter", "EventType", "get_emitter"),
    "manager": ("DatabaseManager", "init_database"),
    "migrations": ("downgrade", "get_current_revision", "get_pending_revisions",
                   "run_migrations"),
    "models": ("AdminScriptStatus", "CardProfile", "CardType", "CommDirection", "CommLog",
               "Device", "DeviceType", "OTASession", "PoRStatus", "ReplayCounter", "RunEnding",
               "SessionStatus", "SessionTrigger", "Setting", "TestResult", "TestRun",
               "TestStatus", "TraceSource"),
    "psk_server": ("PskKeyLookup", "accept_psk_session", "psk_key_lookup", "psk_server_context"),
    "recording": ("record_session",),
    "repositories": ("BaseRepository", "CardRepository", "CounterRepository",
                     "DeviceRepository", "LogRepository", "Page", "SessionRepository",
                     "SettingRepository", "SettingsRepository", "TestRepository"),
    "status_words": ("describe_status_word",),
    "traces": ("ImportSummary", "TraceFormatError", "import_trace"),
    "transfer": ("ConflictMode", "DataExporter", "DataImporter", "ExportFormat", "ImportResult"),
    "unit_of_work": ("UnitOfWork",),
}
_LAZY = {name: module for module, names in _PUBLIC.items() for name in names}

__all__ = sorted(_LAZY)


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cardlink_lite' has no attribute {name!r}")
    # Loading ``manager`` registers the default manager (DATABASE_URL, ...) that every call
    # with an optional manager falls back to (db.get_manager); db cannot import it: a cycle.
    importlib.import_module(".manager", __name__)
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
