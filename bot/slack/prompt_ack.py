"""Answer Slack the moment a listener calls ``ack()``.

With ``process_before_response=False`` bolt runs each listener in a task and polls for its ack with
``asyncio.sleep(0.01)``: every answer waits for the next 10 ms tick, and each request in flight wakes the event loop
a hundred times a second, which under load starves everything else on the loop (database round trips included).
:class:`PromptAckRunner` is bolt's runner with that one loop replaced by waiting on the ack itself; everything else —
start, error and completion handlers, the 3-second give-up, what is returned — is bolt's. Lazy listeners,
auto-acknowledged events and ``process_before_response`` apps go through bolt's own code unchanged.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.listener.async_listener import AsyncListener
from slack_bolt.listener.asyncio_runner import AsyncioListenerRunner
from slack_bolt.logger.messages import warning_did_not_call_ack
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

_running: set[asyncio.Task] = set()  # listener tasks outlive their request; keep them from being collected


class SignallingAck(AsyncAck):
    """bolt's ``ack`` that also sets an event when a response is recorded (by ``ack()`` or by the error path) and
    keeps that first response: bolt's error path resets ``response`` to None when a listener fails after acking,
    which with polling could turn an answered request into "didn't call ack()"."""

    def __init__(self) -> None:
        self.acked = asyncio.Event()
        self.answer: BoltResponse | None = None
        super().__init__()

    @property  # type: ignore[override]
    def response(self) -> BoltResponse | None:
        return self._response

    @response.setter
    def response(self, value: BoltResponse | None) -> None:
        self._response = value
        if value is not None and self.answer is None:
            self.answer = value
            self.acked.set()


class PromptAckRunner(AsyncioListenerRunner):
    """bolt's listener runner without the 10 ms ack polling (see the module docstring)."""

    async def run(
        self,
        request: AsyncBoltRequest,
        response: BoltResponse,
        listener_name: str,
        listener: AsyncListener,
        starting_time: float | None = None,
    ) -> BoltResponse | None:
        current = request.context.get("ack")
        if (
            self.process_before_response
            or request.lazy_only
            or listener.lazy_functions
            or listener.auto_acknowledgement
            or (current is not None and current.response is not None)
        ):
            return await super().run(request, response, listener_name, listener, starting_time)
        starting_time = starting_time if starting_time is not None else time.time()
        ack = SignallingAck()
        request.context["ack"] = ack  # the listener's ``ack`` argument is read from here
        task = asyncio.ensure_future(self._run_listener(ack, request, response, listener))
        _running.add(task)
        task.add_done_callback(_running.discard)
        try:
            async with asyncio.timeout(max(0.0, starting_time + listener.ack_timeout - time.time())):
                await ack.acked.wait()
        except TimeoutError:
            pass
        # from here on bolt's ending, with the first response recorded
        if response is None and ack.answer is None:
            self.logger.warning(warning_did_not_call_ack(listener_name))
            return None
        if response is None and ack.answer is not None:
            self._debug_log_completion(starting_time, ack.answer)
            return ack.answer
        return response

    async def _run_listener(self, ack: AsyncAck, request: AsyncBoltRequest, response: Any,
                            listener: AsyncListener) -> None:  # fmt: skip
        """bolt's ``run_ack_function_asynchronously``."""
        try:
            await self.listener_start_handler.handle(request=request, response=response)
            await listener.run_ack_function(request=request, response=response)
        except Exception as e:
            if response is None:
                response = BoltResponse(status=500)
            response.status = 500
            if ack.response is not None:  # already acknowledged
                response = None
            await self.listener_error_handler.handle(error=e, request=request, response=response)
            ack.response = response
        finally:
            await self.listener_completion_handler.handle(request=request, response=response)


def install(app: AsyncApp) -> None:
    """Use :class:`PromptAckRunner` for ``app`` (the runner keeps its handlers, e.g. the one ``app.error`` set)."""
    runner = app.listener_runner
    if type(runner) is AsyncioListenerRunner:
        runner.__class__ = PromptAckRunner
