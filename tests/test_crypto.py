"""crypto.py: key sources, Fernet round trips, error messages, rotation and key checks."""

from __future__ import annotations

import base64
import os
import threading
import traceback

import pytest
from cryptography.fernet import Fernet

from cardlink_lite import CardProfile, UnitOfWork, crypto
from cardlink_lite.errors import EncryptionError, ValidationError

KEY_A = Fernet.generate_key().decode()
KEY_B = Fernet.generate_key().decode()
KEY_C = Fernet.generate_key().decode()


@pytest.fixture
def key_a(monkeypatch):
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", KEY_A)
    return KEY_A


def _key_file(tmp_path, text: str, mode: int = 0o600):
    path = tmp_path / "cardlink.key"
    path.write_text(text)
    os.chmod(path, mode)
    return path


def _fernet(key: str) -> Fernet:
    return Fernet(key.encode())


# -- key sources -----------------------------------------------------------------
def test_generate_key_is_a_fresh_fernet_key():
    first, second = crypto.generate_key(), crypto.generate_key()
    assert first != second
    assert _fernet(first).decrypt(_fernet(first).encrypt(b"x")) == b"x"


def test_no_key_refuses_with_how_to_make_one():
    with pytest.raises(EncryptionError) as info:
        crypto.encrypt_psk(b"psk")
    text = str(info.value)
    assert text.startswith("CARDLINK_ENCRYPTION_KEY not set")
    assert "cardlink-db keys generate" in text
    assert "export CARDLINK_ENCRYPTION_KEY=" in text
    with pytest.raises(EncryptionError, match="not set"):
        crypto.decrypt_psk(_fernet(KEY_A).encrypt(b"psk"))


def test_round_trip_with_a_single_key(key_a):
    token = crypto.encrypt_psk(b"\x00\x01secret-psk")
    assert token.startswith(b"gAAAAA")
    assert b"secret-psk" not in token
    assert _fernet(KEY_A).decrypt(token) == b"\x00\x01secret-psk"
    assert crypto.decrypt_psk(token) == b"\x00\x01secret-psk"


def test_decrypt_accepts_memoryview_bytearray_and_text(key_a):
    token = crypto.encrypt_psk(b"psk-bytes")
    assert crypto.decrypt_psk(memoryview(token)) == b"psk-bytes"  # PostgreSQL BYTEA
    assert crypto.decrypt_psk(bytearray(token)) == b"psk-bytes"
    assert crypto.decrypt_psk(token.decode()) == b"psk-bytes"


def test_psk_must_be_non_empty_bytes(key_a):
    with pytest.raises(ValidationError, match="must be bytes, not str"):
        crypto.encrypt_psk("00112233")
    with pytest.raises(ValidationError, match="empty"):
        crypto.encrypt_psk(b"")
    assert crypto.decrypt_psk(crypto.encrypt_psk(bytearray(b"ab"))) == b"ab"


def test_environment_is_read_at_each_operation(monkeypatch):
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", KEY_A)
    token = crypto.encrypt_psk(b"psk")
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", KEY_B)
    with pytest.raises(EncryptionError, match="^Invalid key or corrupted data"):
        crypto.decrypt_psk(token)
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", KEY_A)
    assert crypto.decrypt_psk(token) == b"psk"


def test_keys_variable_wins_and_writes_with_the_newest(monkeypatch, tmp_path):
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEYS", f" {KEY_B}, {KEY_A}\n")
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", KEY_C)
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY_FILE", str(_key_file(tmp_path, KEY_C)))
    token = crypto.encrypt_psk(b"psk")
    assert _fernet(KEY_B).decrypt(token) == b"psk"  # written with the first key
    old = _fernet(KEY_A).encrypt(b"old")
    assert crypto.decrypt_psk(old) == b"old"  # read with any of them
    assert [k["source"] for k in crypto.configured_keys()] == [
        "CARDLINK_ENCRYPTION_KEYS key #1", "CARDLINK_ENCRYPTION_KEYS key #2"]


def test_single_key_variable_wins_over_the_file(monkeypatch, tmp_path):
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", KEY_A)
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY_FILE", str(_key_file(tmp_path, KEY_C)))
    assert _fernet(KEY_A).decrypt(crypto.encrypt_psk(b"psk")) == b"psk"


