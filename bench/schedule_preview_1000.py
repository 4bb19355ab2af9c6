"""Benchmark: next-run preview for 1,000 chains (issue 6's goal: ≤ 100 ms), with the same function the wizard,
`/backup list`, the App Home and `backup-bot schedule preview` use (`bot.backup.schedule.next_runs`).

The schedules are varied on purpose: fixed times and windows (some across midnight), 1–7 days a week, in a mix
of time zones with and without DST, starting from an instant next to a DST change.

    .venv/bin/python bench/schedule_preview_1000.py [--chains 1000] [--count 5] [--repeat 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.backup.schedule import next_runs

ZONES = ("UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "America/Sao_Paulo")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def schedules(count: int) -> list[dict]:
    rng = random.Random(6)
    result = []
    for _ in range(count):
        days = sorted(rng.sample(DAYS, rng.randint(1, 7)), key=DAYS.index)
        start = f"{rng.randint(0, 23):02d}:{rng.choice((0, 15, 30, 45)):02d}"
        schedule = {"days": days, "timezone": rng.choice(ZONES), "priority": 5}
        if rng.random() < 0.3:
            end = f"{(int(start[:2]) + rng.randint(1, 8)) % 24:02d}:{start[3:]}"  # 1–8 h long, may cross midnight
            schedule.update(at=None, window=[start, end])
        else:
            schedule.update(at=start, window=None)
        result.append(schedule)
    return result


def main(chains: int, count: int, repeat: int) -> None:
    plans = schedules(chains)
    start = datetime(2026, 10, 24, 23, 0, tzinfo=UTC)  # the night before Europe's autumn change
    timings = []
    for _ in range(repeat):
        began = time.perf_counter()
        for schedule in plans:
            assert len(next_runs(schedule, count, start)) == count
        timings.append((time.perf_counter() - began) * 1000)
    print(f"{chains} chains × next {count} runs: median {statistics.median(timings):.1f} ms "
          f"(runs: {', '.join(f'{t:.1f}' for t in timings)}; goal <= 100 ms)")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=1000)
    parser.add_argument("--count", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    main(args.chains, args.count, args.repeat)
