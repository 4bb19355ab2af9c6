"""The playground without a browser: its safety rules, its acts' guard, and the workspace snapshot it restores.

The browser-driven walk through the whole product is tests/test_playground_browser.py.
"""

from __future__ import annotations

import argparse
import base64

import aiohttp
import pytest

from bot.cli.playground import checked_options
from bot.config import ConfigError
from bot.playground.web import Page
from bot.playground.workspace import PEOPLE, restore, save, seeded_emulator
from bot.slack.emulator import DEFAULT_CHANNEL, DEFAULT_TEAM, SlackDriver
from bot.slack.emulator.views import Owner


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def options(**given: object) -> argparse.Namespace:
    return argparse.Namespace(**{"host": "127.0.0.1", "port": 8080, "password": None, **given})


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "example.org", "::"])
def test_a_non_loopback_address_needs_a_password(host: str) -> None:
    with pytest.raises(ConfigError, match="not a production surface"):
        checked_options(options(host=host))
    assert checked_options(options(host=host, password="pw")).password == "pw"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_needs_no_password(host: str) -> None:
    assert checked_options(options(host=host)).host == host


async def test_acts_need_the_page_header_and_json_and_a_known_person(unused_tcp_port: int) -> None:
    slack = seeded_emulator()
    await slack.start()
    driver = SlackDriver.over_http(slack, "http://127.0.0.1:9/slack/events", "s")
    page = Page(slack, lambda: driver)
    from aiohttp import web

    runner = web.AppRunner(page.app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
    url = f"http://127.0.0.1:{unused_tcp_port}"
    act = {"user": "U0001", "channel": DEFAULT_CHANNEL, "text": "/backup new"}
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{url}/api/command", data="x", headers={"Content-Type": "text/plain"}) as r:
                assert r.status == 403  # what a form on another site can send
            async with http.post(f"{url}/api/command", json=act) as r:
                assert r.status == 403  # no X-Playground header: only the page's script sends it
            async with http.post(f"{url}/api/command", json={**act, "user": "U0NOBODY"},
                                 headers={"X-Playground": "1"}) as r:  # fmt: skip
                assert r.status == 400
            async with http.get(f"{url}/events?user=U0NOBODY") as r:
                assert r.status == 400
    finally:
        await runner.cleanup()
        await driver.aclose()
        await slack.stop()


async def test_basic_auth_guards_everything(unused_tcp_port: int) -> None:
    from aiohttp import web

    slack = seeded_emulator()
    page = Page(slack, lambda: None)  # type: ignore[arg-type,return-value]
    runner = web.AppRunner(page.app(password="s3cret"))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
    url = f"http://127.0.0.1:{unused_tcp_port}/"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(url) as r:
                assert r.status == 401 and "Basic" in r.headers["WWW-Authenticate"]
            async with http.get(url, headers=basic("any", "wrong")) as r:
                assert r.status == 401
            async with http.get(url, headers=basic("any", "s3cret")) as r:
                assert r.status == 200 and "Backup Wizard playground" in await r.text()
    finally:
        await runner.cleanup()


def test_the_workspace_comes_back_after_a_restart(tmp_path) -> None:
    before = seeded_emulator()
    world = before.world
    message = {"type": "message", "ts": world.ids.ts(), "text": "<script>x</script>", "user": "U0BOT"}
    world.messages.add(DEFAULT_CHANNEL, message)
    dm, _ = world.registry.open_dm(DEFAULT_TEAM, "U0BOT", PEOPLE[0].id)
    view = {"type": "modal", "title": {"type": "plain_text", "text": "Wizard"},
            "submit": {"type": "plain_text", "text": "Next"}, "blocks": [
        {"type": "input", "block_id": "b", "label": {"type": "plain_text", "text": "Name"},
         "element": {"type": "plain_text_input", "action_id": "v"}}]}  # fmt: skip
    record = world.views.open(Owner(DEFAULT_TEAM, PEOPLE[0].id, "A0001", "B0001"), view)
    world.views.set_value(record, "b", "v", {"type": "plain_text_input", "value": "typed"})
    record.errors = {"b": "Too short"}
    save(before, tmp_path / "slack.json")

    after = seeded_emulator()
    assert restore(after, tmp_path / "slack.json")
    assert after.messages(DEFAULT_CHANNEL) == [message]
    assert dm.id in after.world.registry.channels
    top = after.world.views.top(DEFAULT_TEAM, PEOPLE[0].id)
    assert top is not None and top.id == record.id and top.errors == {"b": "Too short"}
    assert top.values["b"]["v"]["value"] == "typed"
    assert after.world.ids.next("V") != record.id  # new ids never collide with restored ones
    assert not restore(seeded_emulator(), tmp_path / "missing.json")
