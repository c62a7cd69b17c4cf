"""SCP80 replay counters for lab scripts: each call is its own committed transaction."""

from __future__ import annotations

from .db import get_manager
from .unit_of_work import UnitOfWork

__all__ = ["next_counter", "peek_counter", "set_counter"]


def next_counter(card, keyset, tar, *, manager=None) -> int:
    """The next SCP80 counter for (card, keyset, TAR), committed before it is returned."""
    with UnitOfWork(manager or get_manager()) as uow:
        return uow.counters.next_counter(card, keyset, tar)


def peek_counter(card, keyset, tar, *, manager=None) -> int | None:
    """The last counter used for (card, keyset, TAR), or None."""
    with UnitOfWork(manager or get_manager()) as uow:
        return uow.counters.peek_counter(card, keyset, tar)


def set_counter(card, keyset, tar, value: int, *, force: bool = False,
                manager=None) -> int | None:
    """Resynchronise with a card (never backwards unless ``force``); returns the old value."""
    with UnitOfWork(manager or get_manager()) as uow:
        return uow.counters.set_counter(card, keyset, tar, value, force=force)
