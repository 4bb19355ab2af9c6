"""The bot's Slack app, driven through the project's Slack emulator exactly as Slack would drive it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import yaml

from bot.config import load_settings
from bot.slack import commands
from bot.slack.app import build_app, serve_http, start_socket_mode
from bot.slack.blocks import SUBCOMMANDS, help_blocks, home_view
from bot.slack.emulator import DEFAULT_APP_TOKEN, DEFAULT_BOT_TOKEN, SlackDriver, SlackEmulator
from bot.slack.emulator.limits import check_message_blocks, check_view
from storage.crypto import generate_key
from storage.models import Server, Workspace
from storage.tenancy import Tenant

SECRET = "test-signing-secret"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def slack() -> AsyncIterator[SlackEmulator]:
    async with SlackEmulator() as emulator:
        yield emulator


def settings_for(emulator: SlackEmulator, tmp_path: Path, **extra: str):
    values = {
        "SLACK_BOT_TOKEN": DEFAULT_BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": emulator.api_url,
        "BACKUPBOT_SECRET_KEYS": generate_key(),
        **extra,
    }
    return load_settings(tmp_path / "none.env", **values)


@pytest.fixture
async def http_driver(slack: SlackEmulator, sqlite_db: str, tmp_path: Path) -> AsyncIterator[SlackDriver]:
    app = build_app(settings_for(slack, tmp_path))
    runner = await serve_http(app, "127.0.0.1", 0)
    host, port = runner.addresses[0][:2]
    driver = SlackDriver.over_http(slack, f"http://{host}:{port}/slack/events", SECRET)
    try:
        yield driver
    finally:
        await driver.aclose()
        await runner.cleanup()


def _text(blocks: list[dict]) -> str:
    return json.dumps(blocks, ensure_ascii=False)


async def test_help_answers_with_what_works_and_what_does_not_yet(http_driver: SlackDriver) -> None:
    response = await http_driver.slash_command("/backup", "help")
    assert response.status == 200
    body = _text(response.json["blocks"])
    assert response.json["response_type"] == "ephemeral"
    assert "`/backup help`" in body and "BorgBackup" in body
    assert all(f"`{c.usage}`" in body for c in SUBCOMMANDS)  # every subcommand is listed
    coming = [c for c in SUBCOMMANDS if not c.available]
    # what does not work yet is said to be so, in one line of its own, and nothing else is
    assert ("Not available in this version yet" in body) == bool(coming)
    if coming:
        line = body[body.index("Not available in this version yet"):]
        assert all(f"`{c.usage}`" in line for c in coming)
        assert not any(f"`{c.usage}`" in line for c in SUBCOMMANDS if c.available)
    assert (await http_driver.slash_command("/backup")).json["blocks"] == response.json["blocks"]


@pytest.mark.parametrize(
    ("text", "note"),
    [("bogus stuff", "I don't know `/backup bogus`"), ("NeW?", "I don't know `/backup new?`")],
)
async def test_unknown_and_unavailable_subcommands_get_help(http_driver: SlackDriver, text: str, note: str) -> None:
    response = await http_driver.slash_command("/backup", text)
    blocks = response.json["blocks"]
    assert note in _text(blocks[:1])
    assert "BorgBackup" in _text(blocks)


async def test_bad_signature_is_refused_and_nothing_runs(slack: SlackEmulator, http_driver: SlackDriver) -> None:
    forged = SlackDriver.over_http(slack, http_driver.transport.url, "not-the-secret")
    try:
        response = await forged.slash_command("/backup", "help")
    finally:
        await forged.aclose()
    assert response.status == 401
    assert await Workspace.filter(team_id="T0001").count() == 0


async def test_home_tab_shows_this_workspace_only(slack: SlackEmulator, http_driver: SlackDriver) -> None:
    await Tenant("T0001").create(Server, name="a", host="10.0.0.1")
    await Tenant("T0001").create(Server, name="b", host="10.0.0.2")
    await Tenant("T0002").create(Server, name="other", host="10.0.0.3")
    await http_driver.open_home()
    publish = await slack.wait_for_call("views.publish")
    home = publish.params["view"]
    home = json.loads(home) if isinstance(home, str) else home
    assert "*2* server(s)" in _text(home["blocks"])
    assert await Workspace.filter(team_id="T0001").count() == 1
    await http_driver.click("home_show_help")
    await slack.wait_for_call("views.publish", count=2)
    assert "BorgBackup" in _text(slack.home_view("U0001", "T0001")["blocks"])


async def test_healthz(http_driver: SlackDriver) -> None:
    url = http_driver.transport.url.replace("/slack/events", "/healthz")
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200 and (await response.json()) == {"ok": True}


async def test_socket_mode(slack: SlackEmulator, sqlite_db: str, tmp_path: Path) -> None:
    settings = settings_for(slack, tmp_path, SLACK_APP_TOKEN=DEFAULT_APP_TOKEN)
    app = build_app(settings)
    handler = await start_socket_mode(app, settings)
    try:
        await slack.socket.wait_connected()
        driver = SlackDriver.over_socket_mode(slack)
        response = await driver.slash_command("/backup", "help")
        assert "`/backup help`" in _text(response.json["blocks"])
        await driver.aclose()
    finally:
        await handler.close_async()


def test_views_and_messages_are_within_slack_limits() -> None:
    assert check_message_blocks([b.to_dict() for b in help_blocks("note")]) == []
    assert check_view(home_view(servers=1, pools=2, chains=3).to_dict()) == []
    for word in ["", "help", "new", "zzz" * 40]:
        assert check_message_blocks(commands.answer_for(word)) == []


@pytest.mark.parametrize("name", ["slack-app.yml", "slack-app-http.yml"])
def test_manifests_declare_what_the_code_uses(name: str) -> None:
    manifest = yaml.safe_load((ROOT / "manifests" / name).read_text())
    features, settings = manifest["features"], manifest["settings"]
    assert [c["command"] for c in features["slash_commands"]] == [commands.COMMAND]
    usage = features["slash_commands"][0]["usage_hint"]
    assert all(c.name in usage for c in SUBCOMMANDS)
    assert features["app_home"]["home_tab_enabled"] is True
    assert "app_home_opened" in settings["event_subscriptions"]["bot_events"]
    assert settings["interactivity"]["is_enabled"] is True
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"commands", "chat:write", "users:read", "im:write"} <= scopes
    http = name.endswith("-http.yml")
    assert settings["socket_mode_enabled"] is not http
    if http:
        assert settings["interactivity"]["request_url"].endswith("/slack/events")
        assert features["slash_commands"][0]["url"].endswith("/slack/events")


def _bot_process(tmp_path: Path, slack: SlackEmulator, **env: str) -> subprocess.Popen:
    values = {
        "SLACK_BOT_TOKEN": DEFAULT_BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": slack.api_url,
        "BACKUPBOT_HTTP_HOST": "127.0.0.1",
        "BACKUPBOT_HTTP_PORT": str(env.pop("port", _free_port())),
        **env,
    }
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "BACKUPBOT_", "DATABASE_URL"))}
    subprocess.run([sys.executable, "-m", "bot.cli", "init"], cwd=tmp_path, env=base, check=True, capture_output=True)
    return subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "run"],
        cwd=tmp_path,
        env={**base, **values},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _wait_healthy(port: int, process: subprocess.Popen) -> None:
    """Poll /healthz until the bot process answers (or fail with what it printed)."""
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            try:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
    pytest.fail(f"bot did not start: {process.stderr.read() if process.poll() is not None else ''}")


async def test_run_serves_http_and_stops_cleanly(slack: SlackEmulator, tmp_path: Path) -> None:
    port = _free_port()
    process = _bot_process(tmp_path, slack, port=str(port))
    try:
        await _wait_healthy(port, process)
        driver = SlackDriver.over_http(slack, f"http://127.0.0.1:{port}/slack/events", SECRET)
        response = await driver.slash_command("/backup", "help")
        await driver.aclose()
        assert "`/backup help`" in _text(response.json["blocks"])
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.to_thread(process.communicate, timeout=30)
    assert process.returncode == 0, err
    assert "Traceback" not in err


class _Printed:
    """What a process prints (stdout and stderr), read in threads as it comes, so its pipes never fill."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.text = ""
        for pipe in (process.stdout, process.stderr):
            threading.Thread(target=self._read, args=(pipe,), daemon=True).start()

    def _read(self, pipe) -> None:
        for line in pipe:
            self.text += line

    async def wait_for(self, words: str, within: float = 30) -> None:
        for _ in range(int(within * 10)):
            if words in " ".join(self.text.split()):
                return
            await asyncio.sleep(0.1)
        pytest.fail(f"never printed {words!r}; printed: {self.text}")


