"""The bench's self-contained HTML report (run trends, flaky and slow tests, sessions, APDU
timelines), rendered with Jinja2: ``pip install 'cardlink-lite[report]'``."""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
from collections import Counter
from datetime import date, datetime, timezone
from pathlib import Path

import jinja2
import markupsafe

from . import report_apdus as apdus
from . import report_charts as charts
from . import report_runs as runs_data
from . import report_sessions as sessions_data
from .db import bound_models
from .errors import ValidationError, quote
from .fields import to_utc_ms, utc_now
from .models import Device
from .repositories import TestRepository

__all__ = ["REPORT_DEFAULTS", "build_report", "write_report"]

REPORT_DEFAULTS = {"runs": 20, "flaky": 25, "slowest": 10, "sessions": 15,
                   "exchanges": 5000, "names": 200, "days": 30}

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("cardlink_lite", "templates"),
    autoescape=True,  # every value is escaped; the templates hold the only markup
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.filters["ms"] = charts.format_ms
_ENV.filters["when"] = lambda v: v.strftime("%Y-%m-%d %H:%M") if v else "–"
_ENV.filters["pct"] = lambda v: "–" if v is None else f"{v:.1f}".removesuffix(".0") + "%"
_ENV.filters["spark"] = charts.sparkline
# A user's value (a test, device or card name) isolated from the text around it: a
# right-to-left one must not reorder its neighbours.
_ENV.filters["bdi"] = lambda v: markupsafe.Markup("<bdi>%s</bdi>") % v
_SCRIPT = _ENV.loader.get_source(_ENV, "report.js")[0]
if "</" in _SCRIPT:  # it is inlined in the page
    raise AssertionError("report.js must not contain '</'")
# Only this script may run (the page's CSP names its hash): an injected handler would be
# refused even if something escaped the escaping.
_ENV.globals["script"] = markupsafe.Markup(_SCRIPT)
_ENV.globals["script_hash"] = "sha256-" + base64.b64encode(
    hashlib.sha256(_SCRIPT.encode()).digest()).decode()


def build_report(manager, suite: str | None = None, runs: int = REPORT_DEFAULTS["runs"],
                 since: datetime | date | None = None, sessions: list[str] | None = None,
                 title: str | None = None) -> str:
    """The report as one HTML document, from ``cardlink-db report``'s options (``since``: a
    date means midnight UTC, a naive datetime local time)."""
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise ValidationError(f"runs must be a whole number >= 1; got {runs!r}")
    since = _moment(since)
    if sessions is not None:  # a session named twice is drawn once
        sessions = list(dict.fromkeys(sessions))
    with bound_models(manager.database):
        suites = runs_data.suite_names()
        if suite is None:
            suite = suites[0] if suites else None
        elif suite not in suites:
            known = ", ".join(suites[:10]) or "none recorded yet"
            raise ValidationError(f"no results for suite {quote(suite)}; suites: {known}")
        context = {**_runs_part(suite, runs, since), **_sessions_part(since, sessions)}
        devices = {d for r in context["runs"] for d in r["devices"]}
        devices = sorted(devices.union(context["matrix"]["devices"]) - {None})
        names = dict(Device.select(Device.id, Device.name)
                     .where(Device.id.in_(devices)).tuples()) if devices else {}
    cards = {c for r in context["runs"] for c in r["cards"]}
    return _ENV.get_template("report.html.j2").render(
        **context, suite=suite, other_suites=[s for s in suites if s != suite],
        generated_at=utc_now(), store=manager.config.safe_url, since=since,
        limits=REPORT_DEFAULTS, filter_devices=[(d, names.get(d)) for d in devices],
        filter_cards=sorted(cards.union(context["matrix"]["cards"]) - {None}),
        title=title or (f"Bench report: {suite}" if suite else "Bench report"))


def write_report(manager, path, **options) -> Path:
    """Build the report and write it to ``path`` whole (through a temporary file)."""
    html = build_report(manager, **options)
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(html)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _moment(since):
    if since is None:
        return None
    if isinstance(since, datetime):
        return to_utc_ms(since)
    if isinstance(since, date):
        return datetime(since.year, since.month, since.day, tzinfo=timezone.utc)
    raise ValidationError(f"since must be a date or datetime; got {since!r:.40}")


def _runs_part(suite, runs, since) -> dict:
    window = runs_data.run_window(suite, runs, since) if suite else []
    run_ids = [r["run_id"] for r in window]
    flaky_count, flaky = runs_data.flaky_tests(suite, run_ids, REPORT_DEFAULTS["flaky"])
    # The newest run against the newest run before it that ran to the end (a stopped or
    # interrupted run left tests out: they are not "removed").
    base = next((r["run_id"] for r in reversed(window[:-1]) if r["complete"]), None)
    if base is None and window:  # none in the window: the suite's newest before it
        found = TestRepository().latest_comparable_run(suite, exclude=run_ids[-1])
        newest = window[-1]["started_at"]
        if found and found.started_at and newest and found.started_at < newest:
            base = found.id
    return {
        "runs": window,
        "trend": charts.trend_chart(window),
        "comparison": TestRepository().compare_runs(base, run_ids[-1]) if base else None,
        "flaky_count": flaky_count,
        "flaky": flaky,
        "slowest": runs_data.slowest_tests(suite, run_ids, REPORT_DEFAULTS["slowest"]),
    }


def _sessions_part(since, session_ids) -> dict:
    start = sessions_data.session_window_start(since, REPORT_DEFAULTS["days"])
    if start is None:
        return {"session_start": None, "matrix": {"devices": [], "cards": []},
                "timelines": _timelines(session_ids or [])}
    per_day = sessions_data.outcomes_per_day(start)
    if not per_day:  # none since ``since``: said in words, not drawn as empty charts
        return {"session_start": start, "days": None, "matrix": {"devices": [], "cards": []},
                "timelines": _timelines(session_ids or [])}
    recent = sessions_data.recent_sessions(start, REPORT_DEFAULTS["sessions"])
    if session_ids is None:  # the newest session with APDUs and the newest failed one
        with_apdus = [r for r in recent if r["apdus"]]
        failed = [r for r in with_apdus if r["outcome"] in ("failed", "timeout")]
        session_ids = list(dict.fromkeys(r["id"] for r in with_apdus[:1] + failed[:1]))
    return {
        "session_start": start,
        "days": charts.day_chart(per_day),
        "matrix": sessions_data.device_card_matrix(start),
        "latency": sessions_data.command_latency(start),
        "recent": recent,
        "timelines": _timelines(session_ids),
    }


def _timelines(session_ids: list[str]) -> list[dict]:
    out = []
    for session_id in session_ids:
        facts = sessions_data.session_facts(session_id)
        if facts is None:
            raise ValidationError(
                f"no OTA session {str(session_id)[:40]!r} in this store; find session ids "
                "with: cardlink-db sessions list"
            )
        exchanges, more, more_ms = apdus.session_exchanges(facts["id"],
                                                           REPORT_DEFAULTS["exchanges"])
        timed = any(e["latency_ms"] is not None for e in exchanges) or more_ms > 0
        chart = charts.timeline(exchanges)
        out.append({"facts": facts, "exchanges": exchanges, "more": more,
                    "card_ms": chart["total_ms"] + more_ms if timed else None,
                    "kinds": Counter(e["sw_kind"] for e in exchanges if e["sw_kind"]),
                    "chart": chart,
                    "slowest": max(exchanges, key=lambda e: e["latency_ms"] or 0)
                    if any(e["latency_ms"] is not None for e in exchanges) else None})
    return out
