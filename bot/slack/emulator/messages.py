"""Channel history as Slack would show it after the app's posts, edits and deletions, plus ephemerals and files.

Tests assert on what a user would see (``messages(channel)``), not only on which calls were made, so updates
and deletes are applied here exactly as the Web API methods describe them.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

from .blockkit import iter_elements
from .errors import ApiError


@dataclass
class StoredFile:
    """A file uploaded through files.getUploadURLExternal + upload URL + files.completeUploadExternal."""

    id: str
    team_id: str
    filename: str
    length: int
    upload_token: str
    user_id: str
    content: bytes | None = None
    title: str = ""
    channel_id: str | None = None
    completed: bool = False
    created: int = field(default_factory=lambda: int(time.time()))

    def to_json(self) -> dict[str, Any]:
        """The ``file`` object of files.* answers and file_share messages."""
        return {
            "id": self.id,
            "created": self.created,
            "timestamp": self.created,
            "name": self.filename,
            "title": self.title or self.filename,
            "mimetype": "application/octet-stream",
            "filetype": self.filename.rsplit(".", 1)[-1] if "." in self.filename else "binary",
            "user": self.user_id,
            "size": len(self.content or b""),
            "channels": [self.channel_id] if self.channel_id else [],
        }


@dataclass
class Ephemeral:
    """A message only ``user`` sees in ``channel``."""

    channel: str
    user: str
    message: dict[str, Any]


class MessageStore:
    """Messages per channel in ts order; edits and deletions applied in place."""

    def __init__(self) -> None:
        self._channels: dict[str, dict[str, dict[str, Any]]] = {}
        self.deleted: list[dict[str, Any]] = []
        self.ephemerals: list[Ephemeral] = []
        self.files: dict[str, StoredFile] = {}

    def add(self, channel: str, message: dict[str, Any]) -> dict[str, Any]:
        """Store a new message (its ``ts`` is the key)."""
        self._channels.setdefault(channel, {})[message["ts"]] = message
        return message

    def get(self, channel: str, ts: str | None) -> dict[str, Any]:
        """The message, or ``message_not_found``."""
        found = self._channels.get(channel, {}).get(ts or "")
        if found is None:
            raise ApiError("message_not_found")
        return found

    def update(self, channel: str, ts: str, changes: dict[str, Any], editor: str, edit_ts: str) -> dict[str, Any]:
        """Apply chat.update: given fields replace old ones; omitted blocks/attachments are kept."""
        message = self.get(channel, ts)
        message.update({k: copy.deepcopy(v) for k, v in changes.items() if v is not None})
        message["edited"] = {"user": editor, "ts": edit_ts}
        return message

    def delete(self, channel: str, ts: str) -> dict[str, Any]:
        """Apply chat.delete."""
        message = self.get(channel, ts)
        del self._channels[channel][ts]
        self.deleted.append(message)
        return message

    def in_channel(self, channel: str) -> list[dict[str, Any]]:
        """Current messages of a channel, oldest first."""
        items = self._channels.get(channel, {})
        return [copy.deepcopy(items[ts]) for ts in sorted(items, key=float)]

    def channels(self) -> list[str]:
        """Channels that have (or had) messages."""
        return list(self._channels)

    def ephemeral_at(self, channel: str, ts: str, user: str) -> dict[str, Any] | None:
        """The ephemeral message ``user`` sees in ``channel`` at ``ts`` (None if there is none)."""
        for item in self.ephemerals:
            if (item.channel, item.user, item.message.get("ts")) == (channel, user, ts):
                return item.message
        return None

    def find_ephemeral_with_action(self, action_id: str, user: str) -> Ephemeral | None:
        """The newest ephemeral message ``user`` sees whose blocks hold ``action_id``."""
        for item in reversed(self.ephemerals):
            blocks = item.message.get("blocks") or []
            if item.user == user and any(el.get("action_id") == action_id for _b, el in iter_elements(blocks)):
                return item
        return None

    def find_with_action(self, action_id: str) -> tuple[str, dict[str, Any]] | None:
        """The newest message anywhere whose blocks hold ``action_id`` (for driver clicks on messages)."""
        best: tuple[str, dict[str, Any]] | None = None
        for channel, items in self._channels.items():
            for message in items.values():
                if any(el.get("action_id") == action_id for _b, el in iter_elements(message.get("blocks") or [])):
                    if best is None or float(message["ts"]) > float(best[1]["ts"]):
                        best = (channel, message)
        return best
