"""The playground's Slack workspace: the emulator seeded with the people of the user switcher, kept across restarts.

Four people, so roles and approvals can be tried: *you* and *admin* are Slack workspace admins (the bot asks
``users.info`` like on Slack), *approver* decides approval requests, *member* holds no role until an admin
grants one. Everything the page shows (messages, modals, home tabs) is saved to ``playground/slack.json`` in the
data directory and restored at the next start, so the page resumes where it was after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from bot.envfile import write_text_atomic
from bot.slack.emulator import (
    DEFAULT_APP_TOKEN,
    DEFAULT_BOT_TOKEN,
    DEFAULT_BOT_USER,
    DEFAULT_CHANNEL,
    DEFAULT_TEAM,
    SlackEmulator,
    snapshot,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Person:
    """Someone the page can act as."""

    id: str
    name: str
    real_name: str
    role: str  # what the switcher says about them
    is_admin: bool = False


YOU = Person("U0001", "you", "You", "workspace admin", is_admin=True)
PEOPLE = (
    YOU,
    Person("U0ADMIN", "admin", "Ada Admin", "workspace admin", is_admin=True),
    Person("U0APPROVER", "approver", "Abe Approver", "approves new chains"),
    Person("U0MEMBER", "member", "Mo Member", "plain member"),
)
APPROVER, MEMBER = PEOPLE[2], PEOPLE[3]


def seeded_emulator() -> SlackEmulator:
    """Given nothing, return an emulator (not started) holding the playground's team, people and #general."""
    slack = SlackEmulator(seed=False)
    slack.add_team(DEFAULT_TEAM, "playground", "Playground")
    for person in PEOPLE:
        slack.add_user(person.id, name=person.name, real_name=person.real_name, is_admin=person.is_admin)
    slack.add_bot_token(DEFAULT_BOT_TOKEN)
    slack.add_app_token(DEFAULT_APP_TOKEN)
    slack.add_channel(DEFAULT_CHANNEL, "general", members=[*(p.id for p in PEOPLE), DEFAULT_BOT_USER])
    return slack


def restore(slack: SlackEmulator, path: Path) -> bool:
    """Given an emulator and the snapshot file, load what the page showed before; says whether there was one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return False
    except (OSError, ValueError) as exc:
        log.warning("the playground's saved workspace %s cannot be read (%s): starting empty", path, exc)
        return False
    snapshot.load(slack.world, data)
    return True


def save(slack: SlackEmulator, path: Path) -> None:
    """Write the emulator's visible state to ``path`` (atomically: a crash leaves the previous one)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_text_atomic(path, json.dumps(snapshot.dump(slack.world)))


async def keep_saved(slack: SlackEmulator, path: Path, settle: float = 0.3) -> None:
    """Save the workspace whenever it changed (at most every ``settle`` s) until cancelled, then once more."""
    seen = slack.world.changes.version
    try:
        while True:
            current = await slack.world.changes.after(seen, 30)
            if current != seen:
                await asyncio.sleep(settle)
                seen = slack.world.changes.version
                save(slack, path)
    finally:
        with contextlib.suppress(OSError):
            save(slack, path)
