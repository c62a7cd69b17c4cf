"""record_session: one place where a PSK-TLS server opens, logs and closes an OTA session."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from .apdu import apdu_logger
from .db import get_manager
from .pytest_keys import SESSION_PROPERTY, running_test
from .unit_of_work import UnitOfWork

__all__ = ["SessionRecorder", "record_session"]


class SessionRecorder:
    """Handed out by :func:`record_session`: the session id and its APDU logger."""

    def __init__(self, manager, session_id: str, log):
        self.manager = manager
        self.session_id = session_id
        self.log = log

    @property
    def id(self) -> str:
        return self.session_id

    def set_tls_info(self, cipher_suite: str | None = None, psk_identity: str | None = None,
                     *, cipher: str | None = None, version: str | None = None,
                     handshake_ms: float | None = None, alert=None) -> None:
        """Record the PSK-TLS handshake: cipher suite, PSK identity, TLS version, handshake
        time (ms) and the alert when it failed (committed at once, as every ``set_*``)."""
        self._session("set_tls_info", cipher_suite=cipher_suite or cipher,
                      psk_identity=psk_identity, version=version, handshake_ms=handshake_ms,
                      alert=alert)

    def set_scp80(self, *, tar=None, spi=None, kic=None, kid=None,
                  counter: int | None = None) -> None:
        """Record the SCP80 TAR, SPI, KIc, KID and the counter used."""
        self._session("set_scp80", tar=tar, spi=spi, kic=kic, kid=kid, counter=counter)

    def set_por(self, status) -> None:
        """Record the Proof-of-Receipt status (``"por-ok"``, ``"counter-low"``, a byte)."""
        self._session("set_por", status)

    def set_admin_status(self, status) -> None:
        """Record the SCP81 ``X-Admin-Script-Status`` (``"ok"``, ``"security-error"``...)."""
        self._session("set_admin_status", status)

    def set_trigger(self, trigger) -> None:
        """Record what started the session (``"sms-pp"``, ``"push-sms"``, ``"bip"``...)."""
        self._session("set_trigger", trigger)

    def _session(self, method: str, *args, **kwargs) -> None:
        with UnitOfWork(self.manager) as uow:
            getattr(uow.sessions, method)(self.session_id, *args, **kwargs)

    def command(self, raw_data: str, decoded: str | None = None) -> None:
        self.log.command(raw_data, decoded)

    def response(self, raw_data: str, sw: str | None = None, latency_ms: float | None = None,
                 decoded: str | None = None) -> None:
        self.log.response(raw_data, sw=sw, latency_ms=latency_ms, decoded=decoded)


@contextlib.contextmanager
def record_session(manager=None, device_id: str | None = None, card_iccid: str | None = None,
                   session_type: str | None = None, *, cipher_suite: str | None = None,
                   psk_identity: str | None = None, trigger=None,
                   **logger_options) -> Iterator[SessionRecorder]:
    """Open an active OTA session; complete it on exit, or fail/time it out on an exception
    (re-raised; its ``error_code`` attribute, else its class name, is the error code)."""
    manager = manager or get_manager()
    with UnitOfWork(manager) as uow:
        session = uow.sessions.create_session(device_id=device_id, card_iccid=card_iccid,
                                              session_type=session_type, trigger=trigger)
        uow.sessions.start_session(session.id)
        if cipher_suite or psk_identity:
            uow.sessions.set_tls_info(session.id, cipher_suite=cipher_suite,
                                      psk_identity=psk_identity)
    session_id = session.id
    if running_test[0] is not None:  # inside a test the pytest plugin runs: link the two
        running_test[0].append((SESSION_PROPERTY, session_id))
    try:
        with apdu_logger(manager, session_id, **logger_options) as log:
            yield SessionRecorder(manager, session_id, log)
    except BaseException as exc:
        with UnitOfWork(manager) as uow:
            if isinstance(exc, TimeoutError):  # socket.timeout too
                uow.sessions.timeout_session(session_id, message=str(exc) or "timed out")
            else:
                code = getattr(exc, "error_code", None) or type(exc).__name__
                uow.sessions.fail_session(session_id, error_code=code,
                                          message=str(exc) or type(exc).__name__)
        raise
    with UnitOfWork(manager) as uow:
        uow.sessions.complete_session(session_id)
