"""JUnit XML (the Jenkins xUnit ``junit-10.xsd`` dialect) for one test run."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable

__all__ = ["build_junit_xml", "pytest_names", "xml_safe"]

# Outside XML 1.0's Char production: one such character (a card's decoded output) would
# make the whole report unreadable to CI.
_NOT_XML_CHAR = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_MESSAGE_MAX = 1000


def xml_safe(text) -> str:
    """``text`` with characters XML 1.0 cannot carry written as ``\\xNN`` / ``\\uNNNN``."""
    if text is None:
        return ""
    return _NOT_XML_CHAR.sub(_escape_char, str(text))


def _escape_char(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _seconds(ms) -> str:
    return f"{max(0, ms or 0) / 1000:.3f}"


def build_junit_xml(run_id: str, results: Iterable) -> str:
    """The XML text for ``results`` (TestResult rows in run order), one testsuite per suite;
    non-ASCII goes as character references, so the text is the same in any file encoding."""
    suites: dict[str, list] = {}
    for result in results:
        suites.setdefault(result.suite_name, []).append(result)
    root = ET.Element("testsuites", name=xml_safe(run_id))
    totals: Counter = Counter()
    for index, (suite_name, rows) in enumerate(suites.items()):
        statuses = Counter(row.status for row in rows)
        duration = sum(max(0, row.duration_ms or 0) for row in rows)
        suite = ET.SubElement(root, "testsuite", name=xml_safe(suite_name))
        properties = ET.SubElement(suite, "properties")
        ET.SubElement(properties, "property", name="run_id", value=xml_safe(run_id))
        for row in rows:
            _testcase(suite, suite_name, row)
        # As junitxml counts: testcases, and failure and error elements.
        counts = {"tests": len(suite.findall("testcase")),
                  "failures": len(suite.findall("testcase/failure")),
                  "errors": len(suite.findall("testcase/error"))}
        suite.attrib.update({key: str(value) for key, value in counts.items()},
                            skipped=str(statuses["skipped"]), time=_seconds(duration),
                            id=str(index))
        started = [row.started_at for row in rows if row.started_at is not None]
        if started:
            suite.set("timestamp", min(started).isoformat(timespec="milliseconds"))
        totals.update(counts, time=duration)
    root.attrib.update({key: str(totals[key]) for key in ("tests", "failures", "errors")},
                       time=_seconds(totals["time"]))
    ET.indent(root)
    body = ET.tostring(root, encoding="us-ascii", xml_declaration=False).decode("ascii")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n"


def pytest_names(nodeid: str) -> tuple[str, str]:
    """``(classname, name)`` as pytest's junitxml writes them for ``nodeid`` (pytest 9: the
    file path ends at the first ``::``, so a ``[`` in it is no parameter)."""
    path, sep, tail = nodeid.partition("::")
    names_part, bracket, params = tail.partition("[")
    names = [path, *names_part.split("::")] if sep else [path]
    names[0] = re.sub(r"\.py$", "", names[0].replace("/", "."))
    if sep and bracket:
        names[-1] += f"[{params.removesuffix(']')}]"
    return ".".join(names[:-1]), names[-1]


def _testcase(suite: ET.Element, suite_name: str, row) -> None:
    metadata = getattr(row, "metadata", None)
    metadata = metadata if isinstance(metadata, dict) else {}
    if metadata.get("runner") == "pytest":  # test_name is the node id (or its shortening)
        classname, name = pytest_names(metadata.get("nodeid") or row.test_name)
    else:
        classname, name = suite_name, row.test_name
    attributes = {"classname": xml_safe(classname), "name": xml_safe(name)}
    case = ET.SubElement(suite, "testcase", time=_seconds(row.duration_ms), **attributes)
    tag = {"failed": "failure", "error": "error", "skipped": "skipped"}.get(row.status)
    if tag is None:
        return
    message = xml_safe(row.error_message)
    when = {"error in setup": "setup", "error in teardown": "teardown"}.get(
        metadata.get("outcome"))
    _outcome(case, tag, f'failed on {when} with "{message}"' if when else message,
             xml_safe(metadata.get("longrepr")) or message)
    teardown = metadata.get("teardown_error")
    if teardown and tag != "skipped":
        # As junitxml: a teardown broken after a failure is a testcase of its own (after
        # a setup error, a second error of the same testcase).
        broken = case if tag == "error" else ET.SubElement(suite, "testcase", time=_seconds(0),
                                                           **attributes)
        _outcome(broken, "error", xml_safe(f'failed on teardown with "{teardown}"'),
                 xml_safe(metadata.get("teardown_longrepr")) or xml_safe(teardown))
    # The output the plugin kept for a failure, as junitxml's system-out/-err.
    out = "\n".join(f"----- Captured {key} -----\n{metadata[key]}"
                    for key in ("stdout", "log") if metadata.get(key))
    if out:
        ET.SubElement(case, "system-out").text = xml_safe(out)
    if metadata.get("stderr"):
        ET.SubElement(case, "system-err").text = xml_safe(metadata["stderr"])


def _outcome(case: ET.Element, tag: str, message: str, body: str) -> None:
    element = ET.SubElement(case, tag)
    if message:
        first_line = message.strip().splitlines()[0] if message.strip() else message
        element.set("message", first_line[:_MESSAGE_MAX])
    if tag != "skipped":
        element.set("type", tag)
        element.text = body
