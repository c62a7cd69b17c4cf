"""pytest plugin: each test of a run as one ``TestResult`` (``--cardlink-db URL``, ini
``cardlink_db`` or ``CARDLINK_PYTEST_DB``); idle, it loads nothing of the library."""

from __future__ import annotations

import json
import os

import pytest

from .pytest_keys import ENV_VAR, RESULT_PROPERTY, SESSION_PROPERTY, TARGET_PROPERTY, running_test

__all__ = ["ENV_VAR", "ResultRecord", "cardlink_manager", "cardlink_result", "cardlink_uow"]

_MARKER_KEYS = frozenset({"device", "card"})

recorder_key = pytest.StashKey[object]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cardlink", "cardlink-lite: record results in the bench's store")
    group.addoption("--cardlink-db", metavar="URL",
                    help=f"record every test in this database (or ini cardlink_db, env {ENV_VAR})")
    group.addoption("--cardlink-run-id", metavar="ID",
                    help="run id of the results (default: a new UUID)")
    group.addoption("--cardlink-suite", metavar="NAME",
                    help="suite name of the results (default: the rootdir's name)")
    group.addoption("--cardlink-device", metavar="ID",
                    help="device the whole run tests (a marker on a test overrides it)")
    group.addoption("--cardlink-card", metavar="ICCID",
                    help="card the whole run tests (a marker on a test overrides it)")
    group.addoption("--cardlink-firmware", metavar="VERSION",
                    help="firmware the run tests (a label of the run)")
    group.addoption("--cardlink-label", dest="cardlink_labels", action="append", default=[],
                    metavar="KEY=VALUE", help="a free label of the run (repeatable)")
    group.addoption("--cardlink-append", action="store_true",
                    help="add to the run named by --cardlink-run-id although it is recorded "
                         "already (without it a reused run id is refused)")
    group.addoption("--cardlink-no-capture", action="store_true",
                    help="do not keep the captured stdout/stderr/log of failed tests (kept by "
                         "default, the last 10,000 characters of each)")
    group.addoption("--cardlink-flaky-window", type=int, default=5, metavar="N",
                    help="look for tests that flipped status in the last N runs (default 5)")
    group.addoption("--cardlink-batch-size", type=int, default=200, metavar="N",
                    help="commit after this many results, after a failure or error, and when "
                         "results have waited a second (default 200)")
    group.addoption("--cardlink-test-db", metavar="URL",
                    help="server for the cardlink_manager fixture: a fresh database is "
                         "created there per test (default: a temporary SQLite file)")
    parser.addini("cardlink_db", "record every test in this database URL", default=None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cardlink(device=None, card=None): the device and card "
                            "this test runs against, recorded with its result")
    if hasattr(config, "workerinput"):
        return  # xdist worker: the controller records the reports we send it
    url = _enabled_url(config)
    if not url or _runs_no_test(config):
        return
    from .pytest_recorder import CardlinkRecorder  # only now: an idle plugin loads nothing

    recorder = CardlinkRecorder(config, url)
    config.stash[recorder_key] = recorder
    config.pluginmanager.register(recorder, "cardlink-recorder")


def pytest_unconfigure(config: pytest.Config) -> None:
    recorder = config.stash.get(recorder_key, None)
    if recorder is not None:
        del config.stash[recorder_key]
        config.pluginmanager.unregister(recorder)
        recorder.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    enabled = bool(_enabled_url(config))
    for item in items:
        target = _marker_target(item)
        if target and enabled:
            # user_properties travel with the report, so the xdist controller sees them.
            item.user_properties.append((TARGET_PROPERTY, target))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item):
    # record_session inside the test names its session in the test's user_properties.
    running_test[0] = item.user_properties
    try:
        return (yield)
    finally:
        running_test[0] = None


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    report = yield
    # On an xdist worker a UsageError would crash the worker; a collection error is what
    # the controller knows how to show (and it stops the run the same way).
    if hasattr(collector.config, "workerinput") and report.passed:
        for node in report.result or ():
            if isinstance(node, pytest.Item):
                try:
                    _marker_target(node)
                except pytest.UsageError as exc:
                    report.outcome, report.longrepr, report.result = "failed", str(exc), []
                    break
    return report


def _runs_no_test(config: pytest.Config) -> bool:
    """--collect-only, --setup-plan, --setup-only: nothing to record (such a run would show
    tests as passed that never ran, and become the baseline of the next comparison)."""
    option = config.option
    return bool(getattr(option, "collectonly", False) or getattr(option, "setuponly", False)
                or getattr(option, "setupplan", False))


def _enabled_url(config: pytest.Config) -> str | None:
    return (config.getoption("cardlink_db", None) or config.getini("cardlink_db")
            or os.environ.get(ENV_VAR) or None)


def _marker_target(item: pytest.Item) -> dict:
    target: dict = {}
    for marker in item.iter_markers("cardlink"):  # closest first
        unknown = sorted(set(marker.kwargs) - _MARKER_KEYS)
        if marker.args or unknown:
            bad = ", ".join([repr(a) for a in marker.args] + unknown)
            raise pytest.UsageError(
                f"{item.nodeid}: @pytest.mark.cardlink takes only device=... and card=..., "
                f"not {bad}; fix the marker"
            )
        for key, value in marker.kwargs.items():
            target.setdefault(key, None if value is None else str(value))
    return target


class ResultRecord:
    """What a test adds to its own TestResult: ``assertions`` and ``metadata`` (JSON)."""

    def __init__(self, data: dict, properties: list | None = None):
        self._data = data
        self._properties = properties if properties is not None else []

    @property
    def assertions(self) -> dict:
        return self._data["assertions"]

    @property
    def metadata(self) -> dict:
        return self._data["metadata"]

    def add_assertion(self, name: str, value) -> None:
        """Record one named check (``True``/``False`` or any JSON value)."""
        self.assertions[str(name)] = _json_checked(name, value)

    def link_session(self, session_id) -> None:
        """Name an OTA session this test drove (``record_session`` in the test does it itself)."""
        self._properties.append((SESSION_PROPERTY, str(session_id)))

    def add_metadata(self, **values) -> None:
        """Merge JSON values into the result's metadata."""
        for key, value in values.items():
            self.metadata[key] = _json_checked(key, value)


def _json_checked(name, value):
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"cardlink_result value {name!r} must be JSON-serialisable ({exc}); "
                        "convert it to str, number, list or dict first") from None
    return value


@pytest.fixture
def cardlink_result(request: pytest.FixtureRequest) -> ResultRecord:
    """Add ``assertions`` and ``metadata`` to this test's recorded result."""
    data: dict = {"assertions": {}, "metadata": {}}
    request.node.user_properties.append((RESULT_PROPERTY, data))
    return ResultRecord(data, request.node.user_properties)


@pytest.fixture
def cardlink_manager(request: pytest.FixtureRequest, tmp_path_factory):
    """A DatabaseManager on a fresh, migrated database, dropped after the test."""
    from .pytest_recorder import fresh_manager

    server = request.config.getoption("cardlink_test_db", None)
    with fresh_manager(server, tmp_path_factory) as manager:
        yield manager


@pytest.fixture
def cardlink_uow(cardlink_manager):
    """A UnitOfWork over ``cardlink_manager``'s database."""
    from .unit_of_work import UnitOfWork

    with UnitOfWork(cardlink_manager) as uow:
        yield uow
