"""The six tables of the store and their enums. Every model uses the one DatabaseProxy."""

from __future__ import annotations

import enum

import peewee

from ._peewee import ROW_FLAG, field_values
from .db import database_proxy
from .errors import ValidationError
from .fields import (
    ApduTextField,
    BooleanField,
    CharField,
    EncryptedBlobField,
    EnumField,
    ExactCharField,
    ExactForeignKeyField,
    JSONField,
    TextField,
    UTCDateTimeField,
    UUIDStrField,
    new_uuid,
    utc_now,
)

__all__ = [
    "ALL_MODELS",
    "AdminScriptStatus",
    "BaseModel",
    "CardProfile",
    "CardType",
    "CommDirection",
    "CommLog",
    "Device",
    "DeviceType",
    "OTASession",
    "PoRStatus",
    "ReplayCounter",
    "RunEnding",
    "SessionStatus",
    "SessionTrigger",
    "Setting",
    "TestResult",
    "TestRun",
    "TestStatus",
    "TraceSource",
]


class _ValueEnum(str, enum.Enum):
    """A str enum that prints as its value (``f"{DeviceType.PHONE}"`` gives ``phone``)."""

    def __str__(self) -> str:
        return str(self.value)


class DeviceType(_ValueEnum):
    PHONE = "phone"
    MODEM = "modem"


class CardType(_ValueEnum):
    SIM = "SIM"
    USIM = "USIM"
    ISIM = "ISIM"
    UICC = "UICC"
    EUICC = "EUICC"


class SessionStatus(_ValueEnum):
    PENDING = "pending"
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMEOUT = "timeout"


class TestStatus(_ValueEnum):
    __test__ = False  # not a pytest test class

    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"
    ERROR = "error"


class RunEnding(_ValueEnum):
    """How a test run ended (``TestRun.ending``)."""

    COMPLETE = "complete"                    # every selected test ran
    PARTIAL = "partial"                      # ran to the end on a selection (--lf, -k, -m, ids)
    STOPPED = "stopped"                      # -x / --maxfail / pytest.exit()
    INTERRUPTED = "interrupted"              # Ctrl-C
    COLLECTION_ERRORS = "collection-errors"  # some tests could not be collected
    UNFINISHED = "unfinished"                # still running, or the process died
    UNKNOWN = "unknown"                      # recorded before runs were records (backfilled)


class CommDirection(_ValueEnum):
    """The kind of an APDU log row: a command, its response, or a card event."""

    COMMAND = "command"
    RESPONSE = "response"
    ATR = "atr"  # the card's Answer To Reset
    RESET = "reset"  # a reset seen without an ATR


class SessionTrigger(_ValueEnum):
    """What started an OTA session."""

    SMS_PP = "sms-pp"
    PUSH_SMS = "push-sms"
    BIP = "bip"
    MANUAL = "manual"
    SCHEDULED = "scheduled"
    OTHER = "other"


class AdminScriptStatus(_ValueEnum):
    """The ``X-Admin-Script-Status`` an SCP81 admin agent reports (GlobalPlatform Amd B)."""

    OK = "ok"
    UNKNOWN_APPLICATION = "unknown-application"
    NOT_A_SECURITY_DOMAIN = "not-a-security-domain"
    SECURITY_ERROR = "security-error"


class PoRStatus(_ValueEnum):
    """Response status of an SCP80 Proof of Receipt (ETSI TS 102 225, codes 00-0C)."""

    POR_OK = "por-ok"
    RC_CC_DS_FAILED = "rc-cc-ds-failed"
    COUNTER_LOW = "counter-low"
    COUNTER_HIGH = "counter-high"
    COUNTER_BLOCKED = "counter-blocked"
    CIPHERING_ERROR = "ciphering-error"
    UNDEFINED_SECURITY_ERROR = "undefined-security-error"
    INSUFFICIENT_MEMORY = "insufficient-memory"
    MORE_TIME = "more-time"
    TAR_UNKNOWN = "tar-unknown"
    INSUFFICIENT_SECURITY_LEVEL = "insufficient-security-level"
    RESPONSE_VIA_SMS_SUBMIT = "response-via-sms-submit"
    RESPONSE_VIA_PROCESS_DATA = "response-via-process-data"


def _alias(name: str) -> property:
    """Another spelling (the guide's) of field ``name``, for reading and writing."""
    return property(lambda self: getattr(self, name),
                    lambda self, value: setattr(self, name, value))


