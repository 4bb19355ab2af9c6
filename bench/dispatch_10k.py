"""Benchmark: dispatching 10,000 scheduled chains (issue 6's goal: dispatch lag at due time p99 <= 1 s, bot RSS
<= 200 MB), with the real ``Scheduler`` and the real ``SqlQueue`` on a fresh database.

A child process seeds the database (so the measured process never held the seeding's objects): 10,000 chains
(plus 5 % paused and 5 % pending approval, which must not be scheduled), each in one of several time zones, whose
schedule (days, a time or a window, some with a ``check``; 2 % of the repositories with a ``prune_schedule``) falls
due within the next ~3 minutes of real time — half of them at the same minute boundary, the hard case. This
process then imports the bot's modules (Slack app included, as the bot has them), runs ``Scheduler.run_forever``
and records, for every run it creates:

* committed: when ``enqueue_many`` returned with the run's row (the transaction is committed then);
* woken: when the scheduler told the worker (``on_enqueued``) at or after the run was due and committed;
* lag = woken − scheduled_for: how late the worker learns that a due run is there to claim (the queue never claims
  a run before its ``scheduled_for``, so a row committed early is not dispatched early).

It also prints the RSS of this process: after imports, with the scheduler's structures loaded, and the peak
(``ru_maxrss``). No worker executes anything.

    .venv/bin/python bench/dispatch_10k.py [--chains 10000] [--database postgres://postgres@127.0.0.1:5432/bench_dispatch]
        [--lead SECONDS] [--batch N]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ZONES = ("UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "America/Sao_Paulo")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
TEAM = "T0BENCH"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------------------------ seeding


def schedule_at(moment: datetime, rng: random.Random, zone: str) -> dict[str, Any]:
    """A schedule of ``zone`` due at ``moment`` (its local weekday plus a few others), a time or a window."""
    local = moment.astimezone(ZoneInfo(zone))
    day = DAYS[local.weekday()]
    days = sorted({day, *rng.sample(DAYS, rng.randint(0, 4))}, key=DAYS.index)
    clock = local.strftime("%H:%M")
    schedule: dict[str, Any] = {"days": days, "timezone": zone, "priority": rng.randint(1, 10)}
    if rng.random() < 0.3:
        end = (local + timedelta(hours=rng.randint(1, 6))).strftime("%H:%M")
        schedule.update(at=None, window=[clock, end])
    else:
        schedule.update(at=clock, window=None)
    return schedule


async def seed(url: str, chains: int, first_due: float) -> dict[str, int]:
    from storage import db
    from storage.crypto import Keyring, generate_key, install_keyring
    from storage.models import BackupChain, ChainStatus, PoolKind, Repository, StoragePool

    install_keyring(Keyring([generate_key()]))
    rng = random.Random(6)
    dues = [datetime.fromtimestamp(first_due + 60 * minute, UTC) for minute in range(3)]
    async with db.database(url):
        pool = await StoragePool.create(team_id=TEAM, name="pool", kind=PoolKind.LOCAL, base_path="/srv/borg")
        total = chains + chains // 10
        statuses = [ChainStatus.ACTIVE] * chains + [ChainStatus.PAUSED] * (total - chains)
        for index in range(chains, total, 2):
            statuses[index] = ChainStatus.PENDING_APPROVAL
        rng.shuffle(statuses)
        moments = rng.choices(dues, weights=(50, 30, 20), k=total)
        repositories = []
        for index in range(total):
            prune = None
            if rng.random() < 0.02:
                prune = schedule_at(moments[index], rng, rng.choice(ZONES))
            repositories.append(Repository(team_id=TEAM, pool=pool, name=f"repo{index}", passphrase="p",
                                           path=f"/srv/borg/repo{index}", retention={"keep_daily": 7},
                                           prune_schedule=prune))  # fmt: skip
        await Repository.bulk_create(repositories, batch_size=500)
        ids = await Repository.filter(team_id=TEAM).order_by("id").values_list("id", flat=True)
        rows = []
        expected = {"backup": 0, "check": 0, "prune": 0}
        for index, (repository_id, status) in enumerate(zip(ids, statuses, strict=True)):
            zone = rng.choice(ZONES)
            schedule = schedule_at(moments[index], rng, zone)
            if rng.random() < 0.1:
                schedule["check"] = {**schedule_at(moments[index], rng, zone), "verify_data": False}
            if status == ChainStatus.ACTIVE:
                expected["backup"] += 1
                expected["check"] += "check" in schedule
                expected["prune"] += repositories[index].prune_schedule is not None
            rows.append(BackupChain(team_id=TEAM, name=f"chain{index}", repository_id=repository_id, schedule=schedule,
                                    timezone=zone, priority=schedule["priority"], status=status,
                                    notify_channel="C0BENCH"))  # fmt: skip
        await BackupChain.bulk_create(rows, batch_size=500)
    return expected


# ------------------------------------------------------------------------------------------------ measuring


class Recorder:
    """The real SqlQueue, with the moment each bulk insert returned (committed) noted per run."""

    def __init__(self) -> None:
        from bot.runs.queue import SqlQueue

        self.queue = SqlQueue()
        self.committed: list[tuple[float, float]] = []  # (scheduled_for, committed at)
        self.batches: list[tuple[int, float]] = []  # (runs, seconds)
        self.wakes: list[float] = []

    async def enqueue_many(self, specs):
        began = time.time()
        created = await self.queue.enqueue_many(specs)
        done = time.time()
        self.batches.append((len(created), done - began))
        self.committed.extend((run.scheduled_for.timestamp(), done) for run in created)
        return created

    def wake(self) -> None:
        self.wakes.append(time.time())

    def lags(self) -> list[float]:
        wakes = sorted(self.wakes)
        lags = []
        for due, committed in self.committed:
            ready = max(due, committed)
            index = bisect.bisect_left(wakes, ready - 0.002)
            woken = wakes[index] if index < len(wakes) else float("inf")
            lags.append(woken - due)
        return lags


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


async def measure(url: str, expected: dict[str, int], last_due: float, args: argparse.Namespace) -> None:
    import bot.slack.app  # noqa: F401  (the bot process has the Slack app loaded too: count it in the RSS)
    from bot.runs.scheduler import Scheduler
    from storage import db
    from storage.crypto import Keyring, generate_key, install_keyring
    from storage.models import Run

    install_keyring(Keyring([generate_key()]))
    async with db.database(url, migrate=False):
        base = rss_mb()
        recorder = Recorder()

        class Counted(Scheduler):
            """The real scheduler; its resyncs are timed (they share the event loop with the dispatching)."""

            resyncs: ClassVar[list[float]] = []

            async def resync(self, now=None) -> None:
                began = time.perf_counter()
                await super().resync(now)
                self.resyncs.append(time.perf_counter() - began)

        scheduler = Counted(recorder, on_enqueued=recorder.wake, lead=args.lead, batch=args.batch,
                            resync=args.resync)  # type: ignore[arg-type]  # fmt: skip
        began = time.perf_counter()
        await scheduler.resync()
        loaded = time.perf_counter() - began
        with_plans = rss_mb()
        print(f"loaded {scheduler.plans:,} plans in {loaded * 1000:.0f} ms; RSS {base:.0f} MB after imports, "
              f"{with_plans:.0f} MB with the scheduler loaded (+{with_plans - base:.1f} MB)")  # fmt: skip
        stop = asyncio.Event()
        task = asyncio.create_task(scheduler.run_forever(stop))
        want = sum(expected.values())
        while time.time() < last_due + 3 or len(recorder.committed) < want:
            await asyncio.sleep(0.5)
            if time.time() > last_due + 60:
                break
        stop.set()
        await task
        counts: dict[str, int] = {}
        for kind in await Run.all().values_list("kind", flat=True):
            counts[str(kind)] = counts.get(str(kind), 0) + 1
        duplicates = await duplicate_slots()
    lags = recorder.lags()
    early = [due - committed for due, committed in recorder.committed]
    print(f"runs created: {len(recorder.committed):,} (expected {want:,}: {json.dumps(expected)}; in the database: "
          f"{json.dumps(counts, sort_keys=True)}; duplicate slots: {duplicates})")  # fmt: skip
    sizes = [n for n, _ in recorder.batches if n]
    took = [s for n, s in recorder.batches if n]
    if took:
        print(f"bulk inserts: {len(took)} batches of up to {max(sizes):,} runs, {max(took) * 1000:.0f} ms the "
              f"slowest; rows committed {statistics.median(early):.1f} s (median) / {min(early):.1f} s (least) "
              "before due")  # fmt: skip
    if lags:
        print(f"dispatch lag at due time: p50 {percentile(lags, 0.5) * 1000:.1f} ms, p99 "
              f"{percentile(lags, 0.99) * 1000:.1f} ms, max {max(lags) * 1000:.1f} ms over {len(lags):,} runs "
              "(goal: p99 <= 1000 ms)")  # fmt: skip
    later = scheduler.resyncs[1:]
    if later:
        print(f"periodic resyncs while dispatching: {len(later)}, {max(later) * 1000:.0f} ms the slowest "
              "(nothing had changed)")
    print(f"RSS of this process: peak {peak_mb():.0f} MB (ru_maxrss), now {rss_mb():.0f} MB (goal: <= 200 MB)")


async def duplicate_slots() -> int:
    from storage.models import Run

    keys = await Run.all().values_list("chain_id", "repository_id", "kind", "scheduled_for")
    return len(keys) - len(set(keys))


# ------------------------------------------------------------------------------------------------ databases


def fresh_database(url: str | None, workdir: Path) -> str:
    if url is None:
        return f"sqlite://{workdir / 'bench.sqlite3'}"
    parts = urlsplit(url)
    name = parts.path.lstrip("/") or "bench_dispatch"
    host, port, user = parts.hostname or "127.0.0.1", str(parts.port or ""), parts.username or ""
    if parts.scheme == "postgres":
        base = ["psql", "-h", host, "-p", port or "5432", "-U", user or "postgres", "-qc"]
        subprocess.run([*base, f'DROP DATABASE IF EXISTS "{name}"'], check=True)
        subprocess.run([*base, f'CREATE DATABASE "{name}"'], check=True)
    elif parts.scheme == "mysql":
        base = ["mysql", "-h", host, "-P", port or "3306", "-u", user or "root", "-e"]
        subprocess.run([*base, f"DROP DATABASE IF EXISTS `{name}`; CREATE DATABASE `{name}`"], check=True)
    return parts._replace(path=f"/{name}").geturl()


def drop_database(url: str) -> None:
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    host, port, user = parts.hostname or "127.0.0.1", str(parts.port or ""), parts.username or ""
    if parts.scheme == "postgres":
        subprocess.run(["psql", "-h", host, "-p", port or "5432", "-U", user or "postgres", "-qc",
                        f'DROP DATABASE IF EXISTS "{name}"'], check=False)  # fmt: skip
    elif parts.scheme == "mysql":
        subprocess.run(["mysql", "-h", host, "-P", port or "3306", "-u", user or "root", "-e",
                        f"DROP DATABASE IF EXISTS `{name}`"], check=False)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=10_000)
    parser.add_argument("--database", help="postgres://… or mysql://… (created, dropped after); default: SQLite")
    parser.add_argument("--lead", type=float, default=10.0, help="the scheduler's lead (s); 0 queues at due time")
    parser.add_argument("--batch", type=int, default=1000, help="runs per enqueue_many")
    parser.add_argument("--resync", type=float, default=60.0, help="the scheduler's full resync period (s)")
    parser.add_argument("--seed", nargs=3, metavar=("URL", "CHAINS", "FIRST_DUE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.seed:
        url, chains, first_due = args.seed
        print(json.dumps(asyncio.run(seed(url, int(chains), float(first_due)))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        url = fresh_database(args.database, Path(tmp))
        first_due = (time.time() // 60 + 1) * 60
        if first_due - time.time() < 45:
            first_due += 60  # seeding and loading come first
        began = time.perf_counter()
        seeded = subprocess.run([sys.executable, __file__, "--seed", url, str(args.chains), str(first_due)],
                                check=True, capture_output=True, text=True)  # fmt: skip
        expected = json.loads(seeded.stdout.strip().splitlines()[-1])
        print(f"seeded {args.chains:,} active chains (+{args.chains // 10:,} paused/pending) on "
              f"{urlsplit(url).scheme} in {time.perf_counter() - began:.1f} s; due at "
              f"{datetime.fromtimestamp(first_due, UTC):%H:%M:%S} UTC and the two minutes after; lead {args.lead:g} s")
        try:
            asyncio.run(measure(url, expected, first_due + 120, args))
        finally:
            drop_database(url)


if __name__ == "__main__":
    main()
