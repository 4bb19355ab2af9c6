"""Wizard steps 7 (retention, with the one-year preview from the engine) and 8 (schedule, with the next runs)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.backup.retention import Archive, Policy, decide
from bot.backup.schedule import next_runs
from bot.flows.wizard.controller import Screen
from bot.flows.wizard.steps.base import StepView, WizardContext
from bot.flows.wizard.steps.retention import PRESETS, RetentionStep, policy_of, preview
from bot.flows.wizard.steps.schedule import ScheduleStep, search_zones
from bot.slack.emulator.limits import check_view
from bot.slack.wizard_render import modal
from storage.models import BackupTemplate
from storage.tenancy import Tenant

NOW = datetime(2026, 5, 3, 12, tzinfo=UTC)  # a Sunday; the simulated year runs 2026-05-03 … 2027-05-02
MWF = {"days": ["mon", "wed", "fri"], "at": "02:00", "window": None, "timezone": "Europe/Paris", "priority": 5}
DEFAULT_NUMBERS = {"keep_daily": "7", "keep_weekly": "4", "keep_monthly": "6", "keep_yearly": "1"}


def ctx(data: dict[str, Any] | None = None, tz: str = "Europe/Paris", team: str = "T0001") -> WizardContext:
    return WizardContext(team_id=team, user_id="U0001", session_id="s1", data=data or {}, services=None, user_tz=tz)


def fields_of(view: StepView) -> dict[str, Any]:
    return {f.name: f for f in view.fields}


def rendered(view: StepView, name: str, number: int) -> dict:
    screen = Screen("s1", name, name.capitalize(), number, 10, view)
    built = modal(screen)
    assert check_view(built) == []
    return built


def test_steps_as_the_registry_builds_them() -> None:
    retention, schedule = RetentionStep(), ScheduleStep()  # registry.build_steps() calls them without arguments
    assert (retention.name, retention.title, retention.slow) == ("retention", "Retention", False)
    assert (schedule.name, schedule.title, schedule.slow) == ("schedule", "Schedule", False)
    assert retention.applies({}) and schedule.applies({"backup_type": "mongodb"})


# --------------------------------------------------------------------------------------------- retention preview


def test_default_preview_is_what_borg_keeps_of_a_year_of_daily_backups() -> None:
    result = preview(PRESETS["7d/4w/6m/1y"].policy, {**MWF, "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]},
                     NOW.date())  # fmt: skip
    assert (result.backups, result.kept) == (365, 18)
    assert result.by_rule == (("daily", 7), ("weekly", 4), ("monthly", 6), ("yearly[oldest]", 1))
    # daily: Apr 26 – May 2 (5 + 2); weekly: Apr 25, 18, 11, 4; monthly: Mar 31 … Oct 31; yearly falls back to
    # the oldest archive, 2026-05-03, because 2026's newest archive is already kept by monthly (borg's rule)
    assert dict(result.months) == {
        "May 26": 1, "Jun 26": 0, "Jul 26": 0, "Aug 26": 0, "Sep 26": 0, "Oct 26": 1, "Nov 26": 1,
        "Dec 26": 1, "Jan 27": 1, "Feb 27": 1, "Mar 27": 1, "Apr 27": 9, "May 27": 2,
    }  # fmt: skip
    assert result.oldest == datetime(2026, 5, 3, 2, 0, tzinfo=ZoneInfo("Europe/Paris"))
    assert result.oldest.utcoffset() == timedelta(hours=2)


def test_preview_equals_the_engine_over_the_scheduled_runs() -> None:
    """Built another way (next_runs, then decide): the same archives are kept, for several policies and zones."""
    for schedule in (MWF, {**MWF, "days": ["sun"], "at": "00:30", "timezone": "Pacific/Auckland"},
                     {**MWF, "at": None, "window": ["23:30", "04:00"], "timezone": "America/New_York"}):  # fmt: skip
        zone = ZoneInfo(schedule["timezone"])
        start = datetime.combine(NOW.astimezone(zone).date(), datetime.min.time(), zone)
        end = start + timedelta(days=365)
        runs = [r for r in next_runs(schedule, 400, start - timedelta(seconds=1)) if r.timestamp() <= end.timestamp()]
        archives = [Archive(f"a{i}", r.astimezone(UTC)) for i, r in enumerate(runs)]
        for policy in (PRESETS["gfs-long"].policy, Policy(keep_within="10d", keep_weekly=8), Policy(keep_3monthly=4)):
            kept = sorted(d.time for d in decide(archives, policy, zone, now=end.astimezone(UTC)) if d.keep)
            result = preview(policy, schedule, NOW.astimezone(zone).date())
            assert (result.backups, result.kept) == (len(runs), len(kept)), (schedule, policy)
            assert result.oldest == kept[0].astimezone(zone)


def test_keep_within_counts_from_the_end_of_the_year() -> None:
    result = preview(Policy(keep_within="30d"), MWF, NOW.date())
    # Mon/Wed/Fri runs strictly after 2027-04-03 00:00 (the year's end minus 30 days): Apr 5 … Apr 30
    assert (result.kept, result.by_rule) == (12, (("within", 12),))
    assert result.oldest == datetime(2027, 4, 5, 2, 0, tzinfo=ZoneInfo("Europe/Paris"))


async def test_retention_view_without_schedule_assumes_daily_in_the_users_zone() -> None:
    step = RetentionStep(now=lambda: NOW)
    view = await step.view(ctx(tz="America/New_York"))
    f = fields_of(view)
    assert f["preset"].initial == "7d/4w/6m/1y"
    assert {name: f[name].initial for name in ("keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")} == {
        "keep_daily": 7, "keep_weekly": 4, "keep_monthly": 6, "keep_yearly": 1,
    }  # fmt: skip
    assert f["keep_hourly"].initial is None and f["keep_within"].initial is None
    note = view.notes[0]
    assert "Assuming the default schedule, *Every day at 02:00 in America/New_York*" in note
    assert "*18* of 365 archives" in note and "7 daily, 4 weekly, 6 monthly, 1 yearly" in note
    assert "Apr 27  ████████████████████ 9" in note and "Jun 26  ·" in note
    descriptions = {o.value: o.description for o in f["preset"].options}
    assert descriptions["14d"] == "keeps 14 archives after a year, oldest from Apr 2027"
    assert descriptions["7d/4w/6m/1y"].startswith("keeps 18 archives")
    assert all(len(o.label) <= 75 and len(o.description) <= 75 for o in f["preset"].options)
    built = rendered(view, "retention", 7)
    assert len(built["blocks"]) < 100


async def test_retention_view_with_a_chosen_schedule_previews_that_schedule() -> None:
    view = await RetentionStep(now=lambda: NOW).view(ctx({"schedule": MWF}))
    note = view.notes[0]
    assert "For your schedule: *Mon, Wed, Fri at 02:00 in Europe/Paris*" in note
    assert "*18* of 156 archives" in note and "Assuming" not in note


async def test_retention_submit_preset_custom_and_edits() -> None:
    step = RetentionStep(now=lambda: NOW)
    c = ctx()
    assert await step.submit(c, {"preset": "14d", **DEFAULT_NUMBERS}) == {}
    assert c.data["retention"] == {"preset": "14d", "keep_daily": 14}
    assert policy_of(c.data["retention"]) == Policy(keep_daily=14)
    # back on the step: the saved answer is what the form shows
    assert fields_of(await step.view(c))["preset"].initial == "14d"
    # a number edited, the preset untouched: a custom policy
    assert await step.submit(c, {"preset": "14d", "keep_daily": "10", "keep_weekly": "3"}) == {}
    assert c.data["retention"] == {"preset": "custom", "keep_daily": 10, "keep_weekly": 3}
    assert fields_of(await step.view(c))["preset"].initial == "custom"
    # another preset, numbers untouched: that preset
    assert await step.submit(c, {"preset": "gfs-long", "keep_daily": "10", "keep_weekly": "3"}) == {}
    assert c.data["retention"] == {"preset": "gfs-long", **PRESETS["gfs-long"].policy.to_dict()}
    # custom with keep-within
    numbers = {"keep_daily": "14", "keep_weekly": "8", "keep_monthly": "24", "keep_yearly": "10"}
    assert await step.submit(c, {"preset": "custom", **numbers, "keep_within": " 2d ", "keep_last": "3"}) == {}
    assert c.data["retention"] == {
        "preset": "custom", "keep_within": "2d", "keep_last": 3,
        "keep_daily": 14, "keep_weekly": 8, "keep_monthly": 24, "keep_yearly": 10,
    }  # fmt: skip
    # custom numbers that happen to be a preset are stored under the preset's name
    assert await step.submit(c, {"preset": "custom", "keep_daily": "30", "keep_monthly": "12"}) == {}
    assert c.data["retention"] == {"preset": "30d/12m", "keep_daily": 30, "keep_monthly": 12}


@pytest.mark.parametrize(
    ("values", "field", "words"),
    [
        ({"preset": "custom", "keep_within": "2x"}, "keep_within", "H hours, d days"),
        ({"preset": "custom", "keep_within": "0d"}, "keep_within", "whole number"),
        ({"preset": "custom"}, "keep_daily", "keeps nothing"),
        ({"preset": "custom", "keep_daily": "-1"}, "keep_daily", "0 or more"),
        ({"preset": "custom", "keep_weekly": "abc"}, "keep_weekly", "whole number"),
        ({"preset": "14d", **DEFAULT_NUMBERS, "keep_daily": "9"}, "preset", "choose Custom"),
        ({"preset": "forever", **DEFAULT_NUMBERS}, "preset", "presets"),
    ],
)
async def test_retention_refusals_are_inline_on_the_field(values: dict, field: str, words: str) -> None:
    c = ctx()
    errors = await RetentionStep(now=lambda: NOW).submit(c, values)
    assert list(errors) == [field] and words in errors[field] and len(errors[field]) <= 150
    assert "retention" not in c.data


async def test_retention_starts_from_this_workspaces_template_only(sqlite_db: str) -> None:
    mine = await Tenant("T0001").create(BackupTemplate, name="t", backup_type="files",
                                        retention_policy={"keep_daily": 30, "keep_monthly": 12})  # fmt: skip
    other = await Tenant("T0002").create(BackupTemplate, name="t", backup_type="files",
                                         retention_policy={"keep_daily": 3, "keep_13weekly": 2})  # fmt: skip
    step = RetentionStep(now=lambda: NOW)
    assert fields_of(await step.view(ctx({"template_id": mine.id})))["preset"].initial == "30d/12m"
    assert fields_of(await step.view(ctx({"template_id": other.id})))["preset"].initial == "7d/4w/6m/1y"
    # a template's rule the form has no field for (13weekly) survives a custom edit
    own13 = await Tenant("T0001").create(BackupTemplate, name="q", backup_type="files",
                                         retention_policy={"keep_daily": 3, "keep_13weekly": 2})  # fmt: skip
    c = ctx({"template_id": own13.id})
    view = await step.view(c)
    assert fields_of(view)["preset"].initial == "custom" and "2 quarterly (13-week)" in view.notes[0]
    assert await step.submit(c, {"preset": "custom", "keep_daily": "5"}) == {}
    assert c.data["retention"] == {"preset": "custom", "keep_daily": 5, "keep_13weekly": 2}
    errors = await step.submit(c, {"preset": "custom", "keep_daily": "5", "keep_3monthly": "4"})
    assert list(errors) == ["keep_3monthly"]


# --------------------------------------------------------------------------------------------- schedule


async def test_schedule_view_defaults_and_next_five_runs_across_the_dst_change() -> None:
    step = ScheduleStep(now=lambda: datetime(2026, 3, 27, 12, tzinfo=UTC))
    view = await step.view(ctx())
    f = fields_of(view)
    assert f["days"].initial == ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    assert (f["timing"].initial, f["at"].initial, f["window_start"].initial) == ("at", "02:00", None)
    assert (f["timezone"].kind, f["timezone"].initial) == ("external_select", "Europe/Paris")
    assert f["timezone"].options[0].value == "Europe/Paris"
    assert f["priority"].initial == "5" and [o.value for o in f["priority"].options] == [str(n) for n in range(1, 11)]
    assert view.notes[0].splitlines() == [
        "*Next 5 runs* (Every day at 02:00 in Europe/Paris):",
        "• Sat 28 Mar 2026, 02:00 CET (UTC+01:00)",
        "• Sun 29 Mar 2026, 03:00 CEST (UTC+02:00)",
        "• Mon 30 Mar 2026, 02:00 CEST (UTC+02:00)",
        "• Tue 31 Mar 2026, 02:00 CEST (UTC+02:00)",
        "• Wed 1 Apr 2026, 02:00 CEST (UTC+02:00)",
    ]
    built = rendered(view, "schedule", 8)
    timezone_block = next(b for b in built["blocks"] if b.get("block_id") == "timezone")
    assert timezone_block["element"]["type"] == "external_select"
    assert timezone_block["element"]["initial_option"]["value"] == "Europe/Paris"


async def test_schedule_submit_stores_the_data_shape() -> None:
    step = ScheduleStep(now=lambda: NOW)
    c = ctx()
    values = {"days": ["fri", "mon", "wed"], "timing": "at", "at": "02:00", "window_start": "01:00",
              "window_end": None, "timezone": "Europe/Paris", "priority": "7"}  # fmt: skip
    assert await step.submit(c, values) == {}
    assert c.data["schedule"] == {"days": ["mon", "wed", "fri"], "at": "02:00", "window": None,
                                  "timezone": "Europe/Paris", "priority": 7}  # fmt: skip
    window = {**values, "timing": "window", "window_start": "23:00", "window_end": "01:00", "timezone": "UTC"}
    assert await step.submit(c, window) == {}
    assert c.data["schedule"] == {"days": ["mon", "wed", "fri"], "at": None, "window": ["23:00", "01:00"],
                                  "timezone": "UTC", "priority": 7}  # fmt: skip
    # back on the step: the saved answer is shown, and its next runs
    view = await step.view(c)
    f = fields_of(view)
    assert (f["timing"].initial, f["window_start"].initial, f["window_end"].initial) == ("window", "23:00", "01:00")
    assert f["days"].initial == ["mon", "wed", "fri"] and f["priority"].initial == "7"
    assert "• Mon 4 May 2026, 23:00–01:00 UTC (UTC+00:00)" in view.notes[0]
    # and the retention step now previews this schedule
    note = (await RetentionStep(now=lambda: NOW).view(c)).notes[0]
    assert "For your schedule: *Mon, Wed, Fri, window 23:00–01:00 next day in UTC*" in note


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"days": []}, "days"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timezone": None}, "timezone"),
        ({"priority": "11"}, "priority"),
        ({"timing": "at", "at": None}, "at"),
        ({"timing": "window", "window_start": "03:00", "window_end": "03:00"}, "window_start"),
        ({"timing": "window", "window_start": "03:00", "window_end": None}, "window_end"),
        ({"timing": "sometimes"}, "timing"),
    ],
)
async def test_schedule_refusals_are_inline(change: dict, field: str) -> None:
    values = {"days": ["mon"], "timing": "at", "at": "02:00", "timezone": "UTC", "priority": "5", **change}
    c = ctx()
    errors = await ScheduleStep(now=lambda: NOW).submit(c, values)
    assert field in errors and len(errors[field]) <= 150
    assert "schedule" not in c.data


async def test_schedule_timezone_search_and_unknown_user_zone() -> None:
    step = ScheduleStep(now=lambda: NOW)
    assert [o.value for o in await step.options(ctx(), "timezone", "paris")] == ["Europe/Paris"]
    assert (await step.options(ctx(), "timezone", "new york"))[0].value == "America/New_York"
    assert [o.value for o in await step.options(ctx(), "timezone", "kolk")] == ["Asia/Kolkata"]
    assert len(await step.options(ctx(), "timezone", "a")) == 100
    assert await step.options(ctx(), "priority", "1") == []
    assert search_zones("europe/")[:2] == ["Europe/Amsterdam", "Europe/Andorra"]
    f = fields_of(await step.view(ctx(tz="Not/AZone")))
    assert f["timezone"].initial == "UTC"


async def test_schedule_starts_from_this_workspaces_template_only(sqlite_db: str) -> None:
    weekdays = {"days": ["mon", "tue", "wed", "thu", "fri"], "at": "01:15"}
    mine = await Tenant("T0001").create(BackupTemplate, name="t", backup_type="files", schedule=weekdays)
    sundays = {"days": ["sun"], "window": ["22:00", "23:00"], "timezone": "UTC"}
    other = await Tenant("T0002").create(BackupTemplate, name="t", backup_type="files", schedule=sundays)
    step = ScheduleStep(now=lambda: NOW)
    f = fields_of(await step.view(ctx({"template_id": mine.id})))
    assert (f["days"].initial, f["at"].initial, f["timezone"].initial) == (weekdays["days"], "01:15", "Europe/Paris")
    f = fields_of(await step.view(ctx({"template_id": other.id})))
    assert (f["days"].initial, f["timing"].initial, f["timezone"].initial) == (
        ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "at", "Europe/Paris"
    )  # fmt: skip