class BaseModel(peewee.Model):
    """Refuses unknown keyword arguments and keeps ``updated_at`` current on save."""

    # Other spellings (the guide's) for a field's name: alias -> field name.
    aliases: dict[str, str] = {}
    # Fields never shown by repr().
    secret_fields: frozenset[str] = frozenset()

    # True once the object has a row: built from a fetched row, or saved.
    is_stored = False

    class Meta:
        database = database_proxy
        legacy_table_names = False  # index names start with the table's name
        # The table is the plural of the snake-case class name: OTASession -> ota_sessions.
        table_function = staticmethod(lambda model: f"{peewee.make_snake_case(model.__name__)}s")

    def __init__(self, *args, **kwargs):
        # Rows Peewee builds from a fetch carry its own field names, already converted.
        if kwargs.get(ROW_FLAG):
            self.is_stored = True
        else:
            kwargs = self._check_kwargs(kwargs)
        super().__init__(*args, **kwargs)

    @classmethod
    def field_for(cls, name: str) -> peewee.Field | None:
        """The field ``name`` stands for: its name, alias, column or foreign-key id name."""
        name = cls.aliases.get(name, name)
        meta = cls._meta
        return meta.combined.get(name) or next(
            (f for f in meta.refs if f.object_id_name == name), None)

    @classmethod
    def _check_kwargs(cls, kwargs: dict) -> dict:
        out = {}
        for key, value in kwargs.items():
            field = cls.field_for(key)
            if field is None:
                known = sorted(set(cls._meta.fields) | set(cls.aliases))
                raise ValidationError(
                    f"{cls.__name__} has no field {key!r}; known fields: {', '.join(known)}"
                )
            if isinstance(field, EnumField):
                value = field.coerce_member(value)
            out[cls.aliases.get(key, key)] = value
        return out

    def save(self, force_insert: bool = False, only=None):
        if "updated_at" in self._meta.fields:
            self.updated_at = utc_now()
            if only is not None:
                only = [*only, type(self).updated_at]
        rows = super().save(force_insert=force_insert, only=only)
        if rows:
            self.is_stored = True
        return rows

    _repr_fields: frozenset[str] = frozenset()

    def __str__(self) -> str:
        # Peewee's repr() is "<Model: str(self)>"; secrets show only as set/unset.
        shown = []
        data = field_values(self)
        for name in self._meta.sorted_field_names:
            if name in self.secret_fields:
                shown.append(f"{name}={'<set>' if data.get(name) else None}")
            elif name in self._repr_fields and name in data:
                shown.append(f"{name}={data[name]!r}")
        return " ".join(shown)


class _Timestamped(BaseModel):
    created_at = UTCDateTimeField(default=utc_now)
    updated_at = UTCDateTimeField(default=utc_now)


class Device(_Timestamped):
    id = ExactCharField(max_length=64, primary_key=True)
    name = CharField(max_length=128, null=True)
    device_type = EnumField(DeviceType)
    manufacturer = CharField(max_length=64, null=True)
    model = CharField(max_length=64, null=True)
    firmware_version = CharField(max_length=64, null=True)
    imei = CharField(max_length=20, null=True)
    imsi = CharField(max_length=20, null=True)
    iccid = ExactCharField(max_length=22, null=True)
    connection_settings = JSONField(null=True)
    last_seen = UTCDateTimeField(null=True)
    is_active = BooleanField(default=True)
    notes = TextField(null=True)

    _repr_fields = frozenset({"id", "device_type", "name", "model"})


class CardProfile(_Timestamped):
    iccid = ExactCharField(max_length=22, primary_key=True)
    imsi = CharField(max_length=20, null=True)
    card_type = EnumField(CardType, default=CardType.UICC)
    atr = CharField(max_length=128, null=True)
    psk_identity = ExactCharField(max_length=128, null=True)
    psk_key_encrypted = EncryptedBlobField(null=True)
    admin_url = CharField(max_length=255, null=True)
    trigger_config = JSONField(null=True)
    bip_config = JSONField(null=True)
    security_domains = JSONField(null=True)
    notes = TextField(null=True)

    secret_fields = frozenset({"psk_key_encrypted"})
    _repr_fields = frozenset({"iccid", "card_type", "imsi", "psk_identity"})

    @property
    def has_psk(self) -> bool:
        return bool(self.psk_key_encrypted)


