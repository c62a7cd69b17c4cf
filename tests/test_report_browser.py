"""The report in headless Chromium (Debian's package, driven by Playwright): it draws, it
filters, nothing it shows can run script. Screenshots go to $CARDLINK_ARTIFACTS or tmp_path.

Locally the test skips when Chromium or Playwright is missing; in CI (CI=true) it fails:
.ci/run installs Chromium first.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from cardlink_lite.report import write_report
from tests.report_store import add_card, add_device, add_run, add_session

CHROMIUM = os.environ.get("CARDLINK_CHROMIUM", "/usr/bin/chromium")
_IN_CI = os.environ.get("CI", "").lower() == "true"
_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]
XSS = "<img src=x onerror=alert(1)>"


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    if not (os.access(CHROMIUM, os.X_OK) or shutil.which("chromium")):
        return f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"
    return None


@pytest.fixture
def browser():
    problem = _missing()
    if problem:
        if _IN_CI:
            pytest.fail(f"the browser test must run in CI: {problem}")
        pytest.skip(problem)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        launched = pw.chromium.launch(
            executable_path=CHROMIUM if os.access(CHROMIUM, os.X_OK)
            else shutil.which("chromium"), args=_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def artifacts(tmp_path) -> Path:
    folder = Path(os.environ.get("CARDLINK_ARTIFACTS") or tmp_path) / "report-screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _fill(manager) -> str:
    for device, name in (("PHONE-1", "Bench phone"), ("MODEM-2", "Bench modem")):
        add_device(manager, device, name)
    add_card(manager, "8901000000000000001")
    tests = ["test_select_isd", "test_install", XSS, "test_bip_open_channel"]
    for day in range(6):
        device = "MODEM-2" if day % 3 == 0 else "PHONE-1"
        outcomes = dict.fromkeys(tests, "passed")
        if day % 2:
            outcomes["test_bip_open_channel"] = "failed"
        if day == 5:
            outcomes[XSS] = "failed"
        add_run(manager, f"run-{day}", outcomes, day=day, device=device,
                card="8901000000000000001", duration_ms=100 + 40 * day)
    for day in range(6):
        add_session(manager, device="PHONE-1", card="8901000000000000001", day=day,
                    exchanges=[("00A4040008A000000151000000", "SELECT ISD", "9000", 4.0)])
        add_session(manager, device="MODEM-2", card="8901000000000000001", day=day,
                    status="timeout" if day % 2 else "completed")
    return add_session(manager, device="PHONE-1", card="8901000000000000001", day=6,
                       status="failed", error_code=XSS, exchanges=[
                           ("00A4040008A000000151000000", "SELECT ISD", "9000", 4.0),
                           ("0070000001", XSS, "019000", 2.0),
                           ("01A4040007A0000000871002", "SELECT USIM", "611C", 7.5),
                           ("01C000001C", None, "621A820278219000", 3.0),
                           ("80F21000024F00", "GET STATUS", "6A88", 3.9)])


def test_report_in_chromium(browser, manager, tmp_path, artifacts):
    session_id = _fill(manager)
    path = write_report(manager, tmp_path / "report.html")
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    problems, dialogs, requests = [], [], []
    page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning")
            else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.as_uri())
    page.wait_for_load_state("load")

    # Drawn: the trend chart and the timeline have a real size on screen.
    trend = page.locator("svg.trend").bounding_box()
    assert trend and trend["width"] > 300 and trend["height"] > 100
    timeline = page.locator(f"#session-{session_id} svg.timeline").bounding_box()
    assert timeline and timeline["width"] > 100 and timeline["height"] > 40
    assert page.locator("svg.trend g.run").count() == 6
    page.screenshot(path=str(artifacts / "runs.png"), full_page=False)
    page.locator("#sessions").screenshot(path=str(artifacts / "sessions.png"))
    page.locator(f"#session-{session_id}").screenshot(path=str(artifacts / "session.png"))

    # Filtering by device changes what is shown, in the chart and in the tables.
    visible_runs = "svg.trend g.run:visible"
    assert page.locator(visible_runs).count() == 6
    page.select_option("#filter-device", "MODEM-2")
    assert page.locator(visible_runs).count() == 2
    assert page.locator("tr.run-row:visible").count() == 2
    assert page.locator("tr.session-row:visible").count() < page.locator("tr.session-row").count()
    assert "2 of 6 runs" in page.locator("#filter-status").inner_text()
    line = page.locator("#trend-line").get_attribute("points")
    assert len(line.split()) == 2  # the duration line joins the runs still shown
    page.screenshot(path=str(artifacts / "filtered-by-device.png"), full_page=False)
    # Keyboard: the filter is reachable with Tab and changes with the arrow keys.
    page.select_option("#filter-device", "")
    page.locator("#filter-device").focus()
    page.keyboard.press("ArrowDown")
    assert page.locator("#filter-device").input_value() != ""
    assert page.locator(visible_runs).count() < 6

    # The hostile test name is shown as text and never runs.
    assert page.get_by_text(XSS, exact=True).count() >= 1
    assert page.evaluate("document.querySelectorAll('img').length") == 0
    assert dialogs == []
    assert problems == []
    assert all(url.startswith("file://") for url in requests), requests


def test_report_on_a_phone(browser, manager, tmp_path, artifacts):
    session_id = _fill(manager)
    add_run(manager, "run-6", {"test_" + "very_long_parametrised_name_" * 4: "passed"}, day=6)
    path = write_report(manager, tmp_path / "report.html", sessions=[session_id],
                        title="Bench report for the " + "Überlangeslaborbezeichnung" * 4)
    page = browser.new_page(viewport={"width": 375, "height": 667})
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    # Nothing but the scrolling tables is wider than the screen: charts shrink, titles wrap.
    wide = page.evaluate("""() => [...document.querySelectorAll('body *')].filter(e =>
        e.getBoundingClientRect().right > 376 && !e.closest('.scroll')).map(e => e.outerHTML)""")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375, wide[:3]
    for chart in ("svg.trend", "svg.days"):
        box = page.locator(chart).bounding_box()
        assert box["width"] <= 375 and box["height"] > 60, chart
    # A jump lands on its heading, not under a header that covers half the screen.
    for target in ("#sessions h2", f"#session-{session_id} h2"):
        page.locator(f"nav a[href='#{target.split()[0][1:]}']").click()
        covered = page.evaluate("""(sel) => { const h = document.querySelector(sel);
            const r = h.getBoundingClientRect();
            const hit = document.elementFromPoint(r.left + 5, r.top + r.height / 2);
            return !(hit && h.contains(hit)); }""", target)
        assert not covered, target
    # Test names wrap as words, not one character per line.
    names = page.locator("table[aria-labelledby='slow-h'] th.name")
    assert min(names.nth(i).bounding_box()["width"] for i in range(names.count())) >= 100
    page.screenshot(path=str(artifacts / "phone.png"), full_page=True)


def test_report_in_print(browser, manager, tmp_path):
    _fill(manager)
    path = write_report(manager, tmp_path / "report.html")
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    page.goto(path.as_uri())
    page.emulate_media(media="print")
    style = """([sel, prop]) => getComputedStyle(document.querySelector(sel))[prop]"""
    # A section longer than a page starts where it is (a whole section that cannot fit made
    # the first page blank); legend swatches keep their colours like the bars they explain.
    assert page.evaluate(style, ["section#runs", "breakInside"]) == "auto"
    for key in (".legend .sw.passed", ".sw.bar-med", ".sw.bar-p95"):
        assert page.evaluate(style, [key, "printColorAdjust"]) == "exact", key


def test_parts_the_filter_does_not_reach_say_so(browser, manager, tmp_path):
    _fill(manager)
    path = write_report(manager, tmp_path / "report.html")
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    page.goto(path.as_uri())
    notes = page.locator(".unfiltered-note:visible")
    assert notes.count() == 0  # nothing is filtered yet
    page.select_option("#filter-device", "MODEM-2")
    # The headline cards, the comparison, flaky and slowest tests, sessions per day and
    # latency per command still count every device and card: each says so.
    assert notes.count() == 6
    for part in ("div.cards", "#flaky-h", "#slow-h", "svg.days", "#latency-h",
                 "h3:text('Newest run against')"):
        assert page.locator(part).first.evaluate(
            "(el) => { const n = (el.closest('div.cards, h3, figure') || el)"
            ".nextElementSibling; return !!n && n.classList.contains('unfiltered-note'); }"), part
    page.select_option("#filter-device", "")
    assert notes.count() == 0


def _luminance(rgb: str) -> float:
    channels = [int(v) / 255 for v in rgb[rgb.index("(") + 1:rgb.index(")")].split(",")[:3]]
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def test_badges_and_cells_have_readable_contrast(browser, manager, tmp_path):
    _fill(manager)
    add_session(manager, device="PHONE-1", day=6, status="active")  # still open
    path = write_report(manager, tmp_path / "report.html")
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    page.goto(path.as_uri())
    for selector in (".badge.open", ".badge.timeout", ".badge.failed", ".badge.completed",
                     ".cell.skipped", ".cell.passed", ".cell.failed", ".cell.error"):
        fg, bg = page.locator(selector).first.evaluate(
            "(el) => [getComputedStyle(el).color, getComputedStyle(el).backgroundColor]")
        light, dark = sorted((_luminance(fg), _luminance(bg)), reverse=True)
        assert (light + 0.05) / (dark + 0.05) >= 4.5, selector  # WCAG AA for text
