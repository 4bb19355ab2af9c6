"""The bolt ``AsyncApp``: construction, workspace scoping, and the two ways to serve it.

Listeners are registered per surface (commands, actions, events) by each module's ``register``. A global
middleware (:mod:`bot.slack.guard`) refuses requests from workspaces the bot is not installed in, acknowledges
copies of requests already handled without a second effect, and resolves the Slack workspace of every other request
into a :class:`~storage.tenancy.Tenant` in ``context["tenant"]``, creating the Workspace row on first contact, so
listeners never build queries without a workspace; it puts the app's :class:`~bot.slack.actors.SlackDirectory` in
``context["directory"]`` for resolving the acting user's roles. The Web API client retries 429s (honouring
Retry-After) and 5xx/connection errors. An answer to Slack leaves the moment its listener calls ``ack()``
(:mod:`bot.slack.prompt_ack`), not at bolt's next poll.
"""

from __future__ import annotations

import errno
import logging
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.access import NoDirectory
from bot.api.metrics import add_metrics_route
from bot.api.routes import add_routes
from bot.config import ConfigError, Settings
from bot.flows.wizard.controller import WizardController
from bot.runs.outbox import Outbox
from bot.runtime import Runtime
from bot.slack import (
    actions,
    approvals,
    archives,
    commands,
    edit,
    events,
    guard,
    pools,
    prompt_ack,
    reports,
    restore,
    retire,
    servers,
)
from bot.slack import wizard as wizard_listeners
from bot.slack.actors import Installations, SlackDirectory
from bot.slack.listener import GuardedRunner, ListenerLimits
from bot.slack.webclient import PooledWebClient

log = logging.getLogger(__name__)
EVENTS_PATH = "/slack/events"


def _not_the_token_warning(record: logging.LogRecord) -> bool:
    """Bolt reads SLACK_BOT_TOKEN from the environment even when given a client, then warns at every start that
    the token "will be unused" — the client *is* that token. The warning says nothing to act on: dropped."""
    return record.getMessage() != warning_client_prioritized_and_token_skipped()


logging.getLogger("slack_bolt.AsyncApp").addFilter(_not_the_token_warning)


def build_client(settings: Settings) -> PooledWebClient:
    """The Web API client (one kept-alive connection pool; the caller closes it); ``SLACK_API_URL`` points it at the
    emulator or a proxy."""
    assert settings.slack_bot_token is not None
    kwargs: dict[str, Any] = {}
    if settings.slack_api_url:
        kwargs["base_url"] = settings.slack_api_url
    client = PooledWebClient(token=settings.slack_bot_token.get_secret_value(), **kwargs)
    client.retry_handlers.extend(
        [
            AsyncRateLimitErrorRetryHandler(max_retry_count=5),
            AsyncServerErrorRetryHandler(max_retry_count=3),
            AsyncConnectionErrorRetryHandler(max_retry_count=3),
        ]
    )
    return client


def build_app(
    settings: Settings,
    *,
    client: AsyncWebClient | None = None,
    wizard: WizardController | None = None,
    outbox: Outbox | None = None,
) -> AsyncApp:
    """The app with every surface registered. HTTP mode verifies signatures; Socket Mode needs none."""
    settings.require_slack()
    signing = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else None
    app = AsyncApp(
        client=client or build_client(settings),
        signing_secret=signing,
        request_verification_enabled=not settings.socket_mode,
        process_before_response=False,
        raise_error_for_unhandled_request=False,
    )
    directory = SlackDirectory(app.client)
    app.middleware(guard.gate(Installations(app.client), directory))  # installed workspaces only, each request once
    if wizard is not None and isinstance(getattr(wizard.services, "directory", None), NoDirectory):
        wizard.services.directory = directory  # the wizard's steps ask Slack the same way, through the same cache
    commands.register(app, wizard)
    actions.register(app, wizard)
    events.register(app)
    reports.register(app)  # Retry now / Pause chain on failure alerts
    shared = wizard.services if wizard is not None else None  # the bot's SSH pool, borg and alert bus
    pools.register(app, shared)  # /backup pools: Add pool, Edit, Remove
    servers.register(app, shared)  # /backup servers: Refresh, Remove
    retire.register(app, shared)  # /backup delete: Retire, Delete the repository too
    archives.register(app, shared)  # /backup archives: Previous / Next
    restore.register(app, shared)  # /backup restore and the Restore… buttons: the restore flow's modals
    if wizard is not None:
        edit.register(app, wizard)  # Edit buttons: the wizard, prefilled from the chain
    if outbox is not None:  # approvals announce their decisions through the outbox (bot.slack.reports.install)
        approvals.register(app, outbox, wizard)
    if wizard is not None:
        wizard_listeners.register(app, wizard)
    app.error(_on_error)
    prompt_ack.install(app)  # answer at ack(), not at bolt's next 10 ms poll
    return app


