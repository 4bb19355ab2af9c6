"""Step 7 — retention: a preset or custom keep values, with a preview of what borg would keep after a year.

The preview simulates one archive per scheduled run over the coming year (the schedule of step 8 when it has
already been chosen — after going back — else a daily 02:00 backup in the user's time zone, and the view says
so) and asks :func:`bot.backup.retention.decide`, which decides exactly as ``borg prune`` does, what is left at
the end of that year. Each preset's option shows its own one-year result, so choosing needs no extra click.

The number fields are prefilled with the current policy. Changing a number without touching the preset makes the
policy custom; choosing another preset without touching the numbers takes that preset; doing both is refused
with a sentence, since the intent is unclear. Stored: ``data["retention"] = {"preset": …, **Policy fields in
use}`` (see ``bot.services.answers``); :func:`policy_of` reads it (and a template's ``retention_policy``) back.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from bot.backup import schedule as sched
from bot.backup.retention import (
    OLDEST_SUFFIX,
    RULE_ORDER,
    WITHIN_RULE,
    Archive,
    Policy,
    decide,
    parse_interval,
    policy_summary,
    validate,
)
from bot.flows.wizard.steps.base import BaseStep, Errors, Field, Option, StepView, WizardContext
from storage.models import BackupTemplate
from storage.tenancy import Tenant

CUSTOM = "custom"
DEFAULT_PRESET = "7d/4w/6m/1y"


@dataclass(frozen=True)
class Preset:
    label: str
    policy: Policy


PRESETS: dict[str, Preset] = {
    "7d/4w/6m/1y": Preset(
        "7 daily, 4 weekly, 6 monthly, 1 yearly (recommended)",
        Policy(keep_daily=7, keep_weekly=4, keep_monthly=6, keep_yearly=1),
    ),
    "14d": Preset("14 daily", Policy(keep_daily=14)),
    "30d/12m": Preset("30 daily, 12 monthly", Policy(keep_daily=30, keep_monthly=12)),
    "gfs-long": Preset(
        "GFS long: 14 daily, 8 weekly, 24 monthly, 10 yearly",
        Policy(keep_daily=14, keep_weekly=8, keep_monthly=24, keep_yearly=10),
    ),
}

#: The keep values a person can type (the others — secondly, minutely, 13weekly — survive from a template).
NUMBER_FIELDS: tuple[tuple[str, str], ...] = (
    ("keep_last", "Keep the last N archives"),
    ("keep_hourly", "Hourly archives to keep"),
    ("keep_daily", "Daily archives to keep"),
    ("keep_weekly", "Weekly archives to keep"),
    ("keep_monthly", "Monthly archives to keep"),
    ("keep_3monthly", "Quarterly archives to keep"),
    ("keep_yearly", "Yearly archives to keep"),
)
_FORM = ("keep_within", *(name for name, _ in NUMBER_FIELDS))
_POLICY_FIELDS = {f.name for f in fields(Policy)}
_BAR_WIDTH = 20
_RULE_RANK = {rule: rank for rank, rule in enumerate((WITHIN_RULE, *RULE_ORDER, "checkpoint"))}
_DEFAULT_SCHEDULE_AT = "02:00"


# --------------------------------------------------------------------------------------------- data


def policy_of(stored: Mapping[str, Any]) -> Policy:
    """The Policy in a stored ``retention`` mapping (or a template's ``retention_policy``); ValueError if unusable.

    Unknown keys (``preset``, anything else) are ignored; counts may be ints or digit strings.
    """
    values: dict[str, Any] = {}
    for key, value in stored.items():
        if key not in _POLICY_FIELDS or value in (None, ""):
            continue
        if key == "keep_within":
            values[key] = str(value)
        elif isinstance(value, bool):
            raise ValueError(f"{key} must be a whole number.")
        else:
            values[key] = int(value)
    return Policy(**values)


def stored_form(preset: str, policy: Policy) -> dict[str, Any]:
    """What goes into ``data["retention"]``: the preset's name and the Policy fields in use."""
    return {"preset": preset, **policy.to_dict()}


def preset_for(policy: Policy) -> str:
    """The name of the preset with exactly this policy, else ``custom``."""
    return next((name for name, preset in PRESETS.items() if preset.policy == policy), CUSTOM)


# --------------------------------------------------------------------------------------------- preview


@dataclass(frozen=True)
class Preview:
    """What would be left after one year of backups under a policy."""

    backups: int  # archives the year of runs created
    kept: int
    oldest: datetime | None  # oldest archive still kept
    months: tuple[tuple[str, int], ...]  # ("May 26", kept archives made in that month), in order
    by_rule: tuple[tuple[str, int], ...]  # ("daily", 7), ("monthly[oldest]", 1), in borg's order of first use
    schedule: str  # the schedule summary the simulation used
    assumed: bool  # True when no schedule was chosen yet and the default was used


def default_schedule(user_tz: str) -> dict[str, Any]:
    """Daily at 02:00 in the user's zone (UTC if Slack gave none we know): the preview's stand-in schedule."""
    zone = user_tz if sched.is_zone(user_tz) else "UTC"
    return {"days": list(sched.DAYS), "at": _DEFAULT_SCHEDULE_AT, "window": None, "timezone": zone, "priority": 5}


def _schedule_key(schedule: Mapping[str, Any]) -> tuple:
    norm = sched.normalized(schedule)
    return (tuple(norm["days"]), norm["at"], tuple(norm["window"] or ()), norm["timezone"])


def preview(policy: Policy, schedule: Mapping[str, Any], today: date, *, assumed: bool = False) -> Preview:
    """Simulate one archive per run from ``today`` (local midnight) for 365 days and decide at the year's end."""
    return _preview(policy, _schedule_key(schedule), today, assumed)


@lru_cache(maxsize=512)
def _preview(policy: Policy, key: tuple, today: date, assumed: bool) -> Preview:
    days, at, window, zone_name = key
    schedule = {"days": list(days), "at": at, "window": list(window) or None, "timezone": zone_name}
    zone = ZoneInfo(zone_name)
    start = sched.local_instant(today, datetime.min.time(), zone)
    end = start + timedelta(days=365)
    runs = sched.runs_between(schedule, start.astimezone(UTC) - timedelta(microseconds=1), end.astimezone(UTC))
    # In UTC: Python compares datetimes that share a tzinfo by wall clock (wrong across a DST change).
    archives = [Archive(f"preview-{index:04d}", moment.astimezone(UTC)) for index, moment in enumerate(runs)]
    decisions = decide(archives, policy, zone, now=end.astimezone(UTC))
    kept = [d for d in decisions if d.keep]
    per_month = Counter((d.time.astimezone(zone).year, d.time.astimezone(zone).month) for d in kept)
    months = []
    year, month = start.year, start.month
    last = (end.astimezone(zone).year, end.astimezone(zone).month)
    while (year, month) <= last:
        months.append((date(year, month, 1).strftime("%b %y"), per_month.get((year, month), 0)))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    rules = Counter(d.rule for d in kept if d.rule)
    by_rule = tuple(sorted(rules.items(), key=lambda item: _rule_rank(item[0])))
    oldest = min((d.time for d in kept), default=None)
    oldest = oldest.astimezone(zone) if oldest else None
    return Preview(len(archives), len(kept), oldest, tuple(months), by_rule, sched.summary(schedule), assumed)


def _rule_rank(rule: str) -> tuple[int, bool]:
    """borg's order of rules (keep-within first), a rule's "[oldest]" fallback right after it."""
    return _RULE_RANK.get(rule.removesuffix(OLDEST_SUFFIX), 99), rule.endswith(OLDEST_SUFFIX)


def render_preview(result: Preview, policy: Policy) -> str:
    """The preview as Slack mrkdwn: a headline, a per-month bar chart in a code block, and the rules."""
    if result.assumed:
        basis = (
            f"Assuming the default schedule, *{result.schedule}*: you choose the schedule in the next step, "
            "and the validation step shows the preview for the one you choose."
        )
    else:
        basis = f"For your schedule: *{result.schedule}*."
    oldest = f", the oldest from {result.oldest.day} {result.oldest:%b %Y}" if result.oldest else ""
    head = (f"*What is kept after one year* ({policy_summary(policy)}): *{result.kept}* of {result.backups} "
            f"archives{oldest}.")  # fmt: skip
    top = max((count for _, count in result.months), default=0) or 1
    lines = []
    for label, count in result.months:
        bar = "█" * max(1, round(count * _BAR_WIDTH / top)) if count else "·"
        lines.append(f"{label}  {bar:<{_BAR_WIDTH}} {count}")
    chart = "```\n" + "\n".join(lines) + "\n```"
    rules = ", ".join(f"{count} {rule.replace(OLDEST_SUFFIX, ' (oldest)')}" for rule, count in result.by_rule)
    return "\n".join([head, basis, chart, f"Kept by rule: {rules or 'none'}."])


def short_preview(result: Preview) -> str:
    """One line for a preset's option (≤ 75 characters)."""
    oldest = f", oldest from {result.oldest.strftime('%b %Y')}" if result.oldest else ""
    return f"keeps {result.kept} archives after a year{oldest}"[:75]


# --------------------------------------------------------------------------------------------- the step


def _number(value: Any) -> int | None:
    """A submitted number field: None for "not a whole number", 0 for empty."""
    if value in (None, ""):
        return 0
    text = str(value).strip()
    try:
        return int(text)
    except ValueError:
        return None


class RetentionStep(BaseStep):
    def __init__(self, now: Callable[[], datetime] | None = None) -> None:
        super().__init__(name="retention", title="Retention")
        self._now = now or (lambda: datetime.now(UTC))

    async def _current(self, ctx: WizardContext) -> tuple[str, Policy]:
        """The policy the form starts from: saved answer, else the template's, else the default preset."""
        stored = ctx.data.get("retention")
        if isinstance(stored, Mapping):
            try:
                policy = policy_of(stored)
                preset = stored.get("preset")
                if preset in PRESETS and PRESETS[preset].policy == policy:
                    return preset, policy
                return CUSTOM, policy
            except (TypeError, ValueError):
                pass
        template_id = ctx.data.get("template_id")
        if template_id is not None:
            template = await Tenant(ctx.team_id).get_or_none(BackupTemplate, id=template_id)
            if template is not None and template.retention_policy:
                try:
                    policy = policy_of(template.retention_policy)
                    validate(policy)
                    return preset_for(policy), policy
                except (TypeError, ValueError):
                    pass
        return DEFAULT_PRESET, PRESETS[DEFAULT_PRESET].policy

    def _basis(self, ctx: WizardContext) -> tuple[dict[str, Any], bool, date]:
        """The schedule to simulate (chosen one, or the default), whether it is assumed, and today there."""
        chosen = ctx.data.get("schedule")
        if isinstance(chosen, Mapping) and not sched.validate_schedule(chosen):
            schedule, assumed = dict(chosen), False
        else:
            schedule, assumed = default_schedule(ctx.user_tz), True
        today = self._now().astimezone(ZoneInfo(schedule["timezone"])).date()
        return schedule, assumed, today

    def preview_for(self, ctx: WizardContext, policy: Policy) -> Preview:
        schedule, assumed, today = self._basis(ctx)
        return preview(policy, schedule, today, assumed=assumed)

    def _preview_note(self, ctx: WizardContext, policy: Policy) -> str:
        try:
            return render_preview(self.preview_for(ctx, policy), policy)
        except ValueError as exc:  # a saved policy borg would refuse: say why instead of failing the view
            return f":warning: No preview: {exc}"

    async def view(self, ctx: WizardContext) -> StepView:
        preset, policy = await self._current(ctx)
        options = [
            Option(name, item.label, short_preview(self.preview_for(ctx, item.policy)))
            for name, item in PRESETS.items()
        ]
        options.append(Option(CUSTOM, "Custom (the keep values below)", "uses exactly the numbers you type below"))
        values = asdict(policy)
        form = [
            Field("preset", "Retention", "radio", options=tuple(options), initial=preset),
            Field(
                "keep_within",
                "Keep everything made within",
                "text",
                initial=policy.keep_within,
                optional=True,
                placeholder="e.g. 2d",
                hint="A whole number and a unit: H hours, d days, w weeks, m months, y years. Empty: not used.",
            ),
        ]
        for name, label in NUMBER_FIELDS:
            form.append(Field(name, label, "number", initial=values[name] or None, optional=True))
        return StepView(
            heading="*How long should backups be kept?* Pick a preset, or change the numbers for your own policy.",
            fields=tuple(form),
            notes=(self._preview_note(ctx, policy),),
        )

    async def submit(self, ctx: WizardContext, values: Mapping[str, Any]) -> Errors:
        initial_preset, initial = await self._current(ctx)
        preset = values.get("preset") or initial_preset
        if preset not in PRESETS and preset != CUSTOM:
            return {"preset": "Choose one of the presets, or Custom."}
        typed, errors = self._typed(values, initial)
        if errors:
            return errors
        assert typed is not None
        if preset == CUSTOM:
            policy = typed
        elif typed == initial:
            policy = PRESETS[preset].policy
        elif preset == initial_preset:
            policy = typed  # the numbers were edited, the preset left as it was: a custom policy
        else:
            return {"preset": "You chose another preset and also changed the numbers: choose Custom to use your "
                              "numbers, or put the numbers back."}  # fmt: skip
        errors = _policy_errors(policy)
        if errors:
            return errors
        ctx.data["retention"] = stored_form(preset_for(policy), policy)
        return {}

    @staticmethod
    def _typed(values: Mapping[str, Any], initial: Policy) -> tuple[Policy | None, Errors]:
        """The policy the form's keep fields describe (fields not in the form keep their initial values)."""
        errors: Errors = {}
        changes: dict[str, Any] = {}
        within = values.get("keep_within")
        within = str(within).strip() if within not in (None, "") else ""
        changes["keep_within"] = within or None
        for name, _ in NUMBER_FIELDS:
            number = _number(values.get(name))
            if number is None or number < 0:
                errors[name] = "Give a whole number, 0 or more (empty means not used)."
            else:
                changes[name] = number
        if errors:
            return None, errors
        return replace(initial, **changes), {}


def _policy_errors(policy: Policy) -> Errors:
    """Per-field sentences for what :func:`bot.backup.retention.validate` refuses (short: Slack shows 150)."""
    try:
        validate(policy)
    except ValueError as exc:
        problem = str(exc)
    else:
        return {}
    if policy.keep_within is not None:
        try:
            parse_interval(policy.keep_within)
        except ValueError:
            return {"keep_within": "Write a whole number and a unit: H hours, d days, w weeks, m months, y years "
                                   "(e.g. 2d)."}  # fmt: skip
    if policy.keep_13weekly and policy.keep_3monthly:
        return {"keep_3monthly": "This policy already keeps 13-week quarters; borg accepts only one quarterly rule."}
    if policy.keep_within is None and not policy.rule_counts():
        return {"keep_daily": "This keeps nothing: fill in at least one keep value (borg prune refuses to run "
                              "without one)."}  # fmt: skip
    return {"preset": problem[:150]}
