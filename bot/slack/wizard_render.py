"""Rendering wizard screens as Slack modals (slack_sdk models, so Slack's limits are checked) and reading
submitted values back out of ``view.state.values``.

Every input's block id is the step field's name and its action id is ``v``, so inline errors
(``response_action=errors``) map one to one onto fields. The modal carries only the session id.
"""

from __future__ import annotations

from typing import Any

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
from bot.flows.wizard.steps.base import Field

CALLBACK_ID = "wizard"
TITLE = "Backup wizard"
ACT_PREFIX = "wizard_act:"
BACK = "wizard_back"
MAX_TEXT = 2900


def _option(option: Any, *, with_description: bool) -> Option:
    description = option.description[:75] if with_description and option.description else None
    return Option(value=option.value, text=PlainTextObject(text=option.label[:75]), description=description)


def _initial(field: Field, options: list[Option]) -> Any:
    wanted = field.initial if isinstance(field.initial, list | tuple) else [field.initial]
    chosen = [o for o in options if o.value in {str(w) for w in wanted if w is not None}]
    return chosen


def _element(field: Field) -> Any:
    kind = field.kind
    rich = kind in ("radio", "checkboxes")
    options = [_option(o, with_description=rich) for o in field.options][:100]
    chosen = _initial(field, options)
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
        initial = _option(field.options[0], with_description=False) if field.options and field.initial else None
        return ExternalDataSelectElement(action_id="v", min_query_length=field.min_query_length, initial_option=initial,
                                         placeholder=placeholder or "Type to search…")  # fmt: skip
    if kind == "time":
        return TimePickerElement(action_id="v", initial_time=field.initial or None)
    raise ValueError(f"unknown field kind {kind!r}")


def _section(text: str) -> SectionBlock:
    return SectionBlock(text=MarkdownTextObject(text=text[:MAX_TEXT]))


def _blocks(screen: Screen) -> list[Block]:
    view = screen.view
    blocks: list[Block] = []
    if screen.total:
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=f"Step {screen.number} of {screen.total} · "
                                                                     f"*{screen.title}*")]))  # fmt: skip
    blocks.append(_section(view.heading))
    if screen.errors and screen.slow:  # fast steps show errors inline (response_action=errors) instead
        blocks.append(_section("\n".join(f":warning: {msg}" for msg in screen.errors.values())))
    if screen.note:
        blocks.append(_section(screen.note))
    blocks.extend(_section(note) for note in view.notes)
    for field in view.fields:
        blocks.append(InputBlock(block_id=field.name, label=field.label[:2000], element=_element(field),
                                 optional=field.optional, hint=field.hint[:2000] or None))  # fmt: skip
    buttons = [] if screen.first or not screen.total else [ButtonElement(text="← Back", action_id=BACK, value="back")]
    buttons += [ButtonElement(text=b.label[:75], action_id=ACT_PREFIX + b.action, value=b.value or b.action,
                              style=b.style) for b in view.buttons]  # fmt: skip
    if buttons:
        blocks.append(DividerBlock())
        blocks.append(ActionsBlock(block_id="wizard_actions", elements=buttons[:25]))
    return blocks


def modal(screen: Screen) -> dict[str, Any]:
    """The modal for ``screen`` (``to_dict`` runs slack_sdk's checks of Slack's limits)."""
    finished = screen.step in ("done", "cancelled")
    view = View(
        type="modal",
        callback_id=CALLBACK_ID,
        private_metadata=screen.session_id,
        title=TITLE,
        submit=None if finished else screen.view.submit_label[:24],
        close="Close",
        blocks=_blocks(screen),
    )
    return view.to_dict()


def working(screen_title: str, what: str) -> dict[str, Any]:
    """The placeholder shown while a slow step works (connecting, probing, the test backup)."""
    return View(type="modal", callback_id=CALLBACK_ID + "_working", title=TITLE, close="Close",
                blocks=[_section(f":hourglass_flowing_sand: *{screen_title}* — {what}")]).to_dict()  # fmt: skip


def values_of(view: dict[str, Any]) -> dict[str, Any]:
    """``{field name: value}`` from a submitted view's ``state.values`` (every element type the renderer makes)."""
    found: dict[str, Any] = {}
    for block_id, actions in (view.get("state") or {}).get("values", {}).items():
        element = actions.get("v")
        if element is None:
            continue
        found[block_id] = _value(element)
    return found


def _value(element: dict[str, Any]) -> Any:
    kind = element.get("type")
    if kind in ("plain_text_input", "number_input"):
        return element.get("value")
    if kind in ("static_select", "external_select", "radio_buttons"):
        option = element.get("selected_option")
        return option.get("value") if option else None
    if kind in ("multi_static_select", "checkboxes"):
        return [o["value"] for o in element.get("selected_options") or []]
    if kind == "timepicker":
        return element.get("selected_time")
    return element.get("value")
