"""PSK keys by identity, and a real PSK-TLS 1.2 server whose keys come from the store,
reached by the real ``openssl s_client``."""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import socket
import ssl
import struct
import subprocess
import threading

import pytest
from cryptography.fernet import Fernet

from cardlink_lite import CardProfile, DatabaseConfig, DatabaseManager, SessionStatus
from cardlink_lite.psk_server import (
    PskHandshakeError,
    accept_psk_session,
    psk_key_lookup,
    psk_server_context,
    psk_tls_support,
)
from cardlink_lite.recording import record_session
from cardlink_lite.unit_of_work import UnitOfWork
from tests.repository_helpers import count_queries

pytest_plugins = ["tests.repository_fixtures"]

KEY = bytes.fromhex("0F1E2D3C4B5A69788796A5B4C3D2E1F0")
IDENTITY = "card_001"
CIPHER = "PSK-AES128-CBC-SHA256"


def _tls_problem() -> str | None:
    return psk_tls_support() or (None if shutil.which("openssl") else "no openssl on PATH")


needs_psk_tls = pytest.mark.skipif(
    _tls_problem() is not None and os.environ.get("CI", "").lower() != "true",
    reason=f"cannot run a PSK-TLS server here: {_tls_problem()}",
)


@pytest.fixture
def cards(manager, fernet_key):
    with UnitOfWork(manager) as uow:
        uow.cards.create_with_psk(CardProfile(iccid="8901001", psk_identity=IDENTITY), KEY)
        uow.cards.create_with_psk(CardProfile(iccid="8901002", psk_identity="card_002"),
                                  b"\x02" * 16)
        uow.cards.create(CardProfile(iccid="8901003", psk_identity="no_key_yet"))
    return manager


def test_identity_lookups(cards):
    with UnitOfWork(cards) as uow:
        assert uow.cards.get_psk_key_by_identity(IDENTITY) == KEY
        assert uow.cards.get_psk_key_by_identity("card_002") == b"\x02" * 16
        # Exact match on every backend (MySQL's collation alone would ignore case/spaces).
        assert uow.cards.get_psk_key_by_identity("CARD_001") is None
        assert uow.cards.get_psk_key_by_identity("card_001 ") is None
        assert uow.cards.get_psk_key_by_identity("no_key_yet") is None
        assert uow.cards.get_psk_key_by_identity("") is None
        # No card can have these: longer than the column, or text no backend stores.
        for identity in ("x" * 129, "card\x00", "card\udcff"):
            assert uow.cards.get_psk_key_by_identity(identity) is None
            assert not uow.cards.psk_identity_exists(identity)
        assert uow.cards.psk_identity_exists(IDENTITY)
        assert not uow.cards.psk_identity_exists("no_key_yet")
        assert not uow.cards.psk_identity_exists("nobody")
        assert uow.cards.get_all_psk_identities() == ["card_001", "card_002"]


def test_an_identity_on_two_cards_is_refused_not_guessed(cards, caplog):
    with UnitOfWork(cards) as uow:
        uow.cards.create_with_psk(CardProfile(iccid="8901009", psk_identity=IDENTITY),
                                  b"\x09" * 16)
    lookup = psk_key_lookup(cards)
    with caplog.at_level(logging.WARNING, logger="cardlink_lite.cards"):
        assert lookup(IDENTITY) is None
    assert "belongs to 2 cards (8901001, 8901009)" in caplog.text
    assert KEY.hex() not in caplog.text.lower()


def test_lookup_is_one_query_and_keeps_no_secret(cards):
    lookup = psk_key_lookup(cards)
    assert lookup(IDENTITY) == KEY  # connects
    with count_queries(cards) as statements:
        assert lookup(IDENTITY) == KEY
        assert lookup("nobody") is None
    assert len(statements) == 2
    assert lookup.server_callback("nobody") == b""
    assert KEY.hex() not in repr(lookup).lower()


