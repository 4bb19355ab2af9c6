"""A real bolt AsyncApp, reached over signed HTTP and over Socket Mode, driven by the emulator's user driver."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.emulator import (
    DEFAULT_BOT_TOKEN,
    AckTimeoutError,
    HttpTransport,
    ManualClock,
    SlackClientRefusal,
    SlackDriver,
    SlackEmulator,
    signed_headers,
)
from bot.slack.emulator.testing import serve_http, serve_socket_mode
from bot.slack.emulator.transport import encode

SECRET = "emulator-test-signing-secret"


def pt(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text}


def opt(value: str) -> dict[str, Any]:
    return {"text": pt(value.title()), "value": value}


def field_block(block_id: str, element: dict[str, Any], *, optional: bool = False) -> dict[str, Any]:
    return {
        "type": "input",
        "block_id": block_id,
        "optional": optional,
        "label": pt(block_id.title()),
        "element": {"action_id": "value", **element},
    }


def wizard_view(
    title: str = "Backup wizard", *, metadata: str = "session-1", extra: bool = False, clear_on_close: bool = False
) -> dict[str, Any]:
    blocks = [
        field_block("name", {"type": "plain_text_input"}),
        field_block("kind", {"type": "static_select", "options": [opt("files"), opt("postgres")]}),
        field_block("days", {"type": "checkboxes", "options": [opt("mon"), opt("tue")]}, optional=True),
        field_block("when", {"type": "timepicker"}, optional=True),
        field_block(
            "repo", {"type": "external_select", "action_id": "repo_pick", "min_query_length": 1}, optional=True
        ),
        {
            "type": "actions",
            "block_id": "more",
            "elements": [
                {"type": "button", "action_id": "add_step", "text": pt("Add step"), "value": "extra"},
                {"type": "static_select", "action_id": "mode", "options": [opt("simple"), opt("expert")]},
            ],
        },
    ]
    if extra:
        blocks.append({"type": "section", "block_id": "expert", "text": {"type": "mrkdwn", "text": "Expert"}})
    return {
        "type": "modal",
        "callback_id": "wizard",
        "title": pt(title),
        "submit": pt("Next"),
        "close": pt("Cancel"),
        "notify_on_close": True,
        "clear_on_close": clear_on_close,
        "private_metadata": metadata,
        "blocks": blocks,
    }


@dataclass
class Observed:
    """What the app's listeners saw; ``gate`` holds a listener until the test releases it."""

    seen: list[tuple[Any, ...]] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        return [s for s in self.seen if s[0] == kind]


@dataclass
class Stack:
    """The emulator, the app's observations and the driver playing the user."""

    emulator: SlackEmulator
    driver: SlackDriver
    app: Observed
    url: str = ""


def build_app(emulator: SlackEmulator, obs: Observed) -> AsyncApp:
    app = AsyncApp(client=AsyncWebClient(token=DEFAULT_BOT_TOKEN, base_url=emulator.api_url), signing_secret=SECRET)
    _commands(app, obs)
    _views(app, obs)
    _actions(app, obs)
    return app


