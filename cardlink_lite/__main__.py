"""``python -m cardlink_lite`` runs the ``cardlink-db`` command line."""

from .cli import main

main()
