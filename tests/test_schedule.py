"""Schedule math (bot.backup.schedule) and `backup-bot schedule preview`: days, time or window, zones, DST exactly."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.backup import schedule as sched
from bot.backup.schedule import ScheduleError, interval_hint, next_runs, next_slots, validate_schedule

ROOT = Path(__file__).resolve().parent.parent
EVERY_DAY = list(sched.DAYS)


def plan(days=EVERY_DAY, at="02:00", window=None, tz="Europe/Paris", priority=5) -> dict:
    return {"days": list(days), "at": at, "window": window, "timezone": tz, "priority": priority}


def iso(moments) -> list[str]:
    return [m.isoformat() for m in moments]


# --------------------------------------------------------------------------------------------- DST


def test_spring_gap_runs_at_the_first_instant_after_it() -> None:
    runs = next_runs(plan(at="02:30"), 3, datetime(2026, 3, 28, 12, tzinfo=UTC))
    assert iso(runs) == ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00", "2026-03-31T02:30:00+02:00"]
    # the start of the gap itself does not exist either, and the run before the gap is untouched
    runs = next_runs(plan(at="02:00"), 2, datetime(2026, 3, 27, 12, tzinfo=UTC))
    assert iso(runs) == ["2026-03-28T02:00:00+01:00", "2026-03-29T03:00:00+02:00"]
    assert str(runs[1].tzinfo) == "Europe/Paris"


def test_autumn_ambiguity_runs_once_at_the_first_occurrence() -> None:
    runs = next_runs(plan(at="02:30"), 3, datetime(2026, 10, 24, 12, tzinfo=UTC))
    assert iso(runs) == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
        "2026-10-27T02:30:00+01:00",
    ]
    # just after the first 02:30 the second one (an hour later, +01:00) is not another run
    after_first = datetime(2026, 10, 25, 2, 45, tzinfo=ZoneInfo("Europe/Paris"))  # fold=0: +02:00
    assert after_first.utcoffset() == timedelta(hours=2)
    assert iso(next_runs(plan(at="02:30"), 1, after_first)) == ["2026-10-26T02:30:00+01:00"]
    # from inside the repeated hour (the second 02:15, +01:00) the first 02:30 is past: no run in the past
    second = datetime(2026, 10, 25, 2, 15, fold=1, tzinfo=ZoneInfo("Europe/Paris"))
    assert second.utcoffset() == timedelta(hours=1)
    assert iso(next_runs(plan(at="02:30"), 1, second)) == ["2026-10-26T02:30:00+01:00"]
    assert iso(next_runs(plan(at="02:30"), 1, second.astimezone(UTC))) == ["2026-10-26T02:30:00+01:00"]


@pytest.mark.parametrize(
    ("tz", "at", "start", "expected"),
    [
        # New York springs forward at 02:00 → 03:00 on the second Sunday of March
        ("America/New_York", "02:30", "2026-03-07T12:00:00-05:00",
         ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]),
        # …and falls back 02:00 → 01:00 on the first Sunday of November: 01:30 happens twice, runs once
        ("America/New_York", "01:30", "2026-10-31T12:00:00-04:00",
         ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]),
        # Sydney (southern hemisphere) ends DST on the first Sunday of April: 03:00 → 02:00
        ("Australia/Sydney", "02:30", "2026-04-04T12:00:00+11:00",
         ["2026-04-05T02:30:00+11:00", "2026-04-06T02:30:00+10:00"]),
        # Lord Howe moves by half an hour: 02:00 → 02:30 on the first Sunday of October
        ("Australia/Lord_Howe", "02:15", "2026-10-03T12:00:00+10:30",
         ["2026-10-04T02:30:00+11:00", "2026-10-05T02:15:00+11:00"]),
        # no DST at all, half-hour offset
        ("Asia/Kolkata", "23:45", "2026-03-29T00:00:00+05:30",
         ["2026-03-29T23:45:00+05:30", "2026-03-30T23:45:00+05:30"]),
        ("UTC", "00:00", "2026-12-31T23:59:59+00:00", ["2027-01-01T00:00:00+00:00", "2027-01-02T00:00:00+00:00"]),
    ],
)  # fmt: skip
def test_several_zones(tz: str, at: str, start: str, expected: list[str]) -> None:
    assert iso(next_runs(plan(at=at, tz=tz), 2, datetime.fromisoformat(start))) == expected


def _oracle(day: date, at: time, zone: ZoneInfo) -> datetime:
    """Independent of the bisection: walk UTC minute by minute until the local wall clock reaches ``at``."""
    target = datetime.combine(day, at)
    moment = datetime.combine(day, at, UTC) - timedelta(hours=16)
    while moment.astimezone(zone).replace(tzinfo=None) < target:
        moment += timedelta(minutes=1)
    return moment.astimezone(zone)


def _transition_days(zone: ZoneInfo, year: int) -> list[date]:
    days = []
    for n in range(366):
        day = date(year, 1, 1) + timedelta(days=n)
        noon = datetime.combine(day, time(12), zone).utcoffset()
        before = datetime.combine(day - timedelta(days=1), time(12), zone).utcoffset()
        if noon != before:
            days.append(day)
    return days


@pytest.mark.parametrize("tz", ["Europe/Paris", "America/Santiago", "Australia/Lord_Howe", "Asia/Gaza"])
def test_local_instant_agrees_with_a_brute_force_walk_on_every_transition_day(tz: str) -> None:
    zone = ZoneInfo(tz)
    transitions = _transition_days(zone, 2026)
    assert transitions, f"{tz} should change its clocks in 2026"
    for day in transitions:
        for minutes in range(-60, 24 * 60, 15):
            at = (datetime.combine(day, time()) + timedelta(minutes=max(minutes, 0))).time()
            got, want = sched.local_instant(day, at, zone), _oracle(day, at, zone)
            # through timestamps: datetimes sharing a tzinfo compare by wall clock, ignoring fold
            assert (got.timestamp(), got.utcoffset()) == (want.timestamp(), want.utcoffset()), (tz, day, at)


# --------------------------------------------------------------------------------------------- days, windows


def test_days_of_week_and_naive_start_in_the_schedules_zone() -> None:
    # 2026-03-27 is a Friday
    runs = next_runs(plan(days=["mon", "wed", "fri"], at="02:00"), 4, datetime(2026, 3, 27, 2, 0))
    assert iso(runs) == [
        "2026-03-30T02:00:00+02:00",  # the naive start equals Friday's run: runs are strictly after it
        "2026-04-01T02:00:00+02:00",
        "2026-04-03T02:00:00+02:00",
        "2026-04-06T02:00:00+02:00",
    ]
    assert [r.strftime("%a") for r in runs] == ["Mon", "Wed", "Fri", "Mon"]
    assert next_runs(plan(), 0) == []


def test_window_crossing_midnight_is_due_at_its_start_and_ends_the_next_day() -> None:
    spec = plan(days=["sat"], at=None, window=["23:00", "01:30"], tz="Europe/Paris")
    slots = next_slots(spec, 2, datetime(2026, 3, 27, 12, tzinfo=UTC))
    assert [(s.start.isoformat(), s.end.isoformat()) for s in slots] == [
        ("2026-03-28T23:00:00+01:00", "2026-03-29T01:30:00+01:00"),  # Saturday night, before the gap
        ("2026-04-04T23:00:00+02:00", "2026-04-05T01:30:00+02:00"),
    ]
    assert iso(next_runs(spec, 1, datetime(2026, 3, 27, 12, tzinfo=UTC))) == ["2026-03-28T23:00:00+01:00"]
    # the window's end in the spring gap moves to its end, like a start would
    spec = plan(days=["sun"], at=None, window=["01:00", "02:30"], tz="Europe/Paris")
    slot = next_slots(spec, 1, datetime(2026, 3, 28, tzinfo=UTC))[0]
    assert (slot.start.isoformat(), slot.end.isoformat()) == ("2026-03-29T01:00:00+01:00", "2026-03-29T03:00:00+02:00")
    assert slot.end.astimezone(UTC) - slot.start.astimezone(UTC) == timedelta(hours=1)


def test_window_not_crossing_midnight_ends_the_same_day() -> None:
    spec = plan(days=["tue"], at=None, window=["01:00", "05:00"], tz="America/New_York")
    slot = next_slots(spec, 1, datetime(2026, 3, 1, tzinfo=UTC))[0]
    assert (slot.start.isoformat(), slot.end.isoformat()) == ("2026-03-03T01:00:00-05:00", "2026-03-03T05:00:00-05:00")


def test_runs_between_covers_a_year_with_one_run_per_scheduled_day() -> None:
    start = datetime(2026, 1, 1, tzinfo=ZoneInfo("Europe/Paris"))
    runs = sched.runs_between(plan(), start, start + timedelta(days=365))
    assert len(runs) == 365 and len({r.date() for r in runs}) == 365
    weekly = sched.runs_between(plan(days=["sun"]), start, start + timedelta(days=365))
    assert len(weekly) == 52 and all(r.weekday() == 6 for r in weekly)


# --------------------------------------------------------------------------------------------- validation, hints


def test_validate_schedule_names_each_bad_field() -> None:
    assert validate_schedule(plan()) == {}
    assert validate_schedule(plan(at=None, window=["22:00", "02:00"], priority=None)) == {}
    assert validate_schedule(plan(days=["Monday", "TUE"])) == {}
    bad = validate_schedule({"days": [], "at": "25:00", "timezone": "Mars/Olympus", "priority": 11})
    assert set(bad) == {"days", "at", "timezone", "priority"}
    assert "at least one day" in bad["days"] and "HH:MM" in bad["at"]
    assert "IANA" in bad["timezone"] and "1 (lowest) to 10" in bad["priority"]
    assert set(validate_schedule(plan(days=["mon", "someday"]))) == {"days"}
    assert set(validate_schedule(plan(at="02:00", window=["01:00", "03:00"]))) == {"window"}
    assert set(validate_schedule(plan(at=None))) == {"at"}
    assert set(validate_schedule(plan(at=None, window=["03:00", "03:00"]))) == {"window"}
    assert set(validate_schedule(plan(at=None, window=["03:00"]))) == {"window"}
    assert set(validate_schedule(plan(tz=""))) == {"timezone"}
    assert set(validate_schedule(plan(priority=True))) == {"priority"}
    with pytest.raises(ScheduleError) as caught:
        next_runs(plan(days=[]), 1)
    assert caught.value.errors == {"days": "Choose at least one day of the week."}


def test_normalized_is_the_stored_shape() -> None:
    raw = {"days": ["FRI", "mon"], "at": "02:00", "timezone": "UTC", "priority": "7"}
    assert sched.normalized(raw) == {
        "days": ["mon", "fri"],
        "at": "02:00",
        "window": None,
        "timezone": "UTC",
        "priority": 7,
    }


@pytest.mark.parametrize(
    ("days", "hint"),
    [
        (EVERY_DAY, 1),
        (["mon", "wed", "fri"], 3),
        (["sun"], 7),
        (["mon", "tue", "wed", "thu", "fri"], 3),
        (["sat", "sun"], 6),
    ],
)
def test_interval_hint_is_the_longest_gap_of_the_week(days: list[str], hint: int) -> None:
    assert interval_hint(plan(days=days)) == timedelta(days=hint)


def test_summary_wording() -> None:
    assert sched.summary(plan(days=["mon", "wed", "fri"])) == "Mon, Wed, Fri at 02:00 in Europe/Paris"
    assert sched.summary(plan(days=EVERY_DAY, at=None, window=["23:00", "01:00"], tz="UTC")) == (
        "Every day, window 23:00–01:00 next day in UTC"
    )
    assert sched.days_summary(["mon", "tue", "wed", "thu", "fri", "sun"]) == "Mon–Fri, Sun"
    assert sched.summary({}) == "no schedule"
    assert sched.summary(plan(days=[])).startswith("no valid schedule")


# --------------------------------------------------------------------------------------------- the CLI


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "schedule", "preview", *args],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_preview_prints_the_same_instants_as_next_runs(tmp_path: Path) -> None:
    done = cli(
        "--days", "mon,wed,fri,sun", "--at", "02:30", "--tz", "Europe/Paris",
        "--from", "2026-03-28T00:00:00+01:00", "--count", "4", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
        "2026-04-01T02:30:00+02:00",
        "2026-04-03T02:30:00+02:00",
    ]
    window = cli("--window", "23:00-01:00", "--tz", "UTC", "--from", "2026-10-24T12:00", "--count", "2", cwd=tmp_path)
    assert window.returncode == 0, window.stderr
    assert window.stdout.splitlines() == ["2026-10-24T23:00:00+00:00", "2026-10-25T23:00:00+00:00"]
    autumn = cli("--at", "02:30", "--tz", "Europe/Paris", "--from", "2026-10-25T02:30", "--count", "1", cwd=tmp_path)
    assert autumn.stdout.splitlines() == ["2026-10-26T02:30:00+01:00"]


def test_cli_bad_input_exits_2_with_one_sentence(tmp_path: Path) -> None:
    done = cli("--at", "02:00", "--tz", "Mars/Olympus", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.strip().splitlines() == [
        "error: --tz: Unknown time zone 'Mars/Olympus': give an IANA name such as Europe/Paris or UTC."
    ]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--at", "2am", "--tz", "UTC"], "--at: '2am' is not a time"),
        (["--at", "02:00"], "Give the time zone with --tz"),
        (["--at", "02:00", "--window", "01:00-05:00", "--tz", "UTC"], "not both"),
        (["--window", "01:00", "--tz", "UTC"], "--window"),
        (["--days", "mon,funday", "--at", "02:00", "--tz", "UTC"], "'funday'"),
        (["--at", "02:00", "--tz", "UTC", "--count", "zero"], "--count"),
        (["--at", "02:00", "--tz", "UTC", "--from", "yesterday"], "ISO-8601"),
    ],
)
def test_cli_refusals_in_process(capsys: pytest.CaptureFixture[str], args: list[str], words: str) -> None:
    from bot.cli import main

    assert main(["schedule", "preview", *args]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 1 and words in lines[0], err
