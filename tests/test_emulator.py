"""The emulator's Web API, driven by slack_sdk's real AsyncWebClient: what Slack accepts, refuses and records."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler, AsyncServerErrorRetryHandler
from slack_sdk.http_retry.builtin_interval_calculators import FixedValueRetryIntervalCalculator
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.emulator import DEFAULT_BOT_TOKEN, DEFAULT_BOT_USER, ManualClock, SlackEmulator


@pytest.fixture
async def emulator() -> AsyncIterator[SlackEmulator]:
    async with SlackEmulator() as emu:
        yield emu


@pytest.fixture
def client(emulator: SlackEmulator) -> AsyncWebClient:
    return AsyncWebClient(token=DEFAULT_BOT_TOKEN, base_url=emulator.api_url)


def modal(title: str = "Backup", *, blocks: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    """A minimal valid modal."""
    body = blocks if blocks is not None else [{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}]
    return {"type": "modal", "title": {"type": "plain_text", "text": title}, "blocks": body, **extra}


async def refusal(call: Any) -> dict[str, Any]:
    """Await a Web API call that must fail; return Slack's error body."""
    with pytest.raises(SlackApiError) as info:
        await call
    return dict(info.value.response.data)


# -- authentication -------------------------------------------------------------------------------------------


async def test_auth_test_answers_like_slack_with_scopes_header(client: AsyncWebClient) -> None:
    answer = await client.auth_test()
    assert answer["team_id"] == "T0001" and answer["user_id"] == DEFAULT_BOT_USER and answer["bot_id"] == "B0001"
    assert "chat:write" in answer.headers["x-oauth-scopes"]


async def test_missing_and_bad_tokens_are_refused(emulator: SlackEmulator) -> None:
    assert (await refusal(AsyncWebClient(base_url=emulator.api_url).auth_test()))["error"] == "not_authed"
    bad = AsyncWebClient(token="xoxb-nope", base_url=emulator.api_url)
    assert (await refusal(bad.auth_test()))["error"] == "invalid_auth"
    app_token = AsyncWebClient(token="xapp-test", base_url=emulator.api_url)
    assert (await refusal(app_token.chat_postMessage(channel="C0001", text="x")))["error"] == "not_allowed_token_type"


async def test_token_in_form_body_is_accepted_and_unknown_method_refused(emulator: SlackEmulator) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(emulator.api_url + "auth.test", data={"token": DEFAULT_BOT_TOKEN}) as resp:
            assert (await resp.json())["ok"] is True
        async with session.post(emulator.api_url + "chat.postMessag", data={"token": DEFAULT_BOT_TOKEN}) as resp:
            assert (await resp.json())["error"] == "unknown_method"


async def test_json_body_token_is_ignored_as_on_slack(emulator: SlackEmulator) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(emulator.api_url + "auth.test", json={"token": DEFAULT_BOT_TOKEN}) as resp:
            assert (await resp.json())["error"] == "not_authed"


# -- trigger ids ----------------------------------------------------------------------------------------------


async def test_trigger_id_expires_after_three_seconds(emulator: SlackEmulator, client: AsyncWebClient) -> None:
    clock = ManualClock()
    emulator.clock = clock
    trigger = emulator.issue_trigger_id("U0001")
    clock.advance(3.01)
    assert (await refusal(client.views_open(trigger_id=trigger, view=modal())))["error"] == "expired_trigger_id"
    fresh = emulator.issue_trigger_id("U0001")
    clock.advance(2.9)
    assert (await client.views_open(trigger_id=fresh, view=modal()))["ok"]


async def test_trigger_id_is_single_use_and_must_be_known(emulator: SlackEmulator, client: AsyncWebClient) -> None:
    trigger = emulator.issue_trigger_id("U0001")
    await client.views_open(trigger_id=trigger, view=modal())
    assert (await refusal(client.views_open(trigger_id=trigger, view=modal())))["error"] == "exchanged_trigger_id"
    assert (await refusal(client.views_open(trigger_id="1.2.abc", view=modal())))["error"] == "invalid_trigger_id"


