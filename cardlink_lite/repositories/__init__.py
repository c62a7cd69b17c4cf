"""One generic base repository and the six entity repositories a unit of work hands out."""

from .base import BaseRepository, Page
from .cards import CardRepository
from .counters import CounterRepository
from .devices import DeviceMatches, DeviceRepository
from .logs import LogRepository
from .sessions import SessionRepository
from .settings import SettingRepository, SettingsRepository
from .test_results import TestRepository

__all__ = [
    "BaseRepository",
    "CardRepository",
    "CounterRepository",
    "DeviceMatches",
    "DeviceRepository",
    "LogRepository",
    "Page",
    "SessionRepository",
    "SettingRepository",
    "SettingsRepository",
    "TestRepository",
]
