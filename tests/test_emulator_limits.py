"""Pure checks: Block Kit limit rules, the state shapes the driver produces, and request signing."""

from __future__ import annotations

import time
from typing import Any

import pytest
from slack_sdk.signature import SignatureVerifier

from bot.slack.emulator import blockkit, limits, signed_headers, verify


def pt(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text}


def opt(value: str, text: str | None = None) -> dict[str, Any]:
    return {"text": pt(text or value), "value": value}


def message_errors(*blocks: dict[str, Any]) -> list[str]:
    return limits.check_message_blocks(list(blocks))


def actions(*elements: dict[str, Any], block_id: str = "a") -> dict[str, Any]:
    return {"type": "actions", "block_id": block_id, "elements": list(elements)}


def button(action_id: str = "go", text: str = "Go", **extra: Any) -> dict[str, Any]:
    return {"type": "button", "action_id": action_id, "text": pt(text), **extra}


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        (
            {"type": "header", "text": {"type": "mrkdwn", "text": "x"}},
            "[ERROR] must be a plain_text text object [json-pointer:/blocks/0/text/type]",
        ),
        ({"type": "section"}, "[ERROR] missing required field: one of text, fields [json-pointer:/blocks/0]"),
        (
            {"type": "section", "fields": [{"type": "mrkdwn", "text": "f"}] * 11},
            "[ERROR] no more than 10 items allowed [json-pointer:/blocks/0/fields]",
        ),
        (
            {"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}] * 11},
            "[ERROR] no more than 10 items allowed [json-pointer:/blocks/0/elements]",
        ),
        (
            actions(*[button(f"b{i}") for i in range(26)]),
            "[ERROR] no more than 25 items allowed [json-pointer:/blocks/0/elements]",
        ),
        (
            actions(button(text="t" * 76)),
            "[ERROR] must be less than 75 characters [json-pointer:/blocks/0/elements/0/text/text]",
        ),
        (
            actions(button(value="v" * 2001)),
            "[ERROR] must be less than 2000 characters [json-pointer:/blocks/0/elements/0/value]",
        ),
        (
            actions(button("x" * 256)),
            "[ERROR] must be less than 255 characters [json-pointer:/blocks/0/elements/0/action_id]",
        ),
        (actions(button(), button()), "[ERROR] duplicate action_id: go [json-pointer:/blocks/0/elements/1/action_id]"),
        (
            actions({"type": "overflow", "action_id": "o", "options": [opt(str(i)) for i in range(6)]}),
            "[ERROR] no more than 5 items allowed [json-pointer:/blocks/0/elements/0/options]",
        ),
        (
            actions({"type": "static_select", "action_id": "s", "options": [opt("v" * 151)]}),
            "[ERROR] must be less than 150 characters [json-pointer:/blocks/0/elements/0/options/0/value]",
        ),
        (
            actions(
                {
                    "type": "static_select",
                    "action_id": "s",
                    "options": [{"text": {"type": "mrkdwn", "text": "m"}, "value": "m"}],
                }
            ),
            "[ERROR] must be a plain_text text object [json-pointer:/blocks/0/elements/0/options/0/text]",
        ),
        (
            actions({"type": "static_select", "action_id": "s"}),
            "[ERROR] missing required field: one of options, option_groups [json-pointer:/blocks/0/elements/0]",
        ),
        ({"type": "carousel"}, "[ERROR] unsupported type: carousel [json-pointer:/blocks/0/type]"),
        (
            {"type": "header", "text": pt("")},
            "[ERROR] must be more than 0 characters [json-pointer:/blocks/0/text/text]",
        ),
    ],
)
def test_block_rules(block: dict[str, Any], expected: str) -> None:
    assert expected in message_errors(block)


def test_same_action_id_in_two_blocks_is_legal_as_on_slack() -> None:
    assert message_errors(actions(button(), block_id="one"), actions(button(), block_id="two")) == []


def test_checkboxes_accept_mrkdwn_options_and_ten_at_most() -> None:
    boxes = {
        "type": "checkboxes",
        "action_id": "c",
        "options": [{"text": {"type": "mrkdwn", "text": "*m*"}, "value": "m"}],
    }
    assert message_errors(actions(boxes)) == []
    boxes["options"] = [opt(str(i)) for i in range(11)]
    assert message_errors(actions(boxes)) == [
        "[ERROR] no more than 10 items allowed [json-pointer:/blocks/0/elements/0/options]"
    ]


def test_home_allows_inputs_and_needs_no_title() -> None:
    field = {"type": "input", "label": pt("L"), "element": {"type": "plain_text_input", "action_id": "v"}}
    assert limits.check_view({"type": "home", "blocks": [field]}) == []
    assert limits.check_view({"type": "modal", "title": pt("T"), "submit": pt("S"), "blocks": [field]}) == []
    assert limits.view_too_large({"type": "home", "blocks": [{"type": "section", "text": pt("x" * 260_000)}]})


