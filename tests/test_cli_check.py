"""``cardlink-db check``: each problem with the hint that fixes it, --repair, --quick."""

import json

from click.testing import CliRunner

from cardlink_lite import migrations as mig
from cardlink_lite.cli import cli


def _run(manager, *args):
    return CliRunner().invoke(cli, ["--database", manager.config.url, "check", *args])


def _drop_index(manager, name, table):
    manager.bind()
    if manager.backend == "mysql":
        manager.database.execute_sql(f"DROP INDEX {name} ON {table}")
    else:
        manager.database.execute_sql(f"DROP INDEX {name}")


def test_a_dropped_index_gets_repair_as_its_hint_and_repair_recreates_it(manager):
    _drop_index(manager, "idx_log_direction", "comm_logs")
    manager.close()
    bad = _run(manager)
    assert bad.exit_code == 1
    problems = [line for line in bad.stdout.splitlines() if line.startswith("PROBLEM")]
    assert len(problems) == 1
    assert problems[0].startswith("PROBLEM: index idx_log_direction on logs is missing; "
                                  "recreate it with: cardlink-db check --repair (or run: "
                                  "CREATE INDEX ")
    assert "migrate" not in bad.output
    assert bad.stderr.strip().splitlines()[-1] == "Error: 1 problem(s) found"
    repaired = _run(manager, "--repair")
    assert repaired.exit_code == 0, repaired.output
    assert "REPAIRED: recreated index idx_log_direction" in repaired.stdout
    again = json.loads(_run(manager, "--json").stdout)
    assert again["ok"] and again["checks"]["missing_indexes"] == []


def test_a_store_newer_than_the_code_says_upgrade_the_package(manager):
    mig._runner(manager).History.create(name="9999_from_the_future")
    manager.close()
    result = _run(manager)
    assert result.exit_code == 1
    assert ("PROBLEM: the store is at schema revision 9999_from_the_future, newer than this "
            f"cardlink_lite knows ({mig.get_head_revision()}); upgrade the package: "
            "pip install --upgrade cardlink-lite") in result.stdout
    assert "migrate" not in result.output


def test_a_store_behind_the_code_says_migrate(empty_manager):
    mig.run_migrations("0001", manager=empty_manager)
    empty_manager.close()
    result = _run(empty_manager)
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0] == (
        f"PROBLEM: schema revision 0001_initial but this cardlink_lite expects "
        f"{mig.get_head_revision()}; run: cardlink-db migrate".replace(
            "revision 0001_initial", "revision is 0001_initial"))


def test_quick_and_full_checks_say_what_they_ran_and_how_long(manager):
    manager.close()
    full = _run(manager)
    quick = _run(manager, "--quick")
    assert full.exit_code == quick.exit_code == 0, full.output + quick.output
    assert full.stdout.splitlines()[-1].endswith(" s (full check)")
    assert quick.stdout.splitlines()[-1].endswith(" s (quick check)")
    report = json.loads(_run(manager, "--quick", "--json").stdout)
    assert report["seconds"] >= 0 and report["checks"]["mode"] == "quick"
    if manager.backend == "sqlite":
        assert report["checks"]["quick_check"] == ["ok"]
        assert "integrity_check" not in report["checks"]


def test_repair_refuses_a_store_without_the_schema_and_init_still_works(empty_manager):
    empty_manager.close()
    result = _run(empty_manager, "--repair")
    assert result.exit_code == 1
    assert result.stderr == ("Error: check --repair repairs only a store at the newest schema "
                             "revision: the store has no cardlink schema; create it with: "
                             "cardlink-db init\n")
    init = CliRunner().invoke(cli, ["--database", empty_manager.config.url, "init"])
    assert init.exit_code == 0, init.output
    assert _run(empty_manager).exit_code == 0


def test_repair_refuses_a_store_behind_the_code_and_migrate_still_works(empty_manager):
    mig.run_migrations("0001", manager=empty_manager)
    empty_manager.close()
    result = _run(empty_manager, "--repair")
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: check --repair repairs only a store at the newest schema revision: schema "
        f"revision is 0001_initial but this cardlink_lite expects {mig.get_head_revision()}; "
        "run: cardlink-db migrate\n")
    migrated = CliRunner().invoke(cli, ["--database", empty_manager.config.url, "migrate"])
    assert migrated.exit_code == 0, migrated.output
    assert _run(empty_manager).exit_code == 0