async def _answers(port: int) -> bool:
    async with aiohttp.ClientSession() as session:
        try:
            async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False


async def test_a_second_run_on_one_database_waits_and_takes_over(slack: SlackEmulator, tmp_path: Path) -> None:
    """Two `backup-bot run` on one database would both schedule, both post every report, and the second would take
    the first one's running backups for a crash's leftovers. The second waits, serving nothing, and takes over at
    once when the first stops cleanly (released lease) or is killed on this machine (its process is gone); a bot
    whose lease another took stops with status 3."""
    ports = [_free_port() for _ in range(3)]
    bots: list[tuple[subprocess.Popen, _Printed]] = []

    def start(n: int, **env: str) -> tuple[subprocess.Popen, _Printed]:
        process = _bot_process(tmp_path, slack, port=str(ports[n]), PYTHONUNBUFFERED="1", COLUMNS="300", **env)
        bots.append((process, _Printed(process)))
        return bots[-1]

    try:
        first, _ = start(0)
        await _wait_healthy(ports[0], first)
        second, second_said = start(1)
        await second_said.wait_for(f"uses this database: host {socket.gethostname()} (pid {first.pid})")
        await second_said.wait_for("Waiting until it stops")
        await asyncio.sleep(1)
        assert not await _answers(ports[1])  # it serves nothing while it waits
        first.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(first.wait, 30) == 0
        await _wait_healthy(ports[1], second)  # a clean stop released the lease: taken over at once
        doctor = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "bot.cli", "doctor"], cwd=tmp_path, capture_output=True, text=True,
            env={**os.environ, "COLUMNS": "300"}, timeout=60,
        )  # fmt: skip
        assert f"`backup-bot run` on host {socket.gethostname()} (pid {second.pid}) holds the lease" in doctor.stdout

        third, third_said = start(2, BACKUPBOT_RUN_LEASE_SECONDS="3")
        await third_said.wait_for(f"(pid {second.pid})")
        second.kill()
        await asyncio.to_thread(second.wait, 30)
        await _wait_healthy(ports[2], third)  # long before the 60 s lease ran out: its holder is gone

        database = sqlite3.connect(tmp_path / "data" / "backup-bot.sqlite3")
        with database:
            database.execute("UPDATE lease SET holder = 'other-host:77:0123456789ab:cafe0001'")
        database.close()
        assert await asyncio.to_thread(third.wait, 30) == 3
        await third_said.wait_for("lost its lease on the database (host other-host (pid 77) holds it now)")
    finally:
        for process, _ in bots:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                await asyncio.to_thread(process.wait, 30)
    assert all("Traceback" not in printed.text for _, printed in bots)


