"""Benchmark: time to ack for 100 concurrent users clicking through wizard steps (issue 5's goal: p99 ≤ 50 ms
and ≤ 1.5× a bare bolt app that only acks), signed requests against the HTTP mode, in the same run.

The apps run in their own process (as the bot would against Slack); the emulator and the driver, which
play Slack and the users, run in this one. Each simulated user opens the wizard (`/backup new`), submits
three steps and goes back once, with real signatures and real view state. The wizard runs its real engine
(state machine, session rows saved after every transition in SQLite, modal rendering with slack_sdk models)
with cheap steps, so what is measured is the bot's own overhead, not SSH. The bare app answers the same
requests with a constant view.

    .venv/bin/python bench/wizard_ack.py [--users 100]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import load_settings
from bot.flows.wizard.controller import WizardController
from bot.flows.wizard.steps.base import BaseStep, Errors, Field, Option, StepView, WizardContext
from bot.slack.app import build_app, serve_http
from bot.slack.emulator import DEFAULT_BOT_TOKEN, SlackDriver, SlackEmulator
from storage import db
from storage.crypto import Keyring, generate_key, install_keyring

SECRET = "bench-secret"


class Pick(BaseStep):
    def __init__(self, name: str) -> None:
        super().__init__(name=name, title=name.title())

    async def view(self, ctx: WizardContext) -> StepView:
        options = tuple(Option(v, v.upper()) for v in ("a", "b", "c"))
        return StepView(
            heading=f"*{self.name}*",
            fields=(Field(self.name, self.name, "select", options=options, initial=ctx.data.get(self.name)),),
        )

    async def submit(self, ctx: WizardContext, values: Mapping[str, Any]) -> Errors:
        ctx.data[self.name] = values.get(self.name)
        return {}


def steps():
    return [Pick("one"), Pick("two"), Pick("three"), Pick("four")]


async def user_session(driver: SlackDriver, user: str, samples: list[float]) -> None:
    samples.append((await driver.slash_command("/backup", "new", user=user)).elapsed)
    await driver.wait_for_view(user=user, callback_id="wizard", within=30)
    for name in ("one", "two", "three"):
        await driver.set_value("v", "a", block_id=name, user=user)
        samples.append((await driver.submit(user=user)).elapsed)
    samples.append((await driver.click("wizard_back", user=user)).elapsed)


async def measure(slack: SlackEmulator, url: str, users: int, prefix: str) -> list[float]:
    driver = SlackDriver.over_http(slack, url, SECRET, late_ok=True)
    samples: list[float] = []
    try:
        await asyncio.gather(*(user_session(driver, f"{prefix}{i:04d}", samples) for i in range(users)))
        await asyncio.sleep(1)  # let listeners that run after their ack (views.update on Back) finish
    finally:
        await driver.aclose()
    return samples


async def serve(kind: str, api_url: str, port: int) -> None:
    """Child process: serve one app on ``port`` until killed (the bot does not share a CPU loop with the
    emulator and the driver, as it would not with Slack)."""
    install_keyring(Keyring([generate_key()]))
    workdir = Path(tempfile.mkdtemp(prefix="bench-wizard-"))
    async with db.database(f"sqlite://{workdir / 'bot.sqlite3'}"):
        if kind == "bare":
            app = bare_app(api_url)
        else:
            settings = load_settings(workdir / "none.env", SLACK_BOT_TOKEN=DEFAULT_BOT_TOKEN,
                                     SLACK_SIGNING_SECRET=SECRET, SLACK_API_URL=api_url,
                                     BACKUPBOT_SECRET_KEYS=generate_key())  # fmt: skip
            app = build_app(settings, wizard=WizardController(steps, services=None))
        await serve_http(app, "127.0.0.1", port)
        print("ready", flush=True)
        await asyncio.Event().wait()


async def child(kind: str, api_url: str) -> tuple[asyncio.subprocess.Process, str]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(sys.executable, __file__, "--serve", kind, "--api-url", api_url,
                                                "--port", str(port), stdout=asyncio.subprocess.PIPE)  # fmt: skip
    assert (await proc.stdout.readline()).strip() == b"ready"
    return proc, f"http://127.0.0.1:{port}/slack/events"


BARE_VIEW = {
    "type": "modal",
    "callback_id": "wizard",
    "title": {"type": "plain_text", "text": "Bare"},
    "submit": {"type": "plain_text", "text": "Next"},
    "blocks": [
        {
            "type": "input",
            "optional": True,
            "block_id": n,
            "label": {"type": "plain_text", "text": n},
            "element": {"type": "static_select", "action_id": "v",
                        "options": [{"text": {"type": "plain_text", "text": "A"}, "value": "a"}]},
        }
        for n in ("one", "two", "three")
    ]
    + [{"type": "actions", "elements": [{"type": "button", "action_id": "wizard_back",
                                         "text": {"type": "plain_text", "text": "Back"}}]}],
}  # fmt: skip


def bare_app(api_url: str) -> AsyncApp:
    """Acks everything with a constant view: the floor any bolt app pays for the same requests."""
    app = AsyncApp(client=AsyncWebClient(token=DEFAULT_BOT_TOKEN, base_url=api_url), signing_secret=SECRET)

    @app.command("/backup")
    async def command(ack, body, client):
        await ack()
        await client.views_open(trigger_id=body["trigger_id"], view=BARE_VIEW)

    @app.view("wizard")
    async def submitted(ack):
        await ack(response_action="update", view=BARE_VIEW)

    @app.action("wizard_back")
    async def back(ack):
        await ack()

    return app


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] * 1000


async def main(users: int) -> None:
    async with SlackEmulator() as slack:
        for prefix in ("UA", "UB"):  # separate people per app, so no modal is left open from the other run
            for i in range(users):
                slack.add_user(f"{prefix}{i:04d}", "T0001", name=f"bench-{prefix}{i}")
        results = {}
        for kind, prefix in (("bare", "UA"), ("wizard", "UB")):
            proc, url = await child(kind, slack.api_url)
            try:
                results[kind] = await measure(slack, url, users, prefix)
            finally:
                proc.kill()
                await proc.wait()
    bare, ours = results["bare"], results["wizard"]
    for name, samples in (("bare bolt app", bare), ("wizard", ours)):
        print(
            f"{name:14s} n={len(samples)} p50 {pct(samples, 50):6.1f} ms  p99 {pct(samples, 99):6.1f} ms  "
            f"max {max(samples) * 1000:6.1f} ms"
        )
    print(f"p99 ratio wizard/bare: {pct(ours, 99) / pct(bare, 99):.2f}x (goal p99 <= 50 ms and <= 1.5x)")
    print(f"median ratio: {statistics.median(ours) / statistics.median(bare):.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--serve", choices=("bare", "wizard"), help=argparse.SUPPRESS)
    parser.add_argument("--api-url", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    asyncio.run(serve(args.serve, args.api_url, args.port) if args.serve else main(args.users))
