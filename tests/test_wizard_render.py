"""The wizard's modals are built as plain dicts (fast, on every click's ack path): they must be exactly what
slack_sdk's Block Kit models produce, including their checks of Slack's limits. The reference below is the
models-based renderer the project used before, kept here as the yardstick."""

from __future__ import annotations

import random
from typing import Any

import pytest
from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    CheckboxesElement,
    ContextBlock,
    DividerBlock,
    ExternalDataSelectElement,
    InputBlock,
    MarkdownTextObject,
    NumberInputElement,
    Option,
    PlainTextInputElement,
    PlainTextObject,
    RadioButtonsElement,
    SectionBlock,
    StaticMultiSelectElement,
    StaticSelectElement,
    TimePickerElement,
)
from slack_sdk.models.views import View

from bot.flows.wizard.controller import Screen
from bot.flows.wizard.steps.base import Button, Field, StepView
from bot.flows.wizard.steps.base import Option as StepOption
from bot.slack.emulator.limits import check_view
from bot.slack.wizard_render import ACT_PREFIX, BACK, CALLBACK_ID, MAX_TEXT, TITLE, ModalError, modal, working

# -- the reference: slack_sdk models ------------------------------------------------------------------------------


def ref_option(option: Any, *, with_description: bool) -> Option:
    description = option.description[:75] if with_description and option.description else None
    return Option(value=option.value, text=PlainTextObject(text=option.label[:75]), description=description)


def ref_initial(field: Field, options: list[Option]) -> Any:
    wanted = field.initial if isinstance(field.initial, list | tuple) else [field.initial]
    chosen = [o for o in options if o.value in {str(w) for w in wanted if w is not None}]
    return chosen


def ref_element(field: Field) -> Any:
    kind = field.kind
    rich = kind in ("radio", "checkboxes")
    options = [ref_option(o, with_description=rich) for o in field.options][:100]
    chosen = ref_initial(field, options)
    placeholder = field.placeholder[:150] or None
    if kind in ("text", "multiline"):
        initial = None if field.initial in (None, "") else str(field.initial)
        return PlainTextInputElement(action_id="v", initial_value=initial, multiline=kind == "multiline",
                                     placeholder=placeholder)  # fmt: skip
    if kind == "number":
        initial = None if field.initial in (None, "") else str(field.initial)
        return NumberInputElement(action_id="v", is_decimal_allowed=False, initial_value=initial)
    if kind == "select":
        return StaticSelectElement(action_id="v", options=options, initial_option=chosen[0] if chosen else None,
                                   placeholder=placeholder or "Choose…")  # fmt: skip
    if kind == "multiselect":
        return StaticMultiSelectElement(action_id="v", options=options, initial_options=chosen or None,
                                        placeholder=placeholder or "Choose…")  # fmt: skip
    if kind == "radio":
        return RadioButtonsElement(action_id="v", options=options, initial_option=chosen[0] if chosen else None)
    if kind == "checkboxes":
        return CheckboxesElement(action_id="v", options=options, initial_options=chosen or None)
    if kind == "external_select":
        initial = ref_option(field.options[0], with_description=False) if field.options and field.initial else None
        return ExternalDataSelectElement(action_id="v", min_query_length=field.min_query_length, initial_option=initial,
                                         placeholder=placeholder or "Type to search…")  # fmt: skip
    if kind == "time":
        return TimePickerElement(action_id="v", initial_time=field.initial or None)
    raise ValueError(f"unknown field kind {kind!r}")


def ref_section(text: str) -> SectionBlock:
    return SectionBlock(text=MarkdownTextObject(text=text[:MAX_TEXT]))


def ref_blocks(screen: Screen) -> list[Block]:
    view = screen.view
    blocks: list[Block] = []
    if screen.total:
        blocks.append(ContextBlock(block_id=f"wizard_step:{screen.step}",
                                   elements=[MarkdownTextObject(text=f"Step {screen.number} of {screen.total} · "
                                                                     f"*{screen.title}*")]))  # fmt: skip
    blocks.append(ref_section(view.heading))
    if screen.errors and screen.slow:  # fast steps show errors inline (response_action=errors) instead
        blocks.append(ref_section("\n".join(f":warning: {msg}" for msg in screen.errors.values())))
    if screen.note:
        blocks.append(ref_section(screen.note))
    blocks.extend(ref_section(note) for note in view.notes)
    for field in view.fields:
        blocks.append(InputBlock(block_id=field.name, label=field.label[:2000], element=ref_element(field),
                                 optional=field.optional, hint=field.hint[:2000] or None))  # fmt: skip
    buttons = [] if screen.first or not screen.total else [ButtonElement(text="← Back", action_id=BACK, value="back")]
    buttons += [ButtonElement(text=b.label[:75], action_id=ACT_PREFIX + b.action, value=b.value or b.action,
                              style=b.style) for b in view.buttons]  # fmt: skip
    if buttons:
        blocks.append(DividerBlock())
        blocks.append(ActionsBlock(block_id="wizard_actions", elements=buttons[:25]))
    return blocks


def ref_modal(screen: Screen) -> dict[str, Any]:
    """The modal for ``screen`` (``to_dict`` runs slack_sdk's checks of Slack's limits)."""
    finished = screen.step in ("done", "cancelled")
    view = View(
        type="modal",
        callback_id=CALLBACK_ID,
        private_metadata=screen.session_id,
        title=TITLE,
        submit=None if finished else screen.view.submit_label[:24],
        close="Close",
        blocks=ref_blocks(screen),
    )
    return view.to_dict()


