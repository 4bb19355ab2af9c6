"""When a chain is due: days of the week, a time or a window, a time zone — daylight saving time exactly.

A schedule is the mapping the wizard stores (``bot.services.answers``) and a chain keeps::

    {"days": ["mon", "wed", "fri"], "at": "02:00", "window": None, "timezone": "Europe/Paris", "priority": 5}
    {"days": ["sat"], "at": None, "window": ["23:00", "01:00"], "timezone": "UTC", "priority": 5}

* ``days`` are the days the run *starts* on. A window may cross midnight (23:00–01:00 ends the next day); the run
  may start anywhere inside it, and its due instant is the window's start.
* Local times are resolved in the schedule's IANA zone. A local time the clocks skip (spring forward) runs at the
  first instant after the gap — 02:30 on 2026-03-29 in Europe/Paris is 03:00+02:00. A local time that happens
  twice (fall back) runs once, at its first occurrence — 02:30 on 2026-10-25 in Europe/Paris is 02:30+02:00.
* ``priority`` (1 lowest … 10 highest, default 5) only orders the queue; it does not change when a run is due.

The wizard's preview, the ``backup-bot schedule preview`` command and the scheduler all use :func:`next_runs`,
so what a person is shown is what happens.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from itertools import islice
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

DAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_LABELS: dict[str, str] = {
    "mon": "Monday",
    "tue": "Tuesday",
    "wed": "Wednesday",
    "thu": "Thursday",
    "fri": "Friday",
    "sat": "Saturday",
    "sun": "Sunday",
}
DEFAULT_PRIORITY = 5
PRIORITY_RANGE = range(1, 11)
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class ScheduleError(ValueError):
    """An unusable schedule; ``errors`` maps each bad field to one sentence (as :func:`validate_schedule`)."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        self.errors = dict(errors)
        super().__init__(" ".join(self.errors.values()))


@dataclass(frozen=True)
class Spec:
    """A validated schedule: what the math needs, parsed once."""

    days: frozenset[int]  # 0 = Monday … 6 = Sunday
    start: time  # the fixed time, or the window's start
    end: time | None  # the window's end (may be earlier than start: the window crosses midnight)
    zone: ZoneInfo
    priority: int


@dataclass(frozen=True)
class Slot:
    """One scheduled run: due at ``start``; with a window, it may start until ``end`` (else ``end`` is None)."""

    start: datetime
    end: datetime | None


# --------------------------------------------------------------------------------------------- validation


@cache
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones()) | {"UTC"}


def is_zone(name: Any) -> bool:
    """True for an IANA zone name this machine knows ("Europe/Paris", "UTC")."""
    return isinstance(name, str) and name in _zone_names()


def zone_names() -> list[str]:
    """Every IANA zone name, sorted (for a searchable picker)."""
    return sorted(_zone_names())


def _day(value: Any) -> str | None:
    """ "mon", "Mon" or "monday" → "mon"; anything else → None."""
    if not isinstance(value, str):
        return None
    word = value.strip().lower()
    if word in DAYS:
        return word
    full = {label.lower(): day for day, label in DAY_LABELS.items()}
    return full.get(word)


def _clock(value: Any) -> time | None:
    match = _CLOCK.match(value.strip()) if isinstance(value, str) else None
    return time(int(match.group(1)), int(match.group(2))) if match else None