# -- Block Kit limits -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("view", "pointer"),
    [
        (modal("x" * 25), "/view/title/text"),
        (modal(blocks=[{"type": "divider"}] * 101), "/view/blocks"),
        (modal(private_metadata="m" * 3001), "/view/private_metadata"),
        (modal(callback_id="c" * 256), "/view/callback_id"),
        ({"type": "modal", "blocks": []}, "/view"),
        (modal(submit={"type": "plain_text", "text": "s" * 25}), "/view/submit/text"),
        (
            modal(blocks=[{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}]),
            "/view/blocks/0/text/text",
        ),
        (
            modal(blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": "s" * 3001}}]),
            "/view/blocks/0/text/text",
        ),
        (
            modal(blocks=[{"type": "divider", "block_id": "b"}, {"type": "divider", "block_id": "b"}]),
            "/view/blocks/1/block_id",
        ),
        (modal(blocks=[{"type": "divider", "block_id": "b" * 256}]), "/view/blocks/0/block_id"),
    ],
)
async def test_views_breaking_limits_are_refused_with_slack_messages(
    emulator: SlackEmulator, client: AsyncWebClient, view: dict[str, Any], pointer: str
) -> None:
    body = await refusal(client.views_open(trigger_id=emulator.issue_trigger_id(), view=view))
    assert body["error"] == "invalid_arguments"
    assert any(
        m.startswith("[ERROR] ") and m.endswith(f"[json-pointer:{pointer}]")
        for m in body["response_metadata"]["messages"]
    ), body
    assert emulator.current_view() is None


async def test_exact_limits_are_accepted(emulator: SlackEmulator, client: AsyncWebClient) -> None:
    view = modal("x" * 24, blocks=[{"type": "divider"}] * 100, private_metadata="m" * 3000)
    answer = await client.views_open(trigger_id=emulator.issue_trigger_id(), view=view)
    assert answer["view"]["private_metadata"] == "m" * 3000


async def test_select_options_limits(emulator: SlackEmulator, client: AsyncWebClient) -> None:
    def select(options: list[dict[str, Any]]) -> dict[str, Any]:
        element = {"type": "static_select", "action_id": "pick", "options": options}
        return modal(
            blocks=[
                {"type": "input", "block_id": "b", "label": {"type": "plain_text", "text": "L"}, "element": element}
            ],
            submit={"type": "plain_text", "text": "Go"},
        )

    def option(text: str, value: str = "v") -> dict[str, Any]:
        return {"text": {"type": "plain_text", "text": text}, "value": value}

    too_long = await refusal(client.views_open(trigger_id=emulator.issue_trigger_id(), view=select([option("o" * 76)])))
    assert "[json-pointer:/view/blocks/0/element/options/0/text/text]" in too_long["response_metadata"]["messages"][-1]
    many = [option(str(i), str(i)) for i in range(101)]
    too_many = await refusal(client.views_open(trigger_id=emulator.issue_trigger_id(), view=select(many)))
    assert too_many["response_metadata"]["messages"] == [
        "[ERROR] no more than 100 items allowed [json-pointer:/view/blocks/0/element/options]"
    ]


async def test_input_without_submit_and_input_in_message_are_refused(
    emulator: SlackEmulator, client: AsyncWebClient
) -> None:
    block = {
        "type": "input",
        "label": {"type": "plain_text", "text": "Name"},
        "element": {"type": "plain_text_input", "action_id": "name"},
    }
    no_submit = await refusal(client.views_open(trigger_id=emulator.issue_trigger_id(), view=modal(blocks=[block])))
    assert no_submit["response_metadata"]["messages"] == ["[ERROR] missing required field: submit [json-pointer:/view]"]
    in_message = await refusal(client.chat_postMessage(channel="C0001", text="t", blocks=[block]))
    assert in_message["error"] == "invalid_blocks"
    assert in_message["errors"] == ["unsupported type: input [json-pointer:/blocks/0/type]"]


async def test_message_block_count_limit(client: AsyncWebClient) -> None:
    body = await refusal(client.chat_postMessage(channel="C0001", text="t", blocks=[{"type": "divider"}] * 51))
    assert body["error"] == "invalid_blocks"
    await client.chat_postMessage(channel="C0001", text="t", blocks=[{"type": "divider"}] * 50)