def test_a_lookup_in_a_handler_thread_keeps_no_connection(cards):
    seen = []

    def handler():
        seen.append((psk_key_lookup(cards)(IDENTITY), cards.database.is_closed()))

    thread = threading.Thread(target=handler)
    thread.start()
    thread.join()
    assert seen == [(KEY, True)]


@pytest.mark.parametrize("backend", ["mysql", "postgresql"], indirect=True)
def test_a_pool_of_one_serves_handler_threads_in_turn(db_url, backend, fernet_key):
    manager = DatabaseManager(DatabaseConfig(db_url, pool_size=1, max_overflow=0,
                                             pool_timeout=2))
    manager.initialize(check_schema=False)
    manager.create_tables()
    with UnitOfWork(manager) as uow:
        uow.cards.create_with_psk(CardProfile(iccid="8901001", psk_identity=IDENTITY), KEY)
    manager.database.close()
    lookup = psk_key_lookup(manager)
    outcomes = []

    def handler():  # what a PSK-TLS server thread does per handshake
        try:
            key = lookup(IDENTITY)
            with record_session(manager, card_iccid=lookup.last_iccid, session_type="scp81") as s:
                s.command("80F21000024F00", "GET STATUS")
                s.response("9000", latency_ms=3.0)
            outcomes.append(key == KEY)
        except Exception as exc:  # noqa: BLE001 - the outcome under test
            outcomes.append(exc)

    for _ in range(3):
        thread = threading.Thread(target=handler)
        thread.start()
        thread.join()
    try:
        assert outcomes == [True, True, True]
        with UnitOfWork(manager) as uow:
            assert [s.status for s in uow.sessions.get_all()] == [SessionStatus.COMPLETED] * 3
    finally:
        manager.close()


def _serve_once(manager):
    """A listener and a thread that runs one ``accept_psk_session`` on it; ``outcome`` gets
    what the session received, or the PskHandshakeError, or any other exception."""
    context = psk_server_context(psk_key_lookup(manager))
    listener = socket.create_server(("127.0.0.1", 0))
    outcome = {}

    def serve():
        conn, _ = listener.accept()
        conn.settimeout(30)
        try:
            with accept_psk_session(manager, context, conn, trigger="push-sms") as (s, tls):
                outcome["tls"] = tls
                outcome["received"] = tls.recv(64)
                s.command("80F21000024F00", "GET STATUS")
                s.response("9000", latency_ms=3.0)
                tls.sendall(b"pong\n")
        except PskHandshakeError as exc:
            outcome["error"] = exc
        except Exception as exc:  # noqa: BLE001 - a crash is what these tests look for
            outcome["crash"] = exc

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    return listener, server, outcome


def _openssl_handshake(manager, identity: str | bytes, psk: str):
    """Run ``openssl s_client`` once against a server on ``manager``'s store."""
    listener, server, outcome = _serve_once(manager)
    identity = identity.encode() if isinstance(identity, str) else identity
    try:
        client = subprocess.run(
            [b"openssl", b"s_client", b"-connect", b"127.0.0.1:%d" % listener.getsockname()[1],
             b"-psk_identity", identity, b"-psk", psk.encode(), b"-tls1_2", b"-cipher",
             CIPHER.encode(), b"-brief"],
            input=b"ping\n", capture_output=True, timeout=60)
        server.join(timeout=60)
    finally:
        listener.close()
    assert not server.is_alive()
    assert "crash" not in outcome, repr(outcome.get("crash"))
    return client, outcome


def _only_session(manager):
    with UnitOfWork(manager) as uow:
        (session,) = uow.sessions.get_all()
    return session