def _priority(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    else:
        return None
    return number if number in PRIORITY_RANGE else None


def _check_days(raw: Any, errors: dict[str, str]) -> list[str]:
    if not isinstance(raw, list | tuple) or not raw:
        errors["days"] = "Choose at least one day of the week."
        return []
    days = [_day(value) for value in raw]
    bad = [value for value, day in zip(raw, days, strict=True) if day is None]
    if bad:
        errors["days"] = f"Unknown day {str(bad[0])[:20]!r}: use mon, tue, wed, thu, fri, sat or sun."
        return []
    return [day for day in DAYS if day in days]


def _check_timing(schedule: Mapping[str, Any], errors: dict[str, str]) -> tuple[time | None, time | None]:
    at, window = schedule.get("at"), schedule.get("window")
    if at not in (None, "") and window not in (None, "", [], ()):
        errors["window"] = "Give either a time or a window, not both."
        return None, None
    if window not in (None, "", [], ()):
        if not isinstance(window, list | tuple) or len(window) != 2:
            errors["window"] = "Give the window as a start and an end time, e.g. 01:00–05:00."
            return None, None
        start, end = _clock(window[0]), _clock(window[1])
        if start is None or end is None:
            errors["window"] = "Give the window's start and end as HH:MM (24-hour), e.g. 01:00–05:00."
            return None, None
        if start == end:
            errors["window"] = "The window starts and ends at the same time; make it at least a minute long."
            return None, None
        return start, end
    if at in (None, ""):
        errors["at"] = "Give a time (HH:MM) or a window (start–end) for the backup."
        return None, None
    parsed = _clock(at)
    if parsed is None:
        errors["at"] = f"{str(at)[:20]!r} is not a time: give it as HH:MM (24-hour), e.g. 02:00."
    return parsed, None


def _check(schedule: Mapping[str, Any]) -> tuple[Spec | None, dict[str, str]]:
    errors: dict[str, str] = {}
    if not isinstance(schedule, Mapping):
        return None, {"days": "A schedule needs days, a time or a window, and a time zone."}
    days = _check_days(schedule.get("days"), errors)
    start, end = _check_timing(schedule, errors)
    zone_name = schedule.get("timezone")
    if zone_name in (None, ""):
        errors["timezone"] = "Choose a time zone, e.g. Europe/Paris or UTC."
    elif not is_zone(zone_name):
        errors["timezone"] = (
            f"Unknown time zone {str(zone_name)[:64]!r}: give an IANA name such as Europe/Paris or UTC."
        )
    raw_priority = schedule.get("priority")
    priority = DEFAULT_PRIORITY if raw_priority in (None, "") else _priority(raw_priority)
    if priority is None:
        errors["priority"] = "Priority is a whole number from 1 (lowest) to 10 (highest)."
    if errors:
        return None, errors
    assert start is not None and priority is not None
    spec = Spec(frozenset(DAYS.index(d) for d in days), start, end, ZoneInfo(str(zone_name)), priority)
    return spec, {}


def validate_schedule(schedule: Mapping[str, Any]) -> dict[str, str]:
    """Every problem of ``schedule`` as ``{field: sentence}`` (fields: days, at, window, timezone, priority)."""
    return _check(schedule)[1]


def parse(schedule: Mapping[str, Any]) -> Spec:
    """The validated schedule; :class:`ScheduleError` (a ValueError) with every problem otherwise."""
    spec, errors = _check(schedule)
    if spec is None:
        raise ScheduleError(errors)
    return spec


def stored(raw: Any, *, timezone: str | None = None, priority: int | None = None) -> Spec | None:
    """The :class:`Spec` of a schedule as a row keeps it — a chain's ``schedule``, its ``check`` entry, a
    repository's ``prune_schedule`` — whose zone and priority may live on the row instead (``timezone``, then UTC;
    ``priority``, then the default). None when nothing is scheduled (no mapping or no days); :class:`ScheduleError`
    when it is unusable. The scheduler and the executor both read schedules through this, so they agree."""
    if not isinstance(raw, Mapping) or not raw.get("days"):
        return None
    found = {key: raw.get(key) for key in ("days", "at", "window")}
    found["timezone"] = raw.get("timezone") or timezone or "UTC"
    found["priority"] = raw.get("priority") or priority or DEFAULT_PRIORITY
    return parse(found)


def normalized(schedule: Mapping[str, Any]) -> dict[str, Any]:
    """The stored shape: ``{days, at, window, timezone, priority}`` with days in week order (validated first)."""
    spec = parse(schedule)
    days = [DAYS[i] for i in sorted(spec.days)]
    clock = spec.start.strftime("%H:%M")
    timing: dict[str, Any] = {"at": clock, "window": None}
    if spec.end is not None:
        timing = {"at": None, "window": [clock, spec.end.strftime("%H:%M")]}
    return {"days": days, **timing, "timezone": spec.zone.key, "priority": spec.priority}


# --------------------------------------------------------------------------------------------- the math


def local_instant(day: date, at: time, zone: ZoneInfo) -> datetime:
    """``day`` at wall-clock ``at`` in ``zone`` as an aware instant, by the DST rules of this module.

    Ambiguous (the hour repeated when clocks go back): the first occurrence. Non-existent (skipped when clocks go
    forward): the first instant after the gap, i.e. the moment of the transition.
    """
    naive = datetime.combine(day, at)
    first = naive.replace(tzinfo=zone, fold=0)
    if first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == naive:
        return first
    # In a gap the two folds read the wall time with the offsets before and after the transition; the transition
    # instant lies between them. Bisect to the second (zone transitions fall on whole seconds).
    a = int(first.astimezone(UTC).timestamp())
    b = int(naive.replace(tzinfo=zone, fold=1).astimezone(UTC).timestamp())
    lo, hi = min(a, b), max(a, b)
    before = datetime.fromtimestamp(lo, zone).utcoffset()
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, zone).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return datetime.fromtimestamp(hi, zone)


def _aware(moment: datetime | None, zone: ZoneInfo) -> datetime:
    if moment is None:
        return datetime.now(zone)
    if moment.utcoffset() is None:
        return local_instant(moment.date(), moment.time(), zone)
    return moment.astimezone(zone)


