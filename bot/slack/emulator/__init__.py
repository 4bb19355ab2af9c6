"""Slack without Slack: a Web API + Socket Mode emulator and a driver that plays the user.

It lives in the package (not only under tests) because the local playground reuses it. Typical use::

    async with SlackEmulator() as slack:
        client = AsyncWebClient(token=DEFAULT_BOT_TOKEN, base_url=slack.api_url)
        driver = SlackDriver.over_http(slack, "http://127.0.0.1:3000/slack/events", signing_secret)
        await driver.slash_command("/backup")
        view = await driver.wait_for_view()
"""

from .clock import ManualClock
from .driver import SlackDriver
from .errors import AckTimeoutError, ApiError, DriverError, SlackClientRefusal
from .records import Call, Fault
from .server import (
    DEFAULT_APP_ID,
    DEFAULT_APP_TOKEN,
    DEFAULT_BOT_ID,
    DEFAULT_BOT_TOKEN,
    DEFAULT_BOT_USER,
    DEFAULT_CHANNEL,
    DEFAULT_TEAM,
    DEFAULT_USER,
    SlackEmulator,
)
from .signing import signature, signed_headers, verify
from .transport import AppResponse, HttpTransport, SocketModeTransport

__all__ = [
    "DEFAULT_APP_ID",
    "DEFAULT_APP_TOKEN",
    "DEFAULT_BOT_ID",
    "DEFAULT_BOT_TOKEN",
    "DEFAULT_BOT_USER",
    "DEFAULT_CHANNEL",
    "DEFAULT_TEAM",
    "DEFAULT_USER",
    "AckTimeoutError",
    "ApiError",
    "AppResponse",
    "Call",
    "DriverError",
    "Fault",
    "HttpTransport",
    "ManualClock",
    "SlackClientRefusal",
    "SlackDriver",
    "SlackEmulator",
    "SocketModeTransport",
    "signature",
    "signed_headers",
    "verify",
]
