"""Export and import of the whole store as JSON or YAML (the names the guide uses).

The work lives in :mod:`.exporter`, :mod:`.importer` and :mod:`.import_reader`.
"""

from __future__ import annotations

from .exporter import DataExporter
from .import_reader import parse_document
from .importer import ConflictMode, DataImporter, ImportResult
from .transfer_format import FORMAT_VERSION, TABLES, ExportFormat, resolve_tables

__all__ = [
    "FORMAT_VERSION",
    "TABLES",
    "ConflictMode",
    "DataExporter",
    "DataImporter",
    "ExportFormat",
    "ImportResult",
    "parse_document",
    "resolve_tables",
]