def test_key_file_with_comments_and_several_keys(monkeypatch, tmp_path):
    path = _key_file(tmp_path, f"# rotated 2024-05\n{KEY_B}  # newest\n\n{KEY_A}\n")
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY_FILE", str(path))
    token = crypto.encrypt_psk(b"psk")
    assert _fernet(KEY_B).decrypt(token) == b"psk"
    assert crypto.decrypt_psk(_fernet(KEY_A).encrypt(b"old")) == b"old"
    assert [k["position"] for k in crypto.configured_keys()] == [1, 2]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_key_file_open_to_others_is_refused(monkeypatch, tmp_path, mode):
    path = _key_file(tmp_path, KEY_A + "\n", mode)
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY_FILE", str(path))
    with pytest.raises(EncryptionError) as info:
        crypto.encrypt_psk(b"psk")
    assert f"chmod 600 {path}" in str(info.value)
    assert f"{mode:04o}" in str(info.value)
    assert KEY_A not in str(info.value)
    os.chmod(path, 0o600)
    assert crypto.decrypt_psk(crypto.encrypt_psk(b"psk")) == b"psk"


def test_key_file_owner_read_only_is_accepted(monkeypatch, tmp_path):
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY_FILE", str(_key_file(tmp_path, KEY_A, 0o400)))
    assert _fernet(KEY_A).decrypt(crypto.encrypt_psk(b"psk")) == b"psk"


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_a_key_file_that_is_not_a_regular_file_is_named(monkeypatch, tmp_path, kind):
    path = tmp_path / "keys"
    path.mkdir() if kind == "directory" else os.mkfifo(path, 0o600)  # a FIFO must not block
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY_FILE", str(path))
    with pytest.raises(EncryptionError) as info:
        crypto.encrypt_psk(b"psk")
    assert str(info.value) == (
        f"CARDLINK_ENCRYPTION_KEY_FILE names {str(path)!r}, which is not a regular file; "
        "point it at a key file (cardlink-db keys generate -o FILE writes one)")


def test_missing_or_empty_key_file(monkeypatch, tmp_path):
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY_FILE", str(tmp_path / "nope.key"))
    with pytest.raises(EncryptionError, match="cannot be read"):
        crypto.encrypt_psk(b"psk")
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY_FILE", str(_key_file(tmp_path, "# none yet\n")))
    with pytest.raises(EncryptionError, match="holds no key"):
        crypto.encrypt_psk(b"psk")


@pytest.mark.parametrize("bad", [
    "not-a-key", "c2hvcnQ=", KEY_A[:-4],
    base64.urlsafe_b64encode(b"k" * 31).decode(), base64.urlsafe_b64encode(b"k" * 33).decode(),
], ids=["text", "short", "truncated", "31-bytes", "33-bytes"])  # stable ids for xdist
def test_malformed_key_says_so_without_echoing_it(monkeypatch, bad):
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", bad)
    with pytest.raises(EncryptionError) as info:
        crypto.encrypt_psk(b"psk")
    text = str(info.value)
    assert "CARDLINK_ENCRYPTION_KEY is not a valid Fernet key" in text
    assert "32 url-safe base64-encoded bytes" in text
    assert bad not in text
    assert info.value.__context__ is None and info.value.__cause__ is None
    assert bad not in "".join(traceback.format_exception(info.value))


def test_malformed_key_names_its_position(monkeypatch, tmp_path):
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEYS", f"{KEY_A},oops-secretish")
    with pytest.raises(EncryptionError, match="CARDLINK_ENCRYPTION_KEYS key #2 is not"):
        crypto.decrypt_psk(b"gAAAAA")
    monkeypatch.delenv("CARDLINK_ENCRYPTION_KEYS")
    path = _key_file(tmp_path, f"# header\n{KEY_A}\nbroken-key\n")
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY_FILE", str(path))
    with pytest.raises(EncryptionError, match="line 3 is not a valid Fernet key") as info:
        crypto.encrypt_psk(b"psk")
    assert "broken-key" not in str(info.value)


