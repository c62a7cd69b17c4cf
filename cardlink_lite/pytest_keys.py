"""Names the pytest plugin and its recorder share (no imports: the idle plugin loads this)."""

__all__ = ["ENV_VAR", "RESULT_PROPERTY", "TARGET_PROPERTY"]

ENV_VAR = "CARDLINK_PYTEST_DB"
# user_properties keys: they travel with each report, so the xdist controller sees them.
TARGET_PROPERTY = "cardlink.target"
RESULT_PROPERTY = "cardlink.result"