def _commands(app: AsyncApp, obs: Observed) -> None:
    @app.command("/backup")
    async def backup(ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        obs.seen.append(("command", body["text"], body["user_id"], body["channel_id"]))
        await client.views_open(trigger_id=body["trigger_id"], view=wizard_view())

    @app.command("/late")
    async def late(ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        await obs.gate.wait()
        try:
            await client.views_open(trigger_id=body["trigger_id"], view=wizard_view())
        except SlackApiError as exc:
            obs.seen.append(("open_error", exc.response["error"]))

    @app.command("/slow")
    async def slow(ack: Any) -> None:
        await asyncio.sleep(3.3)
        await ack()

    @app.command("/sleepy")
    async def sleepy(ack: Any) -> None:
        await asyncio.sleep(0.4)
        await ack()

    @app.command("/status")
    async def status(ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack("Working on it")
        button = {"type": "button", "action_id": "approve", "text": pt("Approve"), "value": "run-7"}
        await client.chat_postMessage(
            channel=body["channel_id"],
            text="Backup needs approval",
            blocks=[
                {"type": "section", "text": {"type": "mrkdwn", "text": "Approve run 7?"}},
                {
                    "type": "actions",
                    "block_id": "decide",
                    "elements": [button, {"type": "button", "action_id": "later", "text": pt("Later")}],
                },
            ],
        )


def _views(app: AsyncApp, obs: Observed) -> None:
    @app.view("wizard")
    async def submitted(ack: Any, view: dict[str, Any]) -> None:
        values = view["state"]["values"]
        obs.seen.append(("submission", values, view["private_metadata"], view["hash"], view["id"]))
        name = values["name"]["value"]["value"]
        answers: dict[str, dict[str, Any]] = {
            "bad": {"response_action": "errors", "errors": {"name": "Use letters only"}},
            "next": {"response_action": "update", "view": wizard_view("Step two", metadata="session-1/2")},
            "push": {"response_action": "push", "view": wizard_view("Pushed", clear_on_close=True)},
            "clear": {"response_action": "clear"},
            "broken": {"response_action": "update", "view": wizard_view("t" * 25)},
            "wrongkey": {"response_action": "errors", "errors": {"more": "not an input"}},
        }
        await ack(**answers.get(name, {}))

    @app.view_closed("wizard")
    async def closed(ack: Any, body: dict[str, Any]) -> None:
        await ack()
        obs.seen.append(("closed", body["is_cleared"], body["view"]["private_metadata"]))

    @app.options("repo_pick")
    async def repos(ack: Any, body: dict[str, Any]) -> None:
        query = body["value"]
        await ack(options=[opt(r) for r in ("alpha", "beta", "alphabet") if r.startswith(query)])

    @app.event("app_home_opened")
    async def home(event: dict[str, Any], client: AsyncWebClient) -> None:
        obs.seen.append(("home_opened", event["user"], event["tab"]))
        await client.views_publish(
            user_id=event["user"],
            view={
                "type": "home",
                "blocks": [
                    {"type": "actions", "elements": [{"type": "button", "action_id": "refresh", "text": pt("Refresh")}]}
                ],
            },
        )


def _actions(app: AsyncApp, obs: Observed) -> None:
    @app.action("add_step")
    async def add_step(ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        obs.seen.append(("add_step", body["actions"][0]["value"], body["container"]))
        try:
            await client.views_push(trigger_id=body["trigger_id"], view=wizard_view("Pushed"))
        except SlackApiError as exc:
            obs.seen.append(("push_error", exc.response["error"]))

    @app.action("mode")
    async def mode(ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        view = body["view"]
        expert = body["actions"][0]["selected_option"]["value"] == "expert"
        await client.views_update(view_id=view["id"], hash=view["hash"], view=wizard_view(extra=expert))

    @app.action("approve")
    async def approve(ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        obs.seen.append(("approve", body["container"], body["channel"]["id"], body["response_url"]))
        await client.chat_update(
            channel=body["channel"]["id"],
            ts=body["message"]["ts"],
            text=f"Approved by <@{body['user']['id']}>",
            blocks=[],
        )

    @app.action("later")
    async def later(ack: Any, respond: Any) -> None:
        await ack()
        await respond(text="Postponed until tonight", replace_original=True)

    @app.action("refresh")
    async def refresh(ack: Any, body: dict[str, Any]) -> None:
        await ack()
        obs.seen.append(("refresh", body["container"], body["view"]["type"]))


@pytest.fixture
async def http_stack() -> AsyncIterator[Stack]:
    obs = Observed()
    async with SlackEmulator() as emulator, serve_http(build_app(emulator, obs)) as url:
        driver = SlackDriver.over_http(emulator, url, SECRET)
        yield Stack(emulator, driver, obs, url)
        await driver.aclose()


@pytest.fixture
async def socket_stack() -> AsyncIterator[Stack]:
    obs = Observed()
    async with SlackEmulator() as emulator, serve_socket_mode(build_app(emulator, obs), emulator):
        async with SlackDriver.over_socket_mode(emulator) as driver:
            yield Stack(emulator, driver, obs)


@pytest.fixture(params=["http", "socket_mode"])
def stack(request: pytest.FixtureRequest) -> Stack:
    """The same tests over both transports."""
    return request.getfixturevalue("http_stack" if request.param == "http" else "socket_stack")


async def open_wizard(stack: Stack) -> dict[str, Any]:
    response = await stack.driver.slash_command("/backup", "start")
    assert response.status == 200
    return await stack.driver.wait_for_view(callback_id="wizard")


# -- slash command → modal, on both transports ----------------------------------------------------------------


async def test_slash_command_reaches_listener_that_opens_a_modal(stack: Stack) -> None:
    view = await open_wizard(stack)
    assert stack.app.of("command") == [("command", "start", "U0001", "C0001")]
    assert view["title"]["text"] == "Backup wizard" and view["private_metadata"] == "session-1"
    call = stack.emulator.calls_to("views.open")[0]
    assert call.ok and call.params["view"]["callback_id"] == "wizard"
    methods = [c.method for c in stack.emulator.calls if c.method != "apps.connections.open"]
    assert methods == ["auth.test", "views.open"]  # bolt authorizes before the listener runs


async def test_submission_carries_state_in_slacks_shapes(stack: Stack) -> None:
    view = await open_wizard(stack)
    driver = stack.driver
    await driver.set_value("value", "nightly", block_id="name")
    await driver.set_value("value", "postgres", block_id="kind")
    await driver.set_value("value", ["mon", "tue"], block_id="days")
    await driver.set_value("value", "02:30", block_id="when")
    assert [o["value"] for o in await driver.options("repo_pick", "alph")] == ["alpha", "alphabet"]
    await driver.set_value("repo_pick", "alphabet")
    response = await driver.submit()
    assert response.status == 200 and driver.current_view() is None
    ((_, values, metadata, view_hash, view_id),) = stack.app.of("submission")
    assert (metadata, view_hash, view_id) == ("session-1", view["hash"], view["id"])
    assert values["name"] == {"value": {"type": "plain_text_input", "value": "nightly"}}
    assert values["kind"]["value"] == {"type": "static_select", "selected_option": opt("postgres")}
    assert values["days"]["value"] == {"type": "checkboxes", "selected_options": [opt("mon"), opt("tue")]}
    assert values["when"]["value"] == {"type": "timepicker", "selected_time": "02:30"}
    assert values["repo"]["repo_pick"] == {"type": "external_select", "selected_option": opt("alphabet")}


async def test_errors_response_keeps_the_view_and_exposes_errors(stack: Stack) -> None:
    view = await open_wizard(stack)
    await stack.driver.set_value("value", "bad", block_id="name")
    await stack.driver.set_value("value", "files", block_id="kind")
    await stack.driver.submit()
    assert stack.driver.last_errors == {"name": "Use letters only"}
    (kept,) = stack.driver.view_stack()
    assert kept["id"] == view["id"] and kept["state"]["values"]["name"]["value"]["value"] == "bad"
    await stack.driver.set_value("value", "good", block_id="name")
    await stack.driver.submit()
    assert stack.driver.last_errors is None and stack.driver.current_view() is None


async def test_update_response_replaces_the_view_in_place(stack: Stack) -> None:
    view = await open_wizard(stack)
    await stack.driver.set_value("value", "next", block_id="name")
    await stack.driver.set_value("value", "files", block_id="kind")
    await stack.driver.submit()
    now = stack.driver.view_stack()
    assert [v["title"]["text"] for v in now] == ["Step two"]
    assert now[0]["id"] == view["id"] and now[0]["hash"] != view["hash"]
    assert now[0]["private_metadata"] == "session-1/2"


async def test_view_closed_reaches_the_app(stack: Stack) -> None:
    await open_wizard(stack)
    response = await stack.driver.close()
    assert response is not None and response.status == 200
    assert stack.app.of("closed") == [("closed", False, "session-1")]
    assert stack.driver.current_view() is None


async def test_required_inputs_block_submit_like_slacks_client(stack: Stack) -> None:
    await open_wizard(stack)
    with pytest.raises(SlackClientRefusal) as info:
        await stack.driver.submit()
    assert info.value.details == ["name", "kind"]
    assert stack.app.of("submission") == []


# -- view stack ----------------------------------------------------------------------------------------------


async def test_push_from_a_button_stops_at_three_views(http_stack: Stack) -> None:
    driver, emulator = http_stack.driver, http_stack.emulator
    root = await open_wizard(http_stack)
    for depth in (2, 3):
        await driver.click("add_step")
        await emulator.wait_for_call("views.push", count=depth - 1)
        assert len(driver.view_stack()) == depth
    await driver.click("add_step")
    await emulator.wait_for_call("views.push", count=3)
    await emulator.world.changes.wait_for(lambda: http_stack.app.of("push_error"), 2.0)
    assert http_stack.app.of("push_error") == [("push_error", "push_limit_reached")]
    assert http_stack.app.of("add_step")[0][1:] == ("extra", {"type": "view", "view_id": root["id"]})
    assert len(driver.view_stack()) == 3


async def test_response_action_push_then_close_and_clear(http_stack: Stack) -> None:
    driver = http_stack.driver
    await open_wizard(http_stack)
    await driver.set_value("value", "push", block_id="name")
    await driver.set_value("value", "files", block_id="kind")
    await driver.submit()
    assert [v["title"]["text"] for v in driver.view_stack()] == ["Backup wizard", "Pushed"]
    await driver.close()  # the pushed view has clear_on_close: everything goes
    assert driver.view_stack() == []
    assert http_stack.app.of("closed") == [("closed", True, "session-1")]


async def test_response_action_push_beyond_three_is_refused(http_stack: Stack) -> None:
    driver = http_stack.driver
    await open_wizard(http_stack)
    for depth in (2, 3):
        await driver.click("add_step")
        await http_stack.emulator.wait_for_call("views.push", count=depth - 1)
    await driver.set_value("value", "push", block_id="name")
    await driver.set_value("value", "files", block_id="kind")
    with pytest.raises(SlackClientRefusal, match="push_limit_reached"):
        await driver.submit()
    assert len(driver.view_stack()) == 3


async def test_clear_response_closes_all_views(http_stack: Stack) -> None:
    driver = http_stack.driver
    await open_wizard(http_stack)
    await driver.click("add_step")
    await http_stack.emulator.wait_for_call("views.push")
    await driver.set_value("value", "clear", block_id="name")
    await driver.set_value("value", "files", block_id="kind")
    await driver.submit()
    assert driver.view_stack() == []


async def test_invalid_views_and_errors_in_responses_are_refused(http_stack: Stack) -> None:
    driver = http_stack.driver
    await open_wizard(http_stack)
    await driver.set_value("value", "files", block_id="kind")
    await driver.set_value("value", "broken", block_id="name")
    with pytest.raises(SlackClientRefusal) as info:
        await driver.submit()
    assert any("[json-pointer:/view/title/text]" in d for d in info.value.details)
    await driver.set_value("value", "wrongkey", block_id="name")
    with pytest.raises(SlackClientRefusal, match="input block_id"):
        await driver.submit()


async def test_select_in_actions_block_dispatches_and_update_keeps_input(http_stack: Stack) -> None:
    driver = http_stack.driver
    view = await open_wizard(http_stack)
    await driver.set_value("value", "keep me", block_id="name")
    response = await driver.set_value("mode", "expert")
    assert response is not None and response.status == 200
    updated = await driver.wait_for_view()
    assert updated["id"] == view["id"] and updated["blocks"][-1]["block_id"] == "expert"
    assert updated["state"]["values"]["name"]["value"]["value"] == "keep me"
    update_call = http_stack.emulator.calls_to("views.update")[0]
    assert update_call.ok and update_call.params["hash"] == view["hash"]


# -- triggers through the app --------------------------------------------------------------------------------


async def test_listener_too_slow_for_its_trigger_gets_expired_trigger_id(http_stack: Stack) -> None:
    clock = ManualClock()
    http_stack.emulator.clock = clock
    await http_stack.driver.slash_command("/late")
    clock.advance(3.5)
    http_stack.app.gate.set()
    await http_stack.emulator.wait_for_call("views.open")
    await http_stack.emulator.world.changes.wait_for(lambda: http_stack.app.of("open_error"), 2.0)
    assert http_stack.app.of("open_error") == [("open_error", "expired_trigger_id")]
    assert http_stack.driver.current_view() is None


# -- HTTP specifics: signature, url_verification, ack deadline -----------------------------------------------


async def test_bad_signature_is_401_and_listener_does_not_run(http_stack: Stack) -> None:
    payload = {
        "command": "/backup",
        "text": "forged",
        "user_id": "U0001",
        "team_id": "T0001",
        "channel_id": "C0001",
        "trigger_id": http_stack.emulator.issue_trigger_id(),
    }
    body, content_type = encode("slash_commands", payload)
    transport = http_stack.driver.transport
    assert isinstance(transport, HttpTransport)
    forged = await transport.post_raw(body, content_type, signed_headers("not-the-secret", body))
    stale = await transport.post_raw(body, content_type, signed_headers(SECRET, body, timestamp=1_000_000))
    assert (forged.status, stale.status) == (401, 401)
    await asyncio.sleep(0.05)
    assert http_stack.app.seen == [] and http_stack.emulator.calls_to("views.open") == []
    genuine = await transport.post_raw(body, content_type, signed_headers(SECRET, body))
    assert genuine.status == 200


async def test_url_verification_challenge(http_stack: Stack) -> None:
    response = await http_stack.driver.url_verification("c-42")
    assert response.status == 200 and response.body == {"challenge": "c-42"}


async def test_ack_later_than_three_seconds_is_reported(http_stack: Stack) -> None:
    with pytest.raises(AckTimeoutError) as info:
        await http_stack.driver.slash_command("/slow")
    assert info.value.limit == 3.0


async def test_late_ack_can_be_flagged_instead(http_stack: Stack) -> None:
    relaxed = SlackDriver.over_http(http_stack.emulator, http_stack.url, SECRET, ack_limit=0.2, late_ok=True)
    async with relaxed:
        response = await relaxed.slash_command("/sleepy")
    assert response.status == 200 and response.late and response.elapsed > 0.2
    on_time = await http_stack.driver.slash_command("/sleepy")
    assert not on_time.late


# -- messages, home tab ---------------------------------------------------------------------------------------


async def test_message_button_click_and_update(stack: Stack) -> None:
    emulator, driver = stack.emulator, stack.driver
    await driver.slash_command("/status")
    assert [m["text"] for m in emulator.ephemerals("C0001", "U0001")] == ["Working on it"]
    posted = await emulator.wait_for_call("chat.postMessage")
    await driver.click("approve", value="run-7")
    await emulator.wait_for_call("chat.update")
    ((_, container, channel, response_url),) = stack.app.of("approve")
    assert container == {
        "type": "message",
        "message_ts": posted.response["ts"],
        "channel_id": "C0001",
        "is_ephemeral": False,
    }
    assert channel == "C0001" and response_url.startswith(emulator.base_url)
    shown = emulator.messages("C0001")
    assert [(m["text"], m["blocks"]) for m in shown] == [("Approved by <@U0001>", [])]


async def test_respond_through_response_url_replaces_the_message(stack: Stack) -> None:
    emulator = stack.emulator
    await stack.driver.slash_command("/status")
    await emulator.wait_for_call("chat.postMessage")
    await stack.driver.click("later")
    shown = await emulator.world.changes.wait_for(
        lambda: [m["text"] for m in emulator.messages()] if emulator.world.responses else None, 2.0
    )
    assert shown == ["Postponed until tonight"]
    assert emulator.world.responses[0]["body"]["replace_original"] is True


async def test_app_home_opened_and_home_button(stack: Stack) -> None:
    await stack.driver.open_home()
    await stack.emulator.wait_for_call("views.publish")
    home = stack.driver.home_view()
    assert home is not None and home["type"] == "home"
    assert stack.app.of("home_opened") == [("home_opened", "U0001", "home")]
    await stack.driver.click("refresh")
    await stack.emulator.world.changes.wait_for(lambda: stack.app.of("refresh"), 2.0)
    assert stack.app.of("refresh") == [("refresh", {"type": "view", "view_id": home["id"]}, "home")]


# -- Socket Mode specifics ------------------------------------------------------------------------------------


async def test_socket_mode_handler_got_hello_and_acks_envelopes(socket_stack: Stack) -> None:
    hub = socket_stack.emulator.socket
    assert hub.connects == 1 and socket_stack.emulator.calls_to("apps.connections.open")[0].ok
    await socket_stack.driver.slash_command("/backup", "via socket")
    acks = [m for m in hub.received if "envelope_id" in m]
    assert len(acks) == 1 and set(acks[0]) <= {"envelope_id", "payload"}


async def test_socket_mode_reconnects_after_disconnect(socket_stack: Stack) -> None:
    emulator = socket_stack.emulator
    await emulator.socket_disconnect()
    await emulator.world.changes.wait_for(lambda: emulator.socket.connects == 2 and emulator.socket.live(), 5.0)
    assert len(emulator.calls_to("apps.connections.open")) == 2
    await open_wizard(socket_stack)
    assert socket_stack.app.of("command")
