"""cardlink_lite: the data store of a SIM/UICC over-the-air test bench, built on Peewee.

Every public name is served by the module that defines it, imported on first use: ``import
cardlink_lite`` (and so the CLI's ``--version`` and the idle pytest plugin) loads neither
Peewee nor a database driver.
"""

import importlib

__version__ = "0.1.0"

# Public name -> the module that defines it.
_LAZY = {
    "DatabaseConfig": "config",
    "DatabaseManager": "manager",
    "database_proxy": "db",
    "get_manager": "db",
    "init_database": "manager",
    "downgrade": "migrations",
    "get_current_revision": "migrations",
    "get_pending_revisions": "migrations",
    "run_migrations": "migrations",
    "ConfigurationError": "errors",
    "ConnectionError": "errors",
    "DatabaseError": "errors",
    "EncryptionError": "errors",
    "IntegrityError": "errors",
    "MigrationError": "errors",
    "NotFoundError": "errors",
    "SchemaVersionMismatch": "errors",
    "ValidationError": "errors",
    "CardProfile": "models",
    "CardType": "models",
    "CommDirection": "models",
    "CommLog": "models",
    "Device": "models",
    "DeviceType": "models",
    "OTASession": "models",
    "SessionStatus": "models",
    "Setting": "models",
    "TestResult": "models",
    "TestStatus": "models",
    "UnitOfWork": "unit_of_work",
    "record_session": "recording",
    "BaseRepository": "repositories",
    "Page": "repositories",
    "DeviceRepository": "repositories",
    "CardRepository": "repositories",
    "SessionRepository": "repositories",
    "LogRepository": "repositories",
    "TestRepository": "repositories",
    "SettingsRepository": "repositories",
    "SettingRepository": "repositories",
    "get_emitter": "events",
    "EventType": "events",
    "DatabaseEvent": "events",
    "DatabaseEventEmitter": "events",
    "DataExporter": "transfer",
    "DataImporter": "transfer",
    "ExportFormat": "transfer",
    "ConflictMode": "transfer",
    "ImportResult": "transfer",
    "ApduLogWriter": "apdu",
    "apdu_logger": "apdu",
    "generate_key": "crypto",
    "describe_status_word": "status_words",
    "TraceSource": "models",
    "ImportSummary": "traces",
    "TraceFormatError": "traces",
    "import_trace": "traces",
}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cardlink_lite' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))

__all__ = [
    "ApduLogWriter",
    "BaseRepository",
    "CardProfile",
    "CardRepository",
    "CardType",
    "CommDirection",
    "CommLog",
    "ConfigurationError",
    "ConflictMode",
    "ConnectionError",
    "DataExporter",
    "DataImporter",
    "DatabaseConfig",
    "DatabaseError",
    "DatabaseEvent",
    "DatabaseEventEmitter",
    "DatabaseManager",
    "Device",
    "DeviceRepository",
    "DeviceType",
    "EncryptionError",
    "EventType",
    "ExportFormat",
    "ImportResult",
    "ImportSummary",
    "IntegrityError",
    "LogRepository",
    "MigrationError",
    "NotFoundError",
    "OTASession",
    "Page",
    "SchemaVersionMismatch",
    "SessionRepository",
    "SessionStatus",
    "Setting",
    "SettingRepository",
    "SettingsRepository",
    "TestRepository",
    "TestResult",
    "TestStatus",
    "TraceFormatError",
    "TraceSource",
    "UnitOfWork",
    "ValidationError",
    "apdu_logger",
    "database_proxy",
    "describe_status_word",
    "downgrade",
    "generate_key",
    "get_current_revision",
    "get_emitter",
    "get_manager",
    "get_pending_revisions",
    "import_trace",
    "init_database",
    "record_session",
    "run_migrations",
]
