"""TLS alert codes and names (RFC 5246 §7.2, RFC 4279, RFC 8446), and the alert behind an
``ssl.SSLError`` raised by a failed handshake."""

from __future__ import annotations

from .errors import ValidationError

__all__ = ["TLS_ALERTS", "alert_from_ssl_error", "tls_alert"]

TLS_ALERTS = {
    0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac",
    21: "decryption_failed", 22: "record_overflow", 30: "decompression_failure",
    40: "handshake_failure", 41: "no_certificate", 42: "bad_certificate",
    43: "unsupported_certificate", 44: "certificate_revoked", 45: "certificate_expired",
    46: "certificate_unknown", 47: "illegal_parameter", 48: "unknown_ca", 49: "access_denied",
    50: "decode_error", 51: "decrypt_error", 60: "export_restriction", 70: "protocol_version",
    71: "insufficient_security", 80: "internal_error", 86: "inappropriate_fallback",
    90: "user_canceled", 100: "no_renegotiation", 109: "missing_extension",
    110: "unsupported_extension", 112: "unrecognized_name",
    113: "bad_certificate_status_response", 115: "unknown_psk_identity",
    116: "certificate_required", 120: "no_application_protocol",
}
_CODES = {name: code for code, name in TLS_ALERTS.items()}

# OpenSSL's reason for a handshake this side refused -> the alert it sent.
_SENT = {
    "PSK_IDENTITY_NOT_FOUND": 115, "DECRYPTION_FAILED_OR_BAD_RECORD_MAC": 20,
    "BAD_RECORD_MAC": 20, "DIGEST_CHECK_FAILED": 51, "NO_SHARED_CIPHER": 40,
    "UNSUPPORTED_PROTOCOL": 70, "WRONG_VERSION_NUMBER": 70, "VERSION_TOO_LOW": 70,
    "UNEXPECTED_MESSAGE": 10,
}
_RECEIVED = ("SSLV3_ALERT_", "TLSV1_ALERT_", "TLSV13_ALERT_")


def tls_alert(alert) -> tuple[int | None, str]:
    """(code, name) of an alert given as its code, its name or a (code, name) pair."""
    if isinstance(alert, tuple) and len(alert) == 2:
        code, name = alert
        if code is not None:
            return _code(code), str(name or TLS_ALERTS.get(_code(code), f"alert_{code}"))
        alert = name
    if isinstance(alert, int) and not isinstance(alert, bool):
        code = _code(alert)
        return code, TLS_ALERTS.get(code, f"alert_{code}")
    if isinstance(alert, str) and alert.strip():
        name = alert.strip().lower().replace(" ", "_").replace("-", "_")
        return _CODES.get(name), name[:64]
    raise ValidationError(
        f"a TLS alert is a code (0-255), a name such as 'unknown_psk_identity' or a "
        f"(code, name) pair; got {str(alert)[:24]!r}"
    )


def alert_from_ssl_error(exc: BaseException) -> tuple[int | None, str]:
    """The alert behind a failed handshake: the one OpenSSL sent, or the one it received."""
    reason = str(getattr(exc, "reason", None) or "").upper()
    if reason in _SENT:
        code = _SENT[reason]
        return code, TLS_ALERTS[code]
    for prefix in _RECEIVED:
        if reason.startswith(prefix):
            return tls_alert(reason[len(prefix):])
    if reason:
        return None, reason.lower()[:64]
    return None, (str(exc) or type(exc).__name__)[:64]


def _code(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
        raise ValidationError(f"a TLS alert code is 0-255; got {str(value)[:24]!r}")
    return value