class OTASession(_Timestamped):
    id = UUIDStrField(primary_key=True, default=new_uuid)
    device = ExactForeignKeyField(
        Device, column_name="device_id", null=True, on_delete="SET NULL", backref="sessions",
        index=False,
    )
    card = ExactForeignKeyField(
        CardProfile, column_name="card_iccid", object_id_name="card_iccid", null=True,
        on_delete="SET NULL", backref="sessions", index=False,
    )
    session_type = CharField(max_length=32, null=True)
    status = EnumField(SessionStatus, default=SessionStatus.PENDING)
    started_at = UTCDateTimeField(null=True)
    ended_at = UTCDateTimeField(null=True)
    duration_ms = peewee.BigIntegerField(null=True)  # BIGINT since schema 0007
    tls_cipher_suite = CharField(max_length=64, null=True)
    tls_psk_identity = ExactCharField(max_length=128, null=True)
    error_code = CharField(max_length=32, null=True)
    error_message = TextField(null=True)
    # Schema 0003: how the session started and what the OTA layers said.
    trigger = EnumField(SessionTrigger, max_length=16, null=True)
    tls_version = CharField(max_length=16, null=True)
    tls_handshake_ms = peewee.DoubleField(null=True)
    tls_alert_code = peewee.SmallIntegerField(null=True)
    tls_alert = CharField(max_length=64, null=True)
    admin_script_status = EnumField(AdminScriptStatus, max_length=32, null=True)
    tar = CharField(max_length=6, null=True)  # SCP80 TAR, 3 bytes hex
    spi = CharField(max_length=4, null=True)  # 2 bytes hex
    kic = CharField(max_length=2, null=True)  # 1 byte hex
    kid = CharField(max_length=2, null=True)  # 1 byte hex
    counter = peewee.BigIntegerField(null=True)  # the 5-byte replay counter used
    por_status = EnumField(PoRStatus, max_length=32, null=True)

    aliases = {"cipher_suite": "tls_cipher_suite", "psk_identity": "tls_psk_identity"}
    _repr_fields = frozenset({"id", "status", "session_type"})

    cipher_suite = _alias("tls_cipher_suite")
    psk_identity = _alias("tls_psk_identity")


class TraceSource(BaseModel):
    """A capture or log file imported into the store (schema 0003)."""

    id = peewee.AutoField()
    path = CharField(max_length=512)
    format = CharField(max_length=32)
    sha256 = CharField(max_length=64, unique=True)
    size_bytes = peewee.BigIntegerField(null=True)
    imported_at = UTCDateTimeField(default=utc_now)
    summary = JSONField(null=True)

    _repr_fields = frozenset({"id", "path", "format"})


class CommLog(BaseModel):
    id = peewee.BigAutoField()
    session = peewee.ForeignKeyField(
        OTASession, column_name="session_id", on_delete="CASCADE", backref="comm_logs",
        index=False,
    )
    timestamp = UTCDateTimeField(default=utc_now)
    latency_ms = peewee.DoubleField(null=True)
    direction = EnumField(CommDirection, max_length=10)
    raw_data = ApduTextField()
    decoded_data = ApduTextField(null=True)
    status_word = CharField(max_length=4, null=True)
    status_message = CharField(max_length=128, null=True)
    # Schema 0003: logical channel (from CLA), instruction byte of a command, origin file.
    channel = peewee.SmallIntegerField(null=True)
    ins = peewee.SmallIntegerField(null=True)
    # The id of a TraceSource row; no foreign-key constraint, so APDU inserts stay cheap and
    # a trace's rows can be read without it.
    source_id = peewee.IntegerField(null=True)

    _repr_fields = frozenset({"id", "direction", "raw_data", "status_word"})


class TestResult(_Timestamped):
    __test__ = False  # not a pytest test class

    id = UUIDStrField(primary_key=True, default=new_uuid)
    run_id = ExactCharField(max_length=64)
    suite_name = ExactCharField(max_length=128)
    test_name = ExactCharField(max_length=512)
    device = ExactForeignKeyField(
        Device, column_name="device_id", null=True, on_delete="SET NULL",
        backref="test_results", index=False,
    )
    card = ExactForeignKeyField(
        CardProfile, column_name="card_iccid", object_id_name="card_iccid", null=True,
        on_delete="SET NULL", backref="test_results", index=False,
    )
    started_at = UTCDateTimeField(default=utc_now)
    ended_at = UTCDateTimeField(null=True)
    duration_ms = peewee.BigIntegerField(null=True)  # BIGINT since schema 0007
    status = EnumField(TestStatus)
    error_message = TextField(null=True)
    assertions = JSONField(null=True)
    metadata = JSONField(null=True)
    # Attempts it took (pytest-rerunfailures); a pass after a failed attempt is flaky.
    attempts = peewee.SmallIntegerField(null=True)
    # The OTA session the test drove (record_session inside the test, or cardlink_result).
    session = peewee.ForeignKeyField(
        OTASession, column_name="session_id", null=True, on_delete="SET NULL",
        backref="test_results", index=False,
    )

    _repr_fields = frozenset({"id", "run_id", "test_name", "status"})


