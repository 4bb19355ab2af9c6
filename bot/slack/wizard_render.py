"""Rendering wizard screens as Slack modals, and reading submitted values back out of ``view.state.values``.

Every input's block id is the step field's name and its action id is ``v``, so inline errors
(``response_action=errors``) map one to one onto fields. The modal carries only the session id (in
``private_metadata``) and, as the progress line's block id, the name of the step it shows.

The Block Kit JSON is built directly as dicts: a screen is rendered on every click, before the ack, and slack_sdk's
model objects cost ~10× as much for the same JSON. Texts are cut to Slack's limits as before; what cannot be cut
(option and button values, ids, too many blocks, a malformed time) raises :class:`ModalError`, as slack_sdk's
checks did. ``tests/test_wizard_render.py`` holds the output equal to slack_sdk's models for every kind of field.
"""

from __future__ import annotations

import re
from typing import Any

from bot.flows.wizard.controller import Screen
from bot.flows.wizard.steps.base import Field

CALLBACK_ID = "wizard"
TITLE = "Backup wizard"
ACT_PREFIX = "wizard_act:"
BACK = "wizard_back"
STEP_PREFIX = "wizard_step:"  # block id of the progress line: which step a submitted screen was showing
MAX_TEXT = 2900
_TIME = re.compile(r"([0-1][0-9]|2[0-3]):([0-5][0-9])")


class ModalError(ValueError):
    """A screen that Slack would refuse and that cannot be cut to fit (slack_sdk's SlackObjectFormationError)."""


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise ModalError(what)


def _compact(d: dict[str, Any]) -> dict[str, Any]:
    """Drop unset attributes as slack_sdk does: None and empty strings/lists (False and 0 stay)."""
    return {k: v for k, v in d.items() if v is not None and not (isinstance(v, str | list | dict) and not v)}


def _plain(text: str | None) -> dict[str, Any] | None:
    """A plain_text object from a string (slack_sdk's ``PlainTextObject.from_str``; empty → unset)."""
    return {"type": "plain_text", "text": text, "emoji": True} if text else None


def _mrkdwn(text: str) -> dict[str, Any]:
    return _compact({"type": "mrkdwn", "text": text})


def _option(option: Any, *, with_description: bool) -> dict[str, Any]:
    value = option.value
    _check(value is None or len(value) <= 150, "option value cannot exceed 150 characters")
    description = option.description[:75] if with_description and option.description else None
    label = option.label[:75]
    text = {"type": "plain_text", "text": label} if label else {"type": "plain_text"}
    rendered = {"text": text, "value": value}  # the value is sent even when empty, as slack_sdk does
    if description:
        rendered["description"] = _plain(description)
    return rendered


