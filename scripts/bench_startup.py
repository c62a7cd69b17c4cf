"""Start-up time of ``cardlink-db --version`` and ``--help`` against ``sqlite-utils --version``.

Whole processes, run interleaved (one of each per round, so machine load hits all alike),
compared by their medians. Target: each cardlink-db run takes at most the time of
``sqlite-utils --version`` (ratio <= 1.0). Exits non-zero when a target is missed or
nothing could be measured. Example:

    python scripts/bench_startup.py --rounds 10
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

TARGET_RATIO = 1.0


def _executable(name: str) -> str | None:
    """``name`` from this interpreter's bin directory (a venv), else from PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), name)
    return beside if os.access(beside, os.X_OK) else shutil.which(name)


def _time(cmd: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr[-300:]}")
    return elapsed


def measure(rounds: int) -> list[dict]:
    cardlink, baseline = _executable("cardlink-db"), _executable("sqlite-utils")
    if cardlink is None or baseline is None:
        missing = "cardlink-db" if cardlink is None else "sqlite-utils"
        raise RuntimeError(f"{missing} is not installed; pip install -e '.[test]'")
    commands = {"cardlink-db --version": [cardlink, "--version"],
                "cardlink-db --help": [cardlink, "--help"],
                "sqlite-utils --version": [baseline, "--version"]}
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _name, cmd in commands.items():  # warm the file cache once, unmeasured
        _time(cmd)
    for _ in range(rounds):
        for name, cmd in commands.items():
            times[name].append(_time(cmd))
    base = statistics.median(times["sqlite-utils --version"])
    results = []
    for name in ("cardlink-db --version", "cardlink-db --help"):
        median = statistics.median(times[name])
        results.append({"bench": name, "rounds": rounds, "median_ms": round(median * 1e3, 1),
                        "sqlite_utils_version_ms": round(base * 1e3, 1),
                        "ratio": round(median / base, 2), "target": f"<= {TARGET_RATIO}",
                        "ok": median / base <= TARGET_RATIO})
    return results


def exit_code(results: list[dict]) -> int:
    """0 only when something was measured and every line met its target."""
    if not results:
        return 1
    return 0 if all(r.get("ok") is True for r in results) else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds (default 10)")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    try:
        results = measure(args.rounds)
    except RuntimeError as exc:
        print(f"nothing measured: {exc}", file=sys.stderr)
        sys.exit(1)
    for r in results:
        print(json.dumps(r))
    sys.exit(exit_code(results))


if __name__ == "__main__":
    main()