class ReplayCounter(BaseModel):
    """The last SCP80 counter used per (card, keyset, TAR) (schema 0003)."""

    id = peewee.AutoField()
    card = ExactForeignKeyField(
        CardProfile, column_name="card_iccid", object_id_name="card_iccid",
        on_delete="CASCADE", backref="replay_counters", index=False,
    )
    # Compared exactly (schema 0007): "KIC=01" is another keyset than "kic=01" everywhere.
    keyset = ExactCharField(max_length=32)  # e.g. "kic=12,kid=12" or a key version
    tar = ExactCharField(max_length=6)
    counter = peewee.BigIntegerField(default=0)
    updated_at = UTCDateTimeField(default=utc_now)

    _repr_fields = frozenset({"card", "keyset", "tar", "counter"})


class TestRun(_Timestamped):
    """One test run as a whole: its results share ``TestResult.run_id == TestRun.id``."""

    __test__ = False  # not a pytest test class

    id = ExactCharField(max_length=64, primary_key=True)
    suite_name = ExactCharField(max_length=128)
    started_at = UTCDateTimeField(default=utc_now)
    finished_at = UTCDateTimeField(null=True)
    ending = EnumField(RunEnding, default=RunEnding.UNFINISHED)
    exit_status = peewee.IntegerField(null=True)
    selection = CharField(max_length=255, null=True)  # what narrowed a partial run (-k, --lf)
    total = peewee.IntegerField(default=0)
    passed = peewee.IntegerField(default=0)
    failed = peewee.IntegerField(default=0)
    skipped = peewee.IntegerField(default=0)
    error = peewee.IntegerField(default=0)
    context = JSONField(null=True)  # host, python, pytest, git commit/branch, xdist workers
    labels = JSONField(null=True)  # what the user said it ran against (device, card, ...)

    _repr_fields = frozenset({"id", "suite_name", "ending"})


class Setting(_Timestamped):
    key = ExactCharField(max_length=128, primary_key=True)
    value = JSONField(null=True)
    description = CharField(max_length=256, null=True)
    category = CharField(max_length=64, default="general")

    _repr_fields = frozenset({"key", "value", "category"})


# The indexes the design names, under the design's names.
_INDEXES = {
    Device: [("idx_device_type", "device_type"), ("idx_device_iccid", "iccid"),
             ("idx_device_last_seen", "last_seen")],
    CardProfile: [("idx_card_type", "card_type"), ("idx_card_psk_identity", "psk_identity")],
    OTASession: [("idx_session_device", "device"), ("idx_session_card", "card"),
                 ("idx_session_status", "status"), ("idx_session_created", "created_at"),
                 ("idx_session_trigger", "trigger"), ("idx_session_por_status", "por_status")],
    CommLog: [("idx_log_session", "session"), ("idx_log_timestamp", "timestamp"),
              ("idx_log_direction", "direction"),
              ("idx_log_session_time", ("session", "timestamp")),  # a session's trace, in order
              ("idx_log_ins", "ins"), ("idx_log_source", "source_id")],
    TestResult: [("idx_test_run", ("run_id", "test_name")),  # a run; tests only one run ran
                 ("idx_test_suite", "suite_name"),
                 ("idx_test_status", "status"), ("idx_test_created", "created_at"),
                 ("idx_test_session", "session"),
                 # a run's failures, passes after a rerun and counts, from the index alone
                 ("idx_test_run_outcome", ("run_id", "status", "attempts"))],
    TestRun: [("idx_run_suite_started", ("suite_name", "started_at"))],
    Setting: [("idx_setting_category", "category")],
    ReplayCounter: [("idx_counter_key", ("card", "keyset", "tar"))],
}
_UNIQUE_INDEXES = {"idx_counter_key"}
for _model, _specs in _INDEXES.items():
    for _name, _field in _specs:
        _columns = _field if isinstance(_field, tuple) else (_field,)
        _model.add_index(_model.index(*(getattr(_model, c) for c in _columns), name=_name,
                                      unique=_name in _UNIQUE_INDEXES))

ALL_MODELS = [Device, CardProfile, OTASession, TraceSource, CommLog, TestResult, Setting,
              ReplayCounter, TestRun]
EXPECTED_INDEXES = {m._meta.table_name: [n for n, _ in s] for m, s in _INDEXES.items()}
