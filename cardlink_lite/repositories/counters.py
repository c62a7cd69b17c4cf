"""SCP80 replay counters: the last counter used per (card, keyset, TAR), handed out atomically."""

from __future__ import annotations

import contextlib

import peewee

from ..errors import IntegrityError, NotFoundError, ValidationError
from ..fields import utc_now
from ..models import CardProfile, ReplayCounter
from .base import BaseRepository

__all__ = ["COUNTER_MAX", "CounterRepository", "counter_key", "counter_value"]

COUNTER_MAX = (1 << 40) - 1  # the SCP80 counter (CNTR) is 5 bytes
_KEY = (ReplayCounter.card, ReplayCounter.keyset, ReplayCounter.tar)
_KEYSET_MAX = ReplayCounter.keyset.max_length


class CounterRepository(BaseRepository):
    """Replay counters. ``next_counter`` is one atomic statement (or one locked row on
    MySQL/MariaDB), so two processes asking at once never get the same value."""

    model = ReplayCounter
    entity_type = "counter"

    def next_counter(self, card, keyset, tar) -> int:
        """Count one more use of (card, keyset, TAR) and return the new value (1 first)."""
        iccid, keyset, tar = counter_key(card, keyset, tar)
        now = utc_now()
        returning = not _is_mysql(self.database)  # SQLite >= 3.35 and PostgreSQL
        query = (ReplayCounter
                 .insert(card=iccid, keyset=keyset, tar=tar, counter=1, updated_at=now)
                 .on_conflict(conflict_target=list(_KEY) if returning else None,
                              update={ReplayCounter.counter: ReplayCounter.counter + 1,
                                      ReplayCounter.updated_at: now}))
        with self._guarded(iccid):
            if returning:
                rows = list(query.returning(ReplayCounter.counter).tuples().execute())
                value = rows[0][0]
            else:
                # MySQL/MariaDB: the upsert keeps the row locked until commit, and a
                # transaction reads its own write.
                query.execute()
                value = self._current(iccid, keyset, tar)
            if value > COUNTER_MAX:
                raise ValidationError(
                    f"the replay counter of card {iccid} keyset {keyset} TAR {tar} is "
                    f"exhausted (5 bytes, {COUNTER_MAX}); change the keys of that keyset")
        return int(value)

    def peek_counter(self, card, keyset, tar) -> int | None:
        """The last counter used for (card, keyset, TAR); None if none was ever used."""
        iccid, keyset, tar = counter_key(card, keyset, tar)
        self._touch()
        with self._wrap():
            return self._current(iccid, keyset, tar)

    def set_counter(self, card, keyset, tar, value: int, *, force: bool = False) -> int | None:
        """Resynchronise with a card: make ``value`` the last counter used, never backwards
        unless ``force`` (the card refuses a reused counter); returns the previous one."""
        iccid, keyset, tar = counter_key(card, keyset, tar)
        value = counter_value(value)
        with self._guarded(iccid):
            inserted = (ReplayCounter
                        .insert(card=iccid, keyset=keyset, tar=tar, counter=value,
                                updated_at=utc_now())
                        .on_conflict_ignore().as_rowcount().execute())
            if inserted:
                return None
            previous = self._current(iccid, keyset, tar, lock=True)
            if previous is None:  # MySQL's INSERT IGNORE also ignores a missing card
                raise _unknown_card(iccid)
            if previous > value and not force:
                raise ValidationError(
                    f"the replay counter of card {iccid} keyset {keyset} TAR {tar} is "
                    f"{previous}; refusing to move it back to {value} (the card would "
                    "refuse reused counters); pass force=True to do it anyway")
            (ReplayCounter.update(counter=value, updated_at=utc_now())
             .where(*_match(iccid, keyset, tar)).execute())
        return int(previous)

    def find_by_card(self, card) -> list[ReplayCounter]:
        """Every counter of a card, by keyset and TAR."""
        iccid = _iccid(card)
        return self._list(self._select(ReplayCounter.card == iccid)
                          .order_by(ReplayCounter.keyset, ReplayCounter.tar))

    # -- internals ---------------------------------------------------------------
    def _current(self, iccid, keyset, tar, lock: bool = False):
        query = (ReplayCounter.select(ReplayCounter.counter)
                 .where(*_match(iccid, keyset, tar)).tuples())
        if lock and self.database.for_update:
            query = query.for_update()
        row = query.first()
        return None if row is None else int(row[0])

    @contextlib.contextmanager
    def _guarded(self, iccid):
        """A savepoint around a counter write; a card that does not exist is NotFoundError."""
        try:
            with self._write(iccid):
                yield
        except IntegrityError as exc:
            if "foreign key" not in str(exc):
                raise
            raise _unknown_card(iccid) from None


def _is_mysql(database) -> bool:
    if isinstance(database, peewee.DatabaseProxy):
        database = database.obj
    return isinstance(database, peewee.MySQLDatabase)


def _unknown_card(iccid: str) -> NotFoundError:
    return NotFoundError(
        f"card {iccid} not found; add its card profile before counting its OTA commands")


def _match(iccid, keyset, tar):
    return (ReplayCounter.card == iccid, ReplayCounter.keyset == keyset,
            ReplayCounter.tar == tar)


def counter_key(card, keyset, tar) -> tuple[str, str, str]:
    """(ICCID, keyset, TAR) checked and normalised: TAR as 6 upper-case hex digits."""
    return _iccid(card), _keyset(keyset), _tar(tar)


def _iccid(card) -> str:
    if isinstance(card, CardProfile):
        card = card.iccid
    if not isinstance(card, str) or not card.strip():
        raise ValidationError(f"card must be an ICCID or a CardProfile; got {str(card)[:24]!r}")
    return card.strip()


def _keyset(keyset) -> str:
    if isinstance(keyset, int) and not isinstance(keyset, bool):
        keyset = str(keyset)  # a key version number
    if not isinstance(keyset, str) or not keyset.strip() or len(keyset.strip()) > _KEYSET_MAX:
        raise ValidationError(
            f"keyset must be text of 1 to {_KEYSET_MAX} characters (e.g. 'kic=01,kid=01') "
            f"or a key version number; got {str(keyset)[:24]!r}")
    return keyset.strip()


def _tar(tar) -> str:
    if isinstance(tar, bytes | bytearray):
        tar = bytes(tar).hex()
    text = "".join(str(tar).split()).upper()
    if len(text) != 6 or any(c not in "0123456789ABCDEF" for c in text):
        raise ValidationError(
            f"tar must be 3 bytes as 6 hex digits such as 'B00001'; got {str(tar)[:24]!r}")
    return text


def counter_value(value, what: str = "a replay counter is") -> int:
    """``value`` if it is an SCP80 counter (5 bytes: 0..COUNTER_MAX); ValidationError if not,
    its message starting with ``what``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= COUNTER_MAX:
        raise ValidationError(f"{what} an integer from 0 to {COUNTER_MAX} (5 bytes); "
                              f"got {str(value)[:24]!r}")
    return value
