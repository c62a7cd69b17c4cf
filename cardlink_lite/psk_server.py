"""PSK keys for a PSK-TLS (SCP81) server: key lookup by identity at handshake time, a TLS 1.2
PSK server context, and a handshake that records its OTA session."""

from __future__ import annotations

import contextlib
import importlib
import logging
import ssl
import sys
import threading
import time
from collections.abc import Iterator

import peewee

from .crypto import decrypt_psk
from .db import scoped_connection
from .errors import DatabaseError
from .models import OTASession
from .recording import SessionRecorder, record_session
from .repositories.cards import find_psk_by_identity
from .tls_alerts import TLS_ALERTS, alert_from_ssl_error

__all__ = ["DEFAULT_PSK_CIPHERS", "PskHandshakeError", "PskKeyLookup", "accept_psk_session",
           "psk_key_lookup", "psk_server_context", "psk_tls_support"]

logger = logging.getLogger("cardlink_lite.psk_server")

# The SCP81 (GlobalPlatform Amd B) mandatory suite first, then its usual companions.
DEFAULT_PSK_CIPHERS = "PSK-AES128-CBC-SHA256:PSK-AES128-CBC-SHA:PSK-AES128-GCM-SHA256"
_NATIVE = hasattr(ssl.SSLContext, "set_psk_server_callback")  # Python >= 3.13
_IDENTITY_CHARS = OTASession.tls_psk_identity.max_length


class PskKeyLookup:
    """``identity -> PSK bytes | None`` from the store (one indexed query, one decryption);
    keeps this thread's last identity, card and lookup failure for the session record, never
    the key."""

    def __init__(self, manager):
        self.manager = manager
        self._last = threading.local()

    def __repr__(self) -> str:
        return f"<PskKeyLookup {self.manager.config.safe_url}>"

    def __call__(self, identity) -> bytes | None:
        self._last.identity, self._last.iccid, self._last.failure = identity, None, None
        found = self._find(identity)
        if found is None:
            return None
        self._last.iccid = found[0]
        return decrypt_psk(found[1])

    def server_callback(self, identity) -> bytes:
        """The PSK for an SSL server callback: ``b""`` refuses the identity."""
        try:
            return self(identity) or b""
        except Exception as exc:  # an exception inside OpenSSL's callback is lost
            self._last.failure = type(exc).__name__  # the class only: never a key or token
            logger.error("PSK lookup for identity %r failed: %s", str(identity)[:64],
                         type(exc).__name__)
            return b""

    def forget(self) -> None:
        """Clear this thread's last identity, card and failure (before a new handshake)."""
        self._last.identity = self._last.iccid = self._last.failure = None

    @property
    def last_identity(self) -> str | None:
        return getattr(self._last, "identity", None)

    @property
    def last_failure(self) -> str | None:
        """The exception class of this thread's last lookup that failed (database down, wrong
        key, pool exhausted) inside ``server_callback``; None after ``forget()``."""
        return getattr(self._last, "failure", None)

    @property
    def last_iccid(self) -> str | None:
        """The card whose key answered this thread's last lookup, if one did."""
        return getattr(self._last, "iccid", None)

    def _find(self, identity):
        database = self.manager.database
        with scoped_connection(database):  # a handshake thread keeps no pool connection
            for attempt in (1, 2):
                try:
                    return find_psk_by_identity(database, identity)
                except (peewee.OperationalError, peewee.InterfaceError):
                    if attempt == 2 or database.in_transaction():
                        raise
                    self.manager.ensure_connection()  # the server dropped us: reconnect once


def psk_key_lookup(manager) -> PskKeyLookup:
    """A callable ``identity -> key bytes | None`` over the store's card profiles."""
    return PskKeyLookup(manager)


def psk_tls_support() -> str | None:
    """None when this Python can run a PSK-TLS server, else why not."""
    if _NATIVE:
        return None
    try:
        importlib.import_module("sslpsk3")
    except ImportError as exc:
        return (f"Python {sys.version_info.major}.{sys.version_info.minor} has no "
                f"ssl PSK callbacks (3.13+) and sslpsk3 is not importable ({exc}); "
                "pip install 'cardlink-lite[test]' (needs libssl-dev to build)")
    return None


def psk_server_context(lookup, ciphers: str = DEFAULT_PSK_CIPHERS,
                       identity_hint: str | None = None) -> ssl.SSLContext:
    """A TLS 1.2 server context whose PSKs come from ``lookup`` (a PskKeyLookup or a
    manager); Python's own PSK callbacks on 3.13+, the ``sslpsk3`` package before."""
    if not isinstance(lookup, PskKeyLookup):
        lookup = PskKeyLookup(lookup)
    problem = psk_tls_support()
    if problem:
        raise DatabaseError(problem)
    if _NATIVE:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    else:
        context = importlib.import_module("sslpsk3").SSLPSKContext(ssl.PROTOCOL_TLS_SERVER)
    # PSK identities are looked up by TLS 1.2's callback; SCP81 is TLS 1.2 (1.0/1.1 legacy).
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(ciphers)
    context.set_psk_server_callback(lookup.server_callback, identity_hint)
    context.cardlink_psk_lookup = lookup
    return context


