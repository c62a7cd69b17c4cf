"""Every command's ``--help``: an Example block whose lines stay on their own lines."""

import pytest
from click.testing import CliRunner

from cardlink_lite.cli import cli


def _commands(command, path):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, [*path, name])


def _example_lines(help_text: str) -> list[str]:
    """The example lines of a docstring: the indented lines after ``Example:``."""
    lines = help_text.split("Example:", 1)[1].splitlines()
    return [line.strip() for line in lines if line.strip() and line.strip() != "\b"]


COMMANDS = list(_commands(cli, []))


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) or "cardlink-db"
                                                        for p, _ in COMMANDS])
def test_each_example_line_stands_on_its_own_line(path, command):
    assert command.help and "Example:" in command.help, f"{path} has no Example block"
    result = CliRunner().invoke(cli, [*path, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    shown = [line.strip() for line in result.output.splitlines()]
    examples = _example_lines(command.help)
    assert examples, f"{path}: empty Example block"
    for line in examples:
        assert line in shown, f"{' '.join(path)}: {line!r} is run together in --help"