def _initial(field: Field, options: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    wanted = field.initial if isinstance(field.initial, list | tuple) else [field.initial]
    keep = {str(w) for w in wanted if w is not None}
    return [rendered for value, rendered in options if value in keep]


def _element(field: Field) -> dict[str, Any]:
    kind = field.kind
    rich = kind in ("radio", "checkboxes")
    listed = kind in ("select", "multiselect", "radio", "checkboxes")
    options = [(o.value, _option(o, with_description=rich)) for o in field.options[:100]] if listed else []
    rendered = [o for _, o in options]
    chosen = _initial(field, options)
    placeholder = _plain(field.placeholder[:150] or None)
    if kind in ("text", "multiline"):
        initial = None if field.initial in (None, "") else str(field.initial)
        return _compact({"type": "plain_text_input", "action_id": "v", "placeholder": placeholder,
                         "initial_value": initial, "multiline": kind == "multiline"})  # fmt: skip
    if kind == "number":
        initial = None if field.initial in (None, "") else str(field.initial)
        return _compact({"type": "number_input", "action_id": "v", "initial_value": initial,
                         "is_decimal_allowed": False})  # fmt: skip
    if kind == "select":
        return _compact({"type": "static_select", "action_id": "v", "placeholder": placeholder or _plain("Choose…"),
                         "options": rendered, "initial_option": chosen[0] if chosen else None})  # fmt: skip
    if kind == "multiselect":
        return _compact({"type": "multi_static_select", "action_id": "v",
                         "placeholder": placeholder or _plain("Choose…"), "options": rendered,
                         "initial_options": chosen})  # fmt: skip
    if kind == "radio":
        return _compact({"type": "radio_buttons", "action_id": "v", "options": rendered,
                         "initial_option": chosen[0] if chosen else None})  # fmt: skip
    if kind == "checkboxes":
        return _compact({"type": "checkboxes", "action_id": "v", "options": rendered, "initial_options": chosen})
    if kind == "external_select":
        initial = _option(field.options[0], with_description=False) if field.options and field.initial else None
        return _compact({"type": "external_select", "action_id": "v",
                         "placeholder": placeholder or _plain("Type to search…"), "initial_option": initial,
                         "min_query_length": field.min_query_length})  # fmt: skip
    if kind == "time":
        initial = field.initial or None
        _check(initial is None or _TIME.match(initial) is not None, "initial_time must be in format 'HH:mm'")
        return _compact({"type": "timepicker", "action_id": "v", "initial_time": initial})
    if kind == "conversation":  # a channel picker; the value is the conversation id
        return _compact({"type": "conversations_select", "action_id": "v",
                         "initial_conversation": field.initial or None,
                         "placeholder": placeholder or _plain("Choose a channel…")})  # fmt: skip
    raise ValueError(f"unknown field kind {kind!r}")


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": _mrkdwn(text[:MAX_TEXT])}


def _button(text: str, action_id: str, value: str, style: str | None = None) -> dict[str, Any]:
    _check(len(action_id) <= 255, "action_id cannot exceed 255 characters")
    _check(len(value or "") <= 2000, "button value cannot exceed 2000 characters")
    _check(style in (None, "primary", "danger"), "button style must be primary or danger")
    return _compact({"type": "button", "text": _plain(text), "action_id": action_id, "value": value, "style": style})


def _blocks(screen: Screen) -> list[dict[str, Any]]:
    view = screen.view
    blocks: list[dict[str, Any]] = []
    if screen.total:
        progress = f"Step {screen.number} of {screen.total} · *{screen.title}*"
        blocks.append({"type": "context", "block_id": STEP_PREFIX + screen.step, "elements": [_mrkdwn(progress)]})
    blocks.append(_section(view.heading))
    if screen.errors and screen.slow:  # fast steps show errors inline (response_action=errors) instead
        blocks.append(_section("\n".join(f":warning: {msg}" for msg in screen.errors.values())))
    if screen.note:
        blocks.append(_section(screen.note))
    blocks.extend(_section(note) for note in view.notes)
    for field in view.fields:
        _check(len(field.name) <= 255, "block_id cannot exceed 255 characters")
        blocks.append(_compact({"type": "input", "block_id": field.name, "label": _plain(field.label[:2000]),
                                "element": _element(field), "optional": field.optional,
                                "hint": _plain(field.hint[:2000] or None)}))  # fmt: skip
    buttons = [] if screen.first or not screen.total else [_button("← Back", BACK, "back")]
    buttons += [_button(b.label[:75], ACT_PREFIX + b.action, b.value or b.action, b.style) for b in view.buttons]
    if buttons:
        blocks.append({"type": "divider"})
        blocks.append({"type": "actions", "block_id": "wizard_actions", "elements": buttons[:25]})
    return blocks


def _view(private_metadata: str | None, callback_id: str, blocks: list[dict[str, Any]],
          submit: str | None) -> dict[str, Any]:  # fmt: skip
    _check(0 < len(blocks) <= 100, "views must contain between 1 and 100 blocks")
    _check(private_metadata is None or len(private_metadata) <= 3000, "private_metadata cannot exceed 3000 characters")
    return _compact({"type": "modal", "title": _plain(TITLE), "blocks": blocks, "close": _plain("Close"),
                     "submit": _plain(submit), "private_metadata": private_metadata,
                     "callback_id": callback_id})  # fmt: skip


def modal(screen: Screen) -> dict[str, Any]:
    """The modal for ``screen``."""
    finished = screen.step in ("done", "cancelled")
    return _view(screen.session_id, CALLBACK_ID, _blocks(screen), None if finished else screen.view.submit_label[:24])


def working(screen_title: str, what: str) -> dict[str, Any]:
    """The placeholder shown while a slow step works (connecting, probing, the test backup)."""
    return _view(None, CALLBACK_ID + "_working", [_section(f":hourglass_flowing_sand: *{screen_title}* — {what}")],
                 None)  # fmt: skip


def values_of(view: dict[str, Any]) -> dict[str, Any]:
    """``{field name: value}`` from a submitted view's ``state.values`` (every element type the renderer makes)."""
    found: dict[str, Any] = {}
    for block_id, actions in (view.get("state") or {}).get("values", {}).items():
        element = actions.get("v")
        if element is None:
            continue
        found[block_id] = _value(element)
    return found


def step_of(view: dict[str, Any]) -> str | None:
    """The step a submitted screen showed (its progress line's block id), so a stale screen is not taken for
    the current step's answer."""
    for block in view.get("blocks") or ():
        block_id = block.get("block_id") or ""
        if block_id.startswith(STEP_PREFIX):
            return block_id[len(STEP_PREFIX) :]
    return None


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
    if kind == "conversations_select":
        return element.get("selected_conversation")
    return element.get("value")
