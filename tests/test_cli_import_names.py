"""``logs import`` takes any file the system can name, and says plainly when a file is not
in the format given."""

import os
import sys

import pytest
from click.testing import CliRunner

from cardlink_lite import TraceSource
from cardlink_lite.cli import cli
from cardlink_lite.db import database_proxy


def _import(manager, *args):
    result = CliRunner().invoke(cli, ["--database", manager.config.url, "logs", "import", *args])
    database_proxy.initialize(manager.database)  # the CLI unbinds its own on exit
    return result


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="needs byte file names")
def test_a_file_name_that_is_not_utf8_is_imported_and_stored_escaped(manager, tmp_path):
    path = tmp_path / os.fsdecode(b"bench-\xff.log")  # Latin-1 name from an old capture box
    path.write_text("00A40004023F00\n9000\n")
    result = _import(manager, str(path))
    assert result.exit_code == 0, result.output
    stored = TraceSource.get().path
    assert stored.endswith("bench-\\xff.log")
    assert "bench-\\xff.log" in result.output


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_pcap_given_for_a_file_that_is_no_trace_says_it_is_not_one(manager, tmp_path, fmt):
    path = tmp_path / "capture.bin"
    path.write_bytes(bytes(range(256)) * 4)  # binary, no capture header
    result = _import(manager, str(path), "--format", fmt)
    assert result.exit_code == 1
    assert result.output == (f"Error: {path}: not a {fmt} file: it does not start with a "
                             f"{fmt} header, and is no other trace this tool reads\n")
