"""Block Kit of the App Home tab: the workspace's chains with their last result, next run, repository size, pool
space and buttons.

Pure builders over :class:`ChainRow` (what :mod:`bot.slack.home` reads from the database), built with
``slack_sdk.models`` so ``to_dict()`` checks Slack's limits. A home view holds at most 100 blocks: chains are
shown :data:`PAGE_SIZE` per page (two blocks each) with Previous/Next buttons, and the page is kept in the view's
``private_metadata`` so re-publishing after a button keeps the person where they were.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    MarkdownTextObject,
    SectionBlock,
)
from slack_sdk.models.views import View

MAX_BLOCKS = 100  # Slack's limit for a home tab
PAGE_SIZE = 30  # chains per page: 2 blocks each, plus at most 10 around them
MAX_TEXT = 2900

RUN_NOW = "home_run_now"
EDIT = "chain_edit"  # bot.slack.edit.EDIT_ACTION (its register opens the wizard prefilled); value: the chain's id
RESTORE = "restore_open"  # bot.slack.restore.RESTORE_OPEN (its register opens the restore flow); value: the chain's id
PAUSE = "home_pause"
RESUME = "home_resume"
PAGE = "home_page"
HELP = "home_show_help"
CHAIN_ACTIONS = (RUN_NOW, PAUSE, RESUME)


@dataclass(frozen=True)
class ChainRow:
    """One chain as the home tab shows it (all text already escaped for mrkdwn)."""

    id: int
    name: str
    status: str  # ChainStatus value
    status_icon: str
    last_run: str  # "✅ succeeded · Mon 30 Mar 2026, 02:00 …" or "never ran"
    last_success: str  # a time, or "never"
    next_run: str  # a time, or "— (why)"
    schedule: str
    size: str  # "1.2 GiB" or "unknown"
    can_run: bool
    can_pause: bool
    can_resume: bool
    pool: str = ""  # "vault-main · 12.0 GiB free of 50.0 GiB · quota …" (escaped), "" when unknown
    history: str = ""  # the repository's integrity when not OK (needs review / quarantined), "" when OK
    can_edit: bool = False  # the viewer may change the chain (bot.access.authz.may_operate), and it is not retired
    can_restore: bool = False  # the viewer may restore from it (admins, operators of its server)


def _mrkdwn(text: str) -> MarkdownTextObject:
    return MarkdownTextObject(text=text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…")


def page_of(private_metadata: str | None) -> int:
    """The page a published home view was showing (0 when unknown)."""
    try:
        page = json.loads(private_metadata or "{}").get("page", 0)
    except (ValueError, AttributeError):
        return 0
    return page if isinstance(page, int) and page >= 0 else 0


def _chain_blocks(row: ChainRow) -> list[Block]:
    text = (
        f"*{row.name}* · {row.status_icon} {row.status.replace('_', ' ')}\n"
        f"Last run: {row.last_run}\n"
        f"Last success: {row.last_success}\n"
        f"Next run: {row.next_run}\n"
        f"Schedule: {row.schedule} · Repository size: {row.size}"
    ) + (f"\nPool: {row.pool}" if row.pool else "") + (f"\nArchive history: {row.history}" if row.history else "")
    blocks: list[Block] = [SectionBlock(block_id=f"home_chain_{row.id}", text=_mrkdwn(text))]
    buttons = []
    value = str(row.id)
    if row.can_run:
        buttons.append(ButtonElement(text="Run now", action_id=RUN_NOW, value=value, style="primary"))
    if row.can_pause:
        buttons.append(ButtonElement(text="Pause", action_id=PAUSE, value=value))
    if row.can_resume:
        buttons.append(ButtonElement(text="Resume", action_id=RESUME, value=value))
    if row.can_edit:
        buttons.append(ButtonElement(text="Edit", action_id=EDIT, value=value))
    if row.can_restore:
        buttons.append(ButtonElement(text="Restore…", action_id=RESTORE, value=value))
    if buttons:
        blocks.append(ActionsBlock(block_id=f"home_chain_actions_{row.id}", elements=buttons))
    return blocks


def home_chains_view(
    rows: list[ChainRow],
    *,
    total: int,
    page: int,
    servers: int,
    pools: int,
    notice: str | None = None,
    retired: int = 0,
) -> View:
    """The home tab: a summary line, an optional notice, one page of chains, paging and help buttons. Retired chains
    are not listed (they do not run); ``retired`` counts them, ``/backup list`` shows them."""
    pages = max(1, -(-total // PAGE_SIZE))
    blocks: list[Block] = [HeaderBlock(text="Backup Wizard")]
    if notice:
        blocks.append(SectionBlock(block_id="home_notice", text=_mrkdwn(notice)))
    summary = f"*{servers}* server(s) · *{pools}* storage pool(s) · *{total}* backup chain(s) in this workspace."
    if retired:
        summary += (f" {retired} retired chain(s) not listed: `/backup list` shows them, `/backup restore` reads "
                    "their archives.")
    blocks += [SectionBlock(block_id="home_summary", text=_mrkdwn(summary)), DividerBlock()]
    if not rows:
        blocks.append(
            SectionBlock(text=_mrkdwn("No backup chains yet. Type `/backup new` in any channel to set one up."))
        )
    for row in rows:
        blocks += _chain_blocks(row)
    if pages > 1:
        first = page * PAGE_SIZE + 1
        shown = f"Chains {first}–{first + len(rows) - 1} of {total} · page {page + 1}/{pages}"
        blocks.append(ContextBlock(elements=[_mrkdwn(shown)]))
        nav = []
        if page > 0:
            nav.append(ButtonElement(text="◀ Previous", action_id=PAGE, value=str(page - 1)))
        if page + 1 < pages:
            nav.append(ButtonElement(text="Next ▶", action_id=PAGE, value=str(page + 1)))
        blocks.append(ActionsBlock(block_id="home_pages", elements=nav))
    blocks += [
        DividerBlock(),
        ActionsBlock(
            block_id="home_actions",
            elements=[ButtonElement(text="What can the bot do?", action_id=HELP, value="help")],
        ),
        ContextBlock(
            elements=[
                _mrkdwn(
                    "The chain's creator, the operators of its server and Slack admins may run, pause, resume or edit "
                    "it; admins and its server's operators may restore from it. "
                    "`/backup status <chain>` shows a chain's runs."
                )
            ]
        ),
    ]
    assert len(blocks) <= MAX_BLOCKS, len(blocks)
    return View(type="home", blocks=blocks, private_metadata=json.dumps({"page": page}))
