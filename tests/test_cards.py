"""CardRepository: encrypted PSK storage, PSK updates, lookups and profile export."""

from __future__ import annotations

import logging

import pytest
from cryptography.fernet import Fernet

from cardlink_lite import (
    CardProfile,
    CardType,
    EncryptionError,
    UnitOfWork,
    ValidationError,
)
from cardlink_lite.models import CardProfile as Model
from tests.repository_helpers import committed_ids

PSK = b"my_secret_psk_key_16"

pytest_plugins = ["tests.repository_fixtures"]


def _iccids(rows) -> list[str]:
    return [c.iccid for c in rows]


def _stored_token(manager, iccid: str) -> bytes:
    with UnitOfWork(manager):
        value = (Model.select(Model.psk_key_encrypted).where(Model.iccid == iccid)
                 .tuples().get()[0])
    return bytes(value)


def test_create_with_psk_stores_only_ciphertext(manager, fernet_key, events):
    with UnitOfWork(manager) as uow:
        card = CardProfile(iccid="89011234567890123456", card_type=CardType.USIM,
                           psk_identity="card_001")
        assert uow.cards.create_with_psk(card, PSK) is card
        assert card.has_psk
    token = _stored_token(manager, "89011234567890123456")
    assert PSK not in token
    assert Fernet(fernet_key).decrypt(token) == PSK
    with UnitOfWork(manager) as uow:
        assert uow.cards.get_psk_key("89011234567890123456") == PSK
    assert events.events[0].data == {"card_type": "USIM", "psk_identity": "card_001"}
    assert "psk_key" not in repr(events.events) and "my_secret" not in repr(events.events)
    assert "my_secret" not in repr(card) and token.decode() not in repr(card)


def test_no_key_means_no_psk(manager):
    with UnitOfWork(manager) as uow:
        with pytest.raises(EncryptionError, match="CARDLINK_ENCRYPTION_KEY not set"):
            uow.cards.create_with_psk(CardProfile(iccid="8901"), PSK)
        assert uow.cards.count() == 0        # nothing stored in plaintext instead


def test_bad_psk_values(manager, fernet_key):
    with UnitOfWork(manager) as uow:
        for bad in ("hex-string", b"", None):
            with pytest.raises(ValidationError, match="PSK key"):
                uow.cards.create_with_psk(CardProfile(iccid="8901"), bad)


def test_wrong_key_cannot_read_psk(manager, fernet_key, monkeypatch):
    with UnitOfWork(manager) as uow:
        uow.cards.create_with_psk(CardProfile(iccid="8901"), PSK)
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", Fernet.generate_key().decode())
    with UnitOfWork(manager) as uow:
        with pytest.raises(EncryptionError, match="Invalid key or corrupted data"):
            uow.cards.get_psk_key("8901")


def test_get_psk_key_of_unknown_card_or_card_without_psk(manager, fernet_key):
    with UnitOfWork(manager) as uow:
        uow.cards.create(CardProfile(iccid="8902"))
        assert uow.cards.get_psk_key("8902") is None
        assert uow.cards.get_psk_key("unknown") is None


def test_update_psk_both_spellings(manager, fernet_key, events, caplog):
    caplog.set_level(logging.DEBUG)
    with UnitOfWork(manager) as uow:
        uow.cards.create_with_psk(CardProfile(iccid="8901", psk_identity="old"), PSK)
    events.clear()
    with UnitOfWork(manager) as uow:
        assert uow.cards.update_psk("8901", identity="new_identity", key=b"new_psk_key_here")
        card = uow.cards.get("8901")
        assert card.psk_identity == "new_identity"
        assert uow.cards.get_psk_key("8901") == b"new_psk_key_here"
        assert uow.cards.update_psk("8901", psk_identity="design", psk_key=b"design_key")
        assert uow.cards.get_psk_key("8901") == b"design_key"
        assert uow.cards.update_psk("8901", "positional")          # identity only
        assert uow.cards.get("8901").psk_identity == "positional"
        assert uow.cards.get_psk_key("8901") == b"design_key"
        assert uow.cards.update_psk("unknown", identity="x") is False
        with pytest.raises(ValidationError, match="needs identity"):
            uow.cards.update_psk("8901")
        with pytest.raises(ValidationError, match="not both"):
            uow.cards.update_psk("8901", identity="a", psk_identity="b")
    text = repr(events.events) + caplog.text
    for secret in ("new_psk_key_here", "design_key", PSK.decode()):
        assert secret not in text
    assert events.events[0].data == {"psk_identity": "new_identity", "psk_key_changed": True}


