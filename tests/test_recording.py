"""record_session: opens an active session, logs its APDUs, closes it by how the block ended."""

import threading

import pytest

from cardlink_lite import CommLog, OTASession, SessionStatus, init_database
from cardlink_lite.recording import record_session


class HandshakeFailed(Exception):
    error_code = "TLS_HANDSHAKE"


def _session(session_id) -> OTASession:
    return OTASession.get_by_id(session_id)


def _apdus(session_id) -> list[tuple]:
    query = (CommLog.select().where(CommLog.session == session_id)
             .order_by(CommLog.timestamp, CommLog.id))
    return [(r.direction.value, r.raw_data, r.status_word) for r in query]


def _seen_by_another_connection(manager, session_id) -> OTASession:
    found = {}

    def read():
        with manager.database.connection_context():
            found["row"] = OTASession.get_by_id(session_id)

    thread = threading.Thread(target=read)
    thread.start()
    thread.join()
    return found["row"]


def test_completes_on_exit_with_its_apdus_and_handshake(manager):
    with record_session(manager, session_type="triggered", cipher_suite="PSK-AES128-CBC-SHA256",
                        psk_identity="card_001") as s:
        assert s.id == s.session_id
        opened = _seen_by_another_connection(manager, s.id)
        assert (opened.status, opened.tls_cipher_suite, opened.tls_psk_identity) == (
            SessionStatus.ACTIVE, "PSK-AES128-CBC-SHA256", "card_001")
        s.command("00A4040008A000000151000000", "SELECT ISD")
        s.response("6F108408A0000001510000009000", latency_ms=12.5)
    row = _session(s.id)
    assert (row.status, row.session_type, row.error_code) == (
        SessionStatus.COMPLETED, "triggered", None)
    assert row.ended_at >= row.started_at
    assert _apdus(s.id) == [("command", "00A4040008A000000151000000", None),
                            ("response", "6F108408A0000001510000009000", "9000")]


def test_facts_are_committed_at_once(manager):
    with record_session(manager) as s:
        s.set_tls_info(cipher="PSK-AES128-CBC-SHA256", psk_identity="card_001",
                       version="TLSv1.2", handshake_ms=41.5)
        s.set_trigger("bip")
        row = _seen_by_another_connection(manager, s.id)
        assert (row.tls_cipher_suite, row.tls_version, row.trigger.value) == (
            "PSK-AES128-CBC-SHA256", "TLSv1.2", "bip")


@pytest.mark.parametrize("error, code, message", [
    (HandshakeFailed("no shared cipher"), "TLS_HANDSHAKE", "no shared cipher"),
    (ValueError("bad PoR"), "ValueError", "bad PoR"),
    (KeyboardInterrupt(), "KeyboardInterrupt", "KeyboardInterrupt"),
])
def test_an_exception_fails_the_session_keeps_its_apdus_and_is_raised_again(
        manager, error, code, message):
    with pytest.raises(type(error)), record_session(manager) as s:
        s.command("80E60C00")
        raise error
    row = _session(s.id)
    assert (row.status, row.error_code, row.error_message) == (SessionStatus.FAILED, code,
                                                               message)
    assert _apdus(s.id) == [("command", "80E60C00", None)]


@pytest.mark.parametrize("error, message", [
    (TimeoutError(), "timed out"),
    (TimeoutError("no answer from the card"), "no answer from the card"),  # socket.timeout
])
def test_a_timeout_times_the_session_out(manager, error, message):
    with pytest.raises(TimeoutError), record_session(manager) as s:
        raise error
    row = _session(s.id)
    assert (row.status, row.error_message) == (SessionStatus.TIMEOUT, message)


def test_without_a_manager_it_uses_the_one_initialised_last(db_url):
    manager = init_database(db_url)
    try:
        with record_session(session_type="manual") as s:
            s.command("00B0000000")
        assert s.manager is manager
        assert _session(s.id).status is SessionStatus.COMPLETED
    finally:
        manager.close()
