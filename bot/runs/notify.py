"""Reports in channels: run alerts + Run/Chain rows → report view models → rendered → queued in the outbox.

The queue/executor publishes ``run_succeeded``, ``run_failed``, ``run_skipped`` and ``run_interrupted``
:class:`~bot.alerts.Alert`s (details: ``chain_id``, ``run_id``, optionally ``kind``/``reason``/``hint``/``stats``).
:class:`Notifier` subscribes, reads the rows (the row wins over the alert's details when both say something) and
builds a :class:`Report`; a renderer injected by the Slack layer (``bot.slack.reports.render``) turns it into
text + blocks, and the :class:`~bot.runs.outbox.Outbox` delivers it. Nothing here knows Block Kit.

**One thread per chain per day** (the chain's local day, in its time zone). The first report of the day is the
parent, later ones reply in its thread. Why per day rather than per chain: a per-chain thread grows forever, its
parent scrolls out of sight, and a new reply there is invisible unless broadcast; a top-level message per run is
noisy for hourly chains. Per day gives at most one top-level message per chain per day, a thread that reads as
"what happened to this chain today", and a bounded history a person can scroll. Failures, check failures and
stale alerts are replied with ``reply_broadcast`` so they also show in the channel: alerts must not hide in a
thread. The thread's parent ts is kept in the ``report_thread`` table (keyed ``chain:<id>:<YYYY-MM-DD>``) rather
than in ``Workspace.settings``: concurrent reports would race on one JSON document, and a table row is written
once with a unique key (the outbox writes it when the parent is actually delivered, so a parent queued during a
Slack outage still gets its replies in order).

Where: ``chain.notify_channel`` (default: where the chain was created, set by the wizard); a chain without one
is not reported. A repository-level run (a scheduled ``prune``: no chain) is reported once per channel of the
repository's chains, in the day thread of the first such chain, titled with the repository's name (a repository
has no channel of its own, and its chains' people are the ones who care what was pruned). Success summaries (and
prune/compact/check successes) only when ``chain.notify_success``; failures, skipped/interrupted runs, check
failures and stale alerts always.

Stale alert: :func:`find_stale` lists active chains with no successful backup for ``factor`` × their interval
(the longest gap between two scheduled days), :meth:`Notifier.post_stale` posts each once per stale episode
(deduplicated through an AuditLog row naming the last success). The scheduler calls it hourly (its ``hourly``
callbacks); one aggregate query finds the candidates, so it stays cheap with thousands of chains.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bot.alerts import Alert, AlertBus
from bot.borg.runner import KINDS
from bot.runs.accounting import QUOTA_HINT
from bot.runs.outbox import Outbox
from storage.models import AuditLog, BackupChain, ChainStatus, Repository, Run, RunKind, RunStatus
from storage.orm import Max

RUN_ALERTS = ("run_succeeded", "run_failed", "run_skipped", "run_interrupted", "restore_started")
DAY_ORDER = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

# failure kind → (what happened, what to do). Borg's own kinds fall back to bot.borg.runner.KINDS.
HINTS: dict[str, tuple[str, str]] = {
    "host_unreachable": (
        "The server could not be reached over SSH.",
        "Check that the host is up, that its SSH port is open from the bot, and the DNS name. The run is retried.",
    ),
    "unreachable": ("The connection broke during the run.", KINDS["unreachable"][1]),
    "connect_timeout": (
        "The SSH connection timed out.",
        "Check the network path and firewall between the bot and the server. The run is retried.",
    ),
    "command_timeout": (
        "A command ran longer than its timeout.",
        "Check the server's load and the size of the backup; raise the timeout if the data simply grew.",
    ),
    "auth_failed": (
        "SSH authentication was refused.",
        "The bot's public key is no longer accepted: re-install it in the user's authorized_keys "
        "(`/backup` → server → repair access). Not retried until fixed.",
    ),
    "host_key_changed": (
        "The server's SSH host key changed.",
        "This may be a reinstalled server or an attack. Verify the new fingerprint with the server's owner, "
        "then confirm it in the bot. Nothing runs against this host until then.",
    ),
    "host_key_unpinned": (
        "The server's host key was never confirmed.",
        "Confirm the host key fingerprint in the bot before backups can run.",
    ),
    "disk_full": ("The storage pool is out of space.", KINDS["disk_full"][1]),
    "quota": ("The storage pool is over its quota, so the backup was not started.", QUOTA_HINT),
    "lock": ("The repository is locked by another borg process.", KINDS["lock"][1]),
    "source": (
        "The database dump (or the source command) failed.",
        "Check the database is running and the credentials still work (`/backup` → test connection); "
        "the dump's own error is below.",
    ),
    "dump_failed": (
        "The database dump failed.",
        "Check the database is running and the credentials still work (`/backup` → test connection); "
        "the dump's own error is below.",
    ),
    "borg_missing": ("borg is not installed where it must run.", KINDS["borg_missing"][1]),
    "passphrase": ("The repository passphrase was refused.", KINDS["passphrase"][1]),
    "integrity": ("borg found an inconsistency in the repository.", KINDS["integrity"][1]),
    "hook_failed": (
        "A pre/post backup command failed.",
        "Run the chain's hook by hand on the server to see why; the backup did not run past it.",
    ),
    "snapshot": ("The snapshot could not be created.", "Check free space in the volume group / pool for snapshots."),
    "window_missed": (
        "The run could not start inside its backup window.",
        "The queue was busy or the bot was down; it runs at the next scheduled time. Widen the window if frequent.",
    ),
}


def hint_for(kind: str | None, fallback: str = "") -> tuple[str, str]:
    """(cause headline, recovery hint) for a failure kind."""
    if kind and kind in HINTS:
        return HINTS[kind]
    if kind and kind in KINDS:
        return "borg failed.", KINDS[kind][1]
    return "The run failed.", fallback or "See the error below; retry once the cause is fixed."


@dataclass(frozen=True)
class Report:
    """What to say about a chain, independent of Slack. ``kind``: success, failure, prune, check_ok,
    check_failed, skipped, interrupted, stale."""

    kind: str
    team_id: str
    chain_id: int
    chain_name: str
    title: str
    run_id: int | None = None
    facts: list[tuple[str, str]] = field(default_factory=list)
    cause: str | None = None
    error: str | None = None
    hint: str | None = None
    details: list[str] = field(default_factory=list)
    actions: bool = False  # Retry now / Pause chain
    restore: bool = False  # a Restore button (success and failure reports)
    alert: bool = False  # broadcast from the thread into the channel

    @property
    def text(self) -> str:
        return f"{self.title}: {self.cause}" if self.cause else self.title


Renderer = Callable[[Report], dict[str, Any]]  # → chat.postMessage params (text, blocks)


def human_bytes(n: float | None) -> str:
    if n is None:
        return "–"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    total = round(seconds)
    if total >= 86400 and total % 3600 == 0:
        days, hours = divmod(total // 3600, 24)
        return f"{days} d" + (f" {hours} h" if hours else "")
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def dedup_ratio(stats: dict[str, Any]) -> str:
    original, dedup = stats.get("original_size") or 0, stats.get("deduplicated_size") or 0
    if not original:
        return "–"
    if not dedup:
        return "∞ (nothing new stored)"
    return f"{original / dedup:.1f}×"


def success_facts(run: Run) -> list[tuple[str, str]]:
    stats = run.stats or {}
    return [
        ("Archive", run.archive_name or "–"),
        ("Original size", human_bytes(stats.get("original_size"))),
        ("Compressed", human_bytes(stats.get("compressed_size"))),
        ("Deduplicated", human_bytes(stats.get("deduplicated_size"))),
        ("Dedup ratio", dedup_ratio(stats)),
        ("Duration", human_duration(stats.get("duration"))),
        ("Files", f"{stats.get('nfiles', 0):,}"),
    ]


def pruned_archives(stats: dict[str, Any] | None) -> list[str]:
    return [name for job in (stats or {}).get("jobs") or [] for name in job.get("pruned") or []]


def interval_of(schedule: dict[str, Any] | None) -> dt.timedelta | None:
    """The longest gap between two scheduled days (mon,wed,fri → 3 days), the chain's nominal interval."""
    days = sorted({DAY_ORDER.index(d) for d in (schedule or {}).get("days") or [] if d in DAY_ORDER})
    if not days:
        return None
    gaps = [(days[(i + 1) % len(days)] - d) % 7 or 7 for i, d in enumerate(days)]
    return dt.timedelta(days=max(gaps))


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


