"""Fixtures of the repository tests, loaded with ``pytest_plugins``: events (an
EventRecorder), event_list (a plain list), fernet_key."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from cardlink_lite.events import get_emitter
from tests.repository_helpers import EventRecorder


@pytest.fixture
def events():
    recorder = EventRecorder()
    get_emitter().on("*", recorder)
    yield recorder
    get_emitter().off("*", recorder)


@pytest.fixture
def event_list():
    """Every event delivered while the test runs, as a plain list."""
    seen = []
    handler = get_emitter().on("*", seen.append)
    yield seen
    get_emitter().off("*", handler)


@pytest.fixture
def fernet_key(monkeypatch) -> str:
    key = Fernet.generate_key().decode()
    monkeypatch.setenv("CARDLINK_ENCRYPTION_KEY", key)
    return key