def iter_slots(schedule: Mapping[str, Any] | Spec, start: datetime | None = None) -> Iterator[Slot]:
    """Every scheduled run strictly after ``start`` (default: now), in order, until the end of the calendar.

    A naive ``start`` is wall-clock time in the schedule's zone. Instants are in the schedule's zone; compare
    them through UTC (Python compares and subtracts datetimes sharing a tzinfo by wall clock, ignoring fold).
    Python's calendar ends with the year 9999: the iteration stops there (a run that would fall, or whose window
    would end, beyond it does not exist) instead of raising OverflowError, so callers get fewer runs, not a crash.
    """
    spec = schedule if isinstance(schedule, Spec) else parse(schedule)
    try:
        local = _aware(start, spec.zone)
        after = local.astimezone(UTC)
    except OverflowError:
        return  # ``start`` itself is at the calendar's edge in this zone
    day = max(local.date(), date.min + timedelta(days=1)) - timedelta(days=1)  # a gap may push yesterday's run
    while True:
        try:
            slot = _slot_on(spec, day)
            if slot is not None and slot.start.astimezone(UTC) > after:
                yield slot
            day += timedelta(days=1)
        except OverflowError:
            return


def _slot_on(spec: Spec, day: date) -> Slot | None:
    """The run starting on ``day`` (local), with its window's end; None when ``day`` is not one of the days."""
    if day.weekday() not in spec.days:
        return None
    begin = local_instant(day, spec.start, spec.zone)
    end = None
    if spec.end is not None:
        crosses = spec.end <= spec.start
        end = local_instant(day + timedelta(days=1) if crosses else day, spec.end, spec.zone)
        if end.astimezone(UTC) < begin.astimezone(UTC):
            end = begin
    return Slot(begin, end)


def next_slots(schedule: Mapping[str, Any], count: int, start: datetime | None = None) -> list[Slot]:
    """The next ``count`` runs after ``start`` with their window ends (see :func:`iter_slots`)."""
    return list(islice(iter_slots(schedule, start), max(count, 0)))


def next_runs(schedule: Mapping[str, Any], count: int, start: datetime | None = None) -> list[datetime]:
    """The next ``count`` due instants strictly after ``start`` (default: now), aware, in the schedule's zone.

    ``start`` without an offset is wall-clock time in the schedule's zone. Raises :class:`ScheduleError`
    (a ValueError) when the schedule is not valid.
    """
    return [slot.start for slot in next_slots(schedule, count, start)]


def runs_between(schedule: Mapping[str, Any], start: datetime, end: datetime) -> list[datetime]:
    """Every due instant in ``(start, end]`` (aware ``end``; naive means wall-clock time in the schedule's zone)."""
    spec = parse(schedule)
    last = _aware(end, spec.zone).astimezone(UTC)
    found: list[datetime] = []
    for slot in iter_slots(spec, start):
        if slot.start.astimezone(UTC) > last:
            break
        found.append(slot.start)
    return found


def interval_hint(schedule: Mapping[str, Any]) -> timedelta:
    """The longest gap between two consecutive runs of the weekly pattern (Mon/Wed/Fri → 3 days).

    The longest rather than the average gap, so that "no success for N× the interval" never fires over a planned
    pause such as a weekend. DST is ignored (a day is 24 hours here).
    """
    days = sorted(parse(schedule).days)
    gaps = [(days[(i + 1) % len(days)] - d) % 7 or 7 for i, d in enumerate(days)]
    return timedelta(days=max(gaps))


# --------------------------------------------------------------------------------------------- wording


def days_summary(days: list[str] | tuple[str, ...]) -> str:
    """["mon", …, "fri"] → "Mon–Fri"; all seven → "Every day"; ["mon", "wed"] → "Mon, Wed"."""
    indexes = sorted({DAYS.index(d) for d in days if d in DAYS})
    if len(indexes) == 7:
        return "Every day"
    runs: list[list[int]] = []
    for index in indexes:
        if runs and runs[-1][-1] == index - 1:
            runs[-1].append(index)
        else:
            runs.append([index])
    parts = []
    for run in runs:
        names = [DAYS[i].capitalize() for i in run]
        parts.append(f"{names[0]}–{names[-1]}" if len(names) >= 3 else ", ".join(names))
    return ", ".join(parts)


def summary(schedule: Mapping[str, Any] | None) -> str:
    """A short phrase: "Mon, Wed, Fri at 02:00 in Europe/Paris", "Every day, window 23:00–01:00 next day in UTC"."""
    if not schedule:
        return "no schedule"
    spec, errors = _check(schedule)
    if spec is None:
        return "no valid schedule (" + "; ".join(errors.values()).rstrip(".") + ")"
    days = days_summary([DAYS[i] for i in spec.days])
    start = spec.start.strftime("%H:%M")
    if spec.end is None:
        return f"{days} at {start} in {spec.zone.key}"
    nextday = " next day" if spec.end <= spec.start else ""
    return f"{days}, window {start}–{spec.end.strftime('%H:%M')}{nextday} in {spec.zone.key}"
