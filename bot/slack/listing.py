"""The read-only answers of ``/backup list``, ``/backup status <chain>`` and ``/backup templates``.

Each returns Block Kit built with ``slack_sdk.models`` (≤ 50 blocks, the message limit) and a plain-text
fallback, for an ephemeral ack like help's. Everything is read through the workspace's
:class:`~storage.tenancy.Tenant`, so nothing of another workspace can appear. Next runs come from
:func:`bot.backup.schedule.next_runs`, the scheduler's own function; times are shown in the chain's time zone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

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

from bot.access import Actor, authz
from bot.backup import capacity
from bot.backup import schedule as sched
from bot.backup.retention import policy_summary
from bot.flows.wizard.steps.backup_type import LABELS as TYPE_LABELS
from bot.flows.wizard.steps.retention import policy_of
from bot.flows.wizard.steps.schedule import format_run
from bot.mrkdwn import esc as _esc
from bot.runs.maintenance import check_summary, prune_summary
from bot.services import restores
from storage.models import (
    BackupChain,
    BackupSource,
    BackupTemplate,
    ChainStatus,
    Integrity,
    Repository,
    Run,
    RunStatus,
    Server,
    StoragePool,
)
from storage.tenancy import Tenant

WORDS = ("list", "status", "templates")
TEMPLATE_START = "template_start"  # the "Start wizard" button of a template in `/backup templates`
EDIT = "chain_edit"  # bot.slack.edit.EDIT_ACTION: the wizard prefilled from the chain; value: the chain's id
RESTORE = "restore_open"  # bot.slack.restore.RESTORE_OPEN: the restore flow; value: the chain's id
MAX_BLOCKS = 50  # Slack's limit for a message
MAX_ROWS = 40  # chains or templates listed in one answer; the rest are counted
MAX_TEXT = 2900  # section text is limited to 3000 characters
RUNS_SHOWN = 5

CHAIN_ICONS = {
    ChainStatus.ACTIVE: ":large_green_circle:",
    ChainStatus.PAUSED: ":double_vertical_bar:",
    ChainStatus.DRAFT: ":memo:",
    ChainStatus.PENDING_APPROVAL: ":hourglass_flowing_sand:",
    ChainStatus.REJECTED: ":no_entry:",
    ChainStatus.RETIRED: ":file_cabinet:",
}
RUN_ICONS = {
    RunStatus.QUEUED: ":clock3:",
    RunStatus.RUNNING: ":arrows_counterclockwise:",
    RunStatus.SUCCEEDED: ":white_check_mark:",
    RunStatus.WARNING: ":warning:",
    RunStatus.FAILED: ":x:",
    RunStatus.INTERRUPTED: ":zap:",
    RunStatus.SKIPPED: ":fast_forward:",
    RunStatus.CANCELLED: ":heavy_multiplication_x:",
}


@dataclass(frozen=True)
class Answer:
    text: str  # notification fallback
    blocks: list[Block]

    def to_dicts(self) -> list[dict[str, Any]]:
        return [block.to_dict() for block in self.blocks]


# --------------------------------------------------------------------------------------------- helpers


def _section(text: str) -> SectionBlock:
    if len(text) > MAX_TEXT:
        text = text[: MAX_TEXT - 1] + "…"
    return SectionBlock(text=MarkdownTextObject(text=text))


def _context(text: str) -> ContextBlock:
    return ContextBlock(elements=[MarkdownTextObject(text=text[:MAX_TEXT])])


def _header(text: str) -> HeaderBlock:
    return HeaderBlock(text=text[:150])


def chain_schedule(chain: BackupChain) -> dict[str, Any]:
    """The chain's schedule mapping with the chain's own time zone and priority filled in where it has none."""
    stored: Mapping[str, Any] = chain.schedule if isinstance(chain.schedule, Mapping) else {}
    if not stored:
        return {}
    return {"timezone": chain.timezone, "priority": chain.priority, **stored}


def _zone(schedule: Mapping[str, Any], fallback: str = "UTC") -> ZoneInfo:
    name = schedule.get("timezone")
    return ZoneInfo(name if sched.is_zone(name) else (fallback if sched.is_zone(fallback) else "UTC"))


def _when(moment: datetime | None, zone: ZoneInfo) -> str:
    return format_run(moment.astimezone(zone)) if moment else "—"


def _run_time(run: Run) -> datetime | None:
    return run.finished_at or run.started_at or run.scheduled_for or run.created_at


def _first_line(text: str | None, limit: int = 200) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def next_runs_of(chain: BackupChain, count: int, now: datetime) -> tuple[list[datetime], str | None]:
    """The chain's next due instants, or none and why (not active, no valid schedule)."""
    if chain.status != ChainStatus.ACTIVE:
        return [], f"not scheduled while the chain is {chain.status.value.replace('_', ' ')}"
    schedule = chain_schedule(chain)
    if not schedule or sched.validate_schedule(schedule):
        return [], "no valid schedule"
    return sched.next_runs(schedule, count, now), None


