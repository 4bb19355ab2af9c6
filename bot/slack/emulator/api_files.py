"""files.getUploadURLExternal + the upload URL + files.completeUploadExternal (what ``files_upload_v2`` uses).

The upload URL is served by the emulator itself, so the file's bytes really travel and tests can read them back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .api_chat import bot_message, resolve_channel
from .errors import ApiError
from .messages import StoredFile
from .world import Ctx


def get_upload_url(ctx: Ctx) -> dict[str, Any]:
    """files.getUploadURLExternal: a file id and where to send the bytes."""
    filename = ctx.text("filename", required=True)
    length = int(ctx.params.get("length") or 0)
    if length <= 0:
        raise ApiError("missing_argument")
    token = ctx.world.ids.token()
    stored = StoredFile(
        id=ctx.world.ids.next("F"),
        team_id=ctx.team_id,
        filename=str(filename),
        length=length,
        upload_token=token,
        user_id=ctx.installation.bot_user_id,
    )
    ctx.world.messages.files[stored.id] = stored
    return {"upload_url": f"{ctx.world.base_url}/upload/v1/{token}", "file_id": stored.id}


def complete_upload(ctx: Ctx) -> dict[str, Any]:
    """files.completeUploadExternal: finish uploads, optionally sharing them in a channel with a comment."""
    wanted = ctx.json("files", "invalid_arguments")
    if not isinstance(wanted, list) or not wanted:
        raise ApiError("invalid_arguments", messages=["[ERROR] missing required field: files"])
    files = []
    for item in wanted:
        stored = ctx.world.messages.files.get(str(item.get("id")))
        if stored is None or stored.team_id != ctx.team_id or stored.content is None:
            raise ApiError("file_not_found")
        stored.title = item.get("title") or stored.filename
        stored.completed = True
        files.append(stored)
    channel_ref = ctx.text("channel_id") or (ctx.text("channels") or "").split(",")[0] or None
    if channel_ref:
        channel = resolve_channel(ctx, channel_ref)
        for stored in files:
            stored.channel_id = channel.id
        content = {"text": ctx.text("initial_comment") or "", "files": [f.to_json() for f in files], "upload": True}
        ctx.world.messages.add(channel.id, bot_message(ctx, content, ctx.world.ids.ts()))
    return {"files": [{"id": f.id, "title": f.title} for f in files]}


METHODS: dict[str, Callable[[Ctx], dict[str, Any]]] = {
    "files.getUploadURLExternal": get_upload_url,
    "files.completeUploadExternal": complete_upload,
}
