"""``runs junit`` against pytest's own ``--junitxml`` from the same pytester run: the same
testcases (classname + name), whole tracebacks, and a teardown error after a failure."""

from __future__ import annotations

import importlib.util
import uuid
from pathlib import Path

import pytest
from _pytest.junitxml import mangle_test_address
from lxml import etree

from cardlink_lite import DatabaseConfig, DatabaseManager, UnitOfWork
from cardlink_lite.junit import pytest_names
from cardlink_lite.migrations import run_migrations
from cardlink_lite.models import TestResult

XSD = Path(__file__).parent / "data" / "junit-10.xsd"  # copy of shared/testdata

SUITE = {
    "sub[dir]/test_bracket.py": '''
import pytest

@pytest.mark.parametrize("n", [1, 2])
def test_in_a_bracketed_dir(n):
    pass
''',
    "pkg/__init__.py": "",
    "pkg/test_deep.py": '''
import pytest

class TestGroup:
    @pytest.mark.parametrize("n", [1, 2])
    def test_param(self, n):
        assert n == 1

    def test_ok(self):
        pass

@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("teardown broke")

def test_fails_then_teardown_breaks(broken_teardown):
    assert 1 == 2, "call failed"

@pytest.fixture
def broken_setup(broken_teardown):
    raise ValueError("setup broke")

def test_setup_and_teardown_break(broken_setup):
    pass

def test_passes_then_teardown_breaks(broken_teardown):
    pass

def test_long_traceback():
    def deep(n):
        if n == 0:
            raise ValueError("the real cause at the bottom")
        return deep(n - 1)
    deep(30)
''',
}


def _cases(xml: bytes) -> dict[tuple[str, str], list[etree._Element]]:
    cases: dict[tuple[str, str], list] = {}
    for case in etree.fromstring(xml).iter("testcase"):
        cases.setdefault((case.get("classname"), case.get("name")), []).append(case)
    return cases


def _outcomes(cases: list) -> list[list]:
    """The outcome elements of each testcase; an error's with its message, as pytest words it."""
    return [[(c.tag, c.get("message")) if c.tag == "error" else c.tag for c in case
             if c.tag in ("failure", "error", "skipped")] for case in cases]


def test_runs_junit_matches_pytests_junitxml(pytester, db_url, backend):
    for name, text in SUITE.items():
        path = pytester.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    theirs = pytester.path / "theirs.xml"
    result = pytester.runpytest("--cardlink-db", db_url, "--cardlink-run-id", "fidelity",
                                f"--junitxml={theirs}", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=5, failed=3, errors=4)

    manager = DatabaseManager(DatabaseConfig(db_url))
    manager.initialize(check_schema=False)
    try:
        with UnitOfWork(manager) as uow:
            ours = uow.tests.export_junit_xml("fidelity").encode()
    finally:
        manager.close()
    schema = etree.XMLSchema(etree.parse(str(XSD)))
    schema.assertValid(etree.fromstring(ours))

    expected, got = _cases(theirs.read_bytes()), _cases(ours)
    assert set(got) == set(expected)
    assert ("pkg.test_deep.TestGroup", "test_param[2]") in got
    assert ("sub[dir].test_bracket", "test_in_a_bracketed_dir[1]") in got
    for key, cases in expected.items():
        assert _outcomes(got[key]) == _outcomes(cases), key
    ours_suite = etree.fromstring(ours).find("testsuite")
    theirs_suite = etree.parse(str(theirs)).getroot().find("testsuite")
    for count in ("tests", "failures", "errors", "skipped"):
        assert ours_suite.get(count) == theirs_suite.get(count), count

    deep = got[("pkg.test_deep", "test_long_traceback")][0].find("failure")
    assert "ValueError: the real cause at the bottom" in deep.text
    assert deep.text.count("in deep") > 20  # the whole traceback, not the short message
    failed, broke = got[("pkg.test_deep", "test_fails_then_teardown_breaks")]
    theirs_error = expected[("pkg.test_deep", "test_fails_then_teardown_breaks")][1]
    assert broke.find("error").get("message") == theirs_error.find("error").get("message")
    assert "teardown broke" in broke.find("error").text
    assert 'raise RuntimeError("teardown broke")' in broke.find("error").text
    assert "call failed" in failed.find("failure").text
    # pytest writes both errors of one test into its one testcase
    (both,) = got[("pkg.test_deep", "test_setup_and_teardown_break")]
    setup_error, teardown_error = both.findall("error")
    assert 'raise ValueError("setup broke")' in setup_error.text
    assert 'raise RuntimeError("teardown broke")' in teardown_error.text