def test_find_by_type_and_with_psk(manager, fernet_key):
    with UnitOfWork(manager) as uow:
        uow.cards.create_with_psk(CardProfile(iccid="A1", card_type="usim"), PSK)
        uow.cards.create(CardProfile(iccid="A2", card_type=CardType.USIM, psk_identity="id"))
        uow.cards.create(CardProfile(iccid="A3", card_type=CardType.EUICC))
        assert _iccids(uow.cards.find_by_type(CardType.USIM)) == ["A1", "A2"]
        assert _iccids(uow.cards.find_by_type("EUICC")) == ["A3"]
        assert uow.cards.find_by_type(CardType.SIM) == []
        assert _iccids(uow.cards.find_with_psk()) == ["A1"]
        with pytest.raises(ValidationError, match="card_type must be one of"):
            uow.cards.find_by_type("floppy")


def test_find_by_admin_url_exact_or_prefix(manager):
    urls = {"C1": "https://admin.example.com:8443/api", "C2": "https://admin.example.com/ota",
            "C3": "https://admin.example.community/", "C4": "https://ADMIN.example.com/x",
            "C5": "https://admin.example.com", "C6": None}
    with UnitOfWork(manager) as uow:
        uow.cards.create_all([CardProfile(iccid=k, admin_url=v) for k, v in urls.items()])
        cards = uow.cards.find_by_admin_url
        assert _iccids(cards("https://admin.example.com")) == ["C1", "C2", "C5"]
        assert _iccids(cards("https://admin.example.com:8443/api")) == ["C1"]
        assert _iccids(cards("https://admin.example.com/")) == ["C2"]
        assert cards("https://other.example.com") == []
        assert cards("https://admin.example.com%") == []       # wildcards are literal
        with pytest.raises(ValidationError):
            cards("")


def test_export_profile(manager, fernet_key):
    with UnitOfWork(manager) as uow:
        uow.cards.create_with_psk(
            CardProfile(iccid="8901", imsi="310120987654321", card_type=CardType.USIM,
                        psk_identity="card_001", trigger_config={"sms": True}), PSK)
        uow.cards.create(CardProfile(iccid="8902"))
        plain = uow.cards.export_profile("8901")
        assert plain["iccid"] == "8901" and plain["card_type"] == "USIM"
        assert plain["trigger_config"] == {"sms": True} and plain["has_psk"] is True
        assert "psk_key" not in plain and "psk_key_encrypted" not in plain
        assert PSK.hex() not in repr(plain)
        full = uow.cards.export_profile("8901", include_key=True)
        assert full["psk_key"] == PSK.hex()
        assert "psk_key" not in uow.cards.export_profile("8902", include_key=True)
        assert uow.cards.export_profile("unknown") is None


def test_rollback_in_the_middle(manager, fernet_key):
    with UnitOfWork(manager) as uow:
        uow.cards.create_with_psk(CardProfile(iccid="8901", psk_identity="a"), PSK)
    with UnitOfWork(manager) as uow:
        uow.cards.update_psk("8901", identity="b", key=b"other")
        uow.cards.create(CardProfile(iccid="8902"))
        uow.rollback()
        assert uow.cards.get_psk_key("8901") == PSK
        assert uow.cards.get("8901").psk_identity == "a"
    assert committed_ids(manager, Model) == {"8901"}
