"""Errors the emulator answers with, shaped like Slack's ``{"ok": false, "error": ...}`` bodies.

Handlers raise :class:`ApiError` with Slack's real error code; the server turns it into the JSON body, so every
method reports failures the same way and tests can match on the code exactly as they would against Slack.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A Web API refusal: ``code`` is Slack's error string, ``messages`` go to ``response_metadata``."""

    def __init__(
        self,
        code: str,
        *,
        messages: list[str] | None = None,
        status: int = 200,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(code)
        self.code = code
        self.messages = list(messages or [])
        self.status = status
        self.extra = dict(extra or {})

    def body(self) -> dict[str, Any]:
        """The JSON body Slack sends for this error."""
        out: dict[str, Any] = {"ok": False, "error": self.code, **self.extra}
        if self.messages:
            out["response_metadata"] = {"messages": self.messages}
        return out


class DriverError(Exception):
    """Base of the driver's own errors: the simulated user could not do what the test asked."""


class AckTimeoutError(DriverError):
    """The app did not acknowledge within Slack's 3-second limit; Slack would have shown the user an error."""

    def __init__(self, kind: str, elapsed: float, limit: float) -> None:
        super().__init__(f"{kind} was not acknowledged within {limit:.1f}s (took {elapsed:.2f}s or more)")
        self.kind = kind
        self.elapsed = elapsed
        self.limit = limit


class SlackClientRefusal(DriverError):
    """Slack's client would refuse this on the user's side (required input empty, invalid response view...)."""

    def __init__(self, reason: str, details: list[str] | None = None) -> None:
        super().__init__(reason + (": " + "; ".join(details) if details else ""))
        self.reason = reason
        self.details = list(details or [])
