"""Chart geometry for the HTML report: scales, ticks and shapes in pixels of each chart's
``viewBox``, which the templates turn into SVG elements."""

from __future__ import annotations

import math
from itertools import groupby

__all__ = ["day_chart", "format_ms", "nice_ticks", "sparkline", "timeline", "trend_chart"]

_STACK = ("passed", "failed", "error", "skipped")
_TYPICAL_PX = 8.0      # width of a median-latency exchange in a long timeline
_MAX_WIDTH = 30000.0   # pixels of latency in the widest timeline
_MAX_BAR_PX = 240.0    # the widest one exchange is drawn (a long wait is cut and labelled)
_OUTCOMES = ("completed", "failed", "timeout", "open")
_DENSE_PX = 14.0       # a trend band narrower than this drops its dot and counts


def nice_ticks(top: float, count: int = 4, whole: bool = False) -> list[float]:
    """Round tick values from 0 up to at least ``top`` (about ``count`` steps); ``whole``:
    steps of whole numbers (counts)."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / count
    magnitude = 10 ** math.floor(math.log10(raw))
    steps = (1, 2, 5, 10) if whole else (1, 2, 2.5, 5, 10)
    step = next(m * magnitude for m in steps if m * magnitude >= raw)
    if whole:
        step = max(1, round(step))
    return [i * step for i in range(int(math.ceil(top / step - 1e-9)) + 1)]


def format_ms(ms) -> str:
    """A duration for people: ``850 ms``, ``4.2 s``, ``3 min 20 s``."""
    if ms is None:
        return "–"
    ms = float(ms)
    if ms < 1000:
        return f"{ms:.1f} ms" if ms < 10 and ms != int(ms) else f"{ms:.0f} ms"
    seconds = ms / 1000
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(int(round(seconds)), 60)
    if minutes < 120:
        return f"{minutes} min {seconds} s"
    return f"{minutes // 60} h {minutes % 60} min"


def trend_chart(runs: list[dict], width: int = 960, height: int = 300) -> dict:
    """Stacked status bars (share of each run's tests) and the total-duration line."""
    peak = max((r["duration_ms"] for r in runs), default=0)
    d_ticks = nice_ticks(peak / 1000 if peak else 1)
    d_top = d_ticks[-1] * 1000 or 1
    chart = _stacked_bars(
        runs, "run", [[(s, r[s] / r["total"] if r["total"] else 0) for s in _STACK] for r in runs],
        [r["started_at"].strftime("%m-%d %H:%M") if r["started_at"] else "" for r in runs],
        (width, height, 48, 64, 22, 44), bar_max=48, bar_min=2, label_px=90)
    for bar in chart["bars"]:
        bar["cy"] = _y(chart, bar["run"]["duration_ms"] / d_top)
    chart["rate_ticks"] = [{"y": _y(chart, p / 100), "text": f"{p}%"} for p in (0, 25, 50, 75, 100)]
    chart["duration_ticks"] = [{"y": _y(chart, t * 1000 / d_top), "text": f"{t:g} s"}
                               for t in d_ticks]
    chart["line"] = " ".join(f"{b['cx']},{b['cy']}" for b in chart["bars"])
    # Under ~14 px a run the dots and counts would overlap: the bars and the line stay.
    chart["dense"] = (chart["right"] - chart["left"]) / max(len(runs), 1) < _DENSE_PX
    return chart


def day_chart(days: list[dict], width: int = 960, height: int = 220) -> dict:
    """Stacked bars of session outcomes per day (a day without sessions is a gap)."""
    ticks = nice_ticks(max((d["total"] for d in days), default=0) or 1, whole=True)
    peak = ticks[-1] or 1
    chart = _stacked_bars(days, "day", [[(o, d[o] / peak) for o in _OUTCOMES] for d in days],
                          [d["day"][5:] for d in days], (width, height, 48, 16, 16, 40),
                          bar_max=40, bar_min=1.5, label_px=70)
    chart["ticks"] = [{"y": _y(chart, t / peak), "text": f"{t:g}"} for t in ticks]
    return chart


def _stacked_bars(items, name, stacks, texts, box, bar_max, bar_min, label_px) -> dict:
    """One bar per item under ``name``, stacked from ``stacks`` (key, fraction of the plot's
    height), with its text under every few bars (at least ``label_px`` apart)."""
    width, height, left, right, top, bottom = box
    plot_w, plot_h = width - left - right, height - top - bottom
    n = max(len(items), 1)
    band = plot_w / n
    bar_w = max(min(band * 0.7, bar_max), bar_min)
    bars = []
    for i, (item, stack) in enumerate(zip(items, stacks, strict=True)):
        x = left + band * i + (band - bar_w) / 2
        y = top + plot_h
        segments = []
        for key, fraction in stack:
            h = fraction * plot_h
            y -= h
            if h > 0:
                segments.append({"key": key, "y": round(y, 1), "h": round(h, 1)})
        bars.append({name: item, "x": round(x, 1), "w": round(bar_w, 1),
                     "cx": round(x + bar_w / 2, 1), "segments": segments})
    every = max(1, math.ceil(n / max(plot_w // label_px, 1)))
    return {"width": width, "height": height, "left": left, "right": width - right,
            "top": top, "bottom": top + plot_h, "bars": bars,
            "labels": [{"x": b["cx"], "text": text} for i, (b, text)
                       in enumerate(zip(bars, texts, strict=True)) if (n - 1 - i) % every == 0]}


def _y(chart: dict, fraction: float) -> float:
    return round(chart["bottom"] - fraction * (chart["bottom"] - chart["top"]), 1)


def sparkline(values: list, width: int = 160, height: int = 28) -> dict:
    """A small line of ``values`` (None: a gap) from 0 to the largest value; ``last`` is the
    (x, y) of the newest value drawn, None if none is."""
    pad = 3
    peak = max((v for v in values if v is not None), default=0) or 1
    step = (width - 2 * pad) / max(len(values) - 1, 1)
    points = [None if v is None else (round(pad + i * step, 1),
                                      round(height - pad - v / peak * (height - 2 * pad), 1))
              for i, v in enumerate(values)]
    lines = [list(line) for drawn, line in groupby(points, key=bool) if drawn]
    return {"width": width, "height": height, "last": lines[-1][-1] if lines else None,
            "lines": [" ".join(f"{x},{y}" for x, y in line) for line in lines]}


def timeline(exchanges: list[dict], target_width: int = 1180, lane_height: int = 34) -> dict:
    """One lane per logical channel; exchanges one after the other (the card answers one
    command at a time), each as wide as its latency; in a chart wider than ``target_width``
    a long wait is cut to ``_MAX_BAR_PX`` and labelled with its duration."""
    left, top, min_w, gap = 96, 24, 3.0, 1.0
    latencies = sorted(e["latency_ms"] for e in exchanges if e["latency_ms"])
    total_ms = sum(latencies)
    scale = (target_width - left - 16) / total_ms if total_ms else 0
    if latencies:  # long sessions scroll: a typical exchange stays a few pixels wide
        typical = latencies[len(latencies) // 2]
        scale = max(scale, min(_TYPICAL_PX / typical, _MAX_WIDTH / total_ms))
    lanes = sorted({e["channel"] for e in exchanges}, key=lambda c: (c is None, c or 0))
    lane_y = {c: top + i * lane_height for i, c in enumerate(lanes)}
    # Cut only where the chart would scroll: then one wait must not take screens of it.
    cap = _MAX_BAR_PX if left + sum(max((e["latency_ms"] or 0) * scale, min_w) + gap
                                    for e in exchanges) > target_width else math.inf
    bars, x, elapsed = [], float(left), 0.0
    for index, e in enumerate(exchanges):
        ms = e["latency_ms"] or 0
        w = max(ms * scale, min_w)
        cut = w > cap
        w = min(w, cap)
        bars.append({"e": e, "index": index + 1, "x": round(x, 1), "w": round(w, 1),
                     "y": lane_y[e["channel"]] + 5, "h": lane_height - 10, "cut": cut,
                     "start_ms": elapsed, "label": _fit(format_ms(ms) if cut else
                                                        e.get("name") or e.get("sw") or "",
                                                        w - (24 if cut else 8))})
        x += w + gap
        elapsed += ms
    axis_y = top + lane_height * max(len(lanes), 1) + 4
    ticks = _time_ticks(bars, total_ms, scale, x - left)
    room = ticks[-1]["x"] + 60 if ticks else 0  # for the last tick's text
    return {"width": int(max(x + 16, room, 320)), "height": axis_y + 24, "left": left,
            "top": top, "bars": bars, "ticks": ticks,
            "total_ms": total_ms, "timed": any(e["latency_ms"] is not None for e in exchanges),
            "lane_height": lane_height, "axis_y": axis_y,
            "lanes": [{"channel": c, "y": lane_y[c]} for c in lanes]}


def _time_ticks(bars: list[dict], total_ms: float, scale: float, width: float,
                min_gap: float = 70) -> list[dict]:
    """Elapsed card time at round values on one grid, where each is reached; none inside a
    cut bar (its label says how long it is), none closer than ``min_gap`` pixels."""
    if not bars:
        return []
    if not total_ms:
        return [{"x": bars[0]["x"], "text": "0", "ms": 0}]
    # The grid follows the time drawn to scale: a cut wait would make its step useless.
    drawn_ms = sum(b["e"]["latency_ms"] or 0 for b in bars if not b["cut"]) or total_ms
    step = nice_ticks(drawn_ms, count=max(2, int(width // 120)))[1]
    ticks, value, last_x = [], 0.0, -min_gap
    for bar in bars:
        start = bar["start_ms"]
        end = start + (bar["e"]["latency_ms"] or 0)
        while value <= end:
            if bar["cut"] and value > start:  # on to the first grid value after the wait
                value = (math.floor(end / step) + 1) * step
                break
            x = bar["x"] + min((value - start) * scale, bar["w"])
            if x - last_x >= min_gap:
                ticks.append({"x": round(x, 1), "text": _tick_text(value, step), "ms": value})
                last_x = x
            value += step
    return ticks


def _tick_text(ms: float, step: float) -> str:
    """``ms`` with as many decimals as ``step`` needs (28.05 s after a cut 28 s wait)."""
    if not ms:
        return "0"
    if ms < 1000 or step >= 1000:
        return format_ms(ms) if step >= 1 else f"{ms:g} ms"
    decimals = next(d for d in range(1, 6) if round(step / 1000, d) == step / 1000 or d == 5)
    return f"{ms / 1000:.{decimals}f} s"


def _fit(text: str, width: float) -> str:
    """``text`` cut to what fits in ``width`` pixels of the label font (or nothing)."""
    chars = int(width / 7.0)
    if chars < 4:
        return ""
    return text if len(text) <= chars else text[:chars - 1] + "…"
