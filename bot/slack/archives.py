"""``/backup archives <chain> [page N]``: the chain's archives, newest first, ten a page — name, time, original
and deduplicated size — with *Previous* / *Next*.

Parsing and rendering only; :mod:`bot.services.archives` reads the repository on the pool side and decides who may
(those who may operate the chain). A page button is acknowledged at once, then the answer is replaced through the
interaction's ``response_url``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond
from slack_sdk.models.blocks import ActionsBlock, Block, ButtonElement
from slack_sdk.web.async_client import AsyncWebClient

from bot.access import Actor, Forbidden, Refused
from bot.backup.plan import human
from bot.mrkdwn import esc
from bot.services import archives
from bot.slack.actors import actor_of
from bot.slack.listing import Answer, _context, _section
from bot.slack.own_ssh import OwnSSH
from bot.transport import SSHPool

PREVIOUS, NEXT = "archives_previous", "archives_next"
_PAGE = re.compile(r"^(?P<name>.*?)\s+page\s+(?P<page>\d{1,6})$", re.IGNORECASE)
USAGE = "Name the chain: `/backup archives <chain>` (or `/backup archives <chain> page 2`); `/backup list` shows them."


class BotAccess:
    """The bot's SSH pool and borg for reading repositories: the app's shared services once :func:`register` was
    given them, else a pool of its own with the bot's key, made at first use (so the answers work either way)."""

    def __init__(self) -> None:
        self.given: Any = None
        self.own = OwnSSH()

    async def get(self) -> Any:
        if self.given is not None:
            return self.given
        return _Own(await self.own.get())


class _Own:
    def __init__(self, pool: SSHPool) -> None:
        self.pool = pool
        self.borg = "borg"


ACCESS = BotAccess()


def parse(rest: str) -> tuple[str, int]:
    """Given the words after ``/backup archives``, return (chain name, page): ``web1 page 3`` → ("web1", 3)."""
    text = (rest or "").strip()
    found = _PAGE.match(text)
    if found:
        return found["name"].strip(), int(found["page"])
    return text, 1


def _row(row: archives.ArchiveRow, position: int) -> str:
    when = row.time.strftime("%Y-%m-%d %H:%M UTC")
    sizes = (f"{human(row.original_size)} original · {human(row.deduplicated_size)} deduplicated"
             if row.original_size is not None else "size unknown")  # fmt: skip
    return f"{position}. `{esc(row.name[:200])}` · {when} · {sizes}"


def _buttons(page: archives.ArchivePage) -> ActionsBlock | None:
    elements = []
    if page.page > 1:
        elements.append(ButtonElement(text="Previous", action_id=PREVIOUS, value=f"{page.chain_id}:{page.page - 1}"))
    if page.page < page.pages:
        elements.append(ButtonElement(text="Next", action_id=NEXT, value=f"{page.chain_id}:{page.page + 1}"))
    return ActionsBlock(block_id="archives_pages", elements=elements) if elements else None


def render(page: archives.ArchivePage) -> Answer:
    """Given a page of archives, return the answer: a head line, one section per archive, the page buttons."""
    retired = " (retired)" if page.retired else ""
    head = (f"*Archives of {esc(page.chain_name)}*{retired} — repository {esc(page.repository)}: {page.total} "
            f"archive{'s' if page.total != 1 else ''}, newest first · page {page.page} of {page.pages}")  # fmt: skip
    blocks: list[Block] = [_section(head)]
    blocks += [_section(_row(row, page.start + i + 1)) for i, row in enumerate(page.rows)]
    if not page.rows:
        blocks.append(_context("No archives yet: the first backup makes one."))
    else:
        blocks.append(_context("Original: the data's size; deduplicated: what only this archive holds in the "
                               f"repository. `/backup archives {esc(page.chain_name)} page N` jumps to a page."))
    buttons = _buttons(page)
    if buttons is not None:
        blocks.append(buttons)
    return Answer(f"Archives of {page.chain_name}: page {page.page} of {page.pages}"[:3000], blocks)


def refusal(exc: Refused) -> Answer:
    mark = ":no_entry:" if isinstance(exc, Forbidden) else ":warning:"
    return Answer(f"{mark} {exc.sentence}"[:3000], [_section(f"{mark} {esc(exc.sentence)}")])


async def archives_answer(actor: Actor, rest: str) -> Answer:
    """The answer to ``/backup archives <chain> [page N]``."""
    name, page = parse(rest)
    if not name:
        return refusal(Refused(USAGE))
    try:
        return render(await archives.page_of(actor, name, services=await ACCESS.get(), page=page))
    except Refused as exc:
        return refusal(exc)


ANSWERS: dict[str, Callable[[Actor, str], Awaitable[Answer]]] = {"archives": archives_answer}


def _target(value: str) -> tuple[int, int] | None:
    chain, _, page = (value or "").partition(":")
    return (int(chain), int(page)) if chain.isdigit() and page.isdigit() else None


def register(app: AsyncApp, services: Any = None) -> None:
    """Register *Previous* / *Next*; ``services`` (the wizard's: ``pool``, ``borg``) lends the bot's SSH pool."""
    if services is not None:
        ACCESS.given = services

    async def on_page(ack: AsyncAck, body: dict, action: dict, client: AsyncWebClient, context: AsyncBoltContext,
                      respond: AsyncRespond) -> None:  # fmt: skip
        await ack()
        actor = await actor_of(context, client, body["user"]["id"])
        target = _target(str(action.get("value") or ""))
        try:
            if target is None:
                raise Refused(USAGE)
            answer = render(await archives.page_of(actor, target[0], services=await ACCESS.get(), page=target[1]))
        except Refused as exc:
            answer = refusal(exc)
        await respond(text=answer.text, blocks=answer.to_dicts(), replace_original=True)

    app.action(PREVIOUS)(on_page)
    app.action(NEXT)(on_page)
