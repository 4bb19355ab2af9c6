"""Block Kit limits, as data, and the small checkers that reject a payload the way Slack does.

All of Slack's documented limits the bot can run into live in the tables below (one place to read or amend).
Checkers return Slack-style messages, ``[ERROR] <what> [json-pointer:<where>]``, which the server puts in
``response_metadata.messages`` of an ``invalid_arguments`` (views) or ``invalid_blocks`` (messages) answer.

Notes on fidelity: ``action_id`` must be unique within its *block* (Slack's documented rule; the same action_id
in two blocks is legal and common), ``block_id`` unique within the view or message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

VIEW_MAX_BYTES = 250_000
MESSAGE_TEXT_MAX = 40_000
ID_MAX = 255


@dataclass(frozen=True)
class TextRule:
    """A text object field: max length, whether only ``plain_text`` is allowed, whether it must be present."""

    max_len: int
    plain_only: bool = False
    required: bool = False


@dataclass(frozen=True)
class Rule:
    """The shape of one object (view, block, element, option) as far as limits go."""

    required: tuple[str, ...] = ()
    one_of: tuple[str, ...] = ()
    texts: Mapping[str, TextRule] = field(default_factory=dict)
    strings: Mapping[str, int] = field(default_factory=dict)
    lists: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Surface:
    """Where blocks are shown: how many, and which block types are allowed."""

    max_blocks: int
    block_types: frozenset[str]


_PLACEHOLDER = {"placeholder": TextRule(150, plain_only=True)}
_SELECT = Rule(texts=_PLACEHOLDER, lists={"options": 100, "option_groups": 100}, one_of=("options", "option_groups"))
_PICKER = Rule(texts=_PLACEHOLDER)

VIEWS: dict[str, Rule] = {
    "modal": Rule(
        required=("title", "blocks"),
        texts={
            "title": TextRule(24, plain_only=True, required=True),
            "submit": TextRule(24, plain_only=True),
            "close": TextRule(24, plain_only=True),
        },
        strings={"private_metadata": 3000, "callback_id": ID_MAX, "external_id": ID_MAX},
    ),
    "home": Rule(
        required=("blocks",),
        strings={"private_metadata": 3000, "callback_id": ID_MAX, "external_id": ID_MAX},
    ),
}

BLOCKS: dict[str, Rule] = {
    "section": Rule(one_of=("text", "fields"), texts={"text": TextRule(3000)}, lists={"fields": 10}),
    "header": Rule(required=("text",), texts={"text": TextRule(150, plain_only=True, required=True)}),
    "divider": Rule(),
    "context": Rule(required=("elements",), lists={"elements": 10}),
    "actions": Rule(required=("elements",), lists={"elements": 25}),
    "input": Rule(
        required=("label", "element"),
        texts={"label": TextRule(2000, plain_only=True, required=True), "hint": TextRule(2000, plain_only=True)},
    ),
    "image": Rule(
        required=("image_url", "alt_text"),
        strings={"image_url": 3000, "alt_text": 2000},
        texts={"title": TextRule(2000, plain_only=True)},
    ),
    "rich_text": Rule(required=("elements",)),
    "markdown": Rule(required=("text",), strings={"text": 12000}),
    "file": Rule(required=("external_id", "source")),
    "video": Rule(required=("alt_text", "title", "video_url", "thumbnail_url")),
}

ELEMENTS: dict[str, Rule] = {
    "button": Rule(
        required=("text",),
        texts={"text": TextRule(75, plain_only=True, required=True)},
        strings={"value": 2000, "url": 3000},
    ),
    "static_select": _SELECT,
    "multi_static_select": _SELECT,
    "external_select": _PICKER,
    "multi_external_select": _PICKER,
    "users_select": _PICKER,
    "multi_users_select": _PICKER,
    "conversations_select": _PICKER,
    "multi_conversations_select": _PICKER,
    "channels_select": _PICKER,
    "multi_channels_select": _PICKER,
    "overflow": Rule(required=("options",), lists={"options": 5}),
    "checkboxes": Rule(required=("options",), lists={"options": 10}),
    "radio_buttons": Rule(required=("options",), lists={"options": 10}),
    "plain_text_input": Rule(texts=_PLACEHOLDER, strings={"initial_value": 3000}),
    "email_text_input": _PICKER,
    "url_text_input": _PICKER,
    "number_input": Rule(required=("is_decimal_allowed",), texts=_PLACEHOLDER),
    "datepicker": _PICKER,
    "timepicker": _PICKER,
    "datetimepicker": Rule(),
    "image": Rule(required=("alt_text",), strings={"alt_text": 2000, "image_url": 3000}),
    "rich_text_input": _PICKER,
    "file_input": Rule(),
}

OPTION = Rule(
    required=("text", "value"),
    texts={"text": TextRule(75, required=True), "description": TextRule(75)},
    strings={"value": 150, "url": 3000},
)
OPTION_GROUP = Rule(
    required=("label", "options"), texts={"label": TextRule(75, plain_only=True)}, lists={"options": 100}
)
SECTION_FIELD = TextRule(2000, required=True)

# Elements whose options must be plain_text (checkboxes and radio buttons accept mrkdwn too).
PLAIN_OPTION_ELEMENTS = frozenset({"static_select", "multi_static_select", "overflow"})

_COMMON_BLOCKS = frozenset(
    {"section", "header", "divider", "context", "actions", "image", "rich_text", "file", "video", "markdown"}
)
SURFACES: dict[str, Surface] = {
    "modal": Surface(100, _COMMON_BLOCKS | {"input"}),
    "home": Surface(100, _COMMON_BLOCKS | {"input"}),
    "message": Surface(50, _COMMON_BLOCKS),
}


def error(text: str, pointer: str) -> str:
    """A message in Slack's ``response_metadata.messages`` format."""
    return f"[ERROR] {text} [json-pointer:{pointer}]"


