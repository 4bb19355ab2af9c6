"""What a person sees in the emulated workspace, as JSON: saved by the playground and restored after a restart.

Slack keeps messages, open modals and home tabs while an app restarts; the playground runs the emulator in the
bot's process, so it writes this snapshot to its data directory and loads it on the next start, and the page
finds everything as it was. Kept: channels (DMs included), messages, ephemerals, views with their stacks, input
state and errors, and the id counters (so new ids never collide with restored ones). Not kept: trigger ids and
response URLs (short-lived on Slack too), uploaded file contents, recorded calls.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .messages import Ephemeral
from .registry import Channel
from .views import ViewRecord
from .world import World

VERSION = 1


def dump(world: World) -> dict[str, Any]:
    """Given the emulator's world, return its visible state as JSON-ready data."""
    views = world.views
    messages = world.messages
    return {
        "version": VERSION,
        "ids": dict(world.ids.counters),
        "dm_seq": world.registry._dm_seq,
        "channels": [dataclasses.asdict(c) for c in world.registry.channels.values()],
        "messages": {c: messages.in_channel(c) for c in messages.channels()},
        "ephemerals": [dataclasses.asdict(e) for e in messages.ephemerals],
        "views": [dataclasses.asdict(v) for v in views.views.values() if v.is_open],
        "stacks": [[team, user, ids] for (team, user), ids in views._stacks.items() if ids],
        "homes": [[team, user, view_id] for (team, user), view_id in views._homes.items()],
    }


def load(world: World, data: dict[str, Any]) -> None:
    """Given a world and a snapshot from :func:`dump`, restore the snapshot's state into it (a snapshot of another
    version is ignored: the workspace then starts empty)."""
    if not isinstance(data, dict) or data.get("version") != VERSION:
        return
    world.ids.counters.update({str(k): int(v) for k, v in data["ids"].items()})
    world.registry._dm_seq = max(world.registry._dm_seq, int(data["dm_seq"]))
    for raw in data["channels"]:
        channel = Channel(**raw)
        known = world.registry.channels.get(channel.id)
        if known is not None:  # seeded again at start: keep its members, add any who joined since
            known.members = list(dict.fromkeys([*known.members, *channel.members]))
        else:
            world.registry.channels[channel.id] = channel
    for channel_id, items in data["messages"].items():
        for message in items:
            world.messages.add(channel_id, message)
    world.messages.ephemerals.extend(Ephemeral(**e) for e in data["ephemerals"])
    views = world.views
    for raw in data["views"]:
        record = ViewRecord(**raw)
        views.views[record.id] = record
    views._stacks.update({(t, u): [v for v in ids if v in views.views] for t, u, ids in data["stacks"]})
    views._homes.update({(t, u): v for t, u, v in data["homes"] if v in views.views})
    views.version += 1
    world.changes.poke()
