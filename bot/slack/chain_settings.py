"""``/backup ping <chain> [<url> | off]``: a chain's healthchecks-style ping URL, set from Slack.

Monitoring outside Slack (healthchecks.io, a self-hosted Healthchecks, Uptime Kuma's push monitors) is what tells
someone a backup did not happen when the bot itself is down, so setting it must not need a shell on the bot host.
The URL's path is the check's secret (anyone with it can report success), so answers and the audit log name the
host only. Who may change it: the same people who may run or pause the chain (its creator, the workspace's
approvers, Slack admins).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from slack_sdk.web.async_client import AsyncWebClient

from bot.monitoring import ping_url_of, set_ping_url
from bot.slack import listing
from bot.slack.home import may_act
from storage.models import AuditLog, BackupChain
from storage.tenancy import Tenant

WORDS = ("ping",)
OFF = ("off", "none", "remove", "clear")
USAGE = "`/backup ping <chain>` shows it, `/backup ping <chain> <https://…>` sets it, `/backup ping <chain> off`."


def _unwrap(word: str) -> str:
    """Slack sends links in command text as ``<https://…>`` or ``<https://…|label>`` when it escapes links."""
    if word.startswith("<") and word.endswith(">"):
        word = word[1:-1].split("|", 1)[0]
    return word


def split_arguments(rest: str) -> tuple[str, str | None]:
    """``"<chain name> <url|off>"`` → (chain name, argument or None). Chain names may contain spaces."""
    words = rest.strip().split()
    if len(words) >= 2:
        last = _unwrap(words[-1])
        if "://" in last or last.lower() in OFF:
            return " ".join(words[:-1]).strip("`\"'"), last
    return rest.strip().strip("`\"'"), None


def _host(url: str) -> str:
    return urlsplit(url).hostname or "?"


def _answer(text: str) -> listing.Answer:
    return listing.Answer(text, [listing._section(text)])


async def ping_answer(client: AsyncWebClient, tenant: Tenant, user_id: str, rest: str) -> listing.Answer:
    name, argument = split_arguments(rest)
    if not name:
        return _answer(f"Which chain? {USAGE}")
    chain = await tenant.query(BackupChain).filter(name=name).first()
    if chain is None:
        return listing._not_found(name)
    label = f"*{listing._esc(chain.name)}*"
    if argument is None:
        url = await ping_url_of(tenant.team_id, chain.id)
        if url is None:
            return _answer(f"{label} has no ping URL. {USAGE}")
        return _answer(f"{label} pings `{listing._esc(_host(url))}` at start, success and failure "
                       "(the URL's path is not shown: it is the check's secret).")  # fmt: skip
    if not await may_act(client, tenant, user_id, chain):
        return _answer(f":no_entry: You are not allowed to change {label}: only its creator, the workspace's "
                       "approvers and Slack admins may. Nothing was changed.")  # fmt: skip
    url = None if argument.lower() in OFF else argument
    try:
        await set_ping_url(tenant.team_id, chain.id, url)
    except ValueError as exc:
        return _answer(f"{exc} Nothing was changed. {USAGE}")
    details = {"removed": True} if url is None else {"host": _host(url)}
    await AuditLog.create(team_id=tenant.team_id, actor=user_id, action="chain.ping_url", object_type="chain",
                          object_id=str(chain.id), details=details)  # fmt: skip
    if url is None:
        return _answer(f"{label} no longer pings anything.")
    return _answer(f":white_check_mark: {label} now pings `{listing._esc(_host(url))}`: `/start` when a backup "
                   "starts, the URL itself on success, `/fail` on failure.")  # fmt: skip