@pytest.mark.parametrize("nodeid", [
    "test_a.py::test_x", "pkg/test_b.py::TestC::test_y[1-x]", "sub[dir]/test_b.py::test_y[1]",
    "sub[dir]/test_b.py", "test_c.py::test_z[a::b]", "test_d.py::test_w[a[b]]",
])
def test_pytest_names_match_the_installed_pytests_junitxml(nodeid):
    names = mangle_test_address(nodeid)
    assert pytest_names(nodeid) == (".".join(names[:-1]), names[-1])


def _rows(url: str) -> dict[str, dict]:
    manager = DatabaseManager(DatabaseConfig(url))
    manager.initialize(check_schema=False)
    try:
        return {r["test_name"]: r for r in TestResult.select().dicts().execute(manager.database)}
    finally:
        manager.close()


def test_expected_failure_and_syntax_error_messages(pytester, db_url, backend):
    pytester.makepyfile(
        test_unit="""
            import unittest

            class Case(unittest.TestCase):
                @unittest.expectedFailure
                def test_known_bug(self):
                    self.assertEqual(1, 2)
        """,
        test_broken="def test_x(:\n    pass\n",
    )
    result = pytester.runpytest("--cardlink-db", db_url, "--continue-on-collection-errors",
                                "-p", "no:cacheprovider")
    result.assert_outcomes(xfailed=1, errors=1)
    rows = _rows(db_url)
    assert rows["test_unit.py::Case::test_known_bug"]["error_message"] == "expected failure"
    message = rows["test_broken.py"]["error_message"]
    assert message.startswith("SyntaxError: "), message
    assert message.endswith("(test_broken.py, line 1)"), message


CHATTY = """
import logging
import sys

def test_fails_loudly():
    print("stdout of the failure")
    print("stderr of the failure", file=sys.stderr)
    logging.getLogger("card").warning("log of the failure")
    print("x" * 50_000)
    assert False

def test_passes_loudly():
    print("stdout of a pass")
"""


def _export(url: str, run_id: str) -> etree._Element:
    manager = DatabaseManager(DatabaseConfig(url))
    manager.initialize(check_schema=False)
    try:
        with UnitOfWork(manager) as uow:
            return etree.fromstring(uow.tests.export_junit_xml(run_id).encode())
    finally:
        manager.close()


def test_captured_output_of_failures_is_kept_and_exported(pytester, db_url, backend):
    pytester.makepyfile(test_chatty=CHATTY)
    pytester.runpytest("--cardlink-db", db_url, "--cardlink-run-id", "loud",
                       "-p", "no:cacheprovider").assert_outcomes(passed=1, failed=1)
    pytester.runpytest("--cardlink-db", db_url, "--cardlink-run-id", "quiet",
                       "--cardlink-no-capture", "-p", "no:cacheprovider"
                       ).assert_outcomes(passed=1, failed=1)
    rows = {(r["run_id"], r["test_name"]): r for r in _all_rows(db_url)}
    loud = rows[("loud", "test_chatty.py::test_fails_loudly")]["metadata"]
    assert "stdout of the failure" in loud["stdout"]
    assert len(loud["stdout"]) < 20_000  # bounded
    assert loud["stdout"].rstrip().endswith("x" * 100)  # the end is kept
    assert "stderr of the failure" in loud["stderr"]
    assert "log of the failure" in loud["log"]
    assert "stdout" not in rows[("loud", "test_chatty.py::test_passes_loudly")]["metadata"]
    assert "stdout" not in rows[("quiet", "test_chatty.py::test_fails_loudly")]["metadata"]

    root = _export(db_url, "loud")
    etree.XMLSchema(etree.parse(str(XSD))).assertValid(root)
    case = next(c for c in root.iter("testcase") if c.get("name") == "test_fails_loudly")
    assert "stdout of the failure" in case.find("system-out").text
    assert "log of the failure" in case.find("system-out").text
    assert "stderr of the failure" in case.find("system-err").text
    quiet = _export(db_url, "quiet")
    assert quiet.find(".//system-out") is None


def _all_rows(url: str) -> list[dict]:
    manager = DatabaseManager(DatabaseConfig(url))
    manager.initialize(check_schema=False)
    try:
        return list(TestResult.select().dicts().execute(manager.database))
    finally:
        manager.close()


