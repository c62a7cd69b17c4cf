"""Keep secrets out of log records: Peewee's DEBUG logger prints every bound parameter."""

from __future__ import annotations

import logging

__all__ = ["REDACTED", "install_sql_redaction", "redact_params"]

REDACTED = "<redacted>"
_FERNET_PREFIX = "gAAAAA"  # every Fernet token starts with version byte 0x80


def _is_secret(value) -> bool:
    # psycopg2 wraps BYTEA parameters in a Binary adapter that keeps the bytes in .adapted.
    value = getattr(value, "adapted", value)
    if isinstance(value, bytes | bytearray | memoryview):
        return True  # the only binary column holds encrypted PSKs
    return isinstance(value, str) and value.startswith(_FERNET_PREFIX)


def redact_params(params):
    """Bound parameters with ciphertext and binary values replaced."""
    if not params:
        return params
    if isinstance(params, dict):
        return {k: REDACTED if _is_secret(v) else v for k, v in params.items()}
    return [REDACTED if _is_secret(v) else v for v in params]


def _filter(record: logging.LogRecord) -> bool:
    """A logging filter: Peewee logs ``(sql, params)`` as the record's message."""
    msg = record.msg
    if isinstance(msg, tuple) and len(msg) == 2:
        record.msg = (msg[0], redact_params(msg[1]))
    return True


def install_sql_redaction() -> None:
    """Attach the filter to Peewee's logger (idempotent)."""
    for name in ("peewee", "peewee.pool", "peewee.migrations"):
        log = logging.getLogger(name)
        if _filter not in log.filters:
            log.addFilter(_filter)
