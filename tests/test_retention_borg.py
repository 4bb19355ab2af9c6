"""``bot.backup.retention.decide`` against the real borg 1.4.5: same keep/prune, rule and rank for every archive.

One repository of ~200 archives (``borg create --timestamp``, seeded random times over ~2.5 years: several per
day/hour/minute, identical seconds, month and year ends, ISO week 53, the DST changes of three zones, a recent
burst for keep-within, checkpoint names) is pruned with ``--dry-run --list`` under five time zones and ~27
policies, and every line of borg's answer is compared with ``decide`` — order included.

Speed: a ``borg`` process costs ~0.4 s, so 200 creates and 140 prunes as processes would take ~2 minutes.
The driver below instead runs borg's own command-line entry (``Archiver().get_args(argv)`` + ``run``, what the
``borg`` script does) for many commands in ONE process, with ``BORG_SELFTEST=disabled``; ``TZ`` is switched with
``time.tzset()`` between prunes. :func:`test_borg_executable_gives_the_same_answer` proves that this is the same
borg as the executable: byte-identical ``--list`` output, and ``borg list --json`` shows the planned archives.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.backup.retention import Archive, Policy, decide, parse_interval
from tests.harness.borg import BorgEnv

ROOT = Path(__file__).resolve().parent.parent
ZONES = ("UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata")
DST_ZONES = ("Europe/Paris", "America/New_York", "Australia/Lord_Howe")  # Lord Howe shifts by 30 minutes
SEED = 20240331
PREVIEW = (sys.executable, "-m", "bot.cli", "retention", "preview")
# keep-within is measured from "now": no archive may sit within this margin after a within-cutoff, so that
# borg (pruning at some moment) and decide (called a little later) see the same side of every cutoff.
WITHIN_SAFETY = timedelta(minutes=20)

POLICIES: dict[str, Policy] = {
    "daily7": Policy(keep_daily=7),
    "last5": Policy(keep_last=5),
    "all-secondly": Policy(keep_secondly=-1),
    "all-minutely": Policy(keep_minutely=-1),
    "all-hourly": Policy(keep_hourly=-1),
    "all-daily": Policy(keep_daily=-1),
    "all-weekly": Policy(keep_weekly=-1),
    "all-monthly": Policy(keep_monthly=-1),
    "all-13weekly": Policy(keep_13weekly=-1),
    "all-3monthly": Policy(keep_3monthly=-1),
    "all-yearly": Policy(keep_yearly=-1),
    "gfs": Policy(keep_daily=7, keep_weekly=4, keep_monthly=6, keep_yearly=1),
    "gfs-hourly": Policy(keep_hourly=24, keep_daily=14, keep_weekly=8, keep_monthly=-1),
    "everything": Policy(
        keep_last=3,
        keep_minutely=10,
        keep_hourly=6,
        keep_daily=7,
        keep_weekly=4,
        keep_monthly=12,
        keep_13weekly=4,
        keep_yearly=3,
    ),
    "minutely-hourly": Policy(keep_minutely=30, keep_hourly=48),
    "daily500-oldest": Policy(keep_daily=500),
    "weekly200-oldest": Policy(keep_weekly=200),
    "yearly10-oldest": Policy(keep_monthly=40, keep_yearly=10),
    "13weekly": Policy(keep_13weekly=12, keep_yearly=5),
    "3monthly": Policy(keep_3monthly=12, keep_yearly=5),
    "within2d": Policy(keep_within="2d"),
    "within36H-daily": Policy(keep_within="36H", keep_daily=7),
    "within1w-mix": Policy(keep_within="1w", keep_hourly=5, keep_daily=3),
    "within3m-mix": Policy(keep_within="3m", keep_weekly=6, keep_monthly=6),
    "within1y-yearly": Policy(keep_within="1y", keep_monthly=3, keep_yearly=-1),
    "spent-periods": Policy(keep_daily=2, keep_weekly=-1, keep_3monthly=3),
    "secondly40-13weekly": Policy(keep_secondly=40, keep_daily=-1, keep_13weekly=-1),
}
# A second, tiny repository whose newest archive is a checkpoint (borg keeps it) next to equal-time archives.
CHECKPOINT_REPO_ARCHIVES = (
    ("n.checkpoint", "2024-05-02T10:00:00"),
    ("m", "2024-05-02T09:00:00"),
    ("k", "2024-05-02T09:00:00"),
    ("j.checkpoint.1", "2024-05-01T23:30:00"),
    ("i", "2024-05-01T12:00:00"),
)
CHECKPOINT_POLICIES = {"last1": Policy(keep_last=1), "daily1": Policy(keep_daily=1)}

# Runs many borg commands in one Python process through borg's own CLI entry (see module docstring).
DRIVER = r"""
import io, json, os, sys, time
from borg.archiver import Archiver

