"""Step 8 — schedule: days of the week, a fixed time or a backup window, the time zone, the priority.

The form starts from the saved answer, else the template's schedule, else every day at 02:00 in the person's
own time zone (from Slack's ``users.info``). The next five runs are listed from
:func:`bot.backup.schedule.next_runs` — the function the scheduler uses — so DST changes show as they will happen.
Stored: ``data["schedule"] = {days, at, window, timezone, priority}`` with exactly one of ``at`` / ``window``
set (see ``bot.services.answers``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from bot.backup import schedule as sched
from bot.flows.wizard.steps.base import BaseStep, Errors, Field, Option, StepView, WizardContext
from storage.models import BackupTemplate
from storage.tenancy import Tenant

AT, WINDOW = "at", "window"
DEFAULT_AT = "02:00"
PREVIEW_COUNT = 5
_PRIORITY_LABELS = {1: "1 — lowest", 5: "5 — normal (default)", 10: "10 — highest"}
_FIELD_OF = {"days": "days", "at": "at", "window": "window_start", "timezone": "timezone", "priority": "priority"}


def _zone_or_utc(name: Any) -> str:
    return name if sched.is_zone(name) else "UTC"


def search_zones(query: str, limit: int = 100) -> list[str]:
    """Zone names matching ``query`` (case-insensitive, spaces match "_" and "/"): prefix matches first."""
    words = query.strip().lower().replace(" ", "_")
    if not words:
        return sched.zone_names()[:limit]
    found = [name for name in sched.zone_names() if words in name.lower()]
    city = [name for name in found if name.lower().rsplit("/", 1)[-1].startswith(words)]
    rest = [name for name in found if name not in city]
    return (city + rest)[:limit]


def format_run(moment: datetime, end: datetime | None = None) -> str:
    """ "Mon 30 Mar 2026, 02:00 CEST (UTC+02:00)" — or with a window, "…, 23:00–01:00 CET (UTC+01:00)"."""
    clock = f"{moment:%H:%M}" if end is None else f"{moment:%H:%M}–{end:%H:%M}"
    offset = moment.strftime("%z")
    return f"{moment:%a} {moment.day} {moment:%b %Y}, {clock} {moment.tzname()} (UTC{offset[:3]}:{offset[3:]})"


class ScheduleStep(BaseStep):
    def __init__(self, now: Callable[[], datetime] | None = None) -> None:
        super().__init__(name="schedule", title="Schedule")
        self._now = now or (lambda: datetime.now(UTC))

    async def _current(self, ctx: WizardContext) -> dict[str, Any]:
        """The schedule the form starts from: defaults, overlaid by the template's, overlaid by the saved one."""
        current: dict[str, Any] = {
            "days": list(sched.DAYS),
            "at": DEFAULT_AT,
            "window": None,
            "timezone": _zone_or_utc(ctx.user_tz),
            "priority": sched.DEFAULT_PRIORITY,
        }
        layers: list[Mapping[str, Any]] = []
        template_id = ctx.data.get("template_id")
        if template_id is not None and not isinstance(ctx.data.get("schedule"), Mapping):
            template = await Tenant(ctx.team_id).get_or_none(BackupTemplate, id=template_id)
            if template is not None and isinstance(template.schedule, Mapping):
                layers.append(template.schedule)
        if isinstance(ctx.data.get("schedule"), Mapping):
            layers.append(ctx.data["schedule"])
        for layer in layers:
            if layer.get("window"):
                current.update(at=None, window=layer["window"])
            elif layer.get("at"):
                current.update(at=layer["at"], window=None)
            for key in ("days", "timezone", "priority"):
                if layer.get(key) not in (None, "", []):
                    current[key] = layer[key]
        return current

    def next_runs_note(self, schedule: Mapping[str, Any]) -> str:
        """The next runs as a bulleted list (or why they cannot be computed)."""
        if sched.validate_schedule(schedule):
            return "_Fix the schedule above to see its next runs._"
        slots = sched.next_slots(schedule, PREVIEW_COUNT, self._now())
        lines = "\n".join(f"• {format_run(slot.start, slot.end)}" for slot in slots)
        return f"*Next {len(slots)} runs* ({sched.summary(schedule)}):\n{lines}"

    async def view(self, ctx: WizardContext) -> StepView:
        current = await self._current(ctx)
        window = current.get("window") or [None, None]
        zone = str(current.get("timezone") or "UTC")
        day_options = tuple(Option(day, label) for day, label in sched.DAY_LABELS.items())
        priorities = tuple(Option(str(n), _PRIORITY_LABELS.get(n, str(n))) for n in sched.PRIORITY_RANGE)
        timing = (
            Option(AT, "At a fixed time"),
            Option(WINDOW, "Anywhere inside a window", "the run may start between the window's start and end"),
        )
        fields = (
            Field("days", "Days", "multiselect", options=day_options, initial=list(current.get("days") or [])),
            Field("timing", "When", "radio", options=timing, initial=WINDOW if current.get("window") else AT),
            Field("at", "Time", "time", initial=current.get("at") or DEFAULT_AT, optional=True),
            Field(
                "window_start",
                "Window start",
                "time",
                initial=window[0],
                optional=True,
                hint="Only for a window. It may cross midnight, e.g. 23:00 to 01:00.",
            ),
            Field("window_end", "Window end", "time", initial=window[1], optional=True),
            Field(
                "timezone",
                "Time zone",
                "external_select",
                options=(Option(zone, zone),),
                initial=zone,
                min_query_length=2,
                placeholder="Type a city, e.g. Paris",
            ),
            Field(
                "priority",
                "Priority",
                "select",
                options=priorities,
                initial=str(current.get("priority") or 5),
                hint="When several backups are due at once, higher priority runs first.",
            ),
        )
        return StepView(
            heading="*When should the backup run?*",
            fields=fields,
            notes=(self.next_runs_note(current),),
        )

    async def options(self, ctx: WizardContext, field_name: str, query: str) -> list[Option]:
        if field_name != "timezone":
            return []
        return [Option(name, name) for name in search_zones(query)]

    async def submit(self, ctx: WizardContext, values: Mapping[str, Any]) -> Errors:
        errors: Errors = {}
        timing = values.get("timing") or AT
        if timing not in (AT, WINDOW):
            return {"timing": "Choose a fixed time or a window."}
        schedule: dict[str, Any] = {
            "days": list(values.get("days") or []),
            "at": None,
            "window": None,
            "timezone": values.get("timezone"),
            "priority": values.get("priority") or sched.DEFAULT_PRIORITY,
        }
        if timing == AT:
            schedule["at"] = values.get("at")
            if not schedule["at"]:
                errors["at"] = "Choose the time the backup starts."
        else:
            start, end = values.get("window_start"), values.get("window_end")
            if not start:
                errors["window_start"] = "Choose when the window starts."
            if not end:
                errors["window_end"] = "Choose when the window ends."
            schedule["window"] = [start, end]
        for name, sentence in sched.validate_schedule(schedule).items():
            errors.setdefault(_FIELD_OF.get(name, name), sentence)
        if errors:
            return errors
        ctx.data["schedule"] = sched.normalized(schedule)
        return {}