async def last_success(chain: BackupChain) -> Run | None:
    return (
        await Run.filter(
            team_id=chain.team_id,
            chain_id=chain.id,
            kind=RunKind.BACKUP,
            status__in=[RunStatus.SUCCEEDED, RunStatus.WARNING],
        )
        .order_by("-finished_at", "-id")
        .first()
    )


async def _last_finished() -> dict[int, dt.datetime]:
    """Per chain, the latest ``finished_at`` of its successful backups (one aggregate query)."""
    rows = (
        await Run.filter(kind=RunKind.BACKUP, status__in=[RunStatus.SUCCEEDED, RunStatus.WARNING],
                         chain_id__isnull=False)
        .annotate(last=Max("finished_at")).group_by("chain_id").values("chain_id", "last")
    )  # fmt: skip
    return {row["chain_id"]: _aware(row["last"]) for row in rows if row["last"] is not None}


async def find_stale(now: dt.datetime, factor: float = 2.0) -> list[tuple[BackupChain, Run | None, dt.timedelta]]:
    """Active chains with no successful backup for ``factor`` × their interval: (chain, last success, interval).

    The aggregate rules fresh chains out; each remaining candidate is then decided on its own last success."""
    stale = []
    finished = await _last_finished()
    for chain in await BackupChain.filter(status=ChainStatus.ACTIVE):
        interval = interval_of(chain.schedule)
        if interval is None:
            continue
        if chain.id in finished and now - finished[chain.id] <= interval * factor:
            continue
        last = await last_success(chain)
        since = _aware(last.finished_at or last.created_at) if last else _aware(chain.updated_at)
        if now - since > interval * factor:
            stale.append((chain, last, interval))
    return stale