results = []
for job in json.load(sys.stdin):
    os.environ["TZ"] = job.get("tz", "UTC")
    time.tzset()
    archiver = Archiver()
    saved, sys.stderr = sys.stderr, io.StringIO()
    try:
        rc = archiver.run(archiver.get_args(["borg", *job["argv"]], None))
    except BaseException as exc:  # noqa: BLE001 - reported to the test with the command
        rc = 2
        sys.stderr.write(f"{type(exc).__name__}: {exc}")
    finally:
        out, sys.stderr = sys.stderr.getvalue(), saved
    results.append({"argv": job["argv"], "rc": rc, "output": out})
    if rc != 0:
        break
json.dump(results, sys.stdout)
"""

_LINE = re.compile(
    r"^(?:Keeping archive \(rule: (?P<rule>\S+) #(?P<rank>\d+)\):|(?P<prune>Would prune:)"
    r"|(?P<checkpoint>Keeping checkpoint archive:))\s+(?P<name>\S+)\s"
)


Row = tuple[str, bool, str | None, int | None]  # name, keep, rule, rank — one line of borg's --list


@dataclass(frozen=True)
class Repo:
    path: Path
    workdir: Path
    archives: tuple[Archive, ...]
    env: dict[str, str]


@dataclass(frozen=True)
class Verdicts:
    """borg's raw ``--list`` output per (repository, zone, policy id), and when the prunes ran."""

    output: dict[tuple[str, str, str], str]
    pruned_at: datetime


# --------------------------------------------------------------------------------------------- the archive plan


