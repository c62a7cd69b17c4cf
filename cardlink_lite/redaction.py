"""Keep secrets out of log records: Peewee's DEBUG logger prints every bound parameter."""

from __future__ import annotations

import logging

__all__ = ["REDACTED", "install_sql_redaction", "redact_params"]

REDACTED = "<redacted>"
_FERNET_PREFIX = "gAAAAA"  # every Fernet token starts with version byte 0x80


def _is_secret(value) -> bool:
    # psycopg2 wraps BYTEA parameters in a Binary adapter that keeps the bytes in .adapted;
    # the only binary column holds encrypted PSKs.
    value = getattr(value, "adapted", value)
    return (isinstance(value, bytes | bytearray | memoryview)
            or isinstance(value, str) and value.startswith(_FERNET_PREFIX))


def redact_params(params):
    """Bound parameters with ciphertext and binary values replaced."""
    if not params:
        return params
    if isinstance(params, dict):
        return {k: REDACTED if _is_secret(v) else v for k, v in params.items()}
    return [REDACTED if _is_secret(v) else v for v in params]


def _filter(record: logging.LogRecord) -> bool:
    # Peewee logs ``(sql, params)`` as the record's message.
    if isinstance(record.msg, tuple) and len(record.msg) == 2:
        record.msg = (record.msg[0], redact_params(record.msg[1]))
    return True


def install_sql_redaction() -> None:
    """Attach the filter to Peewee's loggers (idempotent)."""
    for name in ("peewee", "peewee.pool", "peewee.migrations"):
        log = logging.getLogger(name)
        if _filter not in log.filters:
            log.addFilter(_filter)