class Notifier:
    """Subscribes to run alerts and queues the chain's reports in its channel."""

    def __init__(self, outbox: Outbox, render: Renderer, *, clock: Callable[[], dt.datetime] | None = None) -> None:
        self.outbox, self.render = outbox, render
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))

    def subscribe(self, bus: AlertBus) -> Callable[[], None]:
        return bus.subscribe(self.on_alert)

    async def on_alert(self, alert: Alert) -> None:
        if alert.kind not in RUN_ALERTS:
            return
        details = alert.details
        run = None
        if details.get("run_id") is not None:
            run = await Run.get_or_none(team_id=alert.team_id, id=details["run_id"])
        if details.get("chain_id") is None and (run is None or run.chain_id is None):  # type: ignore[attr-defined]
            await self.on_repository_alert(alert, run)
            return
        chain = await BackupChain.get_or_none(team_id=alert.team_id, id=details.get("chain_id"))
        if chain is None:
            return
        sizes = await Repository.filter(id=chain.repository_id).values_list("size_bytes", flat=True)  # type: ignore[attr-defined]
        for report in self.reports_for(alert, chain, run):
            if report.kind == "success" and sizes and sizes[0] is not None:  # measured after this very run
                report.facts.append(("Repository size", human_bytes(sizes[0])))
            await self.post(chain, report)

    async def on_repository_alert(self, alert: Alert, run: Run | None) -> None:
        """A run of a repository rather than a chain (a scheduled prune): once per channel of its chains."""
        ident = run.repository_id if run is not None else alert.details.get("repository_id")  # type: ignore[attr-defined]
        repository = await Repository.get_or_none(team_id=alert.team_id, id=ident) if ident else None
        if repository is None:
            return
        chains = await BackupChain.filter(team_id=alert.team_id, repository_id=repository.id,
                                          status__in=[ChainStatus.ACTIVE, ChainStatus.PAUSED],
                                          notify_channel__isnull=False).order_by("id")  # fmt: skip
        channels: dict[str, BackupChain] = {}
        for chain in chains:
            channels.setdefault(chain.notify_channel, chain)  # type: ignore[arg-type]
        for chain in channels.values():
            for report in self.repository_reports(alert, repository, chain, run):
                await self.post(chain, report)

    def repository_reports(self, alert: Alert, repository: Repository, chain: BackupChain,
                           run: Run | None) -> list[Report]:  # fmt: skip
        """Reports of a repository-level run, posted in ``chain``'s day thread (no Retry/Pause: they act on chains)."""
        d = alert.details
        base = {"team_id": chain.team_id, "chain_id": chain.id, "chain_name": chain.name, "run_id": run and run.id}
        what = (str(run.kind) if run else str(d.get("run_kind") or RunKind.PRUNE)).capitalize()
        name = repository.name
        where = ("Repository", name)
        if alert.kind == "run_succeeded":
            if not chain.notify_success:
                return []
            stats = (run.stats if run else None) or d.get("stats") or {}
            pruned = pruned_archives(stats)
            facts = [where, ("Archives pruned", str(len(pruned))),
                     ("Space freed", human_bytes(stats.get("freed_bytes"))),
                     ("Duration", human_duration(stats.get("duration")))]  # fmt: skip
            if stats.get("repository_bytes") is not None:  # borg's deduplicated size after prune + compact
                facts.append(("Repository size", human_bytes(stats["repository_bytes"])))
            shown = pruned[:20] + ([f"… and {len(pruned) - 20} more"] if len(pruned) > 20 else [])
            return [Report("prune", title=f"🧹 {what} of {name}", facts=facts, details=shown, **base)]
        if alert.kind == "run_failed":
            kind = (run.error_kind if run else None) or d.get("kind")
            cause, hint = hint_for(kind, d.get("hint") or "")
            error = (run.error if run else None) or d.get("reason") or alert.message
            facts = [where, ("Failure", kind or "unknown"), ("Attempt", str(run.attempts if run else 1))]
            return [Report("failure", title=f"🚨 {what} of {name} failed", cause=cause, error=error, hint=hint,
                           facts=facts, alert=True, **base)]  # fmt: skip
        if alert.kind == "run_skipped":
            reason = d.get("reason") or (run.error if run else None) or alert.message
            cause, hint = hint_for(d.get("kind") or (run.error_kind if run else None) or "window_missed")
            return [Report("skipped", title=f"⏭️ {what} of {name} skipped", cause=cause, error=reason, hint=hint,
                           facts=[where], alert=True, **base)]  # fmt: skip
        if alert.kind == "run_interrupted":
            return [Report("interrupted", title=f"⚠️ {what} of {name} was interrupted", facts=[where], alert=True,
                           cause="The bot stopped while the run was in progress. It is retried, never counted a "
                                 "success.", **base)]  # fmt: skip
        return []

    def reports_for(self, alert: Alert, chain: BackupChain, run: Run | None) -> list[Report]:
        d = alert.details
        base = {"team_id": chain.team_id, "chain_id": chain.id, "chain_name": chain.name, "run_id": run and run.id}
        run_kind = str(run.kind) if run else str(d.get("run_kind") or RunKind.BACKUP)
        name = chain.name
        if run_kind == RunKind.RESTORE or alert.kind == "restore_started":
            return restore_reports(alert, run, base)
        if run_kind == RunKind.DRILL:
            return drill_reports(alert, run, base)
        if alert.kind == "run_succeeded":
            if not chain.notify_success:
                return []
            if run is not None and not run.stats and d.get("stats"):
                run.stats = d["stats"]
            if run_kind == RunKind.CHECK:
                return [Report("check_ok", title=f"✅ Repository check of {name} passed", **base)]
            out = []
            if run is not None and run_kind == RunKind.BACKUP:
                warn = run.status == RunStatus.WARNING
                title = f"⚠️ Backup of {name} finished with warnings" if warn else f"✅ Backup of {name} succeeded"
                details = [line for line in (run.log_excerpt or "").splitlines() if warn and line]
                out.append(Report("success", title=title, facts=success_facts(run), details=details, restore=True,
                                  **base))  # fmt: skip
            stats = run.stats if run else None
            pruned = pruned_archives(stats)
            if pruned or run_kind in (RunKind.PRUNE, RunKind.COMPACT):
                freed = (stats or {}).get("freed_bytes")
                facts = [("Archives pruned", str(len(pruned))), ("Space freed", human_bytes(freed))]
                shown = pruned[:20] + ([f"… and {len(pruned) - 20} more"] if len(pruned) > 20 else [])
                out.append(Report("prune", title=f"🧹 Prune of {name}", facts=facts, details=shown, **base))
            return out
        if alert.kind == "run_failed":
            kind = (run.error_kind if run else None) or d.get("kind") or d.get("error_kind")
            cause, hint = hint_for(kind, d.get("hint") or "")
            error = (run.error if run else None) or d.get("reason") or alert.message
            if run_kind == RunKind.CHECK:
                title, report_kind = f"🚨 Repository check of {name} failed", "check_failed"
            else:
                title, report_kind = f"🚨 {run_kind.capitalize()} of {name} failed", "failure"
            facts = [("Failure", kind or "unknown"), ("Attempt", str(run.attempts if run else 1))]
            return [
                Report(report_kind, title=title, cause=cause, error=error, hint=hint, facts=facts, actions=True,
                       alert=True, restore=run_kind == RunKind.BACKUP, **base)
            ]  # fmt: skip
        if alert.kind == "run_skipped":
            reason = d.get("reason") or (run.error if run else None) or alert.message
            cause, hint = hint_for(d.get("kind") or "window_missed")
            return [Report("skipped", title=f"⏭️ Backup of {name} skipped", cause=cause, error=reason, hint=hint,
                           alert=True, **base)]  # fmt: skip
        if alert.kind == "run_interrupted":
            return [
                Report("interrupted", title=f"⚠️ Backup of {name} was interrupted",
                       cause="The bot stopped while the run was in progress. It is retried, never counted a success.",
                       alert=True, **base)
            ]  # fmt: skip
        return []

    def thread_key(self, chain: BackupChain) -> str:
        try:
            zone: dt.tzinfo = zoneinfo.ZoneInfo(chain.timezone or "UTC")
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            zone = dt.UTC
        return f"chain:{chain.id}:{self.clock().astimezone(zone).date().isoformat()}"

    async def post(self, chain: BackupChain, report: Report) -> bool:
        """Queue ``report`` in the chain's channel and day thread; False if the chain has no channel."""
        if not chain.notify_channel:
            return False
        payload = self.render(report)
        if report.alert:
            payload["reply_broadcast"] = True
        await self.outbox.enqueue(
            chain.team_id, chain.notify_channel, payload, thread_key=self.thread_key(chain), ref=f"report:{report.kind}"
        )
        return True

    async def post_stale(self, factor: float = 2.0) -> list[int]:
        """Post a stale alert for each stale chain, once per episode; returns the chain ids alerted now."""
        now = self.clock()
        alerted = []
        for chain, last, interval in await find_stale(now, factor):
            marker = {"last_success_run": last.id if last else None}
            seen = (
                await AuditLog.filter(
                    team_id=chain.team_id, action="report.stale", object_type="chain", object_id=str(chain.id)
                )
                .order_by("-id")
                .first()
            )
            if seen is not None and seen.details.get("last_success_run") == marker["last_success_run"]:
                continue
            when = (last.finished_at or last.created_at) if last else None
            facts = [
                ("Last success", _aware(when).strftime("%Y-%m-%d %H:%M UTC") if when else "never"),
                ("Expected every", human_duration(interval.total_seconds())),
            ]
            report = Report(
                "stale", team_id=chain.team_id, chain_id=chain.id, chain_name=chain.name,
                title=f"⏰ {chain.name} has not backed up successfully for a while",
                cause=f"No successful backup for more than {factor:g}× its interval.",
                hint="Look at the chain's latest failures in this channel, or retry it now.",
                facts=facts, actions=True, alert=True,
            )  # fmt: skip
            if await self.post(chain, report):
                await AuditLog.create(
                    team_id=chain.team_id, actor="system", action="report.stale", object_type="chain",
                    object_id=str(chain.id), details=marker,
                )  # fmt: skip
                alerted.append(chain.id)
        return alerted


