"""Delivery of channel messages that survives Slack 429/5xx and outages: a table-backed outbox.

Every report, alert and approval message is first written as an :class:`~storage.models.OutboxMessage` row,
then delivered by :meth:`Outbox.drain` (a background task started with :meth:`Outbox.start`, kicked after each
enqueue). Two layers of resilience:

* inside one attempt, the Web API client's retry handlers (installed by ``bot.slack.app.build_client``) retry
  429 (honouring Retry-After), 500/503 and connection resets a few times;
* when an attempt still fails (Slack down for longer, repeated 5xx, connection refused), the row stays
  ``pending`` with ``next_attempt_at`` pushed back (exponential backoff, capped) and the drain stops there, so
  **later messages never overtake an earlier one** and nothing is lost, even across a bot restart.

A permanent refusal (channel gone, bad blocks, not in channel) marks the row ``failed`` (kept, logged) and the
drain goes on: one broken channel must not block every other report.

Threads: a row may carry ``thread_key``. The first delivered row of a key becomes the thread's parent (its ts is
saved in :class:`~storage.models.ReportThread`); later rows of the key are posted as replies. Because delivery
is in order, the parent is always delivered before its replies, even when both were queued during an outage.

Methods: ``chat.postMessage`` (the default), ``chat.update`` (payload carries ``ts``) and ``dm`` (channel is a
user id: ``conversations.open`` then ``chat.postMessage``). The outbox knows no Slack types: it calls a
:class:`Sender`, and the Slack side (:func:`bot.slack.reports.slack_sender`) translates the client's errors
into :class:`TransientDeliveryError` / :class:`PermanentDeliveryError`.

One bot process drains the outbox (the embedded default); the scale-out worker processes do not post.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from storage.models import OutboxMessage, OutboxStatus, ReportThread
from storage.orm import IntegrityError

log = logging.getLogger(__name__)

POST = "chat.postMessage"
UPDATE = "chat.update"
DM = "dm"


class TransientDeliveryError(Exception):
    """Slack could not be reached or answered 429/5xx after the client's own retries: try again later."""


class PermanentDeliveryError(Exception):
    """Slack refused the message for good (``channel_not_found``, ``invalid_blocks`` …)."""


class Sender(Protocol):
    """What the outbox needs from Slack: call a Web API method, return its JSON body (or raise the errors above)."""

    async def __call__(self, method: str, params: dict[str, Any]) -> dict[str, Any]: ...


SentHook = Callable[[OutboxMessage], Awaitable[None]]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Outbox:
    """Queue messages as rows, deliver them in order; ``hooks[prefix]`` is awaited when a row with
    ``ref="prefix:…"`` was delivered (e.g. to store an approval message's ts)."""

    def __init__(
        self,
        send: Sender,
        *,
        base_delay: float = 2.0,
        max_delay: float = 300.0,
        poll_interval: float = 5.0,
        batch: int = 50,
    ) -> None:
        self.send = send
        self.base_delay, self.max_delay = base_delay, max_delay
        self.poll_interval, self.batch = poll_interval, batch
        self.hooks: dict[str, SentHook] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    # -- producing ---------------------------------------------------------------------------------------

    async def enqueue(
        self,
        team_id: str,
        channel: str,
        payload: dict[str, Any],
        *,
        method: str = POST,
        thread_key: str | None = None,
        ref: str | None = None,
    ) -> OutboxMessage:
        """Write the message as a pending row and wake the drain; returns the row."""
        row = await OutboxMessage.create(
            team_id=team_id, method=method, channel=channel, payload=payload, thread_key=thread_key, ref=ref
        )
        self._wake.set()
        return row

    # -- delivering --------------------------------------------------------------------------------------

    async def pending(self) -> int:
        return await OutboxMessage.filter(status=OutboxStatus.PENDING).count()

    async def drain(self) -> int:
        """Deliver due pending rows oldest first; stop at the first transient failure. Returns rows delivered."""
        async with self._lock:
            delivered = 0
            while True:
                rows = await OutboxMessage.filter(status=OutboxStatus.PENDING).order_by("id").limit(self.batch)
                if not rows:
                    return delivered
                for row in rows:
                    if row.next_attempt_at is not None and row.next_attempt_at > _now():
                        return delivered  # the head is backing off: keep the order
                    try:
                        await self._deliver(row)
                    except TransientDeliveryError as exc:
                        await self._back_off(row, exc)
                        return delivered
                    except PermanentDeliveryError as exc:
                        row.status, row.last_error = OutboxStatus.FAILED, str(exc)[:2000]
                        row.attempts += 1
                        await row.save(update_fields=["status", "last_error", "attempts"])
                        log.error("outbox row %s refused by Slack: %s", row.id, exc)
                        continue
                    delivered += 1

    async def _back_off(self, row: OutboxMessage, exc: Exception) -> None:
        row.attempts += 1
        delay = min(self.max_delay, self.base_delay * 2 ** (row.attempts - 1))
        row.next_attempt_at = _now() + dt.timedelta(seconds=delay)
        row.last_error = str(exc)[:2000] or type(exc).__name__
        await row.save(update_fields=["attempts", "next_attempt_at", "last_error"])
        log.warning("outbox: Slack unavailable (%s); retrying row %s in %.1fs", row.last_error, row.id, delay)

    async def _deliver(self, row: OutboxMessage) -> None:
        params = dict(row.payload)
        channel = row.channel
        if row.method == DM:
            opened = await self.send("conversations.open", {"users": row.channel})
            channel = opened["channel"]["id"]
        parent: ReportThread | None = None
        if row.thread_key and row.method != UPDATE:
            parent = await ReportThread.get_or_none(thread_key=row.thread_key)
            if parent is not None:
                params["thread_ts"] = parent.ts
                channel = parent.channel
            else:
                params.pop("reply_broadcast", None)
        method = UPDATE if row.method == UPDATE else POST
        body = await self.send(method, {"channel": channel, **params})
        row.status, row.sent_at = OutboxStatus.SENT, _now()
        row.sent_channel, row.sent_ts = body.get("channel") or channel, body.get("ts")
        row.attempts += 1
        await row.save(update_fields=["status", "sent_at", "sent_channel", "sent_ts", "attempts"])
        if row.thread_key and parent is None and row.sent_ts and method == POST:
            with contextlib.suppress(IntegrityError):  # another process made it first: keep theirs
                await ReportThread.create(
                    team_id=row.team_id, thread_key=row.thread_key, channel=row.sent_channel, ts=row.sent_ts
                )
        if row.ref:
            hook = self.hooks.get(row.ref.split(":", 1)[0])
            if hook is not None:
                try:
                    await hook(row)
                except Exception:
                    log.exception("outbox hook failed for %s", row.ref)

    # -- background task ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Drain in the background: at once after each enqueue, and every ``poll_interval`` for retries."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="outbox")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def kick(self) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.drain()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox drain failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)

    async def wait_delivered(self, within: float = 10.0) -> None:
        """Wait until no row is pending (tests, graceful shutdown)."""
        deadline = asyncio.get_running_loop().time() + within
        while await self.pending():
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{await self.pending()} outbox message(s) still pending")
            self._wake.set()
            await asyncio.sleep(0.05)
