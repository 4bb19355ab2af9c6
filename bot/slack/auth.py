"""Checking the Slack credentials up front, so a wrong token is one sentence at start-up, not a 401 later."""

from __future__ import annotations

from dataclasses import dataclass

from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import ConfigError

_REASONS = {
    "invalid_auth": "Slack does not accept it",
    "not_authed": "no token was sent",
    "account_inactive": "the token belongs to a deleted user or an uninstalled app",
    "token_revoked": "the token was revoked",
    "token_expired": "the token expired",
}


@dataclass(frozen=True)
class BotIdentityInSlack:
    team_id: str
    team: str
    user_id: str
    bot_id: str | None


async def check_bot_token(client: AsyncWebClient) -> BotIdentityInSlack:
    """``auth.test`` with the bot token, or a ConfigError saying what is wrong with it."""
    try:
        response = await client.auth_test()
    except SlackApiError as exc:
        code = exc.response.get("error", "unknown_error")
        reason = _REASONS.get(code, f"Slack answered {code}")
        raise ConfigError(
            f"SLACK_BOT_TOKEN was refused: {reason}. Copy the Bot User OAuth Token (xoxb-…) again from your "
            "app's OAuth & Permissions page, and reinstall the app to the workspace if it was removed."
        ) from None
    except (SlackClientError, OSError) as exc:
        raise ConfigError(
            f"Cannot reach the Slack Web API at {client.base_url} ({type(exc).__name__}). Check the network "
            "or proxy settings (and SLACK_API_URL if you set it)."
        ) from None
    return BotIdentityInSlack(
        team_id=response["team_id"],
        team=response.get("team", ""),
        user_id=response["user_id"],
        bot_id=response.get("bot_id"),
    )
