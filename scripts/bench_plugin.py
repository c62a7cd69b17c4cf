"""Overhead of the cardlink pytest plugin on a generated suite of trivial tests.

Runs the same suite with recording disabled and enabled (SQLite, schema already created)
and prints the per-test overhead and the ratio. ``--startup`` instead measures what the
installed but idle plugin costs a one-test run (wall time and peak RSS against
``-p no:cardlink``). Examples:

    python scripts/bench_plugin.py --tests 2000 --repeat 5
    python scripts/bench_plugin.py --tests 2000 --url postgresql://postgres@127.0.0.1/bench
    python scripts/bench_plugin.py --startup --repeat 10

``--url`` records into that (existing) database instead of a temporary SQLite file.

Gated (exit 1 on a miss, or when nothing was measured): the time spent inside the recorder,
measured in-process, at most 0.2 ms per test (issue 14's target, on every backend). The
wall-clock ratio enabled/disabled is printed, not gated: the generated tests do almost
nothing (~0.3 ms each with pytest's own work), so any fixed per-test cost is a large share
of them, and on a shared machine the difference of two whole runs is mostly noise.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_MS_PER_TEST = 0.2  # issue 14: on every backend, with the richer record
IDLE_WALL_RATIO = 1.05    # idle plugin vs -p no:cardlink, one-test run
IDLE_EXTRA_RSS_MB = 2.0


def _generate(root: Path, tests: int, per_file: int = 100) -> None:
    for start in range(0, tests, per_file):
        count = min(per_file, tests - start)
        body = "".join(f"def test_{start + i}():\n    assert {start + i} >= 0\n\n"
                       for i in range(count))
        (root / f"test_gen_{start // per_file:03d}.py").write_text(body)


def _run(root: Path, extra: list[str]) -> float:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
           "--no-header", *extra]
    env = {k: v for k, v in os.environ.items() if k != "CARDLINK_PYTEST_DB"}
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"pytest failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    if extra and "not recorded" in done.stdout:
        sys.exit(f"results were not recorded:\n{done.stdout[-2000:]}")
    return elapsed


def _measure_hooks(suite: str, url: str) -> None:
    """In this process: run the suite and print the seconds spent inside the recorder."""
    import functools

    import pytest

    from cardlink_lite import pytest_recorder

    spent = [0.0]

    def timed(method):
        @functools.wraps(method)
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - start
        return wrapper

    cls = pytest_recorder.CardlinkRecorder
    for name in ("pytest_runtest_logreport", "pytest_sessionfinish", "close"):
        setattr(cls, name, timed(getattr(cls, name)))
    code = pytest.main(["-q", "-p", "no:cacheprovider", "--no-header", suite,
                        "--cardlink-db", url])
    print(f"HOOKS {spent[0]:.6f} {int(code)}")


def _hook_seconds(suite: Path, url: str) -> float:
    done = subprocess.run([sys.executable, __file__, "--measure-hooks", str(suite), url],
                          capture_output=True, text=True)
    line = [ln for ln in done.stdout.splitlines() if ln.startswith("HOOKS ")]
    if not line or not line[-1].endswith(" 0"):
        sys.exit(f"in-process run failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return float(line[-1].split()[1])


def _one_run(root: Path, extra: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one pytest process on ``root``."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDLINK")}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"pytest {' '.join(extra)} failed with exit status {proc.returncode}")
    return elapsed, usage.ru_maxrss / 1024  # Linux reports KiB


def startup(repeat: int) -> int:
    """One-test run with the plugin installed but idle vs the same run without it."""
    with tempfile.TemporaryDirectory(prefix="cardlink-startup-") as tmp:
        root = Path(tmp)
        (root / "test_one.py").write_text("def test_one():\n    pass\n")
        variants = {"idle": [], "without": ["-p", "no:cardlink"]}
        for extra in variants.values():
            _one_run(root, extra)  # warm-up: bytecode caches, OS page cache
        samples: dict[str, list] = {name: [] for name in variants}
        for _ in range(repeat):  # interleaved, so drift hits both alike
            for name, extra in variants.items():
                samples[name].append(_one_run(root, extra))
    wall = {n: statistics.median(s[0] for s in v) for n, v in samples.items()}
    rss = {n: statistics.median(s[1] for s in v) for n, v in samples.items()}
    ratio, extra_mb = wall["idle"] / wall["without"], rss["idle"] - rss["without"]
    print(f"one-test pytest run, median of {repeat} interleaved runs each")
    print(f"  -p no:cardlink: {wall['without'] * 1000:.0f} ms, peak RSS {rss['without']:.1f} MB")
    print(f"  plugin idle:    {wall['idle'] * 1000:.0f} ms, peak RSS {rss['idle']:.1f} MB")
    print(f"  wall ratio idle/without {ratio:.3f} (target <= {IDLE_WALL_RATIO}); "
          f"peak RSS {extra_mb:+.1f} MB (target <= +{IDLE_EXTRA_RSS_MB}) (noisy on a shared "
          "machine)")
    ok = ratio <= IDLE_WALL_RATIO and extra_mb <= IDLE_EXTRA_RSS_MB and repeat > 0
    print("PASS" if ok else "ABOVE TARGET")
    return 0 if ok else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--url", help="record into this existing database (default: SQLite)")
    parser.add_argument("--startup", action="store_true",
                        help="measure the idle plugin's start-up cost instead")
    parser.add_argument("--measure-hooks", nargs=2, metavar=("SUITE", "URL"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure_hooks:
        _measure_hooks(*args.measure_hooks)
        return 0
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.startup:
        return startup(args.repeat)
    with tempfile.TemporaryDirectory(prefix="cardlink-bench-") as tmp:
        root = Path(tmp)
        (root / "suite").mkdir()
        _generate(root / "suite", args.tests)
        enabled = ["--cardlink-db", args.url or f"sqlite:///{root}/results.db"]
        _run(root / "suite", enabled)  # warm-up: creates the schema, fills OS caches
        _run(root / "suite", [])
        off, on = [], []
        for _ in range(args.repeat):  # interleaved, so drift hits both alike
            off.append(_run(root / "suite", []))
            on.append(_run(root / "suite", enabled))
        hooks = statistics.median(_hook_seconds(root / "suite", enabled[1])
                                  for _ in range(args.repeat))
    t_off, t_on = statistics.median(off), statistics.median(on)
    per_test_ms = (t_on - t_off) * 1000 / args.tests
    ratio = t_on / t_off
    backend = (args.url or "sqlite").split(":", 1)[0]
    print(f"{args.tests} trivial tests on {backend}, median of {args.repeat} runs "
          f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    print(f"  disabled: {t_off:.3f} s   ({t_off * 1000 / args.tests:.3f} ms/test)")
    print(f"  enabled:  {t_on:.3f} s   ({t_on * 1000 / args.tests:.3f} ms/test)")
    print(f"  wall-clock overhead: {per_test_ms:.3f} ms/test, ratio enabled/disabled "
          f"{ratio:.3f} (noisy on a shared machine)")
    hook_ms = hooks * 1000 / args.tests
    hook_ratio = (t_off + hooks) / t_off
    print(f"  time inside the recorder (in-process, reports + batched commits + closing "
          f"the run): {hooks * 1000:.1f} ms = {hook_ms:.3f} ms/test "
          f"(target <= {TARGET_MS_PER_TEST}, gated)")
    print(f"  ratio (disabled + recorder time) / disabled: {hook_ratio:.3f} (not gated)")
    code = exit_code(hook_ms)
    print("PASS" if code == 0 else "NOTHING MEASURED" if not hook_ms else "ABOVE TARGET")
    return code


def exit_code(hook_ms_per_test: float | None) -> int:
    """0 when the recorder's in-process time per test is within the target (the only gate:
    the wall-clock ratios are printed, not gated); 1 on a miss or when nothing was measured."""
    if not hook_ms_per_test:
        return 1
    return 0 if hook_ms_per_test <= TARGET_MS_PER_TEST else 1


if __name__ == "__main__":
    sys.exit(main())
