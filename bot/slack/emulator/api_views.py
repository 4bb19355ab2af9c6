"""views.* methods: open/push need a live trigger_id; update checks the hash; publish sets the home tab.

The view is validated before the trigger is exchanged, so an app that builds an invalid view gets the
``invalid_arguments`` answer with Slack-style messages and can see exactly which limit it broke.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import ApiError
from .views import validate
from .world import Ctx


def _view_param(ctx: Ctx) -> Any:
    view = ctx.json("view", "invalid_arguments")
    if view is None:
        raise ApiError("invalid_arguments", messages=["[ERROR] missing required field: view"])
    return view


def _exchange(ctx: Ctx) -> str:
    """Use the trigger (or interactivity pointer) and return the user it was issued for."""
    pointer = ctx.text("trigger_id") or ctx.text("interactivity_pointer")
    if pointer is None:
        raise ApiError("invalid_arguments", messages=["[ERROR] missing required field: trigger_id"])
    trigger = ctx.world.triggers.exchange(pointer, ctx.team_id, ctx.world.clock())
    return trigger.user_id


def views_open(ctx: Ctx) -> dict[str, Any]:
    """views.open."""
    view = validate(_view_param(ctx), "modal")
    user_id = _exchange(ctx)
    return {"view": ctx.world.views.open(ctx.owner(user_id), view).to_json()}


def views_push(ctx: Ctx) -> dict[str, Any]:
    """views.push: onto the trigger user's open modal, at most 3 deep."""
    view = validate(_view_param(ctx), "modal")
    user_id = _exchange(ctx)
    return {"view": ctx.world.views.push(ctx.owner(user_id), view).to_json()}


def views_update(ctx: Ctx) -> dict[str, Any]:
    """views.update by view_id or external_id, with optional hash."""
    record = ctx.world.views.update(
        _view_param(ctx),
        view_id=ctx.text("view_id"),
        external_id=ctx.text("external_id"),
        hash_=ctx.text("hash"),
        team_id=ctx.team_id,
    )
    return {"view": record.to_json()}


def views_publish(ctx: Ctx) -> dict[str, Any]:
    """views.publish: the home tab of ``user_id``."""
    user = ctx.world.registry.user(ctx.team_id, ctx.text("user_id", required=True))
    record = ctx.world.views.publish(ctx.owner(user.id), _view_param(ctx), ctx.text("hash"))
    return {"view": record.to_json()}


METHODS: dict[str, Callable[[Ctx], dict[str, Any]]] = {
    "views.open": views_open,
    "views.push": views_push,
    "views.update": views_update,
    "views.publish": views_publish,
}
