"""``import --conflict overwrite|merge``: a preview, a question before existing rows change
(--yes skips it), a refusal without a terminal, and a progress bar on a terminal."""

import json
import os
import pty
import select
import subprocess
import time

import pytest
from click.testing import CliRunner

from cardlink_lite.cli import cli
from tests.transfer_helpers import checksums, populate


@pytest.fixture
def dump(manager, tmp_path):
    populate(manager)
    path = tmp_path / "dump.json"
    result = CliRunner().invoke(cli, ["--database", manager.config.url, "export", "-o",
                                      str(path)])
    assert result.exit_code == 0, result.output
    manager.bind()
    from cardlink_lite import Device

    Device.update(name="renamed since the export").execute()
    return manager, path


def _import(manager, *args, input=None):
    return CliRunner().invoke(cli, ["--database", manager.config.url, "import", *args],
                              input=input)


@pytest.mark.parametrize("conflict", ["overwrite", "merge"])
def test_without_a_terminal_and_without_yes_it_refuses_with_a_hint(dump, conflict):
    manager, path = dump
    before = checksums(manager)
    result = _import(manager, "--conflict", conflict, str(path))
    assert result.exit_code == 1
    # Only the renamed devices differ from the file (merge leaves a null name alone).
    changed = 2 if conflict == "overwrite" else 1
    assert (f"Preview of {path} ({conflict}): 0 to create, {changed} existing to change, "
            f"{13 - changed} unchanged") in result.stderr
    assert (f"  devices: 0 created, {changed} updated, {2 - changed} unchanged, 0 skipped"
            in result.stderr)
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: --conflict {conflict} would change {changed} existing row(s) and there is no "
        "terminal to confirm it; rerun with --yes (or --dry-run to look first)")
    assert checksums(manager) == before


def test_yes_skips_the_question(dump):
    manager, path = dump
    result = _import(manager, "--conflict", "overwrite", "--yes", str(path))
    assert result.exit_code == 0, result.output
    assert "Preview" not in result.stderr
    manager.bind()
    from cardlink_lite import Device

    assert "renamed since the export" not in {d.name for d in Device.select()}


def test_only_new_rows_need_no_question(dump, tmp_path):
    manager, path = dump
    from tests.transfer_helpers import extra_manager

    with extra_manager(manager.backend, tmp_path) as target:
        result = _import(target, "--conflict", "overwrite", str(path))
        assert result.exit_code == 0, result.output
        assert "13 created" in result.stderr


def test_stdin_with_overwrite_needs_yes(dump):
    manager, path = dump
    result = _import(manager, "--conflict", "merge", "-", input=path.read_text())
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: --conflict merge from stdin cannot be previewed and confirmed; pass --yes, "
        "or give a file")


def _on_a_terminal(args, answer: str, timeout: float = 60,
                   question: bytes = b"existing row(s)? [y/N]") -> str:
    """Run the real cardlink-db on a pseudo-terminal, answer its question, return the screen."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(["cardlink-db", *args], stdin=slave, stdout=slave, stderr=slave,
                            close_fds=True)
    os.close(slave)
    screen, answered, deadline = b"", False, time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            screen += chunk
            if not answered and question in screen:
                os.write(master, answer.encode() + b"\n")
                answered = True
        elif proc.poll() is not None:
            break
    proc.wait(timeout=timeout)
    os.close(master)
    return screen.decode(errors="replace"), proc.returncode


@pytest.mark.parametrize("answer,code", [("n", 1), ("y", 0)])
def test_on_a_terminal_it_previews_shows_progress_and_asks(dump, answer, code):
    manager, path = dump
    before = checksums(manager)
    manager.close()
    screen, returncode = _on_a_terminal(
        ["--database", manager.config.url, "import", "--conflict", "overwrite", str(path)],
        answer)
    assert returncode == code, screen
    assert "Previewing" in screen and "Change 2 existing row(s)? [y/N]" in screen
    manager.bind()
    if answer == "n":
        assert "Aborted" in screen and checksums(manager) == before
    else:
        assert "Importing" in screen and "Imported" in screen
        assert checksums(manager) != before


@pytest.mark.parametrize("conflict", ["overwrite", "merge"])
def test_reimporting_identical_rows_reports_them_unchanged_and_asks_nothing(manager,
                                                                            tmp_path, conflict):
    populate(manager)
    path = tmp_path / "same.json"
    assert CliRunner().invoke(cli, ["--database", manager.config.url, "export", "-o",
                                    str(path)]).exit_code == 0
    before = checksums(manager)
    result = _import(manager, "--conflict", conflict, "--json", str(path))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["created"], report["updated"], report["unchanged"]) == (0, 0, 13)
    assert report["tables"]["devices"] == {"created": 0, "updated": 0, "skipped": 0,
                                           "unchanged": 2}
    assert "Preview" not in result.stderr
    assert checksums(manager) == before