async def _last_run(tenant: Tenant, chain: BackupChain) -> Run | None:
    """The latest backup run of the chain that has started (or was skipped): what "last run" means in a list."""
    return (
        await tenant.query(Run)
        .filter(chain_id=chain.id, kind="backup")
        .exclude(status=RunStatus.QUEUED)
        .order_by("-created_at", "-id")
        .first()
    )


def _run_line(run: Run, zone: ZoneInfo, *, with_kind: bool) -> str:
    icon = RUN_ICONS.get(run.status, "")
    kind = f"{run.kind.value} " if with_kind else ""
    line = f"{icon} {kind}{run.status.value} · {_when(_run_time(run), zone)}"
    if run.archive_name and run.status in (RunStatus.SUCCEEDED, RunStatus.WARNING):
        line += f" · `{_esc(run.archive_name)}`"
    error = _first_line(run.error)
    if error:
        line += f"\n      _{_esc(error)}_"
    return line


def status_words(chain: BackupChain, zone: ZoneInfo) -> str:
    """Given a chain, return its icon and status as a list shows them (a retired chain with its retirement date)."""
    words = f"{CHAIN_ICONS.get(chain.status, '')} {chain.status.value.replace('_', ' ')}"
    if chain.status == ChainStatus.RETIRED and chain.retired_at is not None:
        words += f" {_when(chain.retired_at, zone)} (archives kept: `/backup restore`, `/backup archives`)"
    return words


async def chain_buttons(actor: Actor | None, chain: BackupChain) -> list[ButtonElement]:
    """Given the viewer and a chain, return the Edit and Restore… buttons they may use: Edit for whoever may operate
    it (not once retired), Restore… for admins and its server's operators (the click is checked again)."""
    if actor is None:
        return []
    buttons = []
    if chain.status != ChainStatus.RETIRED and await authz.may_operate(actor, chain):
        buttons.append(ButtonElement(text="Edit", action_id=EDIT, value=str(chain.id)))
    if await restores.may_restore(actor, chain):
        buttons.append(ButtonElement(text="Restore…", action_id=RESTORE, value=str(chain.id)))
    return buttons


def _not_found(name: str) -> Answer:
    text = (
        f"I can't find a backup chain named `{_esc(name[:100])}` in this workspace. "
        "`/backup list` shows the chains you have."
    )
    return Answer(text, [_section(text)])


# --------------------------------------------------------------------------------------------- the answers


async def list_answer(tenant: Tenant, *, now: datetime | None = None) -> Answer:
    """``/backup list``: every chain of the workspace with its status, schedule, last run and next run."""
    moment = now or datetime.now(UTC)
    chains = await tenant.query(BackupChain).order_by("name", "id")
    if not chains:
        text = "There are no backup chains in this workspace yet. Set one up with `/backup new`."
        return Answer(text, [_header("Backup chains"), _section(text)])
    blocks: list[Block] = [_header("Backup chains"), _context(f"{len(chains)} chain(s) in this workspace.")]
    for chain in chains[:MAX_ROWS]:
        schedule = chain_schedule(chain)
        zone = _zone(schedule, chain.timezone)
        last = await _last_run(tenant, chain)
        last_text = "never ran" if last is None else _run_line(last, zone, with_kind=False)
        upcoming, why = next_runs_of(chain, 1, moment)
        next_text = _when(upcoming[0], zone) if upcoming else f"— ({why})"
        blocks.append(
            _section(
                f"*{_esc(chain.name)}* · {status_words(chain, zone)}\n"
                f"Schedule: {_esc(sched.summary(schedule))}\n"
                f"Last run: {last_text}\n"
                f"Next run: {next_text}"
            )
        )
    if len(chains) > MAX_ROWS:
        blocks.append(_context(f"…and {len(chains) - MAX_ROWS} more. `/backup status <chain>` shows any one."))
    else:
        blocks.append(_context("`/backup status <chain>` shows a chain's runs, repository and next runs."))
    return Answer(f"{len(chains)} backup chain(s)", blocks)