def restore_facts(spec: dict[str, Any] | None, result: dict[str, Any] | None) -> list[tuple[str, str]]:
    """What a restore restored and how it was checked, as report facts."""
    spec = spec or {}
    facts = [("Archive", str(spec.get("archive") or "?")), ("Restored", _described(spec))]
    checked = (result or {}).get("files")
    if checked:
        facts.append(("Files", f"{checked.get('files')} of {checked.get('expected_files')} listed, "
                               f"{human_bytes(checked.get('bytes'))} of {human_bytes(checked.get('expected_bytes'))}"))
        facts.append(("Checksums", f"{checked.get('checksums_ok')} of {checked.get('sampled')} sampled files match"))
    database = (result or {}).get("database")
    if database:
        tables = database.get("tables") or {}
        unit = ("collections", "documents") if database.get("engine") == "mongodb" else ("tables", "rows")
        facts.append(("Checked", f"the restore tool succeeded; {len(tables)} {unit[0]}, {database.get('rows', 0)} "
                                 f"{unit[1]}"))  # fmt: skip
    roles = (result or {}).get("roles")
    if roles:
        facts.append(("Roles", _roles_text(roles)))
    return facts


def _roles_text(roles: dict[str, Any]) -> str:
    """Which of the server's roles a restore created and which existed already (left unchanged)."""

    def names(key: str) -> str:
        listed = [str(n) for n in roles.get(key) or []]
        return ", ".join(listed[:20]) + (f" and {len(listed) - 20} more" if len(listed) > 20 else "") or "none"

    return (f"created: {names('roles_created')}; existed already (left unchanged): {names('roles_existing')}; "
            f"{roles.get('memberships', 0)} memberships granted")


