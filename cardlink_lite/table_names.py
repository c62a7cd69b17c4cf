"""The guide's names for the tables: the one spelling in all output (SQL names are input too).
A leaf module without imports, so the CLI can name tables without loading the library."""

__all__ = ["TABLE_NAMES", "display_name"]

TABLE_NAMES = {"devices": "devices", "card_profiles": "cards", "ota_sessions": "sessions",
               "trace_sources": "traces", "comm_logs": "logs", "test_results": "tests",
               "settings": "settings", "replay_counters": "counters", "test_runs": "runs"}


def display_name(table: str) -> str:
    """The name output uses for the SQL table ``table``."""
    return TABLE_NAMES.get(table, table)