def test_wrong_key_gives_the_guides_error_without_the_token(monkeypatch):
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", KEY_A)
    token = crypto.encrypt_psk(b"psk")
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", KEY_B)
    with pytest.raises(EncryptionError) as info:
        crypto.decrypt_psk(token)
    assert str(info.value).startswith("Invalid key or corrupted data")
    assert "cardlink-db keys" in str(info.value)
    # No chained InvalidToken: nothing in the traceback leads back to the token.
    assert info.value.__context__ is None and info.value.__cause__ is None
    assert token.decode() not in "".join(traceback.format_exception(info.value))


def test_tampered_token_gives_the_guides_error(key_a):
    token = bytearray(crypto.encrypt_psk(b"psk"))
    token[-10] = ord("A") if token[-10] != ord("A") else ord("B")
    with pytest.raises(EncryptionError, match="^Invalid key or corrupted data"):
        crypto.decrypt_psk(bytes(token))
    with pytest.raises(EncryptionError, match="^Invalid key or corrupted data"):
        crypto.decrypt_psk(b"plainly not a token")


def test_configured_keys_show_fingerprints_not_keys(monkeypatch):
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEYS", f"{KEY_A} {KEY_B}")
    listed = crypto.configured_keys()
    assert len(listed) == 2
    assert listed[0]["fingerprint"] != listed[1]["fingerprint"]
    assert all(len(k["fingerprint"]) == 8 for k in listed)
    assert KEY_A not in repr(listed) and KEY_B not in repr(listed)


# -- rotation and checks (every backend) ------------------------------------------
def _store(manager, cards: dict[str, bytes | None]):
    with manager.atomic():
        for iccid, psk in cards.items():
            CardProfile.create(iccid=iccid, psk_identity=f"id-{iccid}",
                               psk_key_encrypted=crypto.encrypt_psk(psk) if psk else None)


def _tokens(manager) -> dict[str, bytes | None]:
    manager.bind()
    return {c.iccid: bytes(c.psk_key_encrypted) if c.psk_key_encrypted is not None else None
            for c in CardProfile.select().order_by(CardProfile.iccid)}


def _plain(manager) -> dict[str, bytes]:
    return {i: crypto.decrypt_psk(t) for i, t in _tokens(manager).items() if t is not None}


CARDS = {"8901000000000000001": b"psk-one-16bytes!", "8901000000000000002": b"\x00\xffpsk-two",
         "8901000000000000003": b"psk-three", "8901000000000000004": None}


def test_rotation_from_a_to_b_leaves_every_psk_readable_with_b(manager, monkeypatch):
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", KEY_A)
    _store(manager, CARDS)
    before = _tokens(manager)
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEYS", f"{KEY_B},{KEY_A}")
    assert crypto.rotate_psks(manager) == 3
    after = _tokens(manager)
    assert after["8901000000000000004"] is None
    assert all(after[i] != before[i] for i in CARDS if CARDS[i])
    monkeypatch.delenv("CARDLINK_ENCRYPTION_KEYS")
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", KEY_B)
    assert _plain(manager) == {i: p for i, p in CARDS.items() if p}
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", KEY_A)  # A alone no longer opens them
    with pytest.raises(EncryptionError, match="^Invalid key or corrupted data"):
        _plain(manager)


def test_interrupted_rotation_leaves_every_psk_readable(manager, monkeypatch):
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", KEY_A)
    _store(manager, CARDS)
    before = _tokens(manager)
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEYS", f"{KEY_B},{KEY_A}")

    def interrupt(done):
        if done == 2:
            raise KeyboardInterrupt  # Ctrl-C after two PSKs were rewritten

    with pytest.raises(KeyboardInterrupt):
        crypto.rotate_psks(manager, progress=interrupt)
    manager.close()
    manager.initialize(check_schema=False)  # a fresh connection sees only committed data
    assert _tokens(manager) == before
    monkeypatch.delenv("CARDLINK_ENCRYPTION_KEYS")  # the old key alone still opens all
    assert _plain(manager) == {i: p for i, p in CARDS.items() if p}


