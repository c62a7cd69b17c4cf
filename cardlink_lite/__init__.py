"""cardlink_lite: the data store of a SIM/UICC over-the-air test bench, built on Peewee."""

from .config import DatabaseConfig
from .db import DatabaseManager, database_proxy, get_manager, init_database
from .errors import (
    ConfigurationError,
    ConnectionError,
    DatabaseError,
    EncryptionError,
    IntegrityError,
    MigrationError,
    NotFoundError,
    SchemaVersionMismatch,
    ValidationError,
)
from .migrations import downgrade, get_current_revision, get_pending_revisions, run_migrations
from .models import (
    CardProfile,
    CardType,
    CommDirection,
    CommLog,
    Device,
    DeviceType,
    OTASession,
    SessionStatus,
    Setting,
    TestResult,
    TestStatus,
)

__version__ = "0.1.0"

# Names served by modules that are imported on first use (keeps ``import
# cardlink_lite`` light, and lets the CLI and plugin load only what they need).
_LAZY = {
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
}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cardlink_lite' has no attribute {name!r}")
    import importlib

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
    "init_database",
    "record_session",
    "run_migrations",
]
