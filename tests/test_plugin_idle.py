"""An idle plugin costs nothing: it loads none of the library until a store is configured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

HEAVY = ("peewee", "playhouse", "pymysql", "psycopg2", "cryptography", "yaml")

PROBE = textwrap.dedent("""
    import json, sys
    import pytest
    rc = pytest.main(sys.argv[1:])
    loaded = sorted(m for m in sys.modules
                    if m.split(".")[0] in {heavy!r} or m.startswith("cardlink_lite"))
    print("MODULES=" + json.dumps([int(rc), loaded]))
""").format(heavy=set(HEAVY))


def _run(tmp_path, *args, env_db: str | None = None, source="def test_one():\n    pass\n"):
    (tmp_path / "test_probe.py").write_text(source)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDLINK")}
    if env_db:
        env["CARDLINK_PYTEST_DB"] = env_db
    done = subprocess.run([sys.executable, "-c", PROBE, "-q", "-p", "no:cacheprovider",
                           "-p", "no:xdist", *args, "test_probe.py"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("MODULES="))
    rc, loaded = json.loads(line.removeprefix("MODULES="))
    return rc, set(loaded), done.stdout


def _heavy(loaded: set[str]) -> set[str]:
    return {m for m in loaded if m.split(".")[0] in HEAVY}


def test_idle_plugin_imports_nothing_of_the_library(tmp_path):
    rc, loaded, out = _run(tmp_path)
    assert rc == 0, out
    assert "cardlink_lite.pytest_plugin" in loaded  # it is loaded, through the entry point
    assert _heavy(loaded) == set()
    assert loaded <= {"cardlink_lite", "cardlink_lite.pytest_plugin",
                      "cardlink_lite.pytest_keys"}


def test_help_and_markers_need_nothing_of_the_library(tmp_path):
    rc, loaded, out = _run(tmp_path, "--markers")
    assert rc == 0 and "@pytest.mark.cardlink(device=None, card=None)" in out
    assert _heavy(loaded) == set()


@pytest.mark.parametrize("how", ["option", "env"])
def test_a_configured_store_loads_the_recorder(tmp_path, how):
    url = f"sqlite:///{tmp_path}/store.db"
    args = ("--cardlink-db", url) if how == "option" else ()
    rc, loaded, out = _run(tmp_path, *args, env_db=url if how == "env" else None)
    assert rc == 0, out
    assert {"peewee", "cardlink_lite.pytest_recorder"} <= loaded
    assert (tmp_path / "store.db").exists()


def test_the_ini_key_counts_as_configured(tmp_path):
    (tmp_path / "pytest.ini").write_text(
        f"[pytest]\ncardlink_db = sqlite:///{tmp_path}/ini.db\n")
    rc, loaded, out = _run(tmp_path)
    assert rc == 0, out
    assert "cardlink_lite.pytest_recorder" in loaded and (tmp_path / "ini.db").exists()


def test_a_store_fixture_loads_the_library_only_when_requested(tmp_path):
    source = "def test_store(cardlink_manager):\n    assert cardlink_manager.is_initialized\n"
    rc, loaded, out = _run(tmp_path, source=source)
    assert rc == 0, out
    assert "peewee" in loaded and "cardlink_lite.pytest_recorder" in loaded
