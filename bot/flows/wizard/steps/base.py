"""The step contract and the view model a step hands to the Slack layer.

A step never talks to Slack. ``view`` describes what to show (fields with options and initial values, notes,
buttons); ``submit`` validates on the server and either returns errors keyed by field name (shown inline) or
stores what it accepted in ``ctx.data``. ``applies`` lets the machine skip steps that make no sense for the
choices so far (no snapshot step for a MongoDB dump, …). Steps whose submit is slow (SSH, probes, a test
backup) say so with ``slow = True``: Slack shows "working…" at once and the result when it is done.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from bot.access import Actor, NoDirectory, resolve_actor

FieldKind = Literal[
    "text", "multiline", "number", "select", "multiselect", "radio", "checkboxes", "external_select", "time",
    "conversation",
]


@dataclass(frozen=True)
class Option:
    value: str
    label: str  # ≤ 75 characters (Slack's limit; the renderer checks)
    description: str = ""


@dataclass(frozen=True)
class Field:
    name: str  # also the block id: errors come back keyed by it
    label: str
    kind: FieldKind
    options: tuple[Option, ...] = ()
    initial: Any = None  # str, list[str] for multi-value kinds, or None
    optional: bool = False
    hint: str = ""
    placeholder: str = ""
    min_query_length: int = 0  # external_select: characters before Slack asks for options


@dataclass(frozen=True)
class Button:
    action: str  # e.g. "test_connection": handled by the step's ``act``
    label: str
    style: Literal["primary", "danger"] | None = None
    value: str = ""


@dataclass(frozen=True)
class StepView:
    heading: str  # markdown line under the progress line
    fields: tuple[Field, ...] = ()
    notes: tuple[str, ...] = ()  # markdown paragraphs (facts, warnings, previews)
    buttons: tuple[Button, ...] = ()
    submit_label: str = "Next"


@dataclass
class WizardContext:
    """Everything a step may use. ``data`` is the session's saved answers (JSON-able), changed in place."""

    team_id: str
    user_id: str
    session_id: str
    data: dict[str, Any]
    services: Any  # bot.flows.wizard.services.WizardServices (kept untyped here to avoid an import cycle)
    user_tz: str = "UTC"
    form: Mapping[str, Any] = field(default_factory=dict)
    """For a step's button (``act``): what the screen's inputs hold at the click, not submitted and not saved."""
    _actor: Actor | None = field(default=None, repr=False)

    async def actor(self) -> Actor:
        """The acting user with their roles, resolved once per call through ``services.directory``."""
        if self._actor is None:
            directory = getattr(self.services, "directory", None) or NoDirectory()
            self._actor = await resolve_actor(directory, self.team_id, self.user_id)
        return self._actor


Errors = dict[str, str]


class Step(Protocol):
    name: str
    title: str  # shown in the progress line: "Step 3 of 10 · Source"
    slow: bool

    def applies(self, data: Mapping[str, Any]) -> bool: ...

    async def view(self, ctx: WizardContext) -> StepView: ...

    async def submit(self, ctx: WizardContext, values: Mapping[str, Any]) -> Errors: ...

    async def act(self, ctx: WizardContext, action: str, value: str) -> str | None:
        """A button inside the step (e.g. "test connection"): returns a note to show, or None."""
        ...


@dataclass
class BaseStep:
    """Defaults for the optional parts of :class:`Step`."""

    name: str = ""
    title: str = ""
    slow: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def applies(self, data: Mapping[str, Any]) -> bool:
        return True

    async def act(self, ctx: WizardContext, action: str, value: str) -> str | None:
        return None