def _described(spec: dict[str, Any]) -> str:
    if spec.get("what") == "database":
        roles = " (and the server's roles)" if spec.get("globals_archive") else ""
        return f"database {spec.get('source_database')} → {spec.get('target')} on {spec.get('server_name')}{roles}"
    paths = spec.get("paths") or []
    what = ", ".join(paths[:3]) + (" …" if len(paths) > 3 else "") if paths else "everything"
    return f"{what} → {spec.get('server_name')}:{spec.get('target')}"


def restore_reports(alert: Alert, run: Run | None, base: dict[str, Any]) -> list[Report]:
    """A restore in the chain's thread: started (progress), restored and checked, failed, or interrupted (its
    target left marked partial). Always reported: a person asked for it."""
    d = alert.details
    spec = (run.spec if run else None) or {}
    name = base["chain_name"]
    if alert.kind == "restore_started":
        attempt = f" (attempt {d.get('attempts')})" if (d.get("attempts") or 1) > 1 else ""
        return [Report("restore_started", title=f"🔄 Restore from {name} started{attempt}",
                       facts=[("Archive", str(d.get("archive"))), ("Restoring", str(d.get("what")))], **base)]
    if alert.kind == "run_succeeded":
        result = spec.get("result") or ((run.stats or {}).get("restore") if run else None)
        return [Report("restore", title=f"✅ Restore from {name} done and checked", facts=restore_facts(spec, result),
                       restore=True, **base)]  # fmt: skip
    partial = ("The target is left marked as partial (a .backup-bot-restore-incomplete file in the directory, or a "
               "marker on the database) until a restore of it completes.")  # fmt: skip
    if alert.kind == "run_failed":
        kind = (run.error_kind if run else None) or d.get("kind")
        cause, hint = hint_for(kind, d.get("hint") or "")
        error = (run.error if run else None) or d.get("reason") or alert.message
        will_retry = bool(d.get("will_retry"))
        title = f"🚨 Restore from {name} failed" + (" (retrying)" if will_retry else "")
        return [Report("restore_failed", title=title, cause=cause, error=error, hint=hint,
                       facts=restore_facts(spec, None), alert=True, restore=True, **base)]  # fmt: skip
    if alert.kind == "run_interrupted":
        retry = " It is retried into the same target." if d.get("retry_run_id") else ""
        return [Report("interrupted", title=f"⚠️ Restore from {name} was interrupted", facts=restore_facts(spec, None),
                       cause=f"The bot stopped while the restore was in progress: not a success. {partial}{retry}",
                       alert=True, **base)]  # fmt: skip
    return []