def too_long(max_len: int, pointer: str) -> str:
    """Slack words an over-long string as "must be less than N characters" with N the documented max."""
    return error(f"must be less than {max_len} characters", pointer)


def check_view(view: Any) -> list[str]:
    """Every limit a modal or home view breaks; empty when Slack would accept it."""
    if not isinstance(view, dict):
        return [error("must be a JSON object", "/view")]
    rule = VIEWS.get(view.get("type", ""))
    if rule is None:
        return [error("missing required field: type" if "type" not in view else "invalid type", "/view/type")]
    problems = check_object(view, rule, "/view")
    blocks = view.get("blocks")
    if isinstance(blocks, list):
        problems += check_blocks(blocks, SURFACES[view["type"]], "/view/blocks")
        if view["type"] == "modal" and "submit" not in view and any(_is_input(b) for b in blocks):
            problems.append(error("missing required field: submit", "/view"))
    return problems


def check_message_blocks(blocks: Any) -> list[str]:
    """Every limit a message's ``blocks`` break."""
    if not isinstance(blocks, list):
        return [error("must be an array", "/blocks")]
    return check_blocks(blocks, SURFACES["message"], "/blocks")


def view_too_large(view: Any) -> bool:
    """Slack refuses views over 250 kB with ``view_too_large`` before looking inside."""
    return len(json.dumps(view, ensure_ascii=False).encode()) > VIEW_MAX_BYTES


def check_blocks(blocks: list[Any], surface: Surface, pointer: str) -> list[str]:
    """Count, per-block rules and block_id uniqueness for one surface."""
    problems: list[str] = []
    if len(blocks) > surface.max_blocks:
        problems.append(error(f"no more than {surface.max_blocks} items allowed", pointer))
    seen: set[str] = set()
    for index, block in enumerate(blocks):
        where = f"{pointer}/{index}"
        problems += check_block(block, surface, where)
        block_id = block.get("block_id") if isinstance(block, dict) else None
        if isinstance(block_id, str):
            if block_id in seen:
                problems.append(error(f"duplicate block_id: {block_id}", f"{where}/block_id"))
            seen.add(block_id)
    return problems


def check_block(block: Any, surface: Surface, pointer: str) -> list[str]:
    """One block: allowed here, its own rule, its block_id, and the elements it holds."""
    if not isinstance(block, dict) or "type" not in block:
        return [error("missing required field: type", pointer)]
    kind = block["type"]
    if kind not in BLOCKS:
        return [error(f"unsupported type: {kind}", f"{pointer}/type")]
    if kind not in surface.block_types:
        return [error(f"unsupported type: {kind}", f"{pointer}/type")]
    problems = check_object(block, BLOCKS[kind], pointer) + _check_id(block, "block_id", pointer)
    for i, item in enumerate(block.get("fields") or []):
        problems += check_text(item, SECTION_FIELD, f"{pointer}/fields/{i}")
    problems += _check_block_elements(block, pointer)
    return problems


