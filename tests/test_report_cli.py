"""``cardlink-db report``: options, one-line errors, the missing extra, the shipped templates."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from lxml import html as lxml_html

from cardlink_lite.cli import cli
from tests.report_store import add_run, add_session

ROOT = Path(__file__).resolve().parent.parent


def run(db_url, *args):
    return CliRunner().invoke(cli, ["--database", db_url, "report", *args])


def test_report_command_writes_the_file(manager, db_url, tmp_path):
    add_run(manager, "r1", {"t": "passed"}, suite="smoke")
    add_run(manager, "r2", {"t": "failed"}, suite="nightly", day=1)
    sid = add_session(manager, exchanges=[("00A40400", "SELECT", "9000", 1.0)])
    out = tmp_path / "r.html"
    result = run(db_url, "--suite", "smoke", "-n", "5", "--since", "2024-10-01",
                 "--session", sid, "-o", str(out), "--title", "Lab 3")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"wrote {out} (")
    assert stat.S_IMODE(out.stat().st_mode) == 0o644  # a page to share, not a secret
    doc = lxml_html.fromstring(out.read_text(encoding="utf-8"))
    assert doc.xpath("//h1")[0].text_content() == "Lab 3"
    assert [r.xpath("./th")[0].text_content() for r in
            doc.xpath("//tr[contains(@class, 'run-row')]")] == ["r1"]
    assert doc.xpath(f"//section[@id='session-{sid}']")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("args", "message"), [
    (["--suite", "nope"], "Error: no results for suite 'nope'; suites: nightly"),
    (["--session", "not-a-uuid"], "Error: Invalid value for --session: 'not-a-uuid' is not a "
                                  "session id"),
    (["--session", "3f2c9a1e-8b7d-4c1a-9e2f-0a1b2c3d4e5f"],
     "Error: no OTA session '3f2c9a1e-8b7d-4c1a-9e2f-0a1b2c3d4e5f'"),
    (["--since", "yesterday"], "Error: Invalid value for '--since'"),
    (["--runs", "0"], "Error: Invalid value for '--runs' / '-n'"),
    (["--title", "\udcff"],  # --title $'\xff' in a UTF-8 locale
     "Error: Invalid value for '--title': is not valid Unicode text (lone surrogate at "
     "character 0)\n"),
])
def test_bad_input_is_one_error_line_and_no_file(manager, db_url, tmp_path, args, message):
    add_run(manager, "r1", {"t": "passed"})
    out = tmp_path / "r.html"
    result = run(db_url, *args, "-o", str(out))
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists() and list(tmp_path.glob(".r.html*")) == []


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_missing_directory_is_refused_before_the_report_is_built(manager, db_url, tmp_path):
    # --suite nope would fail the build: the directory is checked first, as export's is.
    result = run(db_url, "--suite", "nope", "-o", str(tmp_path / "missing" / "r.html"))
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == (
        f"Error: Invalid value for --output: directory '{tmp_path / 'missing'}' does not "
        "exist; create it or choose another path")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_missing_store_is_not_created(db_url, tmp_path):
    result = run(f"sqlite:///{tmp_path}/none.db", "-o", str(tmp_path / "r.html"))
    assert result.exit_code == 1 and "no database at" in result.output
    assert not (tmp_path / "none.db").exists()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_without_jinja2_the_cli_names_the_extra(manager, db_url, tmp_path):
    # Jinja2 made unimportable, as in an install without the [report] extra.
    code = ("import sys; sys.modules['jinja2'] = None\n"
            "from cardlink_lite.cli import main\n"
            f"main(['--database', {db_url!r}, 'report'])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("Error: the HTML report needs Jinja2; install it with: "
                                   "pip install 'cardlink-lite[report]'")
    # The other commands work without it.
    proc = subprocess.run([sys.executable, "-c", code.replace("'report'", "'status'")],
                          capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_the_wheel_ships_the_templates(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("cardlink_lite-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("report.html.j2", "charts.html.j2", "report.css", "report.js"):
        assert f"cardlink_lite/templates/{name}" in names
    metadata = next(n for n in names if n.endswith("METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "Requires-Dist: jinja2>=3.1; extra == \"report\"" in text


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize("command", [["report"], ["export"], ["runs", "junit", "r1"]])
@pytest.mark.parametrize("suffix", ["", "-wal", "-shm", "-journal"])
def test_output_never_replaces_the_open_store(manager, db_url, tmp_path, command, suffix):
    add_run(manager, "r1", {"t": "passed"})
    store = tmp_path / "cardlink.db"
    side = Path(f"{store}{suffix}")
    if not side.exists():
        side.write_bytes(b"")
    before = side.stat().st_ino  # replaced, a file would be a new one
    link = tmp_path / "link.html"
    link.symlink_to(side)
    for target in (side, link):  # by its own name or through a symlink
        result = CliRunner().invoke(cli, ["--database", db_url, *command, "-o", str(target)])
        assert result.exit_code == 2, result.output
        assert result.output.splitlines()[-1] == (
            f"Error: Invalid value for --output: {str(target)!r} is the database this "
            "command reads (or one of its files); choose another path")
        assert side.stat().st_ino == before
    assert run(db_url, "--force", "-o", str(store)).exit_code == 2


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_report_replaces_only_an_old_report_unless_forced(manager, db_url, tmp_path):
    add_run(manager, "r1", {"t": "passed"})
    notes = tmp_path / "notes.html"
    notes.write_text("<p>my notes</p>")
    result = run(db_url, "-o", str(notes))
    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == (
        f"Error: Invalid value for --output: {str(notes)!r} exists and is not a cardlink "
        "report; choose another path, or pass --force to replace it")
    assert notes.read_text() == "<p>my notes</p>"
    assert run(db_url, "--force", "-o", str(notes)).exit_code == 0
    assert "cardlink-lite report" in notes.read_text()
    # An earlier report (or an empty file) is replaced without --force.
    assert run(db_url, "-o", str(notes), "--title", "again").exit_code == 0
    assert "<h1><bdi>again</bdi></h1>" in notes.read_text()
    empty = tmp_path / "empty.html"
    empty.write_text("")
    assert run(db_url, "-o", str(empty)).exit_code == 0


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_output_dash_is_stdout_and_an_empty_path_is_named(manager, db_url, tmp_path,
                                                          monkeypatch):
    add_run(manager, "r1", {"t": "passed"})
    monkeypatch.chdir(tmp_path)
    result = run(db_url, "-o", "-")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("<!DOCTYPE html>") and "wrote" not in result.stdout
    assert not (tmp_path / "-").exists()
    for command in (["report"], ["export"], ["runs", "junit", "r1"]):
        result = CliRunner().invoke(cli, ["--database", db_url, *command, "-o", ""])
        assert result.exit_code == 2, result.output
        assert result.output.splitlines()[-1] == (
            "Error: Invalid value for --output: an empty path names no file; give a file "
            "name, or - for stdout")
    assert not [p for p in tmp_path.iterdir() if not p.name.startswith("cardlink.db")]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_output_through_a_symlink_writes_the_file_it_names(manager, db_url, tmp_path):
    add_run(manager, "r1", {"t": "passed"})
    real = tmp_path / "reports" / "latest.html"
    real.parent.mkdir()
    link = tmp_path / "latest.html"
    link.symlink_to(real)
    assert run(db_url, "-o", str(link)).exit_code == 0
    assert link.is_symlink() and "cardlink-lite report" in real.read_text()