def drill_facts(drill: dict[str, Any]) -> list[tuple[str, str]]:
    """A drill's result as report facts: what was restored where, the measured time and size, how it was checked,
    and what the cleanup removed."""
    facts = [("Archives", ", ".join(drill.get("archives") or []) or "–"), ("Drill server", str(drill.get("server"))),
             ("Restore time", human_duration(drill.get("seconds"))), ("Restored size", human_bytes(drill.get("bytes")))]
    for item in drill.get("restored") or []:
        checked, database = item.get("files"), item.get("database")
        if checked:
            facts.append(("Files", f"{checked.get('files')} of {checked.get('expected_files')} listed, "
                                   f"{checked.get('checksums_ok')} of {checked.get('sampled')} sampled checksums ok"))
        if database:
            facts.append((f"Database {database.get('source_database')}",
                          f"restored into a throwaway database: {len(database.get('tables') or {})} tables, "
                          f"{database.get('rows', 0)} rows"))  # fmt: skip
    cleanup = drill.get("cleanup") or {}
    facts.append(("Cleanup", "everything removed" if cleanup.get("ok") else
                  "left: " + "; ".join(cleanup.get("left") or ["unknown"])))  # fmt: skip
    return facts


def drill_reports(alert: Alert, run: Run | None, base: dict[str, Any]) -> list[Report]:
    """A restore drill in the chain's thread: passed (time, size, checks, cleanup), passed with something left
    behind, or failed — an alert with its cause and hint. Always reported: proving restores is its whole point."""
    d = alert.details
    name = base["chain_name"]
    drill = ((run.stats if run else None) or d.get("stats") or {}).get("drill") or {}
    if alert.kind == "run_succeeded":
        warned = run is not None and run.status == RunStatus.WARNING
        title = (f"⚠️ Restore drill of {name} passed, but its scratch data was not all removed" if warned
                 else f"✅ Restore drill of {name} passed")  # fmt: skip
        return [Report("drill", title=title, facts=drill_facts(drill), alert=warned, restore=True,
                       hint=(run.error if warned and run else None), **base)]  # fmt: skip
    if alert.kind == "run_failed":
        kind = (run.error_kind if run else None) or d.get("kind")
        _, fallback = hint_for(kind, d.get("hint") or "")
        error = (run.error if run else None) or d.get("reason") or alert.message
        retrying = " (retrying)" if d.get("will_retry") else ""
        return [Report("drill_failed", title=f"🚨 Restore drill of {name} failed{retrying}",
                       cause="The newest archive could not be restored and checked: a restore today would fail too.",
                       error=error, hint=d.get("hint") or fallback, facts=[("Failure", kind or "unknown")],
                       actions=True, alert=True, restore=True, **base)]  # fmt: skip
    if alert.kind == "run_interrupted":
        return [Report("interrupted", title=f"⚠️ Restore drill of {name} was interrupted", alert=True,
                       cause="The bot stopped during the drill: not a pass. Its scratch data may be left on the drill "
                             "server: remove its directory below /var/tmp/backup-bot-drill and its backup_bot_drill_* "
                             "databases.", **base)]  # fmt: skip
    return []
