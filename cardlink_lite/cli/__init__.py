"""``cardlink-db``: the bench operator's command line, a thin layer over the library."""

import os
import sys

from . import data, demo, keys, logs, report, runs, schema, sessions  # noqa: F401  (commands attach)
from .base import cli

__all__ = ["cli", "main"]


def main(argv=None) -> None:
    """Console-script entry point."""
    try:
        cli.main(args=argv, prog_name="cardlink-db", standalone_mode=True)
    except BrokenPipeError:
        # Python would complain again while flushing stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