# -- state shapes ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("element", "value", "expected"),
    [
        ({"type": "plain_text_input"}, "hello", {"value": "hello"}),
        ({"type": "number_input", "is_decimal_allowed": True}, "2.5", {"value": "2.5"}),
        ({"type": "static_select", "options": [opt("a", "A")]}, "a", {"selected_option": opt("a", "A")}),
        (
            {"type": "static_select", "option_groups": [{"label": pt("G"), "options": [opt("g")]}]},
            "g",
            {"selected_option": opt("g")},
        ),
        (
            {"type": "multi_static_select", "options": [opt("a"), opt("b")]},
            ["b", "a"],
            {"selected_options": [opt("b"), opt("a")]},
        ),
        ({"type": "radio_buttons", "options": [opt("r")]}, "r", {"selected_option": opt("r")}),
        ({"type": "checkboxes", "options": [opt("c")]}, ["c"], {"selected_options": [opt("c")]}),
        ({"type": "datepicker"}, "2024-02-29", {"selected_date": "2024-02-29"}),
        ({"type": "timepicker"}, "07:05", {"selected_time": "07:05"}),
        ({"type": "users_select"}, "U0001", {"selected_user": "U0001"}),
        ({"type": "multi_conversations_select"}, ["C0001"], {"selected_conversations": ["C0001"]}),
        (
            {"type": "external_select"},
            "x",
            {"selected_option": {"text": {"type": "plain_text", "text": "x", "emoji": True}, "value": "x"}},
        ),
        ({"type": "checkboxes", "options": [opt("c")]}, None, {"selected_options": []}),
        ({"type": "static_select", "options": [opt("a")]}, None, {"selected_option": None}),
    ],
)
def test_state_values_have_slacks_shape(element: dict[str, Any], value: Any, expected: dict[str, Any]) -> None:
    assert blockkit.state_value(element, value) == {"type": element["type"], **expected}


@pytest.mark.parametrize(
    ("element", "value"),
    [
        ({"type": "number_input", "is_decimal_allowed": False}, "2.5"),
        ({"type": "number_input", "is_decimal_allowed": False, "max_value": "10"}, "11"),
        ({"type": "number_input", "is_decimal_allowed": False}, "ten"),
        ({"type": "plain_text_input", "max_length": 3}, "four"),
        ({"type": "static_select", "options": [opt("a")]}, "b"),
        ({"type": "datepicker"}, "31/12/2024"),
        ({"type": "button", "text": pt("b")}, "x"),
    ],
)
def test_values_slacks_client_would_not_accept(element: dict[str, Any], value: Any) -> None:
    with pytest.raises(ValueError, match=r".+"):
        blockkit.state_value(element, value)


def test_initial_values_and_carry_over_after_update() -> None:
    blocks = [
        {
            "type": "input",
            "block_id": "n",
            "label": pt("N"),
            "element": {"type": "plain_text_input", "action_id": "v", "initial_value": "init"},
        },
        {
            "type": "input",
            "block_id": "s",
            "label": pt("S"),
            "element": {"type": "static_select", "action_id": "v", "options": [opt("a")]},
        },
        actions(button()),
    ]
    values = blockkit.initial_values(blocks)
    assert values == {
        "n": {"v": {"type": "plain_text_input", "value": "init"}},
        "s": {"v": {"type": "static_select", "selected_option": None}},
    }
    values["n"]["v"]["value"] = "typed"
    renamed = [dict(blocks[0], block_id="n2"), blocks[1]]
    kept = blockkit.carry_over(values, blocks)
    assert kept["n"]["v"]["value"] == "typed"
    assert blockkit.carry_over(values, renamed)["n2"]["v"]["value"] == "init"


def test_missing_ids_are_filled_like_slack() -> None:
    filled = blockkit.fill_missing_ids(
        [actions(button(), block_id="a"), {"type": "actions", "elements": [{"type": "button", "text": pt("x")}]}],
        lambda: "gen",
    )
    assert filled[1]["block_id"] == "gen" and filled[1]["elements"][0]["action_id"] == "gen"
    assert filled[0]["block_id"] == "a"


# -- signing --------------------------------------------------------------------------------------------------


def test_signature_is_what_slack_sdk_verifies() -> None:
    body = "command=%2Fbackup&text=hi"
    headers = signed_headers("s3cret", body)
    assert SignatureVerifier("s3cret").is_valid_request(body, headers)
    assert not SignatureVerifier("other").is_valid_request(body, headers)
    assert headers["X-Slack-Signature"].startswith("v0=") and len(headers["X-Slack-Signature"]) == 67
    ts = headers["X-Slack-Request-Timestamp"]
    assert verify("s3cret", ts, body, headers["X-Slack-Signature"])
    old = signed_headers("s3cret", body, timestamp=int(time.time()) - 301)
    assert not verify("s3cret", old["X-Slack-Request-Timestamp"], body, old["X-Slack-Signature"])