def test_check_third_party_compares_per_test_id(pytester, db_url, backend):
    spec = importlib.util.spec_from_file_location(
        "check_third_party", Path(__file__).resolve().parents[1] / "scripts" /
        "check_third_party.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    for name, text in SUITE.items():
        path = pytester.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    theirs = pytester.path / "theirs.xml"
    pytester.runpytest("--cardlink-db", db_url, "--cardlink-run-id", "ids",
                       f"--junitxml={theirs}", "-p", "no:cacheprovider")
    pytest_root, ours = etree.parse(str(theirs)).getroot(), _export(db_url, "ids")
    assert script.id_mismatches(pytest_root, ours) == []

    case = next(c for c in ours.iter("testcase") if c.get("name") == "test_param[1]")
    etree.SubElement(case, "failure", message="made up")
    case = next(c for c in ours.iter("testcase") if c.get("name") == "test_ok")
    case.set("name", "test_renamed")
    problems = script.id_mismatches(pytest_root, ours)
    assert len(problems) == 3, problems
    assert any("test_param[1]" in p and "passed" in p and "failed" in p for p in problems)
    assert any("test_ok" in p for p in problems) and any("test_renamed" in p for p in problems)


def test_a_result_names_the_ota_sessions_it_drove(pytester, db_url, backend):
    # The test drives a session in the results store itself, and one in a fresh store.
    pytester.makepyfile(test_ota=f"""
        from cardlink_lite import DatabaseConfig, DatabaseManager
        from cardlink_lite.recording import record_session

        def test_drives_a_session():
            manager = DatabaseManager(DatabaseConfig({db_url!r}))
            manager.initialize(check_schema=False)
            try:
                with record_session(manager, session_type="triggered") as s:
                    s.command("00A4040000")
                    s.response("9000")
            finally:
                manager.close()

        def test_drives_one_elsewhere(cardlink_manager):
            with record_session(cardlink_manager, session_type="triggered") as s:
                s.command("00A4040000")

        def test_drives_none():
            pass
    """)
    args = ["--cardlink-db", db_url, "--cardlink-run-id", "ota", "-p", "no:cacheprovider"]
    if backend != "sqlite":
        args += ["--cardlink-test-db", db_url]
    pytester.runpytest(*args).assert_outcomes(passed=3)
    rows = _rows(db_url)
    linked = rows["test_ota.py::test_drives_a_session"]
    assert linked["session"] is not None
    assert linked["metadata"]["sessions"] == [linked["session"]]
    elsewhere = rows["test_ota.py::test_drives_one_elsewhere"]
    assert elsewhere["session"] is None  # not in this store: its id is kept in metadata
    assert len(elsewhere["metadata"]["sessions"]) == 1
    assert "sessions" not in rows["test_ota.py::test_drives_none"]["metadata"]


def test_cardlink_result_links_a_session_by_id(pytester, db_url, backend):
    manager = DatabaseManager(DatabaseConfig(db_url))
    manager.initialize(check_schema=False)
    try:
        run_migrations(manager=manager)
        with UnitOfWork(manager) as uow:
            session_id = uow.sessions.create_session(session_type="triggered").id
    finally:
        manager.close()
    pytester.makepyfile(test_link=f"""
        def test_names_its_session(cardlink_result):
            cardlink_result.link_session({session_id!r})
    """)
    pytester.runpytest("--cardlink-db", db_url, "-p", "no:cacheprovider").assert_outcomes(
        passed=1)
    row = _rows(db_url)["test_link.py::test_names_its_session"]
    assert row["session"] == session_id
    assert row["metadata"]["sessions"] == [session_id]


def test_a_session_stored_after_an_earlier_test_named_it_is_linked(pytester, db_url, backend):
    # The first test names a session id that is not stored yet; the second stores it.
    pytester.makepyfile(test_later=f"""
        import uuid

        from cardlink_lite import DatabaseConfig, DatabaseManager, UnitOfWork
        from cardlink_lite.models import OTASession

        SESSION = str(uuid.UUID(int=7))

        def test_names_it_first(cardlink_result):
            cardlink_result.link_session(SESSION)

        def test_stores_it_then_names_it(cardlink_result):
            manager = DatabaseManager(DatabaseConfig({db_url!r}))
            manager.initialize(check_schema=False)
            try:
                with UnitOfWork(manager) as uow:
                    uow.sessions.create(OTASession(id=SESSION, status="pending"))
            finally:
                manager.close()
            cardlink_result.link_session(SESSION)
    """)
    pytester.runpytest("--cardlink-db", db_url, "-p", "no:cacheprovider").assert_outcomes(
        passed=2)
    rows = _rows(db_url)
    assert rows["test_later.py::test_names_it_first"]["session"] is None
    assert rows["test_later.py::test_stores_it_then_names_it"]["session"] == str(uuid.UUID(int=7))
