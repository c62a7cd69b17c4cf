"""PSKs, keys and passwords never leave by accident: files, logs, reprs, errors, exports."""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
import subprocess
import sys
import uuid

import pytest
from click.testing import CliRunner
from cryptography.fernet import Fernet

from cardlink_lite import CardProfile, DatabaseConfig, DatabaseManager, crypto
from cardlink_lite.cli import cli
from cardlink_lite.errors import EncryptionError
from tests import servers

KEY = Fernet.generate_key().decode()
OTHER_KEY = Fernet.generate_key().decode()
PSK = b"PSK-PLAINTEXT-MARKER-0001"
PSK2 = b"PSK-PLAINTEXT-MARKER-0002"
ICCID = "89011234567890123456"
PASSWORD = "Pw-" + uuid.uuid4().hex[:12]


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", KEY)
    return KEY


@pytest.fixture
def debug_log(caplog):
    """Every record at DEBUG from every logger, Peewee's SQL echo included."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="peewee")
    return caplog


def _log_text(caplog) -> str:
    # Formatted text, and the raw msg/args a structured handler might serialise instead.
    raw = "\n".join(f"{r.msg!r} {r.args!r}" for r in caplog.records)
    return caplog.text + "\n" + raw


def _forms(secret: bytes) -> list[str]:
    """Ways a PSK or token could show up in text."""
    return [secret.decode("latin-1"), secret.hex(), secret.hex().upper(),
            base64.b64encode(secret).decode(), repr(secret)[2:-1]]


def assert_clean(text: str, *secrets: bytes | str) -> None:
    for secret in secrets:
        forms = [secret] if isinstance(secret, str) else _forms(secret)
        for form in forms:
            assert form not in text, f"secret leaked as {form[:12]}..."


def _token(iccid: str = ICCID) -> bytes | None:
    value = CardProfile.get_by_id(iccid).psk_key_encrypted
    return None if value is None else bytes(value)


def _create_with_psk(manager, iccid=ICCID, psk=PSK, identity="card_001"):
    from cardlink_lite import UnitOfWork

    with UnitOfWork(manager) as uow:
        uow.cards.create_with_psk(CardProfile(iccid=iccid, psk_identity=identity), psk)
        uow.commit()


# -- model repr / str ----------------------------------------------------------------
def test_model_repr_and_str_hide_the_key(manager, key):
    token = crypto.encrypt_psk(PSK)
    with manager.atomic():
        CardProfile.create(iccid=ICCID, psk_identity="card_001", psk_key_encrypted=token)
    card = CardProfile.get_by_id(ICCID)
    assert crypto.decrypt_psk(card.psk_key_encrypted) == PSK  # it is really there
    for text in (repr(card), str(card), f"{card}", repr([card])):
        assert "psk_key_encrypted=<set>" in text
        assert "card_001" in text
        assert_clean(text, PSK, token, "gAAAAA")
    assert "psk_key_encrypted=None" in str(CardProfile(iccid="1"))


# -- the SQLite file and its WAL -----------------------------------------------------
def _raw(path) -> bytes:
    return path.read_bytes() if path.exists() else b""


def test_sqlite_file_and_wal_never_hold_the_psk(sqlite_manager, key, tmp_path):
    _create_with_psk(sqlite_manager)
    from cardlink_lite import UnitOfWork

    with UnitOfWork(sqlite_manager) as uow:
        uow.cards.update_psk(ICCID, identity="card_002", key=PSK2)
        uow.commit()
    token = _token()
    db, wal = tmp_path / "cardlink.db", tmp_path / "cardlink.db-wal"
    raw = _raw(db) + _raw(wal)
    assert wal.stat().st_size > 0  # the writes are still in the WAL: it was really read
    assert token in raw  # the ciphertext is where we look...
    for psk in (PSK, PSK2):  # ...and neither plaintext, in any common encoding, is
        for form in _forms(psk):
            assert form.encode("latin-1") not in raw
    sqlite_manager.database.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    sqlite_manager.close()
    raw = _raw(db) + _raw(wal)
    assert token in raw
    assert PSK not in raw and PSK2 not in raw


# -- no key, wrong key ---------------------------------------------------------------
def test_no_key_raises_and_writes_nothing(manager):
    with pytest.raises(EncryptionError, match="^CARDLINK_ENCRYPTION_KEY not set.*keys generate"):
        _create_with_psk(manager)
    manager.bind()
    assert CardProfile.select().count() == 0


def test_no_key_update_changes_nothing(manager, monkeypatch):
    from cardlink_lite import UnitOfWork

    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", KEY)
    _create_with_psk(manager)
    before = _token()
    monkeypatch.delenv("CARDLINK_ENCRYPTION_KEY")
    with pytest.raises(EncryptionError, match="not set"), UnitOfWork(manager) as uow:
        uow.cards.update_psk(ICCID, identity="other", key=PSK2)
        uow.commit()
    manager.bind()
    card = CardProfile.get_by_id(ICCID)
    assert bytes(card.psk_key_encrypted) == before and card.psk_identity == "card_001"


def test_wrong_key_gives_the_guides_error(manager, monkeypatch):
    from cardlink_lite import UnitOfWork

    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", KEY)
    _create_with_psk(manager)
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", OTHER_KEY)
    with pytest.raises(EncryptionError) as info, UnitOfWork(manager) as uow:
        uow.cards.get_psk_key(ICCID)
    assert str(info.value).startswith("Invalid key or corrupted data")
    assert info.value.__context__ is None or not str(info.value.__context__)
    assert_clean(str(info.value), PSK, _token(), "gAAAAA")


def test_reading_a_psk_without_a_key_refuses(manager, monkeypatch):
    from cardlink_lite import UnitOfWork

    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", KEY)
    _create_with_psk(manager)
    monkeypatch.delenv("CARDLINK_ENCRYPTION_KEY")
    with pytest.raises(EncryptionError, match="not set"), UnitOfWork(manager) as uow:
        uow.cards.get_psk_key(ICCID)


# -- logs ----------------------------------------------------------------------------
def test_sql_echo_redacts_ciphertext_on_every_backend(manager, key, debug_log):
    token = crypto.encrypt_psk(PSK)
    with manager.atomic():
        CardProfile.create(iccid=ICCID, psk_key_encrypted=token)
        (CardProfile.update(psk_key_encrypted=crypto.encrypt_psk(PSK2))
         .where(CardProfile.iccid == ICCID).execute())
    assert crypto.decrypt_psk(CardProfile.get_by_id(ICCID).psk_key_encrypted) == PSK2
    text = _log_text(debug_log)
    assert "card_profiles" in text and "<redacted>" in text  # SQL echo was on
    assert_clean(text, PSK, PSK2, token, _token(), "gAAAAA")
    assert "Binary object" not in text  # psycopg2's BYTEA adapter is redacted too


def test_full_psk_workflow_logs_no_secret(manager, key, debug_log):
    from cardlink_lite import get_emitter

    events = []
    get_emitter().on("*", events.append)
    try:
        _run_workflow(manager)
    finally:
        get_emitter().off("*", events.append)
    assert events  # the workflow's events were delivered: check they carry no secret
    assert_clean(repr(events), PSK, PSK2, _token(), "gAAAAA")
    text = _log_text(debug_log)
    assert "card_profiles" in text  # the SQL echo was captured
    assert_clean(text, PSK, PSK2, _token(), KEY, "gAAAAA")


def _run_workflow(manager):
    from cardlink_lite import UnitOfWork

    _create_with_psk(manager)
    with UnitOfWork(manager) as uow:
        assert uow.cards.get_psk_key(ICCID) == PSK
        uow.cards.update_psk(ICCID, identity="card_002", key=PSK2)
        uow.commit()
    with UnitOfWork(manager) as uow:
        assert uow.cards.get_psk_key(ICCID) == PSK2
        exported = uow.cards.export_profile(ICCID)
    crypto.rotate_psks(manager)
    assert_clean(json.dumps(exported, default=str), PSK, PSK2, _token(), "gAAAAA")


def test_verbose_cli_rotation_echoes_sql_without_secrets(manager, db_url, monkeypatch):
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", KEY)
    with manager.atomic():
        CardProfile.create(iccid=ICCID, psk_key_encrypted=crypto.encrypt_psk(PSK))
    old = _token()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARDLINK_", "DATABASE_"))}
    env["CARDLINK_ENCRYPTION_KEYS"] = f"{OTHER_KEY},{KEY}"
    done = subprocess.run(
        [sys.executable, "-m", "cardlink_lite", "--verbose", "--database", db_url,
         "keys", "rotate"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "Re-encrypted 1 PSK(s)" in done.stdout
    assert "UPDATE" in done.stderr and "card_profiles" in done.stderr  # SQL was echoed
    manager.bind()
    new = _token()
    assert new != old
    assert_clean(done.stdout + done.stderr, PSK, old, new, KEY, OTHER_KEY, "gAAAAA")


# -- database passwords --------------------------------------------------------------
@pytest.fixture
def password_url(backend, db_url):
    """``db_url`` with a password that the server checks (MariaDB) or ignores (trust)."""
    if backend == "sqlite":
        pytest.skip("SQLite has no password")
    name = db_url.rsplit("/", 1)[1]
    if backend == "postgresql":  # the local server trusts 127.0.0.1: the password is unused
        yield db_url.replace("postgres@", f"postgres:{PASSWORD}@")
        return
    user = f"u{uuid.uuid4().hex[:10]}"
    for host in ("%", "localhost"):
        servers.execute(backend, f"CREATE USER '{user}'@'{host}' IDENTIFIED BY '{PASSWORD}'")
        servers.execute(backend, f"GRANT ALL ON `{name}`.* TO '{user}'@'{host}'")
    try:
        yield db_url.replace("root@", f"{user}:{PASSWORD}@")
    finally:
        for host in ("%", "localhost"):
            servers.execute(backend, f"DROP USER IF EXISTS '{user}'@'{host}'")


def test_password_never_in_repr_health_logs_or_cli(manager, password_url, debug_log, key):
    other = DatabaseManager(DatabaseConfig(password_url))
    other.initialize()
    try:
        health = other.health_check()
        assert health["status"] == "healthy"
        with other.atomic():
            CardProfile.create(iccid=ICCID, psk_key_encrypted=crypto.encrypt_psk(PSK))
        texts = [repr(other), repr(other.config), other.config.safe_url, json.dumps(health)]
        assert "***" in other.config.safe_url
    finally:
        other.close()
    result = CliRunner().invoke(cli, ["--verbose", "--database", password_url, "status"])
    assert result.exit_code == 0, result.output
    texts += [result.output, _log_text(debug_log)]
    assert_clean("\n".join(texts), PASSWORD, PSK, "gAAAAA")


def test_wrong_password_error_does_not_echo_it(backend, password_url):
    if backend == "postgresql":
        pytest.skip("the local PostgreSQL trusts every password")
    bad = password_url.replace(PASSWORD, PASSWORD + "x")
    result = CliRunner().invoke(cli, ["--database", bad, "status"])
    assert result.exit_code == 1
    assert_clean(result.output, PASSWORD)


# -- file modes ----------------------------------------------------------------------
@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_new_sqlite_file_wal_and_shm_are_0600(tmp_path, umask_022):
    manager = DatabaseManager(DatabaseConfig(f"sqlite:///{tmp_path}/bench.db"))
    manager.initialize(check_schema=False)
    manager.create_tables()
    with manager.atomic():
        CardProfile.create(iccid=ICCID)
    try:
        for suffix in ("", "-wal", "-shm"):
            path = tmp_path / f"bench.db{suffix}"
            assert path.exists(), suffix
            assert _mode(path) == 0o600, f"{path.name} is {_mode(path):04o}"
    finally:
        manager.close()


def test_default_data_directory_is_0700(tmp_path, umask_022):
    # The autouse fixture runs each test in tmp_path: the default URL lands here.
    manager = DatabaseManager()
    manager.initialize(check_schema=False)
    manager.create_tables()
    try:
        assert (tmp_path / "data" / "cardlink.db").exists()
        assert _mode(tmp_path / "data") == 0o700
        assert _mode(tmp_path / "data" / "cardlink.db") == 0o600
    finally:
        manager.close()


def test_backup_file_is_0600_and_holds_no_plaintext(sqlite_manager, key, tmp_path, umask_022):
    _create_with_psk(sqlite_manager)
    url = sqlite_manager.config.url
    token = _token()
    target = tmp_path / "backups-bench.db"
    result = CliRunner().invoke(cli, ["--database", url, "backup", str(target)])
    assert result.exit_code == 0, result.output
    assert _mode(target) == 0o600
    raw = target.read_bytes()
    assert token in raw and PSK not in raw and PSK.hex().encode() not in raw
    # --force over a file someone left world-readable locks it down too.
    stale = tmp_path / "stale.db"
    stale.write_bytes(b"")
    stale.chmod(0o644)
    forced = CliRunner().invoke(cli, ["--database", url, "backup", "--force", str(stale)])
    assert forced.exit_code == 0, forced.output
    assert _mode(stale) == 0o600


# -- exports -------------------------------------------------------------------------
def test_default_export_has_no_key_material(manager, key):
    from cardlink_lite import DataExporter, ExportFormat, UnitOfWork

    _create_with_psk(manager)
    token = _token()
    with UnitOfWork(manager) as uow:
        exporter = DataExporter(uow)
        documents = [exporter.export_all(ExportFormat.JSON),
                     exporter.export_all(ExportFormat.YAML),
                     exporter.export_selective(["cards"], ExportFormat.JSON)]
        profile = uow.cards.export_profile(ICCID)
        with_keys = exporter.export_all(ExportFormat.JSON, include_keys=True)
        profile_with_key = uow.cards.export_profile(ICCID, include_key=True)
    for text in documents + [json.dumps(profile, default=str)]:
        assert ICCID in text and "card_001" in text  # the card itself is exported
        assert "psk_key" not in text
        assert_clean(text, PSK, token, "gAAAAA")
    assert profile["has_psk"] is True
    # The explicit ways out carry the key, decrypted, as hex (never the token).
    assert profile_with_key["psk_key"] == PSK.hex()
    document = json.loads(with_keys)
    cards = document.get("cards") or document["card_profiles"]
    assert [c["psk_key"] for c in cards] == [PSK.hex()]
    assert_clean(with_keys, token, "gAAAAA")


def test_import_encrypts_psk_key_hex_on_the_way_in(manager, key, debug_log):
    from cardlink_lite import DataExporter, DataImporter, UnitOfWork

    _create_with_psk(manager)
    with UnitOfWork(manager) as uow:
        document = DataExporter(uow).export_selective(["cards"], include_keys=True)
    manager.bind()
    CardProfile.delete().execute()
    with UnitOfWork(manager) as uow:
        assert DataImporter(uow).import_data(document).created == 1
        uow.commit()
    manager.bind()
    stored = _token()
    assert stored.startswith(b"gAAAAA") and PSK.hex().encode() not in stored
    with UnitOfWork(manager) as uow:
        assert uow.cards.get_psk_key(ICCID) == PSK
    assert "card_profiles" in debug_log.text
    assert_clean(_log_text(debug_log), PSK, stored, KEY, "gAAAAA")


def test_import_rejects_a_bad_psk_without_echoing_it(manager, key):
    from cardlink_lite import DataImporter, UnitOfWork
    from cardlink_lite.errors import ValidationError

    almost = PSK.hex() + "Z"
    document = {"cards": [{"iccid": ICCID, "psk_key": almost}]}
    with pytest.raises(ValidationError) as info, UnitOfWork(manager) as uow:
        DataImporter(uow).import_data(json.dumps(document))
    assert any("psk_key" in p for p in info.value.problems)
    assert_clean(str(info.value) + "\n".join(info.value.problems), almost, PSK)


def test_import_of_a_psk_without_a_key_writes_nothing(manager, monkeypatch):
    from cardlink_lite import DataExporter, DataImporter, UnitOfWork

    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", KEY)
    _create_with_psk(manager)
    with UnitOfWork(manager) as uow:
        document = DataExporter(uow).export_selective(["cards"], include_keys=True)
    manager.bind()
    CardProfile.delete().execute()
    monkeypatch.delenv("CARDLINK_ENCRYPTION_KEY")
    with pytest.raises(EncryptionError, match="not set"), UnitOfWork(manager) as uow:
        DataImporter(uow).import_data(document)
        uow.commit()
    manager.bind()
    assert CardProfile.select().count() == 0


def test_cli_export_file_is_0600_and_keys_only_on_request(manager, db_url, key, tmp_path,
                                                          umask_022, debug_log):
    _create_with_psk(manager)
    token = _token()
    plain = tmp_path / "export.json"
    result = CliRunner().invoke(cli, ["--verbose", "--database", db_url, "export",
                                      "--output", str(plain)])
    assert result.exit_code == 0, result.output
    assert _mode(plain) == 0o600
    assert "secret" not in result.stderr.lower()
    text = plain.read_text()
    assert ICCID in text and "psk_key" not in text
    assert_clean(text, PSK, token, "gAAAAA")

    secret = tmp_path / "export-with-keys.yaml"
    result = CliRunner().invoke(cli, ["--verbose", "--database", db_url, "export",
                                      "--include-keys", "--output", str(secret)])
    assert result.exit_code == 0, result.output
    assert "PSK" in result.stderr and "secret" in result.stderr.lower()
    assert _mode(secret) == 0o600
    assert PSK.hex() in secret.read_text()
    # The verbose run's SQL echo and messages still carry neither key nor token.
    assert_clean(result.output + _log_text(debug_log), PSK, token, KEY, "gAAAAA")

    to_stdout = CliRunner().invoke(cli, ["--database", db_url, "export", "--include-keys"])
    assert to_stdout.exit_code == 0
    assert PSK.hex() in to_stdout.stdout
    assert "secret" in to_stdout.stderr.lower()
    assert PSK.hex() not in to_stdout.stderr
