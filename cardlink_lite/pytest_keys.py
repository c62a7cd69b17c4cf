"""Names the pytest plugin and its recorder share (no imports: the idle plugin loads this)."""

__all__ = ["ENV_VAR", "RESULT_PROPERTY", "SESSION_PROPERTY", "TARGET_PROPERTY", "running_test"]

ENV_VAR = "CARDLINK_PYTEST_DB"
# user_properties keys: they travel with each report, so the xdist controller sees them.
TARGET_PROPERTY = "cardlink.target"
RESULT_PROPERTY = "cardlink.result"
SESSION_PROPERTY = "cardlink.session"

# The user_properties of the test running in this process (set by the plugin around each
# test), or None: record_session appends (SESSION_PROPERTY, session id) to it, so the
# test's result names the OTA sessions it drove.
running_test: list = [None]