def _transitions(zone: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """The UTC instants in [start, end) where ``zone`` changes its offset (found per day, then to the minute)."""
    found = []
    day = start
    while day < end:
        nxt = day + timedelta(days=1)
        if day.astimezone(zone).utcoffset() != nxt.astimezone(zone).utcoffset():
            lo, hi = day, nxt
            while hi - lo > timedelta(minutes=1):
                mid = lo + (hi - lo) / 2
                same = mid.astimezone(zone).utcoffset() == lo.astimezone(zone).utcoffset()
                lo, hi = (mid, hi) if same else (lo, mid)
            found.append(hi.replace(second=0, microsecond=0))
        day = nxt
    return found


def _history(rng: random.Random, start: datetime, end: datetime) -> Iterator[datetime]:
    """Irregular times: mostly days apart, sometimes hours or minutes (several archives per day or hour)."""
    yield start  # the oldest day holds two archives, so a rule that runs short keeps "[oldest]"
    moment = start + timedelta(hours=1)
    while moment < end:
        yield moment
        kind = rng.random()
        if kind < 0.25:
            moment += timedelta(seconds=rng.randint(1, 3000))
        elif kind < 0.45:
            moment += timedelta(hours=rng.randint(1, 20), seconds=rng.randint(0, 3599))
        else:
            moment += timedelta(days=rng.randint(1, 40), seconds=rng.randint(0, 86399))


def _edges(rng: random.Random, start: datetime, end: datetime) -> Iterator[datetime]:
    """DST changes of three zones, the last two New Years (incl. ISO weeks 52/53/1) and some month ends."""
    for name in DST_ZONES:
        for change in _transitions(ZoneInfo(name), start, end)[-2:]:
            for minutes in (-45, -30, -15, 15, 30, 45):
                yield change + timedelta(minutes=minutes)
    for year in (end.year - 1, end.year):
        new_year = datetime(year, 1, 1, tzinfo=UTC)
        if new_year < end:
            for days in range(-5, 5):
                yield new_year + timedelta(days=days, hours=12)
            for hours in (-4, -0.5, 0.5, 4):
                yield new_year + timedelta(hours=hours)
    for _ in range(5):
        month_start = (start + timedelta(days=rng.randint(40, 800))).replace(day=1, hour=0, minute=0, second=0)
        yield from (month_start - timedelta(minutes=30), month_start + timedelta(minutes=30))


def _recent(rng: random.Random, anchor: datetime) -> Iterator[datetime]:
    """A burst over the last nine days (for keep-within and the short rules), down to one-second gaps."""
    for day in range(9):
        for _ in range(rng.randint(3, 5)):
            yield anchor - timedelta(days=day, seconds=rng.randint(300, 86399))
    last = anchor - timedelta(minutes=rng.randint(5, 50))
    yield from (last, last - timedelta(seconds=1), last - timedelta(seconds=30), last - timedelta(minutes=61))
    for span in _within_spans():  # just outside "now − span", but inside "newest archive − span"
        yield anchor - span - timedelta(minutes=2)


def _within_spans() -> set[timedelta]:
    return {parse_interval(p.keep_within) for p in POLICIES.values() if p.keep_within}


def _near_a_cutoff(moment: datetime, anchor: datetime) -> bool:
    return any(timedelta(0) <= moment - (anchor - span) <= WITHIN_SAFETY for span in _within_spans())


def plan_archives(anchor: datetime) -> tuple[Archive, ...]:
    """~200 archives (whole seconds, UTC) with names unrelated to their order; a few share one second."""
    rng = random.Random(SEED)
    start = (anchor - timedelta(days=900)).replace(hour=0, minute=0, second=0, microsecond=0)
    times = [*_history(rng, start, anchor - timedelta(days=10)), *_edges(rng, start, anchor), *_recent(rng, anchor)]
    times = [t.replace(microsecond=0) for t in times if t < anchor and not _near_a_cutoff(t, anchor)]
    times += rng.sample(times, 4) + rng.sample(times, 1)  # identical seconds: borg orders them by name
    names = [f"{rng.getrandbits(24):06x}-{index}" for index in range(len(times))]
    names[rng.randrange(len(names))] += ".checkpoint"
    names[rng.randrange(len(names))] += ".checkpoint.2"
    names[rng.randrange(len(names))] = f"ünïcode-{len(names)}"
    return tuple(Archive(name, moment) for name, moment in zip(names, times, strict=True))


# --------------------------------------------------------------------------------------------- borg


def borg_flags(policy: Policy) -> list[str]:
    """``--keep-*`` options for ``policy`` (our own spelling, to stay independent of ``bot.borg.prune``)."""
    flags = ["--keep-within", policy.keep_within] if policy.keep_within else []
    for key, value in policy.to_dict().items():
        if key != "keep_within":
            flags += [f"--keep-{key.removeprefix('keep_')}", str(value)]
    return flags


def prune_argv(repo: Path, policy: Policy) -> list[str]:
    return ["prune", "--dry-run", "--list", "--lock-wait", "30", *borg_flags(policy), str(repo)]


def run_driver(jobs: list[dict[str, Any]], env: dict[str, str], cwd: Path) -> list[dict[str, Any]]:
    """Run ``jobs`` (argv, tz) in one borg process; fail with the command and borg's words on the first error."""
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER],
        input=json.dumps(jobs),
        capture_output=True,
        text=True,
        env={**env, "BORG_SELFTEST": "disabled"},
        cwd=cwd,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    failed = [r for r in results if r["rc"] != 0]
    assert not failed and len(results) == len(jobs), failed[:1] or "driver stopped early"
    return results


