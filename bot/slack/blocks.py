"""Block Kit builders shared by the surfaces, built with ``slack_sdk.models`` so Slack's limits are checked.

Builders return model objects; callers ``to_dict()`` them at the edge. ``to_dict()`` runs slack_sdk's
validators (title length, block counts, text lengths), so a view that Slack would reject fails in tests.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class Subcommand:
    name: str
    usage: str
    summary: str
    available: bool


# The single list of `/backup` subcommands: help, the dispatcher and the manifest hint all read it.
SUBCOMMANDS: tuple[Subcommand, ...] = (
    Subcommand("help", "/backup help", "what the bot can do (this message)", True),
    Subcommand("new", "/backup new [from:<template>]", "set up a backup chain in a 10-step wizard", True),
    Subcommand("list", "/backup list", "this workspace's backup chains and their last result", True),
    Subcommand("status", "/backup status <chain>", "runs, archives and next run of one chain", True),
    Subcommand("resume", "/backup resume", "reopen a wizard you closed, at the step you left", True),
    Subcommand("cancel", "/backup cancel", "discard your open wizard", True),
    Subcommand("templates", "/backup templates", "saved answer sets to start a wizard from", True),
    Subcommand("ping", "/backup ping <chain> [<url>|off]", "a URL pinged at each backup's start/success/fail", True),
    Subcommand("check", "/backup check <chain> [off|<days> <HH:MM> [verify]]", "when borg check verifies it", True),
    Subcommand("prune", "/backup prune <chain> [after-backup|<days> <HH:MM>]", "when old archives are pruned", True),
    Subcommand("archives", "/backup archives <chain>", "a chain's archives: time, original and deduplicated size",
               True),
    Subcommand("restore", "/backup restore [<chain>]", "restore files or a database from an archive, checked", True),
    Subcommand("drill", "/backup drill <chain> weekly|monthly|off [on <server>]", "scheduled restore tests", True),
    Subcommand("edit", "/backup edit <chain>", "change a chain (the wizard, prefilled, at its review)", True),
    Subcommand("delete", "/backup delete <chain>", "retire a chain (its repository kept, or deleted by an admin)",
               True),
    Subcommand("pools", "/backup pools", "storage pools: free space, quota, repositories (admins add and change them)",
               True),
    Subcommand("servers", "/backup servers", "servers: reachability, borg version, chains using them", True),
    Subcommand("roles", "/backup roles", "who is an admin and who may use which server or pool (admins change it)",
               True),
    Subcommand("audit", "/backup audit [chain <name>|server <name>|user @someone] [page N]", "who did what, when",
               True),
)


def _mrkdwn(text: str) -> MarkdownTextObject:
    return MarkdownTextObject(text=text)


def help_blocks(note: str | None = None) -> list[Block]:
    """The `/backup help` answer: what works now, and what is coming, so nobody tries a missing command."""
    ready = [c for c in SUBCOMMANDS if c.available]
    coming = [c for c in SUBCOMMANDS if not c.available]
    blocks: list[Block] = []
    if note:
        blocks.append(SectionBlock(text=_mrkdwn(note)))
    blocks += [
        HeaderBlock(text="Backup Wizard"),
        SectionBlock(
            text=_mrkdwn(
                "I set up and run *BorgBackup* for your servers, from Slack: files, MySQL/MariaDB, "
                "PostgreSQL, MongoDB, Docker and full-system backups, encrypted and deduplicated, pushed "
                "over SSH to your storage pools, with retention, schedules, approvals and alerts. "
                "You never type a borg command."
            )
        ),
        SectionBlock(text=_mrkdwn("\n".join(f"• `{c.usage}` — {c.summary}" for c in ready))),
    ]
    if coming:
        blocks.append(
            ContextBlock(
                elements=[_mrkdwn("Not available in this version yet: " + ", ".join(f"`{c.usage}`" for c in coming))]
            )
        )
    return blocks


def home_view(*, servers: int, pools: int, chains: int) -> View:
    """The App Home tab until chains exist to list: what the workspace has, and how to start."""
    summary = f"*{servers}* server(s) · *{pools}* storage pool(s) · *{chains}* backup chain(s) in this workspace."
    return View(
        type="home",
        blocks=[
            HeaderBlock(text="Backup Wizard"),
            SectionBlock(text=_mrkdwn(summary)),
            DividerBlock(),
            SectionBlock(
                text=_mrkdwn(
                    "Your chains, their last result and next run will be listed here. "
                    "Type `/backup help` in any channel to see what you can do today."
                )
            ),
            ActionsBlock(
                block_id="home_actions",
                elements=[ButtonElement(text="What can the bot do?", action_id="home_show_help", value="help")],
            ),
        ],
    )


def home_help_view() -> View:
    """The home tab showing the help text (the home tab cannot show ephemeral messages)."""
    return View(type="home", blocks=help_blocks())
