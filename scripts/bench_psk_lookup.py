"""Time PSK lookups by identity (what a PSK-TLS server does per handshake) on SQLite.

    python scripts/bench_psk_lookup.py               # 10,000 cards, 5,000 lookups
    python scripts/bench_psk_lookup.py --cards 1000 --lookups 500

Target (issue 12): ``psk_key_lookup(manager)(identity)`` p50 <= 1 ms. The raw baseline,
measured in the same run, is sqlite3 running the same indexed SELECT plus one Fernet
decryption; the ratio is printed. Exits non-zero when the target is missed, a lookup
returns the wrong key, or nothing was measured.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time

from cryptography.fernet import Fernet

TARGET_P50_MS = 1.0


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.99) - 1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cards", type=int, default=10_000)
    parser.add_argument("--lookups", type=int, default=5_000)
    args = parser.parse_args(argv)
    if args.cards < 1 or args.lookups < 1:
        parser.error("--cards and --lookups must be at least 1")
    os.environ["CARDLINK_ENCRYPTION_KEY"] = key = Fernet.generate_key().decode()

    from cardlink_lite import CardProfile, DatabaseManager, psk_key_lookup
    from cardlink_lite.unit_of_work import UnitOfWork

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "psk.db")
        manager = DatabaseManager(f"sqlite:///{path}").initialize(check_schema=False)
        manager.create_tables()
        keys = {f"card_{i:06d}": os.urandom(16) for i in range(args.cards)}
        with UnitOfWork(manager) as uow:
            for i, (identity, psk) in enumerate(keys.items()):
                uow.cards.create_with_psk(
                    CardProfile(iccid=f"8901{i:016d}", psk_identity=identity), psk)
        rng = random.Random(12)
        asked = [rng.choice(list(keys)) for _ in range(args.lookups)]

        lookup = psk_key_lookup(manager)
        lookup(asked[0])  # connect
        ours, wrong = [], 0
        for identity in asked:
            start = time.perf_counter()
            psk = lookup(identity)
            ours.append((time.perf_counter() - start) * 1000)
            wrong += psk != keys[identity]
        missing = lookup("no_such_identity")

        raw = sqlite3.connect(path)
        fernet = Fernet(key)
        sql = ("SELECT iccid, psk_identity, psk_key_encrypted FROM card_profiles "
               "WHERE psk_identity = ? AND psk_key_encrypted IS NOT NULL")
        baseline = []
        for identity in asked:
            start = time.perf_counter()
            row = raw.execute(sql, (identity,)).fetchone()
            fernet.decrypt(bytes(row[2]))
            baseline.append((time.perf_counter() - start) * 1000)
        raw.close()
        manager.close()

    if not ours or not baseline:
        print("FAIL: nothing was measured")
        return 1
    p50, p99 = _percentiles(ours)
    raw50, raw99 = _percentiles(baseline)
    print(f"{args.cards:,} cards, {len(ours):,} lookups on SQLite")
    print(f"psk_key_lookup: p50 {p50:.3f} ms, p99 {p99:.3f} ms")
    print(f"raw sqlite3 + Fernet: p50 {raw50:.3f} ms, p99 {raw99:.3f} ms")
    print(f"ratio p50: {p50 / raw50:.2f}x raw")
    problems = []
    if p50 > TARGET_P50_MS:
        problems.append(f"p50 {p50:.3f} ms > {TARGET_P50_MS} ms")
    if wrong:
        problems.append(f"{wrong} lookups returned the wrong key")
    if missing is not None:
        problems.append("an unknown identity returned a key")
    for problem in problems:
        print(f"FAIL: {problem}")
    if not problems:
        print(f"OK: p50 <= {TARGET_P50_MS} ms")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