def create_repo(path: Path, workdir: Path, archives: tuple[Archive, ...], env: dict[str, str]) -> Repo:
    """``borg init`` + one ``borg create --timestamp`` per archive (borg reads the timestamp as UTC)."""
    jobs = [{"argv": ["init", "--encryption=none", str(path)]}]
    for archive in archives:
        stamp = archive.time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
        jobs.append({"argv": ["create", "--lock-wait", "30", "--timestamp", stamp, f"{path}::{archive.name}", "data"]})
    run_driver(jobs, env, workdir)
    return Repo(path, workdir, archives, env)


@pytest.fixture(scope="session")
def borg_repos(borg_env: BorgEnv, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Repo]:
    """The big repository and the checkpoint one, built once for the session (~15 s)."""
    if not Path("/usr/share/zoneinfo/Europe/Paris").exists():
        pytest.skip("system tz database missing: borg (glibc localtime) could not use TZ=Europe/Paris")
    workdir = tmp_path_factory.mktemp("retention-borg")
    (workdir / "data").mkdir()
    (workdir / "data" / "file").write_text("tiny\n")
    extra = {"BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes", "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes"}
    with borg_env.environ("retention", extra=extra) as call:
        env = call.env
    anchor = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    small = tuple(Archive(n, datetime.fromisoformat(t).replace(tzinfo=UTC)) for n, t in CHECKPOINT_REPO_ARCHIVES)
    return {
        "big": create_repo(workdir / "big", workdir, plan_archives(anchor), env),
        "checkpoint": create_repo(workdir / "checkpoint", workdir, small, env),
    }


def _cases() -> list[tuple[str, str, str]]:
    big = [("big", zone, pid) for zone in ZONES for pid in POLICIES]
    return big + [("checkpoint", zone, pid) for zone in ("UTC", "Europe/Paris") for pid in CHECKPOINT_POLICIES]


def _policy(repo: str, pid: str) -> Policy:
    return (POLICIES if repo == "big" else CHECKPOINT_POLICIES)[pid]


@pytest.fixture(scope="session")
def borg_verdicts(borg_repos: dict[str, Repo]) -> Verdicts:
    """Every (repository, zone, policy) pruned once with ``--dry-run --list`` (one driver process, ~10 s)."""
    cases = _cases()
    jobs = [{"argv": prune_argv(borg_repos[r].path, _policy(r, p)), "tz": zone} for r, zone, p in cases]
    results = run_driver(jobs, borg_repos["big"].env, borg_repos["big"].workdir)
    return Verdicts({case: result["output"] for case, result in zip(cases, results, strict=True)}, datetime.now(UTC))


def parse_borg_list(output: str) -> list[Row]:
    """``borg prune --list`` lines as (name, keep, rule, rank); any other line is a test failure."""
    rows = []
    for line in output.splitlines():
        match = _LINE.match(line)
        assert match, f"unexpected borg output line: {line!r}"
        if match["prune"]:
            rows.append((match["name"], False, None, None))
        elif match["checkpoint"]:
            rows.append((match["name"], True, "checkpoint", None))
        else:
            rows.append((match["name"], True, match["rule"], int(match["rank"])))
    return rows


def decided_rows(
    repo: Repo, zone: str, policy: Policy, now: datetime
) -> list[tuple[str, bool, str | None, int | None]]:
    return [(d.name, d.keep, d.rule, d.rank) for d in decide(repo.archives, policy, ZoneInfo(zone), now=now)]


# --------------------------------------------------------------------------------------------- tests


def test_plan_covers_the_edges(borg_repos: dict[str, Repo]) -> None:
    """The generated set really contains what the comparison claims to cover."""
    archives = borg_repos["big"].archives
    assert 150 <= len(archives) <= 260
    paris = ZoneInfo("Europe/Paris")
    walls = [a.time.astimezone(paris) for a in archives]
    assert any(w.fold == 1 for w in walls), "no archive in the repeated hour of a Paris autumn night"
    assert len({a.time for a in archives}) < len(archives), "no two archives share a second"
    assert any(w.isocalendar().week == 1 and w.month == 12 for w in walls) or any(
        w.isocalendar().week >= 52 and w.month == 1 for w in walls
    ), "no archive where ISO year and calendar year differ"
    assert len({(w.year, w.month) for w in walls}) >= 20
    assert any(".checkpoint" in a.name for a in archives)


