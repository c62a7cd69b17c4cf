"""Card profiles and their PSKs, which are stored only Fernet-encrypted."""

from __future__ import annotations

import logging

from ..crypto import decrypt_psk, encrypt_psk
from ..errors import ValidationError
from ..models import CardProfile
from .base import BaseRepository, one_of, plain_value

__all__ = ["CardRepository", "find_psk_by_identity"]

logger = logging.getLogger("cardlink_lite.cards")
# Rows read per identity lookup: MySQL compares case- and trailing-space-insensitively, so
# a few near-matches may come back; the exact one is picked in Python.
_IDENTITY_ROWS = 8

_EXPORTED = ("iccid", "imsi", "card_type", "atr", "psk_identity", "admin_url",
             "trigger_config", "bip_config", "security_domains", "notes",
             "created_at", "updated_at")
# What may follow a URL prefix given to find_by_admin_url (a port, a path, a query).
_URL_BOUNDARIES = (":", "/", "?")


class CardRepository(BaseRepository):
    """Card profiles: PSK storage (encrypted with CARDLINK_ENCRYPTION_KEY) and lookups."""

    model = CardProfile
    entity_type = "card"
    event_fields = ("card_type", "psk_identity")

    def create_with_psk(self, card: CardProfile, psk_key: bytes) -> CardProfile:
        """Encrypt ``psk_key`` into the profile and insert it (EncryptionError with no key)."""
        card = self._coerce(card)
        card.psk_key_encrypted = encrypt_psk(psk_key)
        return self.create(card)

    def get_psk_key(self, iccid: str) -> bytes | None:
        """The decrypted PSK of card ``iccid``; None if the card or its PSK does not exist."""
        query = (self._select(CardProfile.iccid == iccid)
                 .select(CardProfile.psk_key_encrypted).tuples())
        rows = self._list(query)
        if not rows or rows[0][0] is None:
            return None
        return decrypt_psk(rows[0][0])

    def get_psk_key_by_identity(self, identity: str) -> bytes | None:
        """The decrypted PSK of the card with this PSK identity (exact, case-sensitive);
        None if no card with a PSK has it. One indexed query and one decryption."""
        self._touch()
        with self._wrap():
            found = find_psk_by_identity(self.database, identity)
        return None if found is None else decrypt_psk(found[1])

    def psk_identity_exists(self, identity: str) -> bool:
        """True if a card with a stored PSK has this PSK identity (nothing is decrypted)."""
        self._touch()
        with self._wrap():
            return find_psk_by_identity(self.database, identity) is not None

    def get_all_psk_identities(self) -> list[str]:
        """Every PSK identity that has a key, sorted (never the keys)."""
        query = (self._select(CardProfile.psk_identity.is_null(False),
                              CardProfile.psk_key_encrypted.is_null(False))
                 .select(CardProfile.psk_identity).distinct()
                 .order_by(CardProfile.psk_identity).tuples())
        return sorted({row[0] for row in self._list(query)})

    def update_psk(self, iccid: str, identity: str | None = None, key: bytes | None = None,
                   *, psk_identity: str | None = None, psk_key: bytes | None = None) -> bool:
        """Set a new PSK identity and/or key (either spelling); False if no such card."""
        identity = one_of("identity", identity, "psk_identity", psk_identity)
        key = one_of("key", key, "psk_key", psk_key)
        if identity is None and key is None:
            raise ValidationError("update_psk() needs identity=..., key=... or both")
        data = {} if identity is None else {"psk_identity": identity}
        values = dict(data)
        if key is not None:
            values["psk_key_encrypted"] = encrypt_psk(key)
        changed = self._update_where(iccid, CardProfile.iccid == iccid, **values)
        if changed:
            self._emit(self._event("UPDATED"), iccid, {**data, "psk_key_changed": key is not None})
        return bool(changed)

    def find_by_type(self, card_type) -> list[CardProfile]:
        """Cards of ``card_type`` (a CardType, or its value/name)."""
        return self.find_by(card_type=CardProfile.card_type.coerce_member(card_type))

    def find_with_psk(self) -> list[CardProfile]:
        """Cards that have a PSK key stored."""
        return self._list(self._select(CardProfile.psk_key_encrypted.is_null(False))
                          .order_by(CardProfile.iccid))

    def find_by_admin_url(self, url: str) -> list[CardProfile]:
        """Cards whose admin URL is ``url`` or continues it after ``:``, ``/`` or ``?`` (so not
        ``https://admin.example.community`` for ``https://admin.example.com``)."""
        if not url:
            raise ValidationError("find_by_admin_url() needs a URL or URL prefix")
        field = CardProfile.admin_url
        match = field == url
        if url.endswith(_URL_BOUNDARIES):
            match |= field.startswith(url)
        else:
            for sep in _URL_BOUNDARIES:
                match |= field.startswith(url + sep)
        # startswith() is ILIKE on PostgreSQL; keep the exact-case prefix only.
        rows = self._list(self._select(match).order_by(CardProfile.iccid))
        return [c for c in rows if c.admin_url == url or c.admin_url.startswith(url)]

    def export_profile(self, iccid: str, include_key: bool = False) -> dict | None:
        """The profile as a plain dict; the PSK (hex) only with ``include_key=True``."""
        card = self.get_by_id(iccid)
        if card is None:
            return None
        data = {name: plain_value(getattr(card, name)) for name in _EXPORTED}
        data["has_psk"] = card.has_psk
        if include_key and card.has_psk:
            data["psk_key"] = decrypt_psk(card.psk_key_encrypted).hex()
        return data


def find_psk_by_identity(database, identity) -> tuple[str, bytes] | None:
    """(ICCID, encrypted PSK) of the card whose PSK identity is exactly ``identity``: one
    indexed query, no transaction (a handshake callback); two such cards: None, logged."""
    if not isinstance(identity, str) or not identity:
        return None
    try:
        CardProfile.psk_identity.db_value(identity)
    except ValidationError:
        return None  # longer than the column, or text no backend stores: no card has it
    query = (CardProfile.select(CardProfile.iccid, CardProfile.psk_identity,
                                CardProfile.psk_key_encrypted)
             .where(CardProfile.psk_identity == identity,
                    CardProfile.psk_key_encrypted.is_null(False))
             .order_by(CardProfile.iccid).limit(_IDENTITY_ROWS))
    rows = [r for r in database.execute(query).fetchall() if r[1] == identity]
    if not rows:
        return None
    if len(rows) > 1:
        logger.warning("PSK identity %r belongs to %d cards (%s); refusing to pick one",
                       identity[:64], len(rows), ", ".join(r[0] for r in rows))
        return None
    return rows[0][0], rows[0][2]