async def status_answer(tenant: Tenant, name: str, *, now: datetime | None = None,
                        actor: Actor | None = None) -> Answer:  # fmt: skip
    """``/backup status <chain>``: one chain's repository, pool, sources, retention, last and next runs; with the
    Edit and Restore… buttons the asking ``actor`` may use (none when the caller does not say who asks)."""
    moment = now or datetime.now(UTC)
    name = name.strip().strip("`\"'")
    if not name:
        text = "Which chain? Use `/backup status <chain>`; `/backup list` shows the chains you have."
        return Answer(text, [_section(text)])
    chain = await tenant.get_or_none(BackupChain, name=name)
    if chain is None:
        chain = await tenant.query(BackupChain).filter(name__iexact=name).first()
    if chain is None:
        return _not_found(name)
    schedule = chain_schedule(chain)
    zone = _zone(schedule, chain.timezone)
    blocks: list[Block] = [_header(f"Backup chain {chain.name}")]
    overview = [
        f"*Status:* {status_words(chain, zone)}",
        f"*Schedule:* {_esc(sched.summary(schedule))} · priority {chain.priority}",
    ]
    if chain.depends_on_id:
        parent = await tenant.get_or_none(BackupChain, id=chain.depends_on_id)
        if parent is not None:
            overview.append(f"*Runs after:* {_esc(parent.name)} succeeds")
    blocks.append(_section("\n".join(overview)))
    blocks.append(_section(await _repository_text(tenant, chain)))
    blocks.append(_section(await _sources_text(tenant, chain)))
    runs = await tenant.query(Run).filter(chain_id=chain.id).order_by("-created_at", "-id").limit(RUNS_SHOWN)
    runs_text = "\n".join(_run_line(run, zone, with_kind=True) for run in runs) or "No runs yet."
    blocks.append(_section(f"*Last {RUNS_SHOWN} runs*\n{runs_text}"))
    upcoming, why = next_runs_of(chain, RUNS_SHOWN, moment)
    next_text = "\n".join(f"• {_when(m, zone)}" for m in upcoming) or f"None: {why}."
    blocks.append(_section(f"*Next {RUNS_SHOWN} runs*\n{next_text}"))
    buttons = await chain_buttons(actor, chain)
    if buttons:
        blocks.append(ActionsBlock(block_id=f"status_chain_actions_{chain.id}", elements=buttons))
    return Answer(f"Backup chain {chain.name}: {chain.status.value}", blocks)


async def _repository_text(tenant: Tenant, chain: BackupChain) -> str:
    repo = await tenant.get_or_none(Repository, id=chain.repository_id)
    if repo is None:
        return "*Repository:* not found"
    pool = await tenant.get_or_none(StoragePool, id=repo.pool_id)
    zone = _zone(chain_schedule(chain), chain.timezone)
    lines = [
        f"*Repository:* {_esc(repo.name)} · `{_esc(repo.path)}` · {_esc(repo.encryption)}, "
        f"compression {_esc(repo.compression)} · {repository_size(repo, zone)}"
    ]
    if pool is not None:
        lines.append(f"*Pool:* {_esc(pool.name)} ({pool.tier.value}) · {await pool_summary(pool, zone)}")
    try:
        retention = policy_summary(policy_of(repo.retention or {}))
    except (TypeError, ValueError):
        retention = "not readable"
    lines.append(f"*Retention:* {retention if repo.retention else 'not set'}")
    lines.append(f"*Prune + compact:* {_esc(prune_summary(repo, chain.timezone))} (`/backup prune`)")
    lines.append(f"*Integrity check:* {_esc(check_summary(chain))} (`/backup check`)")
    lines.append(f"*Archive history:* {history_state(repo)}")
    return "\n".join(lines)


def history_state(repo: Repository) -> str:
    """Given a repository, return whether its archives agree with the bot's record (and what that means for
    pruning): ok, needs review (an admin decides in the alert) or quarantined."""
    state = Integrity(repo.integrity)
    if state == Integrity.QUARANTINED:
        return ":lock: quarantined by an admin — every archive is kept, no prune or compact until released"
    if state == Integrity.NEEDS_REVIEW:
        return (":warning: differs from the bot's record of verified archives — no prune or compact until an admin "
                "accepts the change or quarantines it (see the alert)")
    return "matches the bot's record of verified archives"