async def test_run_with_a_refused_token_says_so(slack: SlackEmulator, tmp_path: Path) -> None:
    process = _bot_process(tmp_path, slack, SLACK_BOT_TOKEN="xoxb-wrong-token")
    _, err = await asyncio.to_thread(process.communicate, timeout=60)
    assert process.returncode == 2
    assert "SLACK_BOT_TOKEN was refused: Slack does not accept it" in " ".join(err.split())
    assert "Traceback" not in err and "xoxb-wrong-token" not in err


async def test_doctor_checks_slack_through_the_api(slack: SlackEmulator, tmp_path: Path) -> None:
    process = _bot_process(tmp_path, slack, SLACK_BOT_TOKEN="xoxb-wrong-token")  # init, and a failed run
    await asyncio.to_thread(process.communicate, timeout=60)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "BACKUPBOT_"))}
    env = {
        **base,
        "COLUMNS": "250",
        "SLACK_BOT_TOKEN": DEFAULT_BOT_TOKEN,
        "SLACK_API_URL": slack.api_url,
        "SLACK_APP_TOKEN": DEFAULT_APP_TOKEN,
    }
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "bot.cli", "doctor"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "accepted for workspace" in result.stdout
    assert "Socket Mode: the app token can open a connection" in result.stdout


async def test_socket_mode_run_serves_health_but_never_slack_events_over_http(
    slack: SlackEmulator, tmp_path: Path
) -> None:
    """In Socket Mode bolt skips signature checks, so its request URL must not exist over HTTP."""
    port = _free_port()
    process = _bot_process(tmp_path, slack, port=str(port), SLACK_APP_TOKEN=DEFAULT_APP_TOKEN)
    try:
        await _wait_healthy(port, process)
        async with aiohttp.ClientSession() as session:
            async with session.post(f"http://127.0.0.1:{port}/slack/events", data=b"command=/backup") as response:
                assert response.status == 404
        await slack.socket.wait_connected()
        driver = SlackDriver.over_socket_mode(slack)
        response = await driver.slash_command("/backup", "help")
        await driver.aclose()
        assert "`/backup help`" in _text(response.json["blocks"])
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.to_thread(process.communicate, timeout=30)
    assert process.returncode == 0, err