def ref_working(screen_title: str, what: str) -> dict[str, Any]:
    """The placeholder shown while a slow step works (connecting, probing, the test backup)."""
    return View(type="modal", callback_id=CALLBACK_ID + "_working", title=TITLE, close="Close",
                blocks=[ref_section(f":hourglass_flowing_sand: *{screen_title}* — {what}")]).to_dict()  # fmt: skip




# -- the cases -------------------------------------------------------------------------------------------------------

KINDS = ("text", "multiline", "number", "select", "multiselect", "radio", "checkboxes", "external_select", "time")


def options(rng: random.Random, count: int) -> tuple[StepOption, ...]:
    return tuple(
        StepOption(rng.choice(["", f"v{i}", "x" * rng.choice((1, 150, 150, 151))]),
                   rng.choice(["", f"Label {i}", "L" * 90]), rng.choice(["", f"about {i}", "d" * 90]))
        for i in range(count)
    )  # fmt: skip


def field(rng: random.Random, kind: str, index: int) -> Field:
    opts = options(rng, rng.choice((0, 1, 3, 8, 120)))
    values = [o.value for o in opts] + ["missing", None, ""]
    if kind in ("multiselect", "checkboxes"):
        initial: Any = rng.choice([None, [], rng.sample(values, min(2, len(values))), tuple(values[:1])])
    elif kind == "time":
        initial = rng.choice([None, "", "09:30", "23:59", "24:00"])
    elif kind == "number":
        initial = rng.choice([None, "", 0, 5, "12"])
    else:
        initial = rng.choice(values)
    return Field(
        name=f"f{index}", label=rng.choice(["Label", "", "l" * 2100]), kind=kind, options=opts, initial=initial,
        optional=rng.random() < 0.5, hint=rng.choice(["", "a hint", "h" * 2100]),
        placeholder=rng.choice(["", "type here", "p" * 200]), min_query_length=rng.choice((0, 2)),
    )  # fmt: skip


def screen(rng: random.Random) -> Screen:
    kinds = rng.sample(KINDS, rng.randint(0, 4))
    view = StepView(
        heading=rng.choice(["*Heading*", "h" * 3100, "x"]),
        fields=tuple(field(rng, kind, i) for i, kind in enumerate(kinds)),
        notes=tuple(rng.choice(["a note", "n" * 3000]) for _ in range(rng.randint(0, 2))),
        buttons=tuple(
            Button(f"act{i}", rng.choice(["Test", "b" * 80]), rng.choice([None, "primary", "danger"]),
                   rng.choice(["", "value", "w" * 2000, "w" * 2001]))
            for i in range(rng.randint(0, 3))
        ),
        submit_label=rng.choice(["Next", "", "s" * 30]),
    )
    step = rng.choice(["server", "done", "cancelled"])
    errors = rng.choice([{}, {"f0": "bad"}, {"f0": "bad", "f1": "e" * 3000}])
    return Screen("0d4f6a9e-2c1b-4b9a-9d7e-3f2a1b0c9d8e", step, rng.choice(["Server", "T" * 30]),
                  rng.randint(1, 10), rng.choice((0, 10)), view, errors, rng.choice([None, "", "a note"]),
                  first=rng.random() < 0.3, slow=rng.random() < 0.5)  # fmt: skip


def outcome(render, value) -> Any:
    try:
        return render(value)
    except (SlackObjectFormationError, ModalError):
        return "refused"


def test_modals_equal_slack_sdk_models_for_every_kind_of_field() -> None:
    rng = random.Random(5)
    refused = 0
    for _ in range(1500):
        case = screen(rng)
        expected = outcome(ref_modal, case)
        assert outcome(modal, case) == expected, case
        refused += expected == "refused"
    assert 50 < refused < 1450  # both outcomes were exercised


def test_a_plain_screen_is_what_slack_accepts() -> None:
    view = StepView(
        heading="*Pick*",
        fields=tuple(
            Field(f"f{i}", "Label", kind, options=(StepOption("a", "A", "about a"),),
                  initial="10:00" if kind == "time" else "a")
            for i, kind in enumerate(KINDS)
        ),
        notes=("n",),
        buttons=(Button("test", "Test", "primary"),),
    )
    rendered = modal(Screen("s", "server", "Server", 2, 10, view, {}, "note"))
    assert rendered == ref_modal(Screen("s", "server", "Server", 2, 10, view, {}, "note"))
    assert check_view(rendered) == []


@pytest.mark.parametrize(
    "broken",
    [
        Field("f", "L", "select", options=(StepOption("v" * 151, "A"),)),
        Field("f", "L", "time", initial="25:00"),
        Field("f" * 256, "L", "text"),
    ],
)
def test_what_cannot_be_cut_to_fit_is_refused(broken: Field) -> None:
    case = Screen("s", "server", "Server", 1, 10, StepView(heading="h", fields=(broken,)))
    with pytest.raises(SlackObjectFormationError):
        ref_modal(case)
    with pytest.raises(ModalError):
        modal(case)


def test_working_view() -> None:
    for title, what in (("Server", "working on it…"), ("S" * 40, "w" * 3000)):
        assert working(title, what) == ref_working(title, what)
