"""Which archives a retention policy keeps, decided exactly as ``borg prune`` 1.4.5 decides it — without borg.

The wizard previews a policy before any archive exists, and the chain runner explains a prune afterwards; both
must say precisely what borg will do, so this module re-implements borg 1.4.5's rules (read from
``borg/archiver.py:do_prune`` and ``borg/helpers/misc.py``) and is checked against the real borg in
``tests/test_retention_borg.py``. The borg behaviour that matters, and is easy to get wrong:

* Order: ``keep-within`` first, then secondly (= ``keep-last``), minutely, hourly, daily, weekly, monthly,
  13weekly, 3monthly, yearly. An archive already kept by an earlier rule is not counted again by a later one.
* ``keep-within`` keeps every archive strictly newer than *now* minus the interval (not the newest archive).
  Units: H = hour, d = 24 H, w = 7 d, m = 31 d, y = 365 d.
* Archives are walked newest first (equal times: the greater name first, as borg sorts its manifest by name).
  A period starts whenever an archive's key differs from the *previous* archive's key — not from every key seen
  so far, which matters when local time runs backwards at the end of daylight saving time. The first archive of
  a new period is kept unless an earlier rule kept it; then that whole period is used up without counting.
* Keys are the local wall-clock fields in the chosen time zone (ISO year and week for weekly; 13weekly is ISO
  weeks 1–13, 14–26, 27–39, 40+ of the ISO year; 3monthly is calendar quarters).
* If a rule cannot fill its count, it also keeps the oldest archive (borg reports the rule as ``daily[oldest]``).
  A negative count means "no limit" and never triggers that.
* Checkpoint archives (``….checkpoint`` / ``….checkpoint.N``) take no part in the rules; the newest one is kept
  only if no completed archive is newer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta, tzinfo

#: The period rules in the order borg applies them, under the names borg prints in ``--list`` output.
RULE_ORDER: tuple[str, ...] = (
    "secondly",
    "minutely",
    "hourly",
    "daily",
    "weekly",
    "monthly",
    "quarterly_13weekly",
    "quarterly_3monthly",
    "yearly",
)
WITHIN_RULE = "within"
CHECKPOINT_RULE = "checkpoint"
OLDEST_SUFFIX = "[oldest]"

_INTERVAL_UNITS: dict[str, tuple[int, str]] = {
    "H": (1, "hour"),
    "d": (24, "day"),
    "w": (24 * 7, "week"),
    "m": (24 * 31, "month"),
    "y": (24 * 365, "year"),
}
_CHECKPOINT_NAME = re.compile(r"\.checkpoint(\.\d+)?\Z")


@dataclass(frozen=True)
class Policy:
    """A retention policy with borg's ``--keep-*`` options; 0 (or None for ``keep_within``) means unused.

    ``keep_last`` and ``keep_secondly`` are one and the same borg option (``--keep-last`` is an alias).
    """

    keep_within: str | None = None
    keep_last: int = 0
    keep_secondly: int = 0
    keep_minutely: int = 0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0
    keep_13weekly: int = 0
    keep_3monthly: int = 0

    def rule_counts(self) -> dict[str, int]:
        """The period rules in use, in borg's order, under borg's rule names."""
        counts = {
            "secondly": self.keep_secondly or self.keep_last,
            "minutely": self.keep_minutely,
            "hourly": self.keep_hourly,
            "daily": self.keep_daily,
            "weekly": self.keep_weekly,
            "monthly": self.keep_monthly,
            "quarterly_13weekly": self.keep_13weekly,
            "quarterly_3monthly": self.keep_3monthly,
            "yearly": self.keep_yearly,
        }
        return {rule: count for rule, count in counts.items() if count}

    def to_dict(self) -> dict[str, int | str]:
        """The options in use as ``{"keep_daily": 7, …}`` (the shape ``bot.borg.prune.policy_args`` takes)."""
        return {key: value for key, value in asdict(self).items() if value not in (None, 0, "")}


@dataclass(frozen=True)
class Archive:
    """An archive as prune sees it: its name and its (start) time, which must be timezone-aware."""

    name: str
    time: datetime


@dataclass(frozen=True)
class Decision:
    """The fate of one archive: kept by ``rule`` as its ``rank``-th archive (borg's "rule: daily #3"), or not."""

    name: str
    time: datetime
    keep: bool
    rule: str | None
    rank: int | None


# --------------------------------------------------------------------------------------------- intervals


MAX_INTERVAL_YEARS = 1000  # keep-within beyond this would reach before year 1 (see parse_interval)


def parse_interval(text: str) -> timedelta:
    """A borg interval ("2d", "12H", "3m") as a duration, accepting exactly what borg 1.4.5 accepts.

    Raises ValueError with a sentence for the operator otherwise (wrong unit, zero, negative, no number), and for
    an interval longer than :data:`MAX_INTERVAL_YEARS`: borg accepts "10000y" but then fails computing a date
    before year 1 (Python's calendar starts there), so such a policy is refused here rather than crashing later.
    """
    unit = text[-1:] if text else ""
    if unit not in _INTERVAL_UNITS:
        raise ValueError(
            f"keep-within {text!r} is not a borg interval: write a whole number followed by H (hours), d (days), "
            "w (weeks), m (months of 31 days) or y (years of 365 days), for example 2d."
        )
    try:
        number = int(text[:-1])  # int() like borg: "+2d" and " 2d" are accepted there too
    except ValueError:
        number = 0
    if number <= 0:
        raise ValueError(f"keep-within {text!r} needs a whole number greater than 0 before {unit!r}, e.g. 2{unit}.")
    hours = number * _INTERVAL_UNITS[unit][0]
    if hours > MAX_INTERVAL_YEARS * 365 * 24:
        raise ValueError(
            f"keep-within {text!r} reaches back more than {MAX_INTERVAL_YEARS} years, further than borg can compute "
            "a date: use a shorter interval (e.g. 100y), or keep-yearly to keep one archive per year."
        )
    return timedelta(hours=hours)


# --------------------------------------------------------------------------------------------- checks


def _refusals_of_borg(policy: Policy) -> list[str]:
    """What ``borg prune`` itself would refuse: no rule at all, a bad interval, options it cannot combine."""
    problems: list[str] = []
    if policy.keep_within is not None:
        try:
            parse_interval(policy.keep_within)
        except ValueError as exc:
            problems.append(str(exc))
    elif not policy.rule_counts():
        problems.append(
            "The retention policy keeps nothing: set keep-within or at least one keep-last/-hourly/-daily/"
            "-weekly/-monthly/-yearly/-13weekly/-3monthly count (borg prune refuses to run without one)."
        )
    if policy.keep_13weekly and policy.keep_3monthly:
        problems.append("Choose keep-13weekly or keep-3monthly, not both: borg accepts only one quarterly rule.")
    if policy.keep_last and policy.keep_secondly and policy.keep_last != policy.keep_secondly:
        problems.append("keep-last and keep-secondly are the same borg option; give only one of them.")
    return problems


def _negative_counts(policy: Policy) -> list[str]:
    """Counts below zero: borg reads them as "no limit", which a typo should never silently turn on."""
    negative = [name for name, value in asdict(policy).items() if isinstance(value, int) and value < 0]
    if not negative:
        return []
    names = " and ".join(name.replace("_", "-") for name in negative)
    verb = "is" if len(negative) == 1 else "are"
    return [f"Counts must be 0 or more ({names} {verb} negative; borg would read that as 'keep every period')."]


def validate(policy: Policy) -> None:
    """Refuse a policy that is nonsense for the bot, with one human sentence per problem (ValueError)."""
    problems = _negative_counts(policy) + _refusals_of_borg(policy)
    if problems:
        raise ValueError(" ".join(problems))


# --------------------------------------------------------------------------------------------- period keys


def _wall_clock(moment: datetime, tz: tzinfo) -> datetime:
    """Local wall-clock time without sub-seconds, like borg's ``to_localtime`` (which goes through time_t)."""
    return moment.astimezone(tz).replace(tzinfo=None, microsecond=0)


def _quarter_of_13_weeks(local: datetime) -> tuple[int, int]:
    """ISO year and quarter, where quarters are ISO weeks 1–13, 14–26, 27–39 and 40 onward (incl. week 53)."""
    iso_year, iso_week, _ = local.isocalendar()
    return iso_year, min((iso_week - 1) // 13, 3) + 1


_PERIOD_KEY: dict[str, Callable[[datetime], Hashable]] = {
    "secondly": lambda t: (t.year, t.month, t.day, t.hour, t.minute, t.second),
    "minutely": lambda t: (t.year, t.month, t.day, t.hour, t.minute),
    "hourly": lambda t: (t.year, t.month, t.day, t.hour),
    "daily": lambda t: (t.year, t.month, t.day),
    "weekly": lambda t: tuple(t.isocalendar())[:2],
    "monthly": lambda t: (t.year, t.month),
    "quarterly_13weekly": _quarter_of_13_weeks,
    "quarterly_3monthly": lambda t: (t.year, (t.month - 1) // 3 + 1),
    "yearly": lambda t: (t.year,),
}


# --------------------------------------------------------------------------------------------- rules

# Which archive (by position in newest-first order) is kept by which rule, and as that rule's how-many-th.
_Ledger = dict[int, tuple[str, int]]


def _newest_first(archives: Iterable[Archive]) -> list[Archive]:
    """borg's order: newest first; equal times put the greater name (as UTF-8 bytes) first."""
    items = list(archives)
    for archive in items:
        if archive.time.tzinfo is None or archive.time.utcoffset() is None:
            raise ValueError(f"Archive {archive.name!r} has a time without a time zone; give an aware datetime.")
    names = [archive.name for archive in items]
    if len(set(names)) != len(names):
        duplicate = next(name for name in names if names.count(name) > 1)
        raise ValueError(f"Archive name {duplicate!r} appears more than once; names are unique in a repository.")
    return sorted(items, key=lambda a: (a.time, a.name.encode("utf-8", "surrogateescape")), reverse=True)


def _keep_within(times: Sequence[datetime], cutoff: datetime, ledger: _Ledger) -> None:
    """Keep every archive strictly newer than ``cutoff``, numbered newest first."""
    rank = 0
    for index, moment in enumerate(times):
        if moment > cutoff:
            rank += 1
            ledger[index] = (WITHIN_RULE, rank)


def _keep_per_period(keys: Sequence[Hashable], rule: str, count: int, ledger: _Ledger) -> None:
    """One period rule: the first archive of each new period until ``count`` are kept, then the oldest fallback.

    A period begins where the key differs from the previous archive's; if an earlier rule already holds that
    archive the period is spent without counting. A count < 0 never stops and never needs the fallback.
    """
    if count == 0:
        return
    kept = 0
    previous: object = object()
    for index, key in enumerate(keys):
        if key == previous:
            continue
        previous = key
        if index in ledger:
            continue
        kept += 1
        ledger[index] = (rule, kept)
        if kept == count:
            return
    oldest = len(keys) - 1
    if keys and kept < count and oldest not in ledger:
        ledger[oldest] = (rule + OLDEST_SUFFIX, kept + 1)


def _apply_rules(regular: Sequence[Archive], policy: Policy, tz: tzinfo, now: datetime) -> _Ledger:
    """Run keep-within and the period rules over the completed archives (newest first), in borg's order."""
    ledger: _Ledger = {}
    times = [archive.time for archive in regular]
    if policy.keep_within is not None:
        _keep_within(times, now - parse_interval(policy.keep_within), ledger)
    local = [_wall_clock(moment, tz) for moment in times]
    counts = policy.rule_counts()
    for rule in RULE_ORDER:
        if rule in counts:
            keys = [_PERIOD_KEY[rule](moment) for moment in local]
            _keep_per_period(keys, rule, counts[rule], ledger)
    return ledger


def decide(archives: Iterable[Archive], policy: Policy, tz: tzinfo, *, now: datetime | None = None) -> list[Decision]:
    """What ``borg prune --list`` run at ``now`` (default: the current time) with ``TZ=tz`` would do, newest first.

    Follows borg exactly, including negative counts ("no limit"); use :func:`validate` first to refuse what the
    bot considers nonsense. Raises ValueError for what borg itself refuses or for unusable archive data.
    """
    problems = _refusals_of_borg(policy)
    if problems:
        raise ValueError(" ".join(problems))
    moment = now if now is not None else datetime.now(UTC)
    if moment.utcoffset() is None:
        raise ValueError("'now' must be a timezone-aware datetime.")
    ordered = _newest_first(archives)
    regular = [archive for archive in ordered if not _CHECKPOINT_NAME.search(archive.name)]
    ledger = _apply_rules(regular, policy, tz, moment)
    reasons: dict[str, tuple[str, int | None]] = {regular[i].name: reason for i, reason in ledger.items()}
    if ordered and _CHECKPOINT_NAME.search(ordered[0].name):
        reasons[ordered[0].name] = (CHECKPOINT_RULE, None)  # an unfinished newest backup is still needed
    return [_decision(archive, reasons.get(archive.name)) for archive in ordered]


def _decision(archive: Archive, reason: tuple[str, int | None] | None) -> Decision:
    """One archive's Decision from its (rule, rank) reason, or a prune when nothing kept it."""
    if reason is None:
        return Decision(archive.name, archive.time, keep=False, rule=None, rank=None)
    return Decision(archive.name, archive.time, keep=True, rule=reason[0], rank=reason[1])


# --------------------------------------------------------------------------------------------- wording

_SUMMARY_LABELS: tuple[tuple[str, str], ...] = (
    ("secondly", "secondly"),
    ("minutely", "minutely"),
    ("hourly", "hourly"),
    ("daily", "daily"),
    ("weekly", "weekly"),
    ("monthly", "monthly"),
    ("quarterly_13weekly", "quarterly (13-week)"),
    ("quarterly_3monthly", "quarterly (3-month)"),
    ("yearly", "yearly"),
)


def _within_words(text: str) -> str:
    """ "2d" → "all archives of the last 2 days" (falls back to the raw text if it is not an interval)."""
    try:
        parse_interval(text)
    except ValueError:
        return f"all archives within {text}"
    number = int(text[:-1])
    unit = _INTERVAL_UNITS[text[-1]][1]
    return f"all archives of the last {number} {unit}{'' if number == 1 else 's'}"


def policy_summary(policy: Policy) -> str:
    """A short phrase for Slack and logs, e.g. "7 daily, 4 weekly, 6 monthly, 1 yearly" (borg's rule order)."""
    parts = [_within_words(policy.keep_within)] if policy.keep_within is not None else []
    counts = policy.rule_counts()
    for rule, label in _SUMMARY_LABELS:
        count = counts.get(rule)
        if count is None:
            continue
        if count < 0:
            parts.append(f"every {label}" if rule != "secondly" else "every archive")
        else:
            parts.append(f"last {count}" if rule == "secondly" else f"{count} {label}")
    return ", ".join(parts) if parts else "nothing"
