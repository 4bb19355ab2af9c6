"""Block Kit knowledge the user side needs: where elements sit, and the exact shapes of their values.

Slack reports what a user entered in ``view.state.values[block_id][action_id]`` with a different key per element
type (``value``, ``selected_option``, ``selected_date``...), and repeats it in ``actions[]`` of ``block_actions``.
Apps parse those shapes, so the emulator must produce them exactly; the tables here are the single source.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Iterator
from typing import Any

# element type -> the key its value is reported under
STATE_KEYS: dict[str, str] = {
    "plain_text_input": "value",
    "email_text_input": "value",
    "url_text_input": "value",
    "number_input": "value",
    "static_select": "selected_option",
    "external_select": "selected_option",
    "radio_buttons": "selected_option",
    "overflow": "selected_option",
    "multi_static_select": "selected_options",
    "multi_external_select": "selected_options",
    "checkboxes": "selected_options",
    "datepicker": "selected_date",
    "timepicker": "selected_time",
    "datetimepicker": "selected_date_time",
    "users_select": "selected_user",
    "multi_users_select": "selected_users",
    "conversations_select": "selected_conversation",
    "multi_conversations_select": "selected_conversations",
    "channels_select": "selected_channel",
    "multi_channels_select": "selected_channels",
}
# value key -> the element field holding its initial value
INITIAL_KEYS: dict[str, str] = {
    "value": "initial_value",
    "selected_option": "initial_option",
    "selected_options": "initial_options",
    "selected_date": "initial_date",
    "selected_time": "initial_time",
    "selected_date_time": "initial_date_time",
    "selected_user": "initial_user",
    "selected_users": "initial_users",
    "selected_conversation": "initial_conversation",
    "selected_conversations": "initial_conversations",
    "selected_channel": "initial_channel",
    "selected_channels": "initial_channels",
}
MULTI_KEYS = frozenset({"selected_options", "selected_users", "selected_conversations", "selected_channels"})
# Elements that send block_actions as soon as they change when outside an input block.
NOT_STATEFUL = frozenset({"button", "overflow", "image"})


def iter_elements(blocks: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Every (block, interactive element) pair, in display order."""
    for block in blocks:
        kind = block.get("type")
        if kind == "input" and isinstance(block.get("element"), dict):
            yield block, block["element"]
        elif kind == "section" and isinstance(block.get("accessory"), dict):
            yield block, block["accessory"]
        elif kind == "actions":
            for element in block.get("elements") or []:
                if isinstance(element, dict):
                    yield block, element