@pytest.mark.parametrize(("repo", "zone", "pid"), _cases(), ids=lambda v: str(v).replace("/", "_"))
def test_decide_agrees_with_borg(
    borg_repos: dict[str, Repo], borg_verdicts: Verdicts, repo: str, zone: str, pid: str
) -> None:
    """Every archive: same keep/prune, same rule (incl. ``[oldest]``), same rank, in borg's order."""
    policy = _policy(repo, pid)
    now = datetime.now(UTC)
    assert now - borg_verdicts.pruned_at < WITHIN_SAFETY, "too slow: keep-within cutoffs may have moved"
    expected = parse_borg_list(borg_verdicts.output[(repo, zone, pid)])
    actual = decided_rows(borg_repos[repo], zone, policy, now)
    assert len(expected) == len(borg_repos[repo].archives)
    mismatches = [(i, e, a) for i, (e, a) in enumerate(zip(expected, actual, strict=True)) if e != a]
    assert not mismatches, f"{len(mismatches)} differ (index, borg, decide): {mismatches[:8]}"


def test_comparison_is_not_vacuous(borg_repos: dict[str, Repo], borg_verdicts: Verdicts) -> None:
    """The policies make borg keep and prune, use [oldest] and keep-within, and zones change the answers."""
    outputs = [out for (repo, _, _), out in borg_verdicts.output.items() if repo == "big"]
    text = "\n".join(outputs)
    for fragment in ("Would prune:", "rule: within #", "[oldest] #", "rule: quarterly_13weekly #", "rule: secondly #"):
        assert fragment in text
    for pid in ("all-hourly", "all-daily", "all-monthly"):
        answers = {borg_verdicts.output[("big", zone, pid)] for zone in ZONES}
        assert len(answers) > 1, f"{pid}: the zone made no difference, so local time was not tested"
    assert "Keeping checkpoint archive:" in borg_verdicts.output[("checkpoint", "UTC", "last1")]


def test_borg_executable_gives_the_same_answer(
    borg_env: BorgEnv, borg_repos: dict[str, Repo], borg_verdicts: Verdicts
) -> None:
    """The in-process driver is the real borg: the executable prints the same lines and lists the same archives."""
    repo = borg_repos["big"]
    for zone, pid in (("Europe/Paris", "everything"), ("Australia/Lord_Howe", "all-hourly")):
        proc = subprocess.run(
            [str(borg_env.borg), *prune_argv(repo.path, POLICIES[pid])],
            env={**repo.env, "TZ": zone},
            cwd=repo.workdir,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert proc.stderr == borg_verdicts.output[("big", zone, pid)]
    listing = subprocess.run(
        [str(borg_env.borg), "list", "--json", "--consider-checkpoints", str(repo.path)],
        env={**repo.env, "TZ": "UTC"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    listed = {a["name"]: datetime.fromisoformat(a["start"]) for a in json.loads(listing.stdout)["archives"]}
    assert listed == {a.name: a.time.replace(tzinfo=None) for a in repo.archives}


def test_cli_preview_agrees_with_borg(borg_repos: dict[str, Repo], borg_verdicts: Verdicts) -> None:
    """``backup-bot retention preview`` as a process: JSON lines in (with offsets), JSON lines out = borg."""
    repo = borg_repos["big"]
    zone = ZoneInfo("America/New_York")
    lines = [json.dumps({"name": a.name, "time": a.time.astimezone(zone).isoformat()}) for a in repo.archives]
    random.Random(SEED).shuffle(lines)  # input order must not matter
    env = {**os.environ, "TZ": "Asia/Tokyo"}  # --tz wins over the machine's zone
    proc = subprocess.run(
        [*PREVIEW, *borg_flags(POLICIES["everything"]), "--tz", "America/New_York", "--archives", "-"],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert set(rows[0]) == {"name", "keep", "rule", "rank"}
    expected = parse_borg_list(borg_verdicts.output[("big", "America/New_York", "everything")])
    assert [(r["name"], r["keep"], r["rule"], r["rank"]) for r in rows] == expected
