"""The HTML report, read back with a real HTML parser, from stores filled through the API."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest
from lxml import html as lxml_html

from cardlink_lite import TestRun, UnitOfWork, ValidationError, apdu_logger
from cardlink_lite.report import REPORT_DEFAULTS, build_report, write_report
from cardlink_lite.report_charts import timeline
from tests.report_store import (
    T0,
    add_big_run,
    add_card,
    add_device,
    add_run,
    add_session,
)
from tests.repository_helpers import count_queries


def parse(manager, **options):
    page = build_report(manager, **options)
    return page, lxml_html.fromstring(page)


def texts(doc, xpath: str) -> list[str]:
    return [" ".join(e.text_content().split()) for e in doc.xpath(xpath)]


def runs_table(doc) -> list[list[str]]:
    return [[" ".join(c.text_content().split()) for c in row.xpath("./th|./td")]
            for row in doc.xpath("//tr[contains(@class, 'run-row')]")]


def assert_offline(page: str, doc) -> None:
    """Nothing in the page points outside it: no external scripts, styles, images, fonts."""
    assert not doc.xpath("//link | //img | //iframe | //object | //embed | //script[@src]")
    for attr in doc.xpath("//@href | //@src | //@xlink:href",
                          namespaces={"xlink": "http://www.w3.org/1999/xlink"}):
        assert attr.startswith("#"), attr
    assert "url(http" not in page and "@import" not in page
    assert len(doc.xpath("//script")) == 1  # ours, allowed by its hash in the CSP


def test_empty_store_says_what_to_record(manager):
    page, doc = parse(manager)
    assert_offline(page, doc)
    assert "No test results" in page and "No OTA sessions" in page
    assert not doc.xpath("//svg[contains(@class, 'trend')]//g[contains(@class, 'run')]")
    assert not doc.xpath("//section[contains(@class, 'session')]")


def test_one_run_has_its_counts_and_no_comparison(manager):
    add_run(manager, "r1", {"test_a": "passed", "test_b": "failed", "test_c": "skipped",
                            "test_d": "error"})
    page, doc = parse(manager)
    # Recorded through the API: its record does not say how it ended.
    assert runs_table(doc) == [["r1", "2024-11-01 08:00", "–", "–", "4", "1", "1", "1", "1",
                                "25%", "400 ms", "3.1 s", "unknown"]]
    assert len(doc.xpath("//svg[contains(@class, 'trend')]//g[contains(@class, 'run')]")) == 1
    assert "Newest run against" not in page
    assert "No test changed between pass and fail" in page


def test_regressions_fixes_and_flaky_tests_of_the_newest_runs(manager):
    add_run(manager, "r1", {"a": "passed", "b": "failed", "c": "passed"}, day=0)
    add_run(manager, "r2", {"a": "passed", "b": "passed", "c": "failed"}, day=1)
    add_run(manager, "r3", {"a": "failed", "b": "error", "c": "passed", "d": "passed"}, day=2)
    add_run(manager, "r4", {"a": "error", "b": "passed", "c": "passed", "d": "passed"}, day=3)
    _, doc = parse(manager)
    assert [r[0] for r in runs_table(doc)] == ["r4", "r3", "r2", "r1"]  # newest first
    assert texts(doc, "//ul[contains(@class, 'regressions')]/li") == []  # a: error -> error
    assert texts(doc, "//ul[contains(@class, 'fixed')]/li") == ["✓ b"]
    flaky = {r.xpath("./th")[0].text_content(): r for r in
             doc.xpath("//table[@aria-labelledby='flaky-h']/tbody/tr")}
    assert set(flaky) == {"a", "b", "c"}  # d never failed
    strip = flaky["b"].xpath(".//span[contains(@class, 'strip')]")[0]
    assert strip.get("aria-label") == "failed, passed, error, passed"
    assert [c.get("class") for c in strip.xpath("./span")] == [
        "cell failed", "cell passed", "cell error", "cell passed"]
    assert flaky["b"].xpath("./td")[0].text_content() == "3"  # flips
    # The window: only the newest two runs, compared with each other.
    _, doc = parse(manager, runs=2)
    assert [r[0] for r in runs_table(doc)] == ["r4", "r3"]
    assert texts(doc, "//ul[contains(@class, 'fixed')]/li") == ["✓ b"]


def test_regression_of_the_newest_run_is_listed(manager):
    add_run(manager, "before", {"test_select": "passed", "test_install": "failed"}, day=0)
    add_run(manager, "after", {"test_select": "failed", "test_install": "passed"}, day=1)
    page, doc = parse(manager)
    assert texts(doc, "//ul[contains(@class, 'regressions')]/li") == ["✗ test_select"]
    assert texts(doc, "//ul[contains(@class, 'fixed')]/li") == ["✓ test_install"]
    cards = texts(doc, "//div[@class='cards']/div")
    assert cards[1].startswith("1 regression")
    assert texts(doc, "//div[@class='cards']/div[2]/small") == ["passed in before, fail now"]
    assert "run that did not finish" not in page


def test_suite_since_and_device_labels(manager):
    add_device(manager, "DEV-1", "Bench phone")
    add_card(manager, "8901000000000000001")
    add_run(manager, "old", {"t": "passed"}, day=0, device="DEV-1")
    add_run(manager, "new", {"t": "failed"}, day=5, device="DEV-1",
            card="8901000000000000001")
    add_run(manager, "other", {"x": "passed"}, suite="smoke", day=1)
    page, doc = parse(manager, suite="nightly", since=date(2024, 11, 3))
    assert [r[0] for r in runs_table(doc)] == ["new"]
    row = doc.xpath("//tr[contains(@class, 'run-row')]")[0]
    assert json.loads(row.get("data-devices")) == ["DEV-1"]
    assert json.loads(row.get("data-cards")) == ["8901000000000000001"]
    assert "DEV-1 (Bench phone)" in texts(doc, "//select[@id='filter-device']/option")
    assert "smoke" in texts(doc, "//p[@class='note']/code")
    with pytest.raises(ValidationError, match="no results for suite 'nope'"):
        build_report(manager, suite="nope")
    with pytest.raises(ValidationError, match="runs must be"):
        build_report(manager, runs=0)


def test_ten_thousand_tests_in_one_run(manager):
    add_big_run(manager, "big", 10_000, failing_every=100)
    page, doc = parse(manager)
    assert runs_table(doc)[0][4:9] == ["10000", "9900", "100", "0", "0"]
    slowest = doc.xpath("//table[@aria-labelledby='slow-h']/tbody/tr")
    assert len(slowest) == 10  # the ten slowest, not ten thousand rows
    assert len(page) < 200_000


def test_hostile_and_non_ascii_names_are_text(manager):
    names = ['<script>alert("x")</script>', "it's \"quoted\" & <b>bold</b>",
             "Prüfung_ÄÖÜ_测试_🙂", "<img src=x onerror=alert(1)>"]
    device = "dev\"'<i>"
    add_device(manager, device)
    add_run(manager, "r1", dict.fromkeys(names, "passed"), device=device)
    add_run(manager, "r2", dict.fromkeys(names, "failed"), day=1, device=device)
    add_session(manager, device=device, status="failed", error_code="<svg onload=x>",
                exchanges=[("00A4040000", "<b>SELECT</b> ü", "6A82", 2.0)])
    page, doc = parse(manager, title="<i>title</i>")
    assert_offline(page, doc)
    assert not doc.xpath("//b | //i | //img | //svg[@onload]")
    assert not doc.xpath("//@*[starts-with(name(), 'on')]")
    assert sorted(texts(doc, "//ul[contains(@class, 'regressions')]/li")) == sorted(
        f"✗ {' '.join(n.split())}" for n in names)
    assert json.loads(doc.xpath("//tr[contains(@class, 'run-row')]")[0]
                      .get("data-devices")) == [device]
    assert doc.xpath("//h1")[0].text_content() == "<i>title</i>"
    assert "<b>SELECT</b> ü" in texts(doc, "//table[contains(@class, 'apdus')]//th")
    assert "<svg onload=x>" in page.replace("&lt;", "<").replace("&gt;", ">")


def test_sessions_per_day_matrix_and_latency(manager):
    for device in ("PHONE", "MODEM"):
        add_device(manager, device)
    add_card(manager, "8901000000000000001")
    select = ("00A4040008A000000151000000", "SELECT ISD", "9000")
    for i in range(10):  # latencies 1..10 ms: median 5 (rank 5), p95 10 (rank 10)
        add_session(manager, device="PHONE", card="8901000000000000001", day=i % 2,
                    exchanges=[(*select, float(i + 1))])
    add_session(manager, device="MODEM", card="8901000000000000001", status="timeout", day=1)
    add_session(manager, device="MODEM", card="8901000000000000001", status="timeout", day=1)
    add_session(manager, device="MODEM", card="8901000000000000001", status="failed",
                error_code="TLS_ALERT_40", day=1)
    add_session(manager, device="MODEM", card="8901000000000000001", day=1)
    _, doc = parse(manager)
    days = {r[0]: r[1:] for r in (
        [c.text_content() for c in tr.xpath("./th|./td")]
        for tr in doc.xpath("//section[@id='sessions']//details//tbody/tr"))}
    assert days == {"2024-11-01": ["5", "0", "0", "0"], "2024-11-02": ["6", "1", "2", "0"]}
    cells = {tr.xpath("./th")[0].text_content(): " ".join(" ".join(tr.xpath("./td")[0]
                                                                     .itertext()).split())
             for tr in doc.xpath("//table[contains(@class, 'matrix')]/tbody/tr")}
    assert cells["PHONE"] == "100% (10/10)"
    assert cells["MODEM"] == "25% (1/4) TIMEOUT ×2"
    latency = [[c.text_content() for c in tr.xpath("./th|./td")][:4]
               for tr in doc.xpath("//table[@aria-labelledby='latency-h']/tbody/tr")]
    assert latency == [["SELECT (INS A4)", "10", "5 ms", "10 ms"]]


def test_session_timeline_lanes_status_word_kinds_and_facts(manager):
    add_device(manager, "PHONE")
    sid = add_session(manager, device="PHONE", exchanges=[
        ("00A4040008A000000151000000", "SELECT ISD", "9000", 4.0),
        ("0070000001", None, "019000", 2.0),
        ("01A4040007A0000000871002", "SELECT USIM", "611C", 7.5),
        ("01C000001C", None, "621A82027821" + "9000", 3.0),
        ("00B0000010", "READ BINARY", "6282", 1.0),
        ("80F21000024F00", "GET STATUS", "6A88", 3.9),
    ])
    add_session(manager, device="PHONE")  # newer, without APDUs
    _, doc = parse(manager, sessions=[sid])
    section = doc.xpath(f"//section[@id='session-{sid}']")[0]
    lanes = [t.text_content() for t in section.xpath(".//svg//text[@class='lane-label']")]
    assert lanes == ["channel 0", "channel 1"]
    bars = section.xpath(".//svg[contains(@class, 'timeline')]//rect[contains(@class, 'bar')]")
    assert [b.get("class") for b in bars] == [
        "bar success", "bar success", "bar more", "bar success", "bar warning", "bar error"]
    widths = [float(b.get("width")) for b in bars]
    assert widths[2] == max(widths) and widths[4] == min(widths)  # sized by latency
    assert "MANAGE CHANNEL (INS 70)" in bars[1].xpath("./title")[0].text
    assert "01A4040007A0000000871002 → 611C" in bars[2].xpath("./title")[0].text
    rows = section.xpath(".//table[contains(@class, 'apdus')]/tbody/tr")
    assert len(rows) == 6
    assert "Success: 28 response bytes still available" in rows[2].text_content()
    assert "GET RESPONSE (INS C0)" in rows[3].text_content()
    facts = dict(zip(texts(section, ".//dl[1]/dt"), texts(section, ".//dl[1]/dd"),
                     strict=True))
    assert facts["Device"].startswith("PHONE") and facts["Status"] == "completed"
    # The table of newest sessions links to the timeline.
    assert doc.xpath(f"//a[@href='#session-{sid}']")


def test_default_timelines_newest_and_newest_failed(manager):
    ok = add_session(manager, day=0, exchanges=[("00A40400", "SELECT", "9000", 1.0)])
    bad = add_session(manager, day=1, status="failed", error_code="X",
                      exchanges=[("00A40400", "SELECT", "6A82", 1.0)])
    newest = add_session(manager, day=2, exchanges=[("00A40400", "SELECT", "9000", 1.0)])
    _, doc = parse(manager)
    shown = [s.get("id") for s in doc.xpath("//section[contains(@class, 'session')]")]
    assert shown == [f"session-{newest}", f"session-{bad}"] and ok not in " ".join(shown)
    with pytest.raises(ValidationError, match="no OTA session"):
        build_report(manager, sessions=["3f2c9a1e-8b7d-4c1a-9e2f-0a1b2c3d4e5f"])


def test_queries_do_not_grow_with_the_apdus(manager):
    sid = add_session(manager, exchanges=[("00A40400", "SELECT", "9000", 1.0)] * 5)
    with count_queries(manager) as few:
        build_report(manager, sessions=[sid])
    sid = add_session(manager, exchanges=[("00A40400", "SELECT", "9000", 1.0)] * 500)
    with count_queries(manager) as many:
        build_report(manager, sessions=[sid])
    assert len(many) == len(few)


def test_write_report_replaces_the_file_whole(manager, tmp_path):
    add_run(manager, "r1", {"t": "passed"})
    target = tmp_path / "out" / "report.html"
    target.parent.mkdir()
    target.write_text("old")
    assert write_report(manager, target) == target
    assert target.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert [p.name for p in target.parent.iterdir()] == ["report.html"]


def test_card_events_have_their_own_lane(manager):
    with UnitOfWork(manager) as uow:
        sid = str(uow.sessions.create_session(session_type="t").id)
    with apdu_logger(manager, sid, flush_interval=None) as log:
        log.add(sid, "atr", "3B9F96801FC78031A073BE21136743200718000001A5")
        log.command("00A40400", "SELECT")
        log.response("9000", latency_ms=1.0)
    _, doc = parse(manager, sessions=[sid])
    svg = doc.xpath("//svg[contains(@class, 'timeline')]")[0]
    assert texts(svg, ".//text[@class='lane-label']") == ["channel 0", "other rows"]
    bars = svg.xpath(".//rect[contains(@class, 'bar')]")
    assert [b.get("class") for b in bars] == ["bar none", "bar success"]
    assert bars[0].xpath("./title")[0].text.startswith("#1 ATR")


def test_run_records_a_run_with_zero_tests_and_how_runs_ended(manager):
    add_run(manager, "r1", {"t": "passed"}, day=0)
    add_run(manager, "r2", {"t": "failed"}, day=1)
    manager.bind()
    TestRun.update(ending="stopped", labels={"device": "LAB-7"},
                   context={"git_branch": "main", "host": "bench-3"}).where(
        TestRun.id == "r2").execute()
    TestRun.create(id="empty", suite_name="nightly", started_at=T0 + timedelta(days=2),
                   finished_at=T0 + timedelta(days=2, seconds=4), ending="complete",
                   total=0)
    _, doc = parse(manager)
    rows = runs_table(doc)
    assert [r[0] for r in rows] == ["empty", "r2", "r1"]
    assert rows[0][4:10] == ["0", "0", "0", "0", "0", "no tests"]
    assert rows[0][-1] == "complete" and rows[1][-1] == "stopped" and rows[2][-1] == "unknown"
    assert rows[1][2] == "LAB-7"  # the device the run's record names
    code = doc.xpath("//tr[contains(@class, 'run-row')]//code")[1]
    assert code.get("title") == "git_branch=main; host=bench-3"
    bars = doc.xpath("//svg[contains(@class, 'trend')]//g[contains(@class, 'run')]")
    assert len(bars) == 3 and bars[-1].xpath("./text")[0].text == "0"
    # The newest run has no tests: compared with r1 (r2 stopped), every test is "removed".
    assert texts(doc, "//ul[contains(@class, 'removed')]/li") == ["t"]


def test_run_labels_of_any_json_shape_are_shown_as_text(manager):
    add_run(manager, "r1", {"t": "passed"}, day=0)
    manager.bind()
    TestRun.update(labels={"device": ["LAB-7", "LAB-8"], "card": {"slot": 2}}).where(
        TestRun.id == "r1").execute()
    _, doc = parse(manager)
    row = runs_table(doc)[0]
    assert row[2] == "['LAB-7', 'LAB-8']" and row[3] == "{'slot': 2}"


def test_session_ids_are_shown_whole(manager):
    # UUIDv7 ids of sessions made together share their first characters (the timestamp).
    ids = [add_session(manager, day=0, exchanges=[("00A40400", "SELECT", "9000", 1.0)])
           for _ in range(3)]
    _, doc = parse(manager, sessions=ids)
    assert sorted(texts(doc, "//code[contains(@class, 'sid')]")) == sorted(ids)
    assert sorted(texts(doc, "//nav/a[starts-with(@href, '#session-')]")) == sorted(
        f"Session {sid}" for sid in ids)


def _end(manager, run_id, ending):
    manager.bind()
    TestRun.update(ending=ending).where(TestRun.id == run_id).execute()


def test_a_stopped_newest_run_is_compared_with_the_last_complete_one(manager):
    add_run(manager, "r1", {"a": "passed", "b": "passed", "c": "passed"}, day=0)
    add_run(manager, "r2", {"a": "failed", "b": "passed", "c": "passed"}, day=1)
    add_run(manager, "r3", {"a": "passed"}, day=2)  # -x: b and c were never reached
    for run_id in ("r1", "r2"):
        _end(manager, run_id, "complete")
    _end(manager, "r3", "stopped")
    page, doc = parse(manager)
    assert "r3 compared with r2" in " ".join(texts(doc, "//p[@class='note']"))
    assert texts(doc, "//ul[contains(@class, 'fixed')]/li") == ["✓ a"]
    assert not doc.xpath("//ul[contains(@class, 'removed')]")
    assert "Removed tests" not in page
    assert texts(doc, "//ul[contains(@class, 'not-reached')]/li") == ["b", "c"]
    assert "Not run: the run ended stopped" in " ".join(texts(doc, "//h4"))
    # On the trend chart the stopped run is marked, and its title says how it ended.
    runs = doc.xpath("//svg[contains(@class, 'trend')]//g[contains(@class, 'run')]")
    assert [r.get("class") for r in runs] == ["run", "run", "run incomplete"]
    assert "ended stopped" in runs[-1].xpath("./title")[0].text
    assert runs[-1].xpath(".//rect[@class='incomplete-frame']")
    assert "run that did not finish" in page  # its key, shown only when one is drawn
    assert texts(doc, "//div[@class='cards']/div[2]/small") == ["passed in r2, fail now"]


def test_a_stopped_run_in_between_is_not_the_base_of_the_comparison(manager):
    add_run(manager, "r1", {"a": "failed", "b": "passed"}, day=0)
    add_run(manager, "r2", {"a": "failed"}, day=1)
    add_run(manager, "r3", {"a": "passed", "b": "passed"}, day=2)
    _end(manager, "r2", "interrupted")
    _, doc = parse(manager)
    assert "r3 compared with r1" in " ".join(texts(doc, "//p[@class='note']"))
    assert texts(doc, "//ul[contains(@class, 'fixed')]/li") == ["✓ a"]
    assert not doc.xpath("//ul[contains(@class, 'new')]")  # b is not new: r1 ran it


def test_an_empty_window_says_so_instead_of_drawing_empty_charts(manager):
    add_run(manager, "r1", {"t": "passed"})
    add_session(manager, exchanges=[("00A40400", "SELECT", "9000", 1.0)])
    page, doc = parse(manager, since=date(2030, 1, 1))
    assert "No test results since 2030-01-01 00:00" in page
    assert "No OTA sessions since 2030-01-01 00:00 UTC" in " ".join(
        texts(doc, "//section[@id='sessions']//p"))
    assert not doc.xpath("//svg[contains(@class, 'days')] | //svg[contains(@class, 'trend')]")
    assert not doc.xpath("//section[@id='sessions']//table")


def test_count_axes_have_whole_number_ticks(manager):
    for day in (0, 0, 1):  # at most two sessions a day
        add_session(manager, day=day)
    _, doc = parse(manager)
    ticks = texts(doc, "//svg[contains(@class, 'days')]//text[@class='tick'][@text-anchor='end']")
    assert ticks == ["0", "1", "2"]


def test_user_values_are_bidi_isolated(manager):
    # A right-to-left value must not reorder the text around it: each sits in a <bdi>.
    test, device, card, cause, command = "בדיקה_1", "מכשיר-1", "8901000000000000001", \
        "שגיאה", "בחר"
    add_device(manager, device, "טלפון")
    add_card(manager, card)
    add_run(manager, "r1", {test: "passed", "b": "failed"}, device=device, card=card)
    add_run(manager, "r2", {test: "failed", "b": "passed"}, day=1, device=device, card=card)
    sid = add_session(manager, device=device, card=card, status="failed", error_code=cause,
                      exchanges=[("00A40400", command, "6A82", 2.0)])
    _, doc = parse(manager, sessions=[sid], title="דוח")
    html_text = doc.xpath("//body//*[not(ancestor-or-self::svg)][not(self::option)]"
                          "[not(self::script)]")
    for value in (test, device, "טלפון", cause, command, "דוח"):
        holders = [el for el in html_text if value in (el.text or "")]
        assert holders and all(el.tag == "bdi" for el in holders), (value, [
            el.tag for el in holders])
        assert not [el for el in html_text if value in (el.tail or "")], value


def test_a_session_named_twice_is_drawn_once(manager):
    sid = add_session(manager, exchanges=[("00A40400", "SELECT", "9000", 1.0)])
    _, doc = parse(manager, sessions=[sid, sid])
    assert len(doc.xpath(f"//section[@id='session-{sid}']")) == 1
    assert len(doc.xpath(f"//nav/a[@href='#session-{sid}']")) == 1


def _facts(doc, sid) -> dict:
    section = doc.xpath(f"//section[@id='session-{sid}']")[0]
    return dict(zip(texts(section, ".//dl[2]/dt"), texts(section, ".//dl[2]/dd"), strict=True))


def test_a_cut_off_session_counts_exchanges_and_all_their_card_time(manager, monkeypatch):
    monkeypatch.setitem(REPORT_DEFAULTS, "exchanges", 3)
    sid = add_session(manager, exchanges=[("00A40400", "SELECT", "9000", 10.0)] * 5)
    _, doc = parse(manager, sessions=[sid])
    facts = _facts(doc, sid)
    assert facts["APDU exchanges"] == "5 (the first 3 drawn and listed; 2 more left out)"
    assert facts["Card time"] == "50 ms (sum of response latencies)"


def test_a_session_without_latencies_says_not_recorded(manager):
    sid = add_session(manager, exchanges=[("00A40400", "SELECT", "9000", None)] * 2)
    _, doc = parse(manager, sessions=[sid])
    assert _facts(doc, sid)["Card time"] == "not recorded"
    title = doc.xpath(f"//section[@id='session-{sid}']//svg/title")[0].text
    assert "not recorded" in title and "0 ms" not in title


def test_one_long_wait_does_not_make_a_huge_timeline():
    waits = [4.0] * 6 + [28000.0] + [6.0] * 6
    chart = timeline([{"latency_ms": ms, "channel": 0, "name": "X", "sw": "9000"}
                      for ms in waits])
    assert chart["width"] < 1400
    long = chart["bars"][6]
    assert long["w"] == max(b["w"] for b in chart["bars"]) and long["label"] == "28.0 s"
    assert chart["total_ms"] == sum(waits)
    values = [t["ms"] for t in chart["ticks"]]
    assert values[0] == 0 and len(values) >= 2
    step = min(b - a for a, b in zip(values, values[1:], strict=False))
    assert all(v % step == 0 for v in values)  # round values on one grid


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_thousand_run_trend_draws_no_dots_or_labels_it_cannot_fit(manager):
    manager.bind()
    for i in range(70):  # 70 runs: a band of 12 px each
        add_run(manager, f"r{i:03d}", {"a": "failed" if i % 2 else "passed"},
                day=i // 24, duration_ms=100 + i)
    _, doc = parse(manager, runs=70)
    svg = doc.xpath("//svg[contains(@class, 'trend')]")[0]
    assert len(svg.xpath(".//g[contains(@class, 'run')]")) == 70
    assert not svg.xpath(".//circle | .//text[@class='fail-count']")
    assert len(svg.xpath(".//polyline[@id='trend-line']")[0].get("points").split()) == 70
    _, doc = parse(manager, runs=20)  # wide bands keep them
    svg = doc.xpath("//svg[contains(@class, 'trend')]")[0]
    assert len(svg.xpath(".//circle[@class='dur-dot']")) == 20
    assert len(svg.xpath(".//text[@class='fail-count']")) == 10


def test_the_last_complete_run_may_be_older_than_the_window(manager):
    add_run(manager, "r1", {"a": "failed", "b": "passed"}, day=0)
    add_run(manager, "r2", {"a": "failed"}, day=1)
    add_run(manager, "r3", {"a": "passed"}, day=2)
    for run_id in ("r2", "r3"):
        _end(manager, run_id, "stopped")
    _, doc = parse(manager, runs=2)
    assert [r[0] for r in runs_table(doc)] == ["r3", "r2"]
    assert "r3 compared with r1" in " ".join(texts(doc, "//p[@class='note']"))
    assert texts(doc, "//ul[contains(@class, 'not-reached')]/li") == ["b"]
