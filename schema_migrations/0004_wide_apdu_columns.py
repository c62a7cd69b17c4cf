"""Wide APDU columns: comm_logs.raw_data and decoded_data become MEDIUMTEXT on MySQL/MariaDB.

TEXT holds 65,535 bytes there, less than an extended-length APDU response (64 KiB of
data is 131,072+ hex digits). SQLite and PostgreSQL TEXT already hold them: no change.
Going back fails (changing nothing) while a stored value is longer than TEXT holds.
"""

import peewee


def _alter(db, column_type):
    if isinstance(db, peewee.MySQLDatabase):
        db.execute_sql(f"ALTER TABLE `comm_logs` MODIFY `raw_data` {column_type} NOT NULL, "
                       f"MODIFY `decoded_data` {column_type} NULL")


def up(migrator, db):
    _alter(db, "MEDIUMTEXT")


def down(migrator, db):
    _alter(db, "TEXT")
