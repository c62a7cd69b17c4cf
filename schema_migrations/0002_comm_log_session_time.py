"""Schema v2: a (session_id, timestamp) index on comm_logs, so a session's trace reads in order."""


def up(migrator, db):
    migrator.migrate(migrator.add_index("comm_logs", ("session_id", "timestamp"), False,
                                        name="idx_log_session_time"))


def down(migrator, db):
    migrator.migrate(migrator.drop_index("comm_logs", "idx_log_session_time"))