# -- views ----------------------------------------------------------------------------------------------------


async def test_views_update_checks_hash_and_finds_by_external_id(
    emulator: SlackEmulator, client: AsyncWebClient
) -> None:
    opened = (await client.views_open(trigger_id=emulator.issue_trigger_id(), view=modal(external_id="w-1")))["view"]
    assert opened["id"].startswith("V") and opened["hash"]
    updated = (await client.views_update(view_id=opened["id"], hash=opened["hash"], view=modal("Two")))["view"]
    assert updated["id"] == opened["id"] and updated["hash"] != opened["hash"]
    stale = await refusal(client.views_update(view_id=opened["id"], hash=opened["hash"], view=modal("Three")))
    assert stale["error"] == "hash_conflict"
    assert [v["title"]["text"] for v in emulator.view_stack()] == ["Two"]
    await client.views_update(external_id="w-1", view=modal("Four", external_id="w-1"))
    assert [v["title"]["text"] for v in emulator.view_stack()] == ["Four"]
    assert (await refusal(client.views_update(view_id="V404", view=modal())))["error"] == "not_found"


async def test_modal_stack_is_at_most_three_views(emulator: SlackEmulator, client: AsyncWebClient) -> None:
    root = (await client.views_open(trigger_id=emulator.issue_trigger_id(), view=modal("1")))["view"]
    second = (await client.views_push(trigger_id=emulator.issue_trigger_id(), view=modal("2")))["view"]
    await client.views_push(trigger_id=emulator.issue_trigger_id(), view=modal("3"))
    body = await refusal(client.views_push(trigger_id=emulator.issue_trigger_id(), view=modal("4")))
    assert body["error"] == "push_limit_reached"
    assert [v["title"]["text"] for v in emulator.view_stack()] == ["1", "2", "3"]
    assert second["root_view_id"] == root["id"] and second["previous_view_id"] == root["id"]


async def test_views_publish_sets_home_per_user(emulator: SlackEmulator, client: AsyncWebClient) -> None:
    emulator.add_user("U0002", name="bob")
    home = {"type": "home", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "Alice"}}]}
    first = (await client.views_publish(user_id="U0001", view=home))["view"]
    again = (await client.views_publish(user_id="U0001", view=home, hash=first["hash"]))["view"]
    assert again["id"] == first["id"]
    assert (await refusal(client.views_publish(user_id="U0001", view=home, hash=first["hash"])))[
        "error"
    ] == "hash_conflict"
    assert emulator.home_view("U0002") is None
    assert (await refusal(client.views_publish(user_id="U0404", view=home)))["error"] == "user_not_found"
    too_big = {"type": "home", "blocks": [{"type": "divider"}] * 101}
    assert (await refusal(client.views_publish(user_id="U0002", view=too_big)))["error"] == "invalid_arguments"


# -- messages -------------------------------------------------------------------------------------------------


async def test_post_update_delete_are_recorded_and_reflected(emulator: SlackEmulator, client: AsyncWebClient) -> None:
    first = await client.chat_postMessage(channel="C0001", text="Backup started")
    second = await client.chat_postMessage(
        channel="C0001", text="second", blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": "*b*"}}]
    )
    await client.chat_update(channel="C0001", ts=first["ts"], text="Backup finished")
    await client.chat_delete(channel="C0001", ts=second["ts"])
    shown = emulator.messages("C0001")
    assert [m["text"] for m in shown] == ["Backup finished"]
    assert shown[0]["edited"]["user"] == DEFAULT_BOT_USER and shown[0]["bot_id"] == "B0001"
    assert [c.method for c in emulator.calls] == ["chat.postMessage", "chat.postMessage", "chat.update", "chat.delete"]
    assert emulator.calls_to("chat.postMessage")[1].params["blocks"][0]["type"] == "section"
    assert emulator.calls_to("chat.update")[0].response["ok"] is True
    assert (await refusal(client.chat_update(channel="C0001", ts=second["ts"], text="x")))[
        "error"
    ] == "message_not_found"


