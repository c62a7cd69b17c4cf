"""One self-contained HTML report of the bench: run trends, flaky and slow tests, session
outcomes and APDU timelines. Needs Jinja2 (``pip install 'cardlink-lite[report]'``)."""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
from datetime import date, datetime, timezone
from pathlib import Path

import jinja2
import markupsafe

from . import report_apdus as apdus
from . import report_charts as charts
from . import report_runs as runs_data
from . import report_sessions as sessions_data
from .db import bound_models
from .errors import ValidationError
from .fields import to_utc_ms, utc_now
from .models import ALL_MODELS, Device

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
_ENV.filters["short"] = lambda v, n=8: (v[:n] + "…") if v and len(v) > n + 1 else (v or "")
_ENV.filters["spark"] = charts.sparkline


def build_report(manager, suite: str | None = None, runs: int = REPORT_DEFAULTS["runs"],
                 since: datetime | date | None = None, sessions: list[str] | None = None,
                 title: str | None = None) -> str:
    """The report as one HTML document (a ``str``).

    ``suite``: the suite whose runs are shown (default: the one with the newest result);
    ``runs``: how many of its newest runs; ``since``: leave out runs and sessions before
    this time (a date means midnight UTC, a naive datetime local time); ``sessions``: ids
    of the sessions to draw as timelines (default: the newest session with APDUs, and the
    newest failed one).
    """
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise ValidationError(f"runs must be a whole number >= 1; got {runs!r}")
    since = _moment(since)
    manager.bind()
    with bound_models(manager.database, ALL_MODELS):
        context = _context(manager, suite, runs, since, sessions)
    context["title"] = title or (f"Bench report: {context['suite']}" if context["suite"]
                                 else "Bench report")
    script = _script()
    return _ENV.get_template("report.html.j2").render(
        **context, script=markupsafe.Markup(script),
        # Only this script may run: an injected handler would be refused even if
        # something escaped the escaping.
        script_hash="sha256-" + base64.b64encode(
            hashlib.sha256(script.encode()).digest()).decode())


def _script() -> str:
    source, _, _ = _ENV.loader.get_source(_ENV, "report.js")
    if "</" in source:
        raise AssertionError("report.js must not contain '</'")  # it is inlined
    return source


def write_report(manager, path, **options) -> Path:
    """Build the report and write it to ``path`` whole (through a temporary file)."""
    html = build_report(manager, **options)
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
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


def _context(manager, suite, runs, since, session_ids) -> dict:
    suites = runs_data.suite_names()
    if suite is None:
        suite = suites[0] if suites else None
    elif suite not in suites:
        known = ", ".join(suites[:10]) or "none recorded yet"
        raise ValidationError(f"no results for suite {suite!r:.60}; suites: {known}")
    context = {"suite": suite, "other_suites": [s for s in suites if s != suite],
               "generated_at": utc_now(), "store": manager.config.safe_url,
               "since": since, "runs_asked": runs, "limits": REPORT_DEFAULTS}
    context.update(_runs_part(suite, runs, since))
    context.update(_sessions_part(since, session_ids))
    devices = set(context["run_devices"]) | {p["device"] for p in context["matrix_pairs"]
                                            if p["device"]}
    cards = set(context["run_cards"]) | {p["card"] for p in context["matrix_pairs"]
                                        if p["card"]}
    names = dict(Device.select(Device.id, Device.name)
                 .where(Device.id.in_(sorted(devices))).tuples()) if devices else {}
    context["filter_devices"] = [(d, names.get(d)) for d in sorted(devices)]
    context["filter_cards"] = sorted(cards)
    return context


def _runs_part(suite, runs, since) -> dict:
    window = runs_data.run_window(suite, runs, since) if suite else []
    run_ids = [r["run_id"] for r in window]
    labels = runs_data.run_labels(suite, run_ids) if suite else {}
    for run in window:
        run["devices"] = sorted(labels[run["run_id"]]["devices"])
        run["cards"] = sorted(labels[run["run_id"]]["cards"])
    flaky_count, flaky = runs_data.flaky_tests(suite, run_ids, REPORT_DEFAULTS["flaky"]) \
        if suite else (0, [])
    return {
        "runs": window,
        "trend": charts.trend_chart(window),
        "comparison": runs_data.compare_newest(run_ids),
        "flaky_count": flaky_count,
        "flaky": flaky,
        "slowest": runs_data.slowest_tests(suite, run_ids, REPORT_DEFAULTS["slowest"])
        if suite else [],
        "run_devices": sorted({d for r in window for d in r["devices"]}),
        "run_cards": sorted({c for r in window for c in r["cards"]}),
    }


def _sessions_part(since, session_ids) -> dict:
    start = sessions_data.session_window_start(since, REPORT_DEFAULTS["days"])
    if start is None:
        return {"session_start": None, "days": None, "matrix_pairs": [], "matrix": None,
                "latency": [], "recent": [], "timelines": _timelines(session_ids or [])}
    pairs = sessions_data.device_card_matrix(start)
    recent = sessions_data.recent_sessions(start, REPORT_DEFAULTS["sessions"])
    if session_ids is None:
        session_ids = _default_sessions(recent)
    timelines = _timelines(session_ids)
    shown = {t["facts"]["id"] for t in timelines}
    for row in recent:
        row["linked"] = row["id"] in shown
    return {
        "session_start": start,
        "days": charts.day_chart(sessions_data.outcomes_per_day(start)),
        "matrix_pairs": pairs,
        "matrix": _pivot(pairs),
        "latency": sessions_data.command_latency(start),
        "recent": recent,
        "timelines": timelines,
    }


def _default_sessions(recent: list[dict]) -> list[str]:
    with_apdus = [r for r in recent if r["apdus"]]
    chosen = with_apdus[:1]
    failed = next((r for r in with_apdus if r["outcome"] in ("failed", "timeout")), None)
    if failed is not None and failed not in chosen:
        chosen.append(failed)
    return [r["id"] for r in chosen]


def _timelines(session_ids: list[str]) -> list[dict]:
    out = []
    for session_id in session_ids:
        facts = sessions_data.session_facts(session_id)
        if facts is None:
            raise ValidationError(
                f"no OTA session {str(session_id)[:40]!r} in this store; find session ids "
                "with: cardlink-db sessions list"
            )
        exchanges = list(apdus.session_exchanges(facts["id"], REPORT_DEFAULTS["exchanges"]))
        more = exchanges.pop()["more"] if exchanges and "more" in exchanges[-1] else 0
        kinds = {}
        for e in exchanges:
            if e["sw_kind"]:
                kinds[e["sw_kind"]] = kinds.get(e["sw_kind"], 0) + 1
        latencies = [e["latency_ms"] for e in exchanges if e["latency_ms"] is not None]
        out.append({"facts": facts, "exchanges": exchanges, "more": more, "kinds": kinds,
                    "chart": charts.timeline(exchanges),
                    "card_time_ms": sum(latencies),
                    "slowest": max(exchanges, key=lambda e: e["latency_ms"] or 0)
                    if latencies else None})
    return out


def _pivot(pairs: list[dict]) -> dict:
    devices = sorted({p["device"] for p in pairs}, key=lambda d: (d is None, d or ""))
    cards = sorted({p["card"] for p in pairs}, key=lambda c: (c is None, c or ""))
    cells = {(p["device"], p["card"]): p for p in pairs}
    return {"devices": devices, "cards": cards,
            "rows": [[cells.get((d, c)) for c in cards] for d in devices]}

