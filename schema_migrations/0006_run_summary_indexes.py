"""Schema v6: indexes for the end-of-run summary, so it reads the tests that changed, not the
whole history of the suite.

- ``idx_test_run`` becomes ``(run_id, test_name)``: a run's results still come through its
  prefix, and the comparison of two runs finds the tests only one of them ran in the index.
- ``idx_test_run_outcome`` ``(run_id, status, attempts)``: a run's failures and its passes
  after a rerun, and its counts per status, without reading the rows.
"""


def up(migrator, db):
    migrator.migrate(
        migrator.drop_index("test_results", "idx_test_run"),
        migrator.add_index("test_results", ("run_id", "test_name"), False, name="idx_test_run"),
        migrator.add_index("test_results", ("run_id", "status", "attempts"), False,
                           name="idx_test_run_outcome"),
    )


def down(migrator, db):
    migrator.migrate(
        migrator.drop_index("test_results", "idx_test_run_outcome"),
        migrator.drop_index("test_results", "idx_test_run"),
        migrator.add_index("test_results", ("run_id",), False, name="idx_test_run"),
    )