async def test_chat_update_keeps_blocks_when_omitted(emulator: SlackEmulator, client: AsyncWebClient) -> None:
    blocks = [{"type": "section", "block_id": "s", "text": {"type": "mrkdwn", "text": "x"}}]
    posted = await client.chat_postMessage(channel="C0001", text="t", blocks=blocks)
    await client.chat_update(channel="C0001", ts=posted["ts"], text="t2")
    assert emulator.messages()[0]["blocks"] == blocks


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
async def test_membership_rules_and_dm_by_user_id(emulator: SlackEmulator, client: AsyncWebClient) -> None:
    emulator.add_channel("C0002", "random", members=["U0001"])
    emulator.add_channel("G0001", "secret", members=["U0001"], is_private=True)
    assert (await refusal(client.chat_postMessage(channel="C0002", text="x")))["error"] == "not_in_channel"
    assert (await refusal(client.chat_postMessage(channel="G0001", text="x")))["error"] == "channel_not_found"
    assert (await refusal(client.chat_postMessage(channel="C0001")))["error"] == "no_text"
    dm = await client.chat_postMessage(channel="U0001", text="hello you")
    assert dm["channel"].startswith("D")
    opened = await client.conversations_open(users="U0001")
    assert opened["channel"]["id"] == dm["channel"] and opened["already_open"] is True
    assert emulator.messages(dm["channel"])[0]["text"] == "hello you"


async def test_ephemeral_only_to_channel_members(emulator: SlackEmulator, client: AsyncWebClient) -> None:
    emulator.add_user("U0002", name="bob")
    assert (await refusal(client.chat_postEphemeral(channel="C0001", user="U0002", text="x")))[
        "error"
    ] == "user_not_in_channel"
    await client.chat_postEphemeral(channel="C0001", user="U0001", text="only you")
    assert [m["text"] for m in emulator.ephemerals("C0001", "U0001")] == ["only you"]
    assert emulator.messages("C0001") == []


async def test_users_and_conversations(emulator: SlackEmulator, client: AsyncWebClient) -> None:
    emulator.add_user("U0003", name="carol", tz="America/New_York", tz_offset=-18000)
    user = (await client.users_info(user="U0003"))["user"]
    assert (user["name"], user["tz"], user["tz_offset"], user["is_admin"]) == (
        "carol",
        "America/New_York",
        -18000,
        False,
    )
    assert (await refusal(client.users_info(user="U0404")))["error"] == "user_not_found"
    channel = (await client.conversations_info(channel="C0001"))["channel"]
    assert channel["name"] == "general" and channel["is_member"] is True
    page = await client.conversations_members(channel="C0001", limit=1)
    rest = await client.conversations_members(channel="C0001", limit=1, cursor=page["response_metadata"]["next_cursor"])
    assert page["members"] + rest["members"] == ["U0001", DEFAULT_BOT_USER]
    assert rest["response_metadata"]["next_cursor"] == ""
    assert (await refusal(client.conversations_info(channel="C0404")))["error"] == "channel_not_found"


async def test_other_team_is_invisible(emulator: SlackEmulator) -> None:
    emulator.add_team("T0002", "other")
    emulator.add_bot_token("xoxb-other", "T0002", bot_user_id="U0BOT2", bot_id="B0002")
    emulator.add_user("U0201", "T0002", name="zed")
    other = AsyncWebClient(token="xoxb-other", base_url=emulator.api_url)
    assert (await refusal(other.users_info(user="U0001")))["error"] == "user_not_found"
    assert (await refusal(other.chat_postMessage(channel="C0001", text="x")))["error"] == "channel_not_found"
    trigger = emulator.issue_trigger_id("U0001", "T0001")
    assert (await refusal(other.views_open(trigger_id=trigger, view=modal())))["error"] == "invalid_trigger_id"


# -- files ----------------------------------------------------------------------------------------------------


async def test_files_upload_v2_goes_through_the_emulated_upload_url(
    emulator: SlackEmulator, client: AsyncWebClient
) -> None:
    answer = await client.files_upload_v2(
        channel="C0001",
        content=b"repokey-export",
        filename="key.txt",
        title="Repo key",
        initial_comment="Here is the key",
    )
    file_id = answer["files"][0]["id"] if "files" in answer.data else answer["file"]["id"]
    assert emulator.file_content(file_id) == b"repokey-export"
    shared = emulator.messages("C0001")[-1]
    assert shared["text"] == "Here is the key" and shared["files"][0]["id"] == file_id
    assert [c.method for c in emulator.calls] == ["files.getUploadURLExternal", "files.completeUploadExternal"]