async def _on_error(error: Exception, body: dict, logger: logging.Logger) -> None:
    # The body may carry user input; log its type only. Secrets never reach this point as plaintext.
    logger.error("listener failed: %s (%s)", type(error).__name__, body.get("type") or body.get("command"))
    logger.debug("listener error detail", exc_info=error)


def http_app(app: AsyncApp | None, runtime: Runtime | None = None) -> web.Application:
    """aiohttp application: ``/healthz``, ``/metrics``, the seed's API (with a runtime), and Slack's request URL at
    ``/slack/events`` in HTTP mode only (``app`` None): in Socket Mode bolt skips signature checks, so its
    route must not be reachable over HTTP at all."""
    web_app = app.web_app(path=EVENTS_PATH) if app is not None else web.Application()
    if runtime is not None:
        add_routes(web_app, runtime)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    web_app.router.add_get("/healthz", healthz)
    add_metrics_route(web_app)  # Prometheus /metrics, read from the database at scrape time
    return web_app


async def serve_http(app: AsyncApp | None, host: str, port: int, runtime: Runtime | None = None, *,
                     limits: ListenerLimits | None = None) -> web.AppRunner:  # fmt: skip
    """Start the HTTP listener under ``limits`` (:mod:`bot.slack.listener`: caps, deadlines, descriptor headroom);
    the caller owns the returned runner and must ``cleanup()`` it.

    A port that cannot be bound (in use, privileged, an address this machine does not have) is a ConfigError naming
    the address and the two settings that choose it, not a traceback."""
    runner = GuardedRunner(http_app(app, runtime), limits or ListenerLimits())
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        reason = "it is already in use (another backup-bot run?)" if exc.errno == errno.EADDRINUSE else (
            exc.strerror or type(exc).__name__).lower()  # fmt: skip
        raise ConfigError(
            f"Cannot listen on {host}:{port} for the HTTP API and /healthz: {reason}. Stop the other process or set "
            "BACKUPBOT_HTTP_PORT (and BACKUPBOT_HTTP_HOST) to a free address."
        ) from None
    return runner


# apps.connections.open answers that mean "try again later"; any other error is the token's fault.
_TRANSIENT = frozenset({"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"})
_APP_TOKEN_REASONS = {
    "invalid_auth": "Slack does not accept it",
    "not_authed": "no token was sent",
    "not_allowed_token_type": "it is not an app-level token",
    "missing_scope": "it lacks the connections:write scope",
    "token_revoked": "it was revoked",
    "token_expired": "it expired",
    "account_inactive": "its app was deleted or uninstalled",
}


async def open_socket_url(client: AsyncWebClient, app_token: str) -> str | None:
    """Given the app-level token, a Socket Mode URL from ``apps.connections.open``, or a ConfigError saying why the
    token is refused; None when Slack answered a transient error (the Socket Mode client then retries).

    Why up front: slack_sdk retries a refused token every 10 seconds forever, logging a traceback each time."""
    try:
        response = await client.apps_connections_open(app_token=app_token)
    except SlackApiError as exc:
        code = str(exc.response.get("error", "unknown_error"))
        if code in _TRANSIENT:
            log.warning("apps.connections.open answered %s; Socket Mode will retry", code)
            return None
        reason = _APP_TOKEN_REASONS.get(code, f"Slack answered {code}")
        raise ConfigError(
            f"SLACK_APP_TOKEN was refused: {reason} ({code}). Create an app-level token with the connections:write "
            "scope (xapp-…) under Basic Information → App-Level Tokens, or remove SLACK_APP_TOKEN to use HTTP mode."
        ) from None
    except (SlackClientError, aiohttp.ClientError, OSError) as exc:
        raise ConfigError(
            f"Cannot reach the Slack Web API at {client.base_url} to open Socket Mode ({type(exc).__name__}). "
            "Check the network, proxy settings and SLACK_API_URL."
        ) from None
    return str(response["url"])


async def start_socket_mode(app: AsyncApp, settings: Settings) -> AsyncSocketModeHandler:
    """Connect over Socket Mode (outbound WebSocket; no public URL needed); a refused app token is a ConfigError."""
    assert settings.slack_app_token is not None
    token = settings.slack_app_token.get_secret_value()
    url = await open_socket_url(app.client, token)
    handler = AsyncSocketModeHandler(app, token)
    handler.client.wss_uri = url  # the ticket just issued (None: the client asks for one itself)
    try:
        await handler.connect_async()
    except BaseException:
        await handler.close_async()
        raise
    return handler
