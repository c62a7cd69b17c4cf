"""``cardlink-db keys generate|rotate|check``."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from cryptography.fernet import Fernet

from cardlink_lite import CardProfile, crypto
from cardlink_lite.cli import cli

KEY_A = Fernet.generate_key().decode()
KEY_B = Fernet.generate_key().decode()


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _store(manager, cards):
    manager.bind()
    with manager.atomic():
        for iccid, psk in cards.items():
            CardProfile.create(iccid=iccid, psk_key_encrypted=crypto.encrypt_psk(psk))


def _plain(manager):
    manager.bind()
    return {c.iccid: crypto.decrypt_psk(c.psk_key_encrypted)
            for c in CardProfile.select().where(CardProfile.psk_key_encrypted.is_null(False))}


@pytest.mark.parametrize("command", ["keys", "keys generate", "keys rotate", "keys check"])
def test_every_keys_command_has_help_with_an_example(command):
    result = run(*command.split(), "--help")
    assert result.exit_code == 0
    assert "Example:" in result.output


def test_generate_prints_a_new_key():
    first, second = run("keys", "generate"), run("keys", "generate")
    assert first.exit_code == 0
    key = first.stdout.strip()
    assert "\n" not in key and key != second.stdout.strip()
    Fernet(key.encode())  # a valid key


def test_generate_output_writes_a_0600_file_and_never_overwrites(tmp_path, monkeypatch):
    path = tmp_path / "bench.key"
    result = run("keys", "generate", "--output", str(path))
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = path.read_text().strip()
    assert key not in result.output
    assert f"CARDLINK_ENCRYPTION_KEY_FILE={path}" in result.output
    again = CliRunner().invoke(cli, ["keys", "generate", "--output", str(path)])
    assert again.exit_code == 1
    assert "already exists" in again.stderr
    assert path.read_text().strip() == key
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY_FILE", str(path))
    assert Fernet(key.encode()).decrypt(crypto.encrypt_psk(b"psk")) == b"psk"


def test_generate_with_an_empty_output_path_prints_no_key():
    result = CliRunner().invoke(cli, ["keys", "generate", "-o", ""])  # -o "$UNSET_VAR"
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.splitlines()[-1] == (
        "Error: Invalid value for '--output' / '-o': the path is empty (an unset variable?); "
        "give a file path, or leave out --output to print the key")


def test_generate_removes_the_key_file_when_the_write_fails(tmp_path, monkeypatch):
    from cardlink_lite.cli import keys as keys_cli

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(keys_cli, "os", SimpleNamespace(**{**vars(os), "write": full}))
    path = tmp_path / "bench.key"
    result = CliRunner().invoke(cli, ["keys", "generate", "-o", str(path)])
    assert result.exit_code == 1
    assert result.stderr == (f"Error: cannot write {str(path)!r}: No space left on device; "
                             "nothing was kept there: free some space and rerun\n")
    assert not path.exists()
    monkeypatch.undo()
    assert run("keys", "generate", "-o", str(path)).exit_code == 0  # the retry works
    Fernet(path.read_text().strip().encode())


def test_rotate_reports_the_count_and_b_alone_opens_everything(manager, db_url, monkeypatch):
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", KEY_A)
    psks = {"8901000000000000001": b"psk-1", "8901000000000000002": b"psk-2"}
    _store(manager, psks)
    monkeypatch.delenv("CARDLINK_ENCRYPTION_KEY")
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEYS", f"{KEY_B},{KEY_A}")
    result = run("--database", db_url, "keys", "rotate")
    assert result.exit_code == 0, result.output
    fingerprint = crypto.configured_keys()[0]["fingerprint"]
    assert result.stdout.startswith("Re-encrypted 2 PSK(s) with key 1 (")
    assert fingerprint in result.stdout
    assert KEY_A not in result.output and KEY_B not in result.output
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEYS", KEY_B)
    assert _plain(manager) == psks


def test_rotate_without_a_key_is_one_error_line(manager, db_url):
    result = CliRunner().invoke(cli, ["--database", db_url, "keys", "rotate"])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: CARDLINK_ENCRYPTION_KEY not set")
    assert len(result.stderr.strip().splitlines()) == 1


def test_check_reports_each_key_and_exits_1_on_unreadable(manager, db_url, monkeypatch):
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", KEY_A)
    _store(manager, {"8901000000000000001": b"a"})
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", KEY_B)
    _store(manager, {"8901000000000000002": b"b"})
    monkeypatch.delenv("CARDLINK_ENCRYPTION_KEY")

    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEYS", f"{KEY_B} {KEY_A}")
    ok = run("--database", db_url, "keys", "check")
    assert ok.exit_code == 0, ok.output
    assert "2 stored PSK(s)" in ok.stdout
    assert "key 1 (CARDLINK_ENCRYPTION_KEYS key #1" in ok.stdout
    assert "every PSK can be opened" in ok.stdout

    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEYS", KEY_B)
    bad = run("--database", db_url, "keys", "check", "--json")
    assert bad.exit_code == 1
    report = json.loads(bad.stdout)
    assert report["total"] == 2
    assert report["unreadable"] == ["8901000000000000001"]
    assert report["keys"][0]["opens"] == 1
    text = run("--database", db_url, "keys", "check")
    assert text.exit_code == 1
    assert "no key opens 1 PSK(s): 8901000000000000001" in text.stdout
    assert KEY_A not in text.output + bad.output and KEY_B not in text.output + bad.output


def test_check_shows_controls_in_a_stored_iccid_as_escapes(manager, db_url, monkeypatch):
    # An imported ICCID holding an OSC title sequence must not drive the operator's terminal.
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", KEY_A)
    _store(manager, {"8901\x1b]0;pwned\x07": b"a"})
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", KEY_B)
    text = run("--database", db_url, "keys", "check")
    assert text.exit_code == 1
    assert "no key opens 1 PSK(s): 8901\\x1b]0;pwned\\x07" in text.stdout
    assert "\x1b" not in text.output


def test_check_with_a_malformed_key_does_not_echo_it(manager, db_url, monkeypatch):
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", "hunter2-not-a-fernet-key")
    result = CliRunner().invoke(cli, ["--database", db_url, "keys", "check"])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: CARDLINK_ENCRYPTION_KEY is not a valid Fernet key")
    assert "hunter2" not in result.output


def test_key_file_open_to_others_is_refused_by_the_cli(manager, db_url, monkeypatch, tmp_path):
    path = tmp_path / "k"
    path.write_text(KEY_A)
    path.chmod(0o644)
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY_FILE", str(path))
    result = CliRunner().invoke(cli, ["--database", db_url, "keys", "rotate"])
    assert result.exit_code == 1
    assert f"chmod 600 {path}" in result.stderr
    assert KEY_A not in result.output


def test_generate_then_check_in_a_real_process(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARDLINK_", "DATABASE_"))}
    generated = subprocess.run(
        [sys.executable, "-m", "cardlink_lite", "keys", "generate"],
        capture_output=True, text=True, env=env, check=True, timeout=60,
    )
    env["CARDLINK_ENCRYPTION_KEY"] = generated.stdout.strip()
    url = f"sqlite:///{tmp_path}/bench.db"
    subprocess.run([sys.executable, "-m", "cardlink_lite", "--database", url, "init"],
                   capture_output=True, text=True, env=env, check=True, timeout=60)
    checked = subprocess.run(
        [sys.executable, "-m", "cardlink_lite", "--database", url, "keys", "check", "--json"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["keys"][0]["source"] == "CARDLINK_ENCRYPTION_KEY"