def find_element(
    blocks: list[dict[str, Any]], action_id: str, *, block_id: str | None = None, value: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The one element with ``action_id`` (narrowed by block_id, or by a button's value); else LookupError."""
    hits = [
        (block, el)
        for block, el in iter_elements(blocks)
        if el.get("action_id") == action_id and (block_id is None or block.get("block_id") == block_id)
    ]
    if value is not None and len(hits) > 1:
        hits = [(b, el) for b, el in hits if el.get("value") == value] or hits
    if not hits:
        raise LookupError(f"no element with action_id={action_id!r} block_id={block_id!r}")
    if len(hits) > 1:
        raise LookupError(f"action_id={action_id!r} is in several blocks; pass block_id")
    return hits[0]


def all_options(element: dict[str, Any]) -> list[dict[str, Any]]:
    """Options of an element, flattening option_groups."""
    options = list(element.get("options") or [])
    for group in element.get("option_groups") or []:
        options += group.get("options") or []
    return options


def initial_values(blocks: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``state.values`` of a freshly shown view: every input-block element, with its initial value or empty."""
    values: dict[str, dict[str, dict[str, Any]]] = {}
    for block, element in iter_elements(blocks):
        key = STATE_KEYS.get(element.get("type", ""))
        has_initial = key is not None and INITIAL_KEYS[key] in element
        if key is None or (block.get("type") != "input" and not has_initial):
            continue
        empty: Any = [] if key in MULTI_KEYS else None
        state = {"type": element["type"], key: copy.deepcopy(element.get(INITIAL_KEYS[key], empty))}
        values.setdefault(block["block_id"], {})[element["action_id"]] = state
    return values


def carry_over(
    old: dict[str, dict[str, dict[str, Any]]], blocks: list[dict[str, Any]]
) -> dict[str, dict[str, dict[str, Any]]]:
    """State after an update: Slack keeps what the user entered where block_id, action_id and type still match."""
    values = initial_values(blocks)
    for block, element in iter_elements(blocks):
        kept = old.get(block.get("block_id", ""), {}).get(element.get("action_id", ""))
        if kept is not None and kept.get("type") == element.get("type"):
            values.setdefault(block["block_id"], {})[element["action_id"]] = kept
    return values


def state_value(element: dict[str, Any], value: Any, known: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The ``state.values`` entry for the user setting ``value`` on ``element`` (validated like Slack's client)."""
    kind = element.get("type", "")
    key = STATE_KEYS.get(kind)
    if key is None:
        raise ValueError(f"{kind!r} elements hold no value")
    if value is None:
        return {"type": kind, key: [] if key in MULTI_KEYS else None}
    if key in ("selected_option", "selected_options"):
        pool = all_options(element) + list(known or [])
        picked = [_option(pool, v, kind) for v in (value if key == "selected_options" else [value])]
        return {"type": kind, key: picked if key == "selected_options" else picked[0]}
    return {"type": kind, key: _scalar(element, key, value)}


def _option(pool: list[dict[str, Any]], value: Any, kind: str) -> dict[str, Any]:
    if isinstance(value, dict):
        return copy.deepcopy(value)
    for option in pool:
        if option.get("value") == value:
            return copy.deepcopy(option)
    if kind.endswith("external_select"):
        return {"text": {"type": "plain_text", "text": str(value), "emoji": True}, "value": str(value)}
    raise ValueError(f"no option with value {value!r} in this {kind}")


def _scalar(element: dict[str, Any], key: str, value: Any) -> Any:
    if key == "value":
        return _text_value(element, str(value))
    if key == "selected_date":
        return dt.date.fromisoformat(str(value)).isoformat()
    if key == "selected_time":
        return dt.time.fromisoformat(str(value)).strftime("%H:%M")
    if key == "selected_date_time":
        return int(value)
    if key in MULTI_KEYS:
        return [str(v) for v in value]
    return str(value)


def _text_value(element: dict[str, Any], text: str) -> str:
    """Slack's client enforces min/max length and numeric input before anything is sent."""
    if element.get("type") == "number_input":
        number = float(text)
        if not element.get("is_decimal_allowed") and not number.is_integer():
            raise ValueError(f"{text!r}: decimals are not allowed in this number_input")
        low, high = element.get("min_value"), element.get("max_value")
        if (low is not None and number < float(low)) or (high is not None and number > float(high)):
            raise ValueError(f"{text!r} is outside [{low}, {high}]")
    max_len, min_len = element.get("max_length"), element.get("min_length")
    if max_len is not None and len(text) > int(max_len):
        raise ValueError(f"input longer than max_length={max_len}")
    if min_len is not None and text and len(text) < int(min_len):
        raise ValueError(f"input shorter than min_length={min_len}")
    return text


def action_item(
    block: dict[str, Any], element: dict[str, Any], state: dict[str, Any] | None, ts: str
) -> dict[str, Any]:
    """One entry of ``actions[]`` in a block_actions payload, as Slack sends it for this element type."""
    item: dict[str, Any] = {
        "type": element.get("type"),
        "block_id": block.get("block_id"),
        "action_id": element.get("action_id"),
        "action_ts": ts,
    }
    copied = ("text", "value", "style", "url") if element.get("type") == "button" else ("placeholder",)
    for name in copied:
        if name in element:
            item[name] = copy.deepcopy(element[name])
    if state:
        item.update({k: v for k, v in state.items() if k != "type"})
    return item


def is_required_input(block: dict[str, Any]) -> bool:
    """An input block the user must fill before Slack lets them submit."""
    return block.get("type") == "input" and not block.get("optional", False)


def is_empty(state: dict[str, Any] | None) -> bool:
    """Whether a state entry holds nothing (Slack's client blocks submit for required ones)."""
    if not state:
        return True
    return all(v in (None, "", []) for k, v in state.items() if k not in ("type", "timezone"))


def fill_missing_ids(blocks: list[dict[str, Any]], new_id: Any) -> list[dict[str, Any]]:
    """Slack assigns a random block_id/action_id where the app gave none; the stored view carries them."""
    blocks = copy.deepcopy(blocks)
    for block in blocks:
        if isinstance(block, dict) and "block_id" not in block:
            block["block_id"] = new_id()
    for _block, element in iter_elements(blocks):
        if "action_id" not in element and element.get("type") != "image":
            element["action_id"] = new_id()
    return blocks