def _check_block_elements(block: dict[str, Any], pointer: str) -> list[str]:
    """Elements of a block, with action_id uniqueness inside the block."""
    found: list[tuple[Any, str]] = []
    if block["type"] == "actions":
        found = [(el, f"{pointer}/elements/{i}") for i, el in enumerate(block.get("elements") or [])]
    elif block["type"] == "input" and "element" in block:
        found = [(block["element"], f"{pointer}/element")]
    elif block["type"] == "section" and "accessory" in block:
        found = [(block["accessory"], f"{pointer}/accessory")]
    problems: list[str] = []
    seen: set[str] = set()
    for element, where in found:
        problems += check_element(element, where)
        action_id = element.get("action_id") if isinstance(element, dict) else None
        if isinstance(action_id, str):
            if action_id in seen:
                problems.append(error(f"duplicate action_id: {action_id}", f"{where}/action_id"))
            seen.add(action_id)
    return problems


def check_element(element: Any, pointer: str) -> list[str]:
    """One interactive element and its options."""
    if not isinstance(element, dict) or "type" not in element:
        return [error("missing required field: type", pointer)]
    rule = ELEMENTS.get(element["type"])
    if rule is None:
        return [error(f"unsupported type: {element['type']}", f"{pointer}/type")]
    problems = check_object(element, rule, pointer) + _check_id(element, "action_id", pointer)
    plain = element["type"] in PLAIN_OPTION_ELEMENTS
    for i, option in enumerate(element.get("options") or []):
        problems += check_option(option, plain, f"{pointer}/options/{i}")
    for i, group in enumerate(element.get("option_groups") or []):
        where = f"{pointer}/option_groups/{i}"
        problems += check_object(group, OPTION_GROUP, where) if isinstance(group, dict) else [error("invalid", where)]
        for j, option in enumerate(group.get("options") or [] if isinstance(group, dict) else []):
            problems += check_option(option, plain, f"{where}/options/{j}")
    return problems


def check_option(option: Any, plain_only: bool, pointer: str) -> list[str]:
    """An option object: text ≤ 75, value ≤ 150, plain_text where the element requires it."""
    if not isinstance(option, dict):
        return [error("must be a JSON object", pointer)]
    problems = check_object(option, OPTION, pointer)
    text = option.get("text")
    if plain_only and isinstance(text, dict) and text.get("type") != "plain_text":
        problems.append(error("must be a plain_text text object", f"{pointer}/text"))
    return problems


def check_object(obj: dict[str, Any], rule: Rule, pointer: str) -> list[str]:
    """Required fields, one-of groups, text objects, plain strings and list sizes of one object."""
    problems = [error(f"missing required field: {name}", pointer) for name in rule.required if name not in obj]
    if rule.one_of and not any(name in obj for name in rule.one_of):
        problems.append(error(f"missing required field: one of {', '.join(rule.one_of)}", pointer))
    for name, text_rule in rule.texts.items():
        if name in obj:
            problems += check_text(obj[name], text_rule, f"{pointer}/{name}")
    for name, max_len in rule.strings.items():
        value = obj.get(name)
        if isinstance(value, str) and len(value) > max_len:
            problems.append(too_long(max_len, f"{pointer}/{name}"))
    for name, max_items in rule.lists.items():
        value = obj.get(name)
        if isinstance(value, list) and len(value) > max_items:
            problems.append(error(f"no more than {max_items} items allowed", f"{pointer}/{name}"))
    return problems


def check_text(obj: Any, rule: TextRule, pointer: str) -> list[str]:
    """A text object: right type, not empty when required, not over its max length."""
    if not isinstance(obj, dict) or obj.get("type") not in ("plain_text", "mrkdwn"):
        return [error("failed to match all allowed schemas", pointer)]
    if rule.plain_only and obj["type"] != "plain_text":
        return [error("must be a plain_text text object", f"{pointer}/type")]
    text = obj.get("text")
    if not isinstance(text, str):
        return [error("missing required field: text", pointer)]
    if rule.required and not text:
        return [error("must be more than 0 characters", f"{pointer}/text")]
    if len(text) > rule.max_len:
        return [error("failed to match all allowed schemas", pointer), too_long(rule.max_len, f"{pointer}/text")]
    return []


def _check_id(obj: dict[str, Any], name: str, pointer: str) -> list[str]:
    value = obj.get(name)
    if value is None:
        return []
    if not isinstance(value, str) or not value:
        return [error("must be more than 0 characters", f"{pointer}/{name}")]
    if len(value) > ID_MAX:
        return [too_long(ID_MAX, f"{pointer}/{name}")]
    return []


def _is_input(block: Any) -> bool:
    return isinstance(block, dict) and block.get("type") == "input"
