"""SCP80 replay counters: atomic across processes, never backwards unless forced."""

from __future__ import annotations

import multiprocessing

import pytest

from cardlink_lite import (
    CardProfile,
    DatabaseConfig,
    DatabaseManager,
    NotFoundError,
    ValidationError,
)
from cardlink_lite.counters import next_counter, peek_counter, set_counter
from cardlink_lite.unit_of_work import UnitOfWork

ICCID = "89014103211118510720"
KEYSET = "kic=01,kid=01"
PROCESSES, CALLS = 4, 1000


@pytest.fixture
def card(manager):
    with UnitOfWork(manager) as uow:
        uow.cards.create(CardProfile(iccid=ICCID))
    return ICCID


def _count(url: str, barrier, results, calls: int) -> None:
    """A bench process: its own connection, then ``calls`` counters as fast as it can."""
    manager = DatabaseManager(DatabaseConfig(url))
    manager.initialize()
    try:
        barrier.wait(timeout=120)
        results.put([next_counter(ICCID, KEYSET, "B00001", manager=manager)
                     for _ in range(calls)])
    except BaseException as exc:
        results.put(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        manager.close()


@pytest.mark.slow
def test_four_processes_get_distinct_gap_free_counters(manager, card, db_url):
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(PROCESSES), ctx.Queue()
    workers = [ctx.Process(target=_count, args=(db_url, barrier, results, CALLS))
               for _ in range(PROCESSES)]
    for worker in workers:
        worker.start()
    try:
        outcomes = [results.get(timeout=600) for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=60)
    problems = [o for o in outcomes if isinstance(o, str)]
    assert problems == []
    values = [v for chunk in outcomes for v in chunk]
    assert sorted(values) == list(range(1, PROCESSES * CALLS + 1))
    assert all(chunk == sorted(chunk) for chunk in outcomes)  # each process sees them rise
    assert peek_counter(ICCID, KEYSET, "B00001", manager=manager) == PROCESSES * CALLS


def test_counters_are_per_card_keyset_and_tar(manager, card):
    with UnitOfWork(manager) as uow:
        uow.cards.create(CardProfile(iccid="8901"))
    assert peek_counter(ICCID, KEYSET, "B00001", manager=manager) is None
    assert [next_counter(ICCID, KEYSET, "b00001", manager=manager) for _ in range(3)] == [1, 2, 3]
    assert next_counter(ICCID, KEYSET, "B0 00 02", manager=manager) == 1
    assert next_counter(ICCID, 3, "B00001", manager=manager) == 1  # a key version
    assert next_counter("8901", KEYSET, bytes.fromhex("B00001"), manager=manager) == 1
    assert peek_counter(ICCID, KEYSET, "B00001", manager=manager) == 3
    with UnitOfWork(manager) as uow:
        rows = uow.counters.find_by_card(ICCID)
    assert [(r.keyset, r.tar, r.counter) for r in rows] == [
        ("3", "B00001", 1), (KEYSET, "B00001", 3), (KEYSET, "B00002", 1)]


def test_set_counter_refuses_to_go_back_unless_forced(manager, card):
    assert set_counter(ICCID, KEYSET, "B00001", 10, manager=manager) is None
    assert next_counter(ICCID, KEYSET, "B00001", manager=manager) == 11
    with pytest.raises(ValidationError, match="is 11; refusing to move it back to 5"):
        set_counter(ICCID, KEYSET, "B00001", 5, manager=manager)
    assert peek_counter(ICCID, KEYSET, "B00001", manager=manager) == 11
    assert set_counter(ICCID, KEYSET, "B00001", 11, manager=manager) == 11  # no change: fine
    assert set_counter(ICCID, KEYSET, "B00001", 5, force=True, manager=manager) == 11
    assert next_counter(ICCID, KEYSET, "B00001", manager=manager) == 6


def test_a_counter_rolled_back_with_its_unit_of_work_is_handed_out_again(manager, card):
    with pytest.raises(RuntimeError), UnitOfWork(manager) as uow:
        assert uow.counters.next_counter(ICCID, KEYSET, "B00001") == 1
        raise RuntimeError("the OTA command was never sent")
    assert next_counter(ICCID, KEYSET, "B00001", manager=manager) == 1


def test_exhausted_counter_is_refused(manager, card):
    set_counter(ICCID, KEYSET, "B00001", (1 << 40) - 1, manager=manager)
    with pytest.raises(ValidationError, match="exhausted"):
        next_counter(ICCID, KEYSET, "B00001", manager=manager)
    assert peek_counter(ICCID, KEYSET, "B00001", manager=manager) == (1 << 40) - 1


@pytest.mark.parametrize("args, message", [
    (("8901", KEYSET, "B001"), "tar must be 3 bytes as 6 hex digits"),
    (("8901", KEYSET, "ZZZZZZ"), "tar must be 3 bytes"),
    (("8901", "", "B00001"), "keyset must be text of 1 to 32"),
    (("8901", "k" * 33, "B00001"), "keyset must be text"),
    ((None, KEYSET, "B00001"), "card must be an ICCID"),
])
def test_bad_keys_are_refused_in_one_line(manager, args, message):
    with pytest.raises(ValidationError, match=message) as info:
        next_counter(*args, manager=manager)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("value", [-1, 1 << 40, 1.5, True, "7"])
def test_set_counter_refuses_values_outside_five_bytes(manager, card, value):
    with pytest.raises(ValidationError,
                       match="^a replay counter is an integer from 0 to 1099511627775"):
        set_counter(ICCID, KEYSET, "B00001", value, manager=manager)


def test_unknown_card_is_not_found(manager):
    with pytest.raises(NotFoundError, match="card 8999 not found; add its card profile"):
        next_counter("8999", KEYSET, "B00001", manager=manager)
    with pytest.raises(NotFoundError, match="card 8999 not found"):
        set_counter("8999", KEYSET, "B00001", 4, manager=manager)
