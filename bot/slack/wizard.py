"""Slack listeners of the wizard: open, submit, back, step buttons, external-select options, close.

Fast steps answer in the ack (``response_action=update`` or ``errors``) and save right after it (one database
read before the answer, no write); slow steps (SSH, probes, the test backup) ack at once with a "working…" view
and finish with ``views.update``; buttons ack first and do everything after. Every screen replaces the
current modal (never a push), so the modal stack stays one deep. Expired or foreign sessions get a modal
that says what to do instead of a stack trace.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.flows.wizard.controller import Screen, WizardController
from bot.flows.wizard.steps.base import StepView
from bot.flows.wizard.store import SessionGone, StaleSession
from bot.slack.actors import SlackDirectory, directory_of
from bot.slack.wizard_render import ACT_PREFIX, BACK, CALLBACK_ID, modal, step_of, values_of, working

log = logging.getLogger(__name__)
_background: set[asyncio.Task] = set()


def _gone(message: str) -> dict[str, Any]:
    return modal(Screen("-", "done", "Backup wizard", 0, 0, StepView(heading=message)))


async def user_tz(directory: SlackDirectory, user_id: str) -> str:
    """The user's time zone from ``users.info`` (the directory remembers the answer: the wizard's first screen asks
    the same user about admin rights right after)."""
    user = await directory.user(user_id)
    return str((user or {}).get("tz") or "UTC")


async def open_wizard(controller: WizardController, client: AsyncWebClient, context: AsyncBoltContext,
                      trigger_id: str, user_id: str, channel_id: str | None, prefill=None) -> None:  # fmt: skip
    """Open a new wizard (trigger_id is valid 3 s: the first screen is built before anything slow)."""
    tz_task = asyncio.create_task(user_tz(directory_of(context, client), user_id))
    try:
        tz = await asyncio.wait_for(asyncio.shield(tz_task), 1.0)
    except TimeoutError:
        tz = "UTC"
    screen = await controller.start(context["tenant"], user_id, channel_id, user_tz=tz, prefill=prefill)
    await open_or_explain(client, trigger_id, modal(screen), user_id, channel_id)


async def open_or_explain(client: AsyncWebClient, trigger_id: str, view: dict, user_id: str,
                          channel_id: str | None) -> None:  # fmt: skip
    """views.open; when Slack's 3-second trigger window was missed, tell the person how to continue."""
    try:
        await client.views_open(trigger_id=trigger_id, view=view)
    except SlackApiError as exc:
        if exc.response.get("error") not in ("expired_trigger_id", "exchanged_trigger_id", "invalid_trigger_id"):
            raise
        if channel_id:
            await client.chat_postEphemeral(
                channel=channel_id, user=user_id,
                text="Slack did not let me open the wizard in time (it allows 3 seconds). Nothing is lost: "
                     "type `/backup resume` to continue where you are.",
            )  # fmt: skip


def _spawn(coro) -> None:
    task = asyncio.create_task(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)


class Progress:
    """Live "working…" text for slow steps: steps report ``(session_id, text)`` and the modal is updated in
    order; the final screen waits for pending updates so it always lands last."""

    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client
        self.views: dict[str, tuple[str, str]] = {}  # session id → (view id, step title)
        self.pending: dict[str, list[asyncio.Task]] = {}

    def __call__(self, session_id: str, text: str) -> None:
        if session_id in self.views:
            view_id, title = self.views[session_id]
            task = asyncio.create_task(self.client.views_update(view_id=view_id, view=working(title, text[:2000])))
            self.pending.setdefault(session_id, []).append(task)

    async def done(self, session_id: str) -> None:
        self.views.pop(session_id, None)
        await asyncio.gather(*self.pending.pop(session_id, []), return_exceptions=True)


ACK_SETTLE = 1.0  # seconds: Slack must have applied the "working…" ack before our views.update lands


async def _finish_slow(controller: WizardController, client: AsyncWebClient, tenant, user_id: str, session_id: str,
                       values: dict, shown: str | None, view_id: str, progress: Progress) -> None:  # fmt: skip
    """The slow half of a submit. When the work is quicker than the ack's round trip (an input error found
    before any SSH), the update waits a moment: otherwise Slack could apply our final view first and then
    the "working…" ack over it, leaving the person looking at "working…" forever."""
    started = asyncio.get_running_loop().time()
    try:
        screen = await controller.submit(tenant, user_id, session_id, values, shown=shown)
        screen.slow = True  # errors are shown in the view: response_action=errors is no longer possible
        view = modal(screen)
    except (SessionGone, StaleSession) as exc:
        view = _gone(str(exc))
    except Exception:
        log.exception("wizard step failed")
        view = _gone("Something went wrong on the bot's side; your answers are saved. Try `/backup resume`.")
    await progress.done(session_id)
    await asyncio.sleep(max(0.0, ACK_SETTLE - (asyncio.get_running_loop().time() - started)))
    await client.views_update(view_id=view_id, view=view)