@needs_psk_tls
@pytest.mark.slow
@pytest.mark.parametrize("identity, psk, handshake", [
    (IDENTITY, KEY.hex(), "completes"),
    (IDENTITY, "AA" * 16, "bad_record_mac"),        # wrong key: Finished does not verify
    ("nobody", KEY.hex(), "unknown_psk_identity"),  # no such identity in the store
])
def test_openssl_client_against_a_store_backed_psk_server(cards, identity, psk, handshake):
    client, outcome = _openssl_handshake(cards, identity, psk)
    stderr = client.stderr.decode(errors="replace")
    session = _only_session(cards)
    assert session.trigger.value == "push-sms"
    assert session.tls_psk_identity == identity
    assert session.tls_handshake_ms is not None and session.tls_handshake_ms >= 0
    if handshake == "completes":
        assert client.returncode == 0, stderr
        assert "Ciphersuite: PSK-AES128-CBC-SHA256" in stderr
        assert outcome["received"] == b"ping\n"
        assert outcome["tls"].fileno() == -1  # closed when the session ended
        assert session.status is SessionStatus.COMPLETED
        assert (session.tls_cipher_suite, session.tls_version) == (CIPHER, "TLSv1.2")
        assert session.card_iccid == "8901001"
        assert (session.tls_alert_code, session.tls_alert) == (None, None)
        with UnitOfWork(cards) as uow:
            assert [r.raw_data for r in uow.logs.find_by_session(session.id)] == [
                "80F21000024F00", "9000"]
        return
    assert client.returncode != 0
    assert handshake.replace("_", " ") in stderr  # what the client was told
    assert outcome["error"].alert[1] == handshake
    assert session.status is SessionStatus.FAILED
    assert session.error_code == "TLS_HANDSHAKE"
    assert session.tls_alert == handshake
    assert session.tls_alert_code == {"bad_record_mac": 20, "unknown_psk_identity": 115}[
        handshake]
    assert session.tls_cipher_suite is None


@needs_psk_tls
@pytest.mark.slow
@pytest.mark.parametrize("offered, recorded", [
    (b"x" * 200, "x" * 128),             # OpenSSL takes up to 256 characters, the column 128
    # Not UTF-8: its other bytes as \xNN escapes. Python 3.13's ssl refuses it unseen.
    (b"\xff\xfecard", None if hasattr(ssl.SSLContext, "set_psk_server_callback")
     else "\\xff\\xfecard"),
], ids=["200-characters", "not-utf-8"])
def test_openssl_client_offering_an_identity_no_card_can_have(cards, caplog, offered,
                                                              recorded):
    with caplog.at_level(logging.WARNING, logger="cardlink_lite"):
        client, outcome = _openssl_handshake(cards, offered, KEY.hex())
    assert "unknown psk identity" in client.stderr.decode(errors="replace")
    assert outcome["error"].alert == (115, "unknown_psk_identity")
    session = _only_session(cards)
    assert (session.status, session.error_code) == (SessionStatus.FAILED, "TLS_HANDSHAKE")
    assert (session.tls_alert_code, session.tls_psk_identity) == (115, recorded)
    # An unknown identity, not a failed lookup: the store logged nothing (Peewee's own SQL
    # log, on when an earlier test in this process enabled echo, is not the store's).
    assert [r for r in caplog.records if r.name.startswith("cardlink_lite")] == []


@needs_psk_tls
@pytest.mark.slow
def test_a_failed_lookup_is_recorded_as_such_not_as_an_unknown_identity(cards, monkeypatch,
                                                                        caplog):
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", Fernet.generate_key().decode())  # wrong key
    with caplog.at_level(logging.ERROR, logger="cardlink_lite.psk_server"):
        client, outcome = _openssl_handshake(cards, IDENTITY, KEY.hex())
    # All a PSK callback can do is refuse the identity: the client is told it is unknown.
    assert "unknown psk identity" in client.stderr.decode(errors="replace")
    assert "failed: EncryptionError" in caplog.text
    error = outcome["error"]
    assert (error.error_code, error.alert) == ("PSK_LOOKUP_FAILED", (80, "internal_error"))
    assert str(error) == ("TLS handshake failed: alert internal_error (80); the PSK lookup "
                          "raised EncryptionError (the client was sent unknown_psk_identity)")
    session = _only_session(cards)
    assert (session.status, session.error_code) == (SessionStatus.FAILED, "PSK_LOOKUP_FAILED")
    assert (session.tls_alert_code, session.tls_alert) == (80, "internal_error")
    assert session.tls_psk_identity == IDENTITY
    assert "EncryptionError" in session.error_message
    assert KEY.hex() not in session.error_message.lower()


