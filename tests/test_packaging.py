"""A wheel built from the repo, installed in a clean venv, migrates from any directory."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_installed_wheel_can_init_and_migrate(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels),
                    str(ROOT)], check=True, capture_output=True)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = venv / "bin" / "pip"
    wheel = next(wheels.glob("cardlink_lite-*.whl"))
    subprocess.run([str(pip), "install", "-q", str(wheel)], check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    exe = str(venv / "bin" / "cardlink-db")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    url = "sqlite:///bench.db"
    for args in (["init"], ["migrate"], ["status"]):
        proc = subprocess.run([exe, "--database", url, *args], cwd=elsewhere, env=env,
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    assert "Pending Migrations: 0" in proc.stdout
    assert (elsewhere / "bench.db").exists()
    # the migrations came from inside the installed package, not this checkout
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import cardlink_lite.migrations as m; print(m.MIGRATIONS_DIR)"],
        cwd=elsewhere, env=env, capture_output=True, text=True, check=True).stdout
    assert str(venv) in where
    # every subpackage made it into the wheel: the repositories work from the install
    use = ("from cardlink_lite import init_database, UnitOfWork\n"
           "m = init_database('sqlite:///bench.db')\n"
           "with UnitOfWork(m) as uow:\n"
           "    s = uow.sessions.create_session(session_type='t')\n"
           "    uow.logs.add_log(session_id=s.id, direction='command', raw_data='00A4')\n"
           "    print(uow.logs.count_by_session(s.id), uow.devices.count())\n")
    out = subprocess.run([str(venv / "bin" / "python"), "-c", use], cwd=elsewhere, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "0"]