class PskHandshakeError(Exception):
    """A PSK-TLS handshake failed; ``alert`` is the (code, name) of its TLS alert, None when
    the connection broke without one (``reason`` says how)."""

    error_code = "TLS_HANDSHAKE"

    def __init__(self, alert: tuple[int | None, str] | None, identity: str | None,
                 reason: str | None = None, error_code: str | None = None):
        self.alert, self.identity = alert, identity
        if error_code is not None:
            self.error_code = error_code
        if alert is not None:
            code = "" if alert[0] is None else f" ({alert[0]})"
            reason = f"alert {alert[1]}{code}" + (f"; {reason}" if reason else "")
        super().__init__(f"TLS handshake failed: {reason}")


@contextlib.contextmanager
def accept_psk_session(manager, context: ssl.SSLContext, sock, *, device_id=None,
                       session_type: str = "scp81", trigger=None,
                       **logger_options) -> Iterator[tuple[SessionRecorder, ssl.SSLSocket]]:
    """Handshake on an accepted socket; yield (recorder, TLS socket) of the OTA session recorded
    around it: cipher, TLS version, PSK identity, card, handshake time. A failed handshake records
    the identity, time and alert, fails it and raises PskHandshakeError; a timeout times it out.
    The TLS socket is closed when the session ends."""
    lookup = getattr(context, "cardlink_psk_lookup", None)
    if lookup is None:
        raise DatabaseError("build the context with psk_server_context() so that the "
                            "session can name the PSK identity")
    lookup.forget()
    started = time.perf_counter()
    tls = error = None
    try:
        tls = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        tls.do_handshake()
    except Exception as exc:  # TLS errors, a reset, sslpsk3's SystemError: all fail the session
        error = exc
    handshake_ms = (time.perf_counter() - started) * 1000
    try:
        with record_session(manager, device_id=device_id, card_iccid=lookup.last_iccid,
                            session_type=session_type, trigger=trigger,
                            **logger_options) as recorder:
            if error is not None:
                raise _failed_handshake(recorder, lookup, error, handshake_ms)
            cipher = tls.cipher()
            recorder.set_tls_info(cipher[0] if cipher else None, lookup.last_identity,
                                  version=tls.version(), handshake_ms=handshake_ms)
            yield recorder, tls
    finally:
        (sock if tls is None else tls).close()


def _failed_handshake(recorder, lookup, error: Exception, handshake_ms: float) -> Exception:
    """Record a failed handshake on its session; the exception that fails the session."""
    undecodable = _undecodable_identity(error)
    identity = _recorded_identity(lookup.last_identity if undecodable is None else undecodable)
    failure = lookup.last_failure
    if isinstance(error, TimeoutError):
        alert = None
    elif failure is not None:
        # A PSK callback can only refuse the identity (the client gets unknown_psk_identity);
        # the session records the server's own failure as it is: internal_error.
        alert = (80, TLS_ALERTS[80])
    elif undecodable is not None:
        alert = (115, TLS_ALERTS[115])  # sslpsk3's callback failed, so OpenSSL refused it
    elif isinstance(error, ssl.SSLError):
        alert = alert_from_ssl_error(error)
    else:
        alert = None  # no alert was exchanged: the connection broke
    recorder.set_tls_info(psk_identity=identity, handshake_ms=handshake_ms, alert=alert)
    if isinstance(error, TimeoutError):
        return error  # the session times out
    if failure is not None:
        return PskHandshakeError(alert, identity, f"the PSK lookup raised {failure} (the client "
                                 "was sent unknown_psk_identity)", "PSK_LOOKUP_FAILED")
    reason = None if alert else f"{type(error).__name__}: {error}"
    return PskHandshakeError(alert, identity, reason)


def _undecodable_identity(error: BaseException) -> bytes | None:
    """The identity bytes sslpsk3 could not decode as UTF-8 (Python < 3.13: a SystemError whose
    cause is the UnicodeDecodeError of the identity)."""
    while error is not None:
        if isinstance(error, UnicodeDecodeError):
            return error.object
        error = error.__cause__ or error.__context__
    return None


def _recorded_identity(identity) -> str | None:
    """The identity as the session column holds it: its first 128 characters; bytes that are
    not UTF-8 as ``\\xNN`` escapes."""
    if isinstance(identity, bytes):
        identity = identity.decode("utf-8", "backslashreplace")
    return None if identity is None else identity[:_IDENTITY_CHARS]