def test_a_lookup_remembers_its_failure_until_the_next_handshake(cards, monkeypatch):
    lookup = psk_key_lookup(cards)
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", Fernet.generate_key().decode())
    assert lookup.server_callback(IDENTITY) == b""
    assert (lookup.last_identity, lookup.last_failure) == (IDENTITY, "EncryptionError")
    lookup.forget()
    assert lookup.last_failure is None
    assert lookup.server_callback("nobody") == b""
    assert lookup.last_failure is None  # an unknown identity is no failure


def test_a_lookup_reads_the_key_file_again_each_time(cards, fernet_key, monkeypatch,
                                                     tmp_path):
    monkeypatch.delenv("CARDLINK_ENCRYPTION_KEY")
    key_file = tmp_path / "server.key"
    key_file.write_text(fernet_key + "\n")
    key_file.chmod(0o600)
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY_FILE", str(key_file))
    lookup = psk_key_lookup(cards)
    assert lookup(IDENTITY) == KEY
    new = Fernet.generate_key().decode()
    key_file.write_text(f"{new}\n{fernet_key}\n")  # before `keys rotate`: the new key first
    assert lookup(IDENTITY) == KEY
    with UnitOfWork(cards) as uow:
        uow.cards.update_psk("8901001", key=b"\x07" * 16)  # written with the new key
    key_file.write_text(new + "\n")
    assert lookup(IDENTITY) == b"\x07" * 16


@needs_psk_tls
def test_a_client_resetting_mid_handshake_fails_its_session(cards):
    listener, server, outcome = _serve_once(cards)
    outgoing = ssl.MemoryBIO()
    hello = _python_client_context().wrap_bio(ssl.MemoryBIO(), outgoing)
    with pytest.raises(ssl.SSLWantReadError):
        hello.do_handshake()
    try:
        with socket.create_connection(listener.getsockname(), timeout=30) as client:
            client.sendall(outgoing.read())  # the ClientHello
            assert client.recv(4096)         # the server's first flight: it waits for ours
            # Closing with a zero linger time sends a TCP reset.
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        server.join(timeout=60)
    finally:
        listener.close()
    assert "crash" not in outcome, repr(outcome.get("crash"))
    assert outcome["error"].alert is None
    assert str(outcome["error"]).startswith("TLS handshake failed: ConnectionResetError")
    session = _only_session(cards)
    assert (session.status, session.error_code) == (SessionStatus.FAILED, "TLS_HANDSHAKE")
    assert (session.tls_alert, session.tls_psk_identity) == (None, None)
    assert "ConnectionResetError" in session.error_message


def _python_client_context():
    if hasattr(ssl.SSLContext, "set_psk_client_callback"):  # Python >= 3.13
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    else:
        context = importlib.import_module("sslpsk3").SSLPSKContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(CIPHER)
    context.set_psk_client_callback(lambda hint: (IDENTITY, KEY))
    return context


@needs_psk_tls
def test_python_client_against_a_store_backed_psk_server(cards):
    context = psk_server_context(cards)  # a manager is enough
    listener = socket.create_server(("127.0.0.1", 0))
    outcome = {}

    def serve():
        conn, _ = listener.accept()
        conn.settimeout(30)
        with accept_psk_session(cards, context, conn, trigger="bip") as (s, tls):
            outcome["version"] = tls.version()
            tls.sendall(b"hello")
            tls.close()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        with socket.create_connection(listener.getsockname(), timeout=30) as raw, \
                _python_client_context().wrap_socket(raw) as tls:
            assert tls.cipher()[0] == CIPHER
            assert tls.recv(5) == b"hello"
        server.join(timeout=60)
    finally:
        listener.close()
    assert outcome == {"version": "TLSv1.2"}
    with UnitOfWork(cards) as uow:
        (session,) = uow.sessions.find_by_trigger("bip")
    assert session.status is SessionStatus.COMPLETED
    assert session.tls_cipher_suite == CIPHER