async def test_complete_upload_of_unknown_file_is_refused(client: AsyncWebClient) -> None:
    body = await refusal(client.files_completeUploadExternal(files=[{"id": "F404", "title": "x"}]))
    assert body["error"] == "file_not_found"


# -- faults and retries ---------------------------------------------------------------------------------------


async def test_429_carries_retry_after_and_is_recorded(emulator: SlackEmulator, client: AsyncWebClient) -> None:
    emulator.inject("chat.postMessage", status=429, retry_after=7)
    body = await refusal(client.chat_postMessage(channel="C0001", text="x"))
    assert body["error"] == "ratelimited"
    call = emulator.calls_to("chat.postMessage")[0]
    assert call.status == 429 and emulator.messages() == []
    async with aiohttp.ClientSession() as session:
        emulator.inject("auth.test", status=429, retry_after=3)
        async with session.post(emulator.api_url + "auth.test", data={"token": DEFAULT_BOT_TOKEN}) as resp:
            assert resp.status == 429 and resp.headers["Retry-After"] == "3"


async def test_rate_limit_retry_handler_retries_through_429(emulator: SlackEmulator) -> None:
    client = AsyncWebClient(
        token=DEFAULT_BOT_TOKEN,
        base_url=emulator.api_url,
        retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)],
    )
    emulator.inject("chat.postMessage", status=429, retry_after=1, times=1)
    answer = await client.chat_postMessage(channel="C0001", text="after the limit")
    assert answer["ok"]
    assert [c.status for c in emulator.calls_to("chat.postMessage")] == [429, 200]
    assert [m["text"] for m in emulator.messages()] == ["after the limit"]


async def test_server_error_retry_handler_retries_through_5xx(emulator: SlackEmulator) -> None:
    handler = AsyncServerErrorRetryHandler(
        max_retry_count=2, interval_calculator=FixedValueRetryIntervalCalculator(0.05)
    )
    client = AsyncWebClient(token=DEFAULT_BOT_TOKEN, base_url=emulator.api_url, retry_handlers=[handler])
    emulator.inject("views.publish", status=500, times=1)
    emulator.inject("views.publish", status=503, times=1)
    home = {"type": "home", "blocks": []}
    assert (await client.views_publish(user_id="U0001", view=home))["ok"]
    assert [c.status for c in emulator.calls_to("views.publish")] == [500, 503, 200]


async def test_without_retry_handler_a_5xx_surfaces(emulator: SlackEmulator, client: AsyncWebClient) -> None:
    emulator.inject("*", status=500)
    assert (await refusal(client.auth_test()))["error"] == "internal_error"
    assert (await client.auth_test())["ok"]


# -- socket mode URL ------------------------------------------------------------------------------------------


async def test_connections_open_needs_an_app_token(emulator: SlackEmulator, client: AsyncWebClient) -> None:
    answer = await client.apps_connections_open(app_token="xapp-test")
    assert answer["url"].startswith(emulator.base_url.replace("http://", "ws://") + "/link/?ticket=")
    assert (await refusal(client.apps_connections_open(app_token=DEFAULT_BOT_TOKEN)))[
        "error"
    ] == "not_allowed_token_type"
    assert (await refusal(client.apps_connections_open(app_token="xapp-unknown")))["error"] == "invalid_auth"


async def test_socket_link_says_hello_and_tickets_are_single_use(
    emulator: SlackEmulator, client: AsyncWebClient
) -> None:
    url = (await client.apps_connections_open(app_token="xapp-test"))["url"]
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url) as ws:
            hello = await ws.receive_json(timeout=2)
            assert hello["type"] == "hello" and hello["connection_info"] == {"app_id": "A0001"}
            await emulator.socket_disconnect()
            bye = await ws.receive_json(timeout=2)
            assert (bye["type"], bye["reason"]) == ("disconnect", "refresh_requested")
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await session.ws_connect(url)
        assert info.value.status == 401
