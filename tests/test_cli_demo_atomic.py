"""``cardlink-db demo`` is one transaction: a failure part-way leaves nothing behind."""

from click.testing import CliRunner

from cardlink_lite.cli import cli, demo_data
from cardlink_lite.models import ALL_MODELS


def test_a_demo_that_fails_part_way_leaves_no_rows(manager, db_url, monkeypatch):
    def broken_history(*args):
        raise OSError("disk full")  # after the device, card, counter and session are written

    monkeypatch.setattr(demo_data, "_record_history", broken_history)
    result = CliRunner().invoke(cli, ["--database", db_url, "demo"])
    assert result.exit_code == 1 and "disk full" in result.output
    manager.bind()
    left = {m._meta.table_name: m.select().count() for m in ALL_MODELS}
    assert set(left.values()) == {0}, left
