"""Every command, given a hostile database URL, ends with one ``Error:`` line: no traceback,
no password, exit 1 (a failed operation) or 2 (bad input)."""

import os
import subprocess

import pytest
from click.testing import CliRunner

from cardlink_lite.cli import cli

SESSION = "3f2c9a1e-8b7d-4c1a-9e2f-0a1b2c3d4e5f"
NO_DATABASE = {("keys", "generate")}  # never opens a database


def _hostile(tmp_path) -> dict[str, str]:
    return {
        "bad scheme": "bogus://host/cardlink",
        "no scheme": "garbage",
        "bad port": "postgresql://postgres@127.0.0.1:notaport/cardlink",
        "sqlite unknown option": f"sqlite:///{tmp_path}/x.db?foo=bar",
        "sqlite bad timeout": f"sqlite:///{tmp_path}/x.db?timeout=abc",
        "sqlite bad mode": f"sqlite:///{tmp_path}/x.db?mode=write",
        "mysql bad connect_timeout": "mysql://root@127.0.0.1/cardlink?connect_timeout=abc",
        "postgresql unknown option": "postgresql://postgres@127.0.0.1/cardlink?foo=bar",
        "missing database": "sqlite:////proc/cardlink-missing/x.db",
        "unreachable host": "mysql://root:sekret@127.0.0.1:1/cardlink",
        "sqlite without a file": "sqlite://",
        # unencoded special characters in a password: hidden although the URL misparses
        "password with #": "postgresql://app:pa#sekret@127.0.0.1/cardlink",
        "password with ?": "mysql://root:sekret?x@127.0.0.1/cardlink",
        "password with / after digits": "postgresql://app:12/sekret@127.0.0.1/cardlink",
        "password as an option": "postgresql://app@127.0.0.1/cardlink?password=sekret",
        "sqlite file with #": f"sqlite:///{tmp_path}/bench#2.db",
    }


def _invocations(tmp_path) -> dict[tuple, list[str]]:
    dump = tmp_path / "dump.json"
    dump.write_text("{}")
    return {
        ("init",): ["init"], ("migrate",): ["migrate"], ("status",): ["status"],
        ("export",): ["export"], ("import",): ["import", str(dump)],
        ("purge",): ["purge", "--older-than", "1", "--yes"], ("stats",): ["stats"],
        ("backup",): ["backup", str(tmp_path / "b.db")], ("check",): ["check"],
        ("demo",): ["demo"], ("keys", "rotate"): ["keys", "rotate"],
        ("keys", "check"): ["keys", "check"], ("logs", "show"): ["logs", "show", SESSION],
        ("logs", "import"): ["logs", "import", str(dump)],
        ("report",): ["report", "-o", str(tmp_path / "r.html")],
        ("runs", "list"): ["runs", "list"], ("runs", "show"): ["runs", "show", "r1"],
        ("runs", "compare"): ["runs", "compare", "r1", "r2"],
        ("runs", "junit"): ["runs", "junit", "r1"],
        ("sessions", "list"): ["sessions", "list"],
    }


def _leaf_commands(command, path=()):
    for name, sub in getattr(command, "commands", {}).items():
        if hasattr(sub, "commands"):
            yield from _leaf_commands(sub, (*path, name))
        else:
            yield (*path, name)


def _assert_one_error_line(output: str, stderr: str, code: int, where: str) -> None:
    assert code in (1, 2), f"{where}: exit {code}\n{output}"
    assert "Traceback" not in output, f"{where}:\n{output}"
    assert "sekret" not in output, f"{where}: password shown"
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and stderr.strip().splitlines()[-1] == errors[0], f"{where}:\n{stderr}"
    assert len(errors[0]) < 400, f"{where}: {errors[0]}"


def test_the_list_covers_every_command(tmp_path):
    commands = set(_leaf_commands(cli))
    assert commands - NO_DATABASE <= set(_invocations(tmp_path)), \
        commands - NO_DATABASE - set(_invocations(tmp_path))


def test_every_command_with_every_hostile_url(tmp_path, monkeypatch):
    for name in ("DATABASE_URL", "CARDLINK_DB_DRIVER", "CARDLINK_ENCRYPTION_KEY",
                 "CARDLINK_ENCRYPTION_KEYS", "CARDLINK_ENCRYPTION_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    commands = set(_leaf_commands(cli))
    runner = CliRunner()
    for label, url in _hostile(tmp_path).items():
        for path, args in _invocations(tmp_path).items():
            if path not in commands:
                continue  # a command another branch adds
            result = runner.invoke(cli, ["--database", url, *args])
            _assert_one_error_line(result.output, result.stderr, result.exit_code,
                                   f"{label}: {' '.join(args)}")


@pytest.mark.parametrize("label", ["sqlite unknown option", "mysql bad connect_timeout",
                                   "unreachable host", "no scheme"])
def test_a_real_process_ends_with_one_error_line(tmp_path, label):
    url = _hostile(tmp_path)[label]
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    done = subprocess.run(["cardlink-db", "--database", url, "status"], capture_output=True,
                          text=True, env=env, timeout=60)
    _assert_one_error_line(done.stdout + done.stderr, done.stderr, done.returncode, label)


def test_driver_options_pass_through(tmp_path):
    path = tmp_path / "ok.db"
    runner = CliRunner()
    assert runner.invoke(cli, ["--database", f"sqlite:///{path}?timeout=5", "init"]).exit_code == 0
    ro = runner.invoke(cli, ["--database", f"sqlite:///{path}?mode=ro", "status", "--json"])
    assert ro.exit_code == 0, ro.output
    refused = runner.invoke(cli, ["--database", f"sqlite:///{path}?mode=ro", "demo"])
    assert refused.exit_code == 1
    assert refused.stderr.strip().splitlines()[-1].startswith("Error: ")


def test_timeout_options_reach_the_driver_on_every_backend(db_url, backend):
    option = "timeout=5" if backend == "sqlite" else "connect_timeout=5"
    url = f"{db_url}?{option}"
    runner = CliRunner()
    assert runner.invoke(cli, ["--database", url, "init"]).exit_code == 0
    result = runner.invoke(cli, ["--database", url, "status", "--json"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(("url", "line"), [
    ("postgresql://app:pa#sekret@127.0.0.1/test",
     "Error: cannot parse database URL 'postgresql://app:***@127.0.0.1/test': give the port "
     "as a number, and percent-encode special characters in a password (# as %23, / as %2F, "
     "? as %3F, @ as %40)"),
    ("sqlite:///bench#2.db",
     "Error: database URL 'sqlite:///bench#2.db' has a '#'; write it as %23 in a password or "
     "file name"),
])
def test_a_misparsed_url_names_the_fix(tmp_path, url, line):
    result = CliRunner().invoke(cli, ["--database", url, "status"])
    assert (result.exit_code, result.stderr.strip()) == (1, line)
    assert not list(tmp_path.iterdir())  # no file 'bench' created
