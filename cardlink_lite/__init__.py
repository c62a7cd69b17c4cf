"""cardlink_lite: the data store of a SIM/UICC over-the-air test bench, built on Peewee."""

from .apdu import ApduLogWriter, apdu_logger
from .config import DatabaseConfig
from .crypto import generate_key
from .db import database_proxy, get_manager
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
from .events import DatabaseEvent, DatabaseEventEmitter, EventType, get_emitter
from .manager import DatabaseManager, init_database
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
from .recording import record_session
from .repositories import (
    BaseRepository,
    CardRepository,
    DeviceRepository,
    LogRepository,
    Page,
    SessionRepository,
    SettingRepository,
    SettingsRepository,
    TestRepository,
)
from .status_words import describe_status_word
from .transfer import ConflictMode, DataExporter, DataImporter, ExportFormat, ImportResult
from .unit_of_work import UnitOfWork

__version__ = "0.1.0"

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