def repository_size(repo: Repository, zone: ZoneInfo | None = None) -> str:
    """Given a repository, return its deduplicated size as borg last measured it (after each backup, prune and
    compact), or that it was not measured yet."""
    if repo.size_bytes is None:
        return "size not measured yet"
    when = f" (measured {_when(repo.size_checked_at, zone)})" if zone is not None and repo.size_checked_at else ""
    return f"{_size(repo.size_bytes)}{when}"


async def pool_summary(pool: StoragePool, zone: ZoneInfo | None = None) -> str:
    """Given a pool, return its free space, quota use, last measurement and any alert or measuring problem (the
    numbers of :mod:`bot.backup.capacity`, as ``/backup pools`` and ``/metrics`` show them)."""
    text = capacity.describe(pool, await capacity.usage(pool))
    if zone is not None and pool.available_checked_at is not None:
        text += f" · measured {_when(pool.available_checked_at, zone)}"
    if pool.alert_active:
        text += f" · :warning: above its {pool.alert_threshold_pct}% alert threshold"
    if pool.measure_error:
        text += f"\n      _Last measurement failed: {_esc(_first_line(pool.measure_error))}_"
    return text


async def _sources_text(tenant: Tenant, chain: BackupChain) -> str:
    sources = await chain.sources.filter(team_id=tenant.team_id).order_by("name")
    if not sources:
        return "*Sources:* none"
    servers = {s.id: s for s in await tenant.query(Server).filter(id__in=[source.server_id for source in sources])}
    lines = [_source_line(source, servers.get(source.server_id)) for source in sources]
    return "*Sources:*\n" + "\n".join(lines)


def _source_line(source: BackupSource, server: Server | None) -> str:
    where = f" on {_esc(server.name)} ({_esc(server.host)})" if server else ""
    return f"• {_esc(source.name)} — {TYPE_LABELS.get(source.type.value, source.type.value)}{where}"


def _size(count: int | None) -> str:
    value = float(count or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PiB"  # pragma: no cover - the loop always returns


def _template_schedule(schedule: Mapping[str, Any]) -> str:
    """A template's schedule may leave the time zone to the person using it."""
    if schedule.get("timezone"):
        return sched.summary(schedule)
    return sched.summary({**schedule, "timezone": "UTC"}).removesuffix(" in UTC") + " in your time zone"


async def templates_answer(tenant: Tenant) -> Answer:
    """``/backup templates``: the workspace's templates and how to start a wizard from one."""
    templates = await tenant.query(BackupTemplate).order_by("name", "id")
    if not templates:
        text = "There are no templates in this workspace yet. At the end of `/backup new`, choose *Save as template*."
        return Answer(text, [_header("Backup templates"), _section(text)])
    blocks: list[Block] = [_header("Backup templates")]
    for template in templates[:MAX_ROWS]:
        kind = TYPE_LABELS.get(template.backup_type.value, template.backup_type.value)
        lines = [f"*{_esc(template.name)}* · {kind}"]
        if template.description:
            lines.append(_esc(_first_line(template.description, 300)))
        facts = []
        if template.retention_policy:
            try:
                facts.append(f"keeps {policy_summary(policy_of(template.retention_policy))}")
            except (TypeError, ValueError):
                pass
        if template.schedule:
            facts.append(_esc(_template_schedule(template.schedule)))
        if facts:
            lines.append(" · ".join(facts))
        lines.append(f"Use with `/backup new from:{_esc(template.name)}` or the button")
        section = _section("\n".join(lines))
        section.accessory = ButtonElement(text="Start wizard", action_id=TEMPLATE_START, value=str(template.id))
        blocks.append(section)
    if len(templates) > MAX_ROWS:
        blocks.append(_context(f"…and {len(templates) - MAX_ROWS} more."))
    blocks.append(DividerBlock())
    return Answer(f"{len(templates)} template(s)", blocks)


async def answer(tenant: Tenant, text: str, *, now: datetime | None = None, actor: Actor | None = None) -> Answer:
    """The answer to ``/backup <text>`` for the words in :data:`WORDS`; ``actor`` (who asks) decides which buttons
    a chain's status shows."""
    parts = (text or "").strip().split(maxsplit=1)
    word, rest = (parts[0].lower() if parts else ""), (parts[1] if len(parts) > 1 else "")
    if word == "list":
        return await list_answer(tenant, now=now)
    if word == "status":
        return await status_answer(tenant, rest, now=now, actor=actor)
    if word == "templates":
        return await templates_answer(tenant)
    raise ValueError(f"not a listing word: {word!r}")