def _rotate_while_another_connection_writes(manager, monkeypatch, change) -> int:
    """Rotate A -> B; once every token was read and the first PSK rewritten, ``change(uow)``
    runs in another thread, on its own connection. On the servers it commits before the
    rotation goes on; SQLite's rotation holds the write lock, so there it commits after."""
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", KEY_A)
    _store(manager, {"8901000000000000001": b"one", "8901000000000000002": b"two",
                     "8901000000000000003": b"three"})
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEYS", f"{KEY_B},{KEY_A}")
    writers, outcomes = [], []

    def write():
        with UnitOfWork(manager) as uow:
            outcomes.append(change(uow))

    def after(done):
        if done == 1:
            writers.append(threading.Thread(target=write))
            writers[0].start()
            if not manager.config.is_sqlite:
                writers[0].join()
                assert outcomes == [True]  # committed while the rotation is open

    count = crypto.rotate_psks(manager, progress=after)
    writers[0].join()
    assert outcomes == [True]
    monkeypatch.delenv("CARDLINK_ENCRYPTION_KEYS")
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", KEY_B)  # B alone opens every PSK
    return count


def test_rotation_keeps_a_key_changed_while_it_runs(manager, monkeypatch):
    count = _rotate_while_another_connection_writes(
        manager, monkeypatch, lambda uow: uow.cards.update_psk("8901000000000000002",
                                                               key=b"new-two"))
    assert count == 3
    assert _plain(manager) == {"8901000000000000001": b"one", "8901000000000000002": b"new-two",
                               "8901000000000000003": b"three"}


def test_rotation_skips_a_card_deleted_while_it_runs(manager, monkeypatch):
    count = _rotate_while_another_connection_writes(
        manager, monkeypatch, lambda uow: uow.cards.delete_by_id("8901000000000000002"))
    assert count == (3 if manager.config.is_sqlite else 2)  # SQLite: deleted after rotation
    assert _plain(manager) == {"8901000000000000001": b"one", "8901000000000000003": b"three"}


def test_rotation_of_a_token_stored_as_text_stops_instead_of_looping(sqlite_manager,
                                                                      monkeypatch):
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", KEY_A)
    _store(sqlite_manager, {"8901000000000000001": b"psk"})
    sqlite_manager.database.execute_sql(  # by hand, as TEXT: no blob equals it
        "UPDATE card_profiles SET psk_key_encrypted = CAST(psk_key_encrypted AS TEXT)")
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEYS", f"{KEY_B},{KEY_A}")
    with pytest.raises(EncryptionError, match="8901000000000000001 is not stored as binary"):
        crypto.rotate_psks(sqlite_manager)


def test_rotation_refuses_when_a_psk_cannot_be_opened(manager, monkeypatch):
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", KEY_A)
    _store(manager, {"8901000000000000001": b"psk-a"})
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", KEY_C)
    _store(manager, {"8901000000000000009": b"psk-c"})
    before = _tokens(manager)
    monkeypatch.delenv("CARDLINK_ENCRYPTION_KEY")
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEYS", f"{KEY_B},{KEY_A}")
    with pytest.raises(EncryptionError, match="8901000000000000009.*nothing was re-encrypted"):
        crypto.rotate_psks(manager)
    assert _tokens(manager) == before


def test_rotation_with_nothing_stored(manager, key_a):
    assert crypto.rotate_psks(manager) == 0


def test_rotation_needs_a_key(manager):
    with pytest.raises(EncryptionError, match="not set"):
        crypto.rotate_psks(manager)


def test_check_keys_counts_per_key_and_lists_unreadable(manager, monkeypatch):
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", KEY_A)
    _store(manager, {"8901000000000000001": b"a1", "8901000000000000002": b"a2"})
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", KEY_B)
    _store(manager, {"8901000000000000003": b"b1", "8901000000000000005": None})
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", KEY_C)
    _store(manager, {"8901000000000000004": b"c1"})
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEYS", f"{KEY_B},{KEY_A}")
    report = crypto.check_keys(manager)
    assert report["total"] == 4
    assert [(k["position"], k["opens"]) for k in report["keys"]] == [(1, 1), (2, 2)]
    assert report["unreadable"] == ["8901000000000000004"]
    assert report["ok"] is False
    assert KEY_A not in repr(report) and KEY_B not in repr(report)
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEYS", f"{KEY_B},{KEY_A},{KEY_C}")
    assert crypto.check_keys(manager)["ok"] is True
