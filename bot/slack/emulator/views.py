"""Views as Slack keeps them: ids, hashes, per-user modal stacks (≤ 3), home tabs and the user's input state.

The app only ever sees views through the Web API and payloads; the emulator is the one place that knows which
view is on top, what the user typed into it and which hash is current. Both the Web API methods and the
driver's application of ``response_action`` go through :class:`ViewStore`, so the two paths cannot disagree.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from . import blockkit
from .errors import ApiError
from .ids import IdFactory
from .limits import check_view, view_too_large

MAX_STACK = 3
Values = dict[str, dict[str, dict[str, Any]]]


@dataclass
class ViewRecord:
    """One view and everything Slack stores about it."""

    id: str
    team_id: str
    user_id: str
    app_id: str
    bot_id: str
    definition: dict[str, Any]
    hash: str
    values: Values = field(default_factory=dict)
    root_view_id: str | None = None
    previous_view_id: str | None = None
    is_open: bool = True
    errors: dict[str, str] = field(default_factory=dict)  # shown under inputs after response_action=errors

    @property
    def kind(self) -> str:
        """``modal`` or ``home``."""
        return str(self.definition.get("type"))

    @property
    def blocks(self) -> list[dict[str, Any]]:
        """The stored blocks, with Slack-assigned ids filled in."""
        return list(self.definition.get("blocks") or [])

    def to_json(self) -> dict[str, Any]:
        """The ``view`` object as Slack returns it from views.* and puts it in payloads."""
        d = self.definition
        out: dict[str, Any] = {
            "id": self.id,
            "team_id": self.team_id,
            "type": self.kind,
            "blocks": copy.deepcopy(self.blocks),
            "private_metadata": d.get("private_metadata", ""),
            "callback_id": d.get("callback_id", ""),
            "state": {"values": copy.deepcopy(self.values)},
            "hash": self.hash,
            "title": copy.deepcopy(d.get("title")),
            "clear_on_close": bool(d.get("clear_on_close", False)),
            "notify_on_close": bool(d.get("notify_on_close", False)),
            "close": copy.deepcopy(d.get("close")),
            "submit": copy.deepcopy(d.get("submit")),
            "previous_view_id": self.previous_view_id,
            "root_view_id": self.root_view_id,
            "app_id": self.app_id,
            "external_id": d.get("external_id", ""),
            "app_installed_team_id": self.team_id,
            "bot_id": self.bot_id,
        }
        if self.kind == "home":
            for name in ("close", "submit", "clear_on_close", "notify_on_close", "previous_view_id"):
                out.pop(name)
        return out


@dataclass(frozen=True)
class Owner:
    """Who a view belongs to: the installation (app, bot) and the user looking at it."""

    team_id: str
    user_id: str
    app_id: str
    bot_id: str


def validate(view: Any, kind: str) -> dict[str, Any]:
    """Refuse a view the way Slack does (``invalid_arguments`` with messages, or ``view_too_large``)."""
    if isinstance(view, dict) and view.get("type") not in (None, kind):
        raise ApiError("invalid_arguments", messages=[f"[ERROR] must be {kind} [json-pointer:/view/type]"])
    if view_too_large(view):
        raise ApiError("view_too_large")
    problems = check_view(view)
    if problems or not isinstance(view, dict):
        raise ApiError("invalid_arguments", messages=problems)
    return view


class ViewStore:
    """All views of all users, with modal stacks and home tabs."""

    def __init__(self, ids: IdFactory) -> None:
        self._ids = ids
        self.views: dict[str, ViewRecord] = {}
        self._stacks: dict[tuple[str, str], list[str]] = {}
        self._homes: dict[tuple[str, str], str] = {}
        self.version = 0

    def _new(self, owner: Owner, view: dict[str, Any]) -> ViewRecord:
        self._check_external_id(owner.team_id, view.get("external_id"), None)
        definition = copy.deepcopy(view)
        definition["blocks"] = blockkit.fill_missing_ids(list(view.get("blocks") or []), self._ids.short)
        record = ViewRecord(
            id=self._ids.next("V"),
            team_id=owner.team_id,
            user_id=owner.user_id,
            app_id=owner.app_id,
            bot_id=owner.bot_id,
            definition=definition,
            hash=self._ids.view_hash(),
            values=blockkit.initial_values(definition["blocks"]),
        )
        self.views[record.id] = record
        self.version += 1
        return record

    def _check_external_id(self, team_id: str, external_id: Any, current: str | None) -> None:
        if not external_id:
            return
        for other in self.views.values():
            same = other.team_id == team_id and other.definition.get("external_id") == external_id
            if same and other.id != current and other.is_open:
                raise ApiError("duplicate_external_id")

    def open(self, owner: Owner, view: Any) -> ViewRecord:
        """views.open: a new modal replaces whatever stack the user had."""
        validate(view, "modal")
        for old in self.stack(owner.team_id, owner.user_id):
            old.is_open = False
        record = self._new(owner, view)
        record.root_view_id = record.id
        self._stacks[(owner.team_id, owner.user_id)] = [record.id]
        return record

    def push(self, owner: Owner, view: Any) -> ViewRecord:
        """views.push / response_action push: onto the open modal, at most 3 deep."""
        validate(view, "modal")
        stack = self._stacks.get((owner.team_id, owner.user_id)) or []
        if not stack:
            raise ApiError("not_found")
        if len(stack) >= MAX_STACK:
            raise ApiError("push_limit_reached")
        record = self._new(owner, view)
        record.root_view_id, record.previous_view_id = stack[0], stack[-1]
        stack.append(record.id)
        return record

    def update(
        self, view: Any, *, view_id: str | None, external_id: str | None, hash_: str | None, team_id: str
    ) -> ViewRecord:
        """views.update by id or external_id; a stale ``hash`` is a ``hash_conflict``."""
        record = self.find(team_id, view_id=view_id, external_id=external_id)
        validate(view, record.kind)
        return self.replace(record, view, hash_)

    def replace(self, record: ViewRecord, view: dict[str, Any], hash_: str | None) -> ViewRecord:
        """Swap a view's content in place (same id, new hash, user input carried over)."""
        if hash_ and hash_ != record.hash:
            raise ApiError("hash_conflict")
        self._check_external_id(record.team_id, view.get("external_id"), record.id)
        definition = copy.deepcopy(view)
        definition["blocks"] = blockkit.fill_missing_ids(list(view.get("blocks") or []), self._ids.short)
        if "external_id" not in definition and record.definition.get("external_id"):
            definition["external_id"] = record.definition["external_id"]  # the view keeps its external id
        record.definition = definition
        record.values = blockkit.carry_over(record.values, definition["blocks"])
        record.errors = {}
        record.hash = self._ids.view_hash()
        self.version += 1
        return record

    def publish(self, owner: Owner, view: Any, hash_: str | None) -> ViewRecord:
        """views.publish: the user's home tab, created once then replaced in place."""
        validate(view, "home")
        current = self._homes.get((owner.team_id, owner.user_id))
        if current is not None:
            return self.replace(self.views[current], view, hash_)
        record = self._new(owner, view)
        self._homes[(owner.team_id, owner.user_id)] = record.id
        return record

    def find(self, team_id: str, *, view_id: str | None = None, external_id: str | None = None) -> ViewRecord:
        """An open view of this team by id or external_id, else ``not_found``."""
        for record in self.views.values():
            match = record.id == view_id if view_id else record.definition.get("external_id") == external_id
            if match and record.team_id == team_id and record.is_open and (view_id or external_id):
                return record
        raise ApiError("not_found")

    def stack(self, team_id: str, user_id: str) -> list[ViewRecord]:
        """The user's modal stack, bottom first."""
        return [self.views[v] for v in self._stacks.get((team_id, user_id), [])]

    def top(self, team_id: str, user_id: str) -> ViewRecord | None:
        """The modal view the user currently sees."""
        stack = self.stack(team_id, user_id)
        return stack[-1] if stack else None

    def home(self, team_id: str, user_id: str) -> ViewRecord | None:
        """The user's published home tab."""
        view_id = self._homes.get((team_id, user_id))
        return self.views[view_id] if view_id else None

    def pop(self, team_id: str, user_id: str) -> ViewRecord | None:
        """Close the top view (the one before it becomes visible again)."""
        stack = self._stacks.get((team_id, user_id)) or []
        if not stack:
            return None
        record = self.views[stack.pop()]
        record.is_open = False
        self.version += 1
        return record

    def clear(self, team_id: str, user_id: str) -> list[ViewRecord]:
        """Close every view of the user's modal."""
        closed = []
        while (record := self.pop(team_id, user_id)) is not None:
            closed.append(record)
        return closed

    def set_value(self, record: ViewRecord, block_id: str, action_id: str, state: dict[str, Any]) -> None:
        """Record what the user entered (Slack keeps it with the view, not the app)."""
        record.values.setdefault(block_id, {})[action_id] = state
        self.version += 1