async def _commit(screen: Screen, client: AsyncWebClient, view_id: str) -> None:
    """Save what a fast submit just answered with. Nothing can reach the session before this write: a later click
    needs Slack to have shown the answer, and the database serves requests in order. When the save is refused
    (someone saved the session in between: a double click, a second window) or fails, the modal says so, as the
    answer itself would have; the update waits for Slack to have applied the answer (ACK_SETTLE), so it lands last."""
    assert screen.commit is not None
    try:
        await screen.commit()
        return
    except StaleSession as exc:
        view = _gone(str(exc))
    except Exception:
        log.exception("saving a wizard step failed")
        view = _gone("Could not save this step on the bot's side. Type `/backup resume` to go on from the last "
                     "saved step.")  # fmt: skip
    await asyncio.sleep(ACK_SETTLE)
    await client.views_update(view_id=view_id, view=view)


def register(app: AsyncApp, controller: WizardController) -> None:
    progress = Progress(app.client)
    extra = getattr(controller.services, "extra", None)
    if isinstance(extra, dict):
        extra["on_progress"] = progress

    @app.view(CALLBACK_ID)
    async def submitted(ack: AsyncAck, body: dict, view: dict, client: AsyncWebClient, context: AsyncBoltContext):
        """One database read and, for a fast step, its save before the answer: the next screen is shown only once
        the answer is stored, so a crash right after the ack loses nothing (a slow step answers "working…" and does
        everything after). ``save_later`` would answer before saving; it is not used here for that reason."""
        tenant, user_id, session_id = context["tenant"], body["user"]["id"], view["private_metadata"]
        values, shown = values_of(view), step_of(view)
        try:
            screen = await controller.submit(tenant, user_id, session_id, values, defer_slow=True, shown=shown)
            if screen.deferred:  # a slow step: answer now, work in the background, then views.update
                await ack(response_action="update", view=working(screen.title, "working on it…"))
                progress.views[session_id] = (view["id"], screen.title)
                _spawn(_finish_slow(controller, client, tenant, user_id, session_id, values, shown, view["id"],
                                    progress))  # fmt: skip
                return
        except (SessionGone, StaleSession) as exc:
            await ack(response_action="update", view=_gone(str(exc)))
            return
        if screen.errors:
            await ack(response_action="errors", errors={k: v[:150] for k, v in screen.errors.items()})
        else:
            await ack(response_action="update", view=modal(screen))
        if screen.commit is not None:
            await _commit(screen, client, view["id"])

    @app.view_closed(CALLBACK_ID)
    async def closed(ack: AsyncAck) -> None:
        await ack()  # the session stays: `/backup resume` reopens it at the same step

    @app.action(BACK)
    async def back(ack: AsyncAck, body: dict, client: AsyncWebClient, context: AsyncBoltContext) -> None:
        await ack()
        await _update(client, body, lambda t, u, s: controller.back(t, u, s), context)

    @app.action({"action_id": re.compile("^" + re.escape(ACT_PREFIX))})
    async def act(ack: AsyncAck, body: dict, action: dict, client: AsyncWebClient, context: AsyncBoltContext):
        """For a slow step the modal first says "working…", so the person cannot submit a screen that is about to
        change (and no stale answer races the button)."""
        await ack()
        name, view_id = action["action_id"].removeprefix(ACT_PREFIX), body["view"]["id"]

        async def show_working(title: str) -> None:
            await client.views_update(view_id=view_id, view=working(title, "working on it…"))

        value, form = action.get("value", ""), values_of(body["view"])  # form: what is typed on the screen now

        async def run(tenant, user_id: str, session_id: str) -> Screen:
            return await controller.act(tenant, user_id, session_id, name, value, on_slow=show_working, form=form)

        await _update(client, body, run, context)

    @app.options("v")
    async def options(ack: AsyncAck, body: dict, context: AsyncBoltContext) -> None:
        try:
            found = await controller.options(context["tenant"], body["user"]["id"], body["view"]["private_metadata"],
                                             body["block_id"], body.get("value", ""))  # fmt: skip
        except (SessionGone, StaleSession):
            found = []
        await ack(
            options=[{"text": {"type": "plain_text", "text": o.label[:75]}, "value": o.value} for o in found][:100]
        )


async def _update(client: AsyncWebClient, body: dict, call, context: AsyncBoltContext) -> None:
    """Run ``call`` for a button (after its ack) and show its screen."""
    view = body["view"]
    tenant, user_id, session_id = context["tenant"], body["user"]["id"], view["private_metadata"]
    try:
        screen = await call(tenant, user_id, session_id)
        new_view = modal(screen)
    except (SessionGone, StaleSession) as exc:
        new_view = _gone(str(exc))
    # No hash: this listener may itself have replaced the view; stale writers are caught by the session version.
    await client.views_update(view_id=view["id"], view=new_view)
