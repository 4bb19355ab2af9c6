"""The wizard's test backup: prove the whole path with a small real backup, then remove every trace of it.

What each step proves, in order: the source answers over SSH; the pool opens the repository with the stored
passphrase (the bot's access); the source can push (its key, the pool's pinned host key, the passphrase,
write access) a small archive made of one sample file per path and of each dump command's output; one item
of it comes back byte-identical. The test archives (``<prefix>-bbtest-…``, a name no chain job can have) are
then deleted from the pool and the space compacted, so the chain's real archive list never shows them.
A dump that takes longer than the time limit is reported as "started and produced data" rather than failed.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from bot.backup.jobs import ArchiveJob, stamp
from bot.backup.runner import ChainPlan, JobOutcome, run_job
from bot.borg import compact, delete
from bot.borg import list as borg_list
from bot.borg.runner import BorgError, run_borg
from bot.transport.base import TransportError

TEST_MARK = "bbtest"
SAMPLE_LIMIT = 1024 * 1024  # bytes: sample files are at most this big
# $@ = paths: the first small readable regular file under each path (one line per path, empty if none).
_SAMPLES = (
    'for p in "$@"; do f=$(find "$p" -xdev -type f -readable -size -1024k -print 2>/dev/null | head -n 1); '
    'printf "%s\\n" "$f"; done'
)


@dataclass
class Step:
    name: str
    ok: bool
    detail: str
    seconds: float = 0.0
    kind: str | None = None  # the failure's kind (bot.borg.runner.KINDS, or a transport's) when it failed


@dataclass
class TestBackupReport:
    __test__ = False  # not a pytest class

    ok: bool
    steps: list[Step] = field(default_factory=list)
    archives: list[str] = field(default_factory=list)  # created (and removed again by the clean-up step)

    def failed_step(self) -> Step | None:
        return next((s for s in self.steps if not s.ok), None)


StepHandler = Callable[[Step], None]


class _Steps:
    def __init__(self, report: TestBackupReport, on_step: StepHandler | None) -> None:
        self.report, self.on_step, self.started = report, on_step, time.monotonic()

    def add(self, name: str, ok: bool, detail: str, kind: str | None = None) -> bool:
        step = Step(name, ok, detail, round(time.monotonic() - self.started, 2), None if ok else kind)
        self.report.steps.append(step)
        self.report.ok = self.report.ok and ok
        if self.on_step is not None:
            self.on_step(step)
        return ok


async def _samples(plan: ChainPlan, job: ArchiveJob) -> list[str]:
    result = await plan.source.run(["sh", "-c", _SAMPLES, "sh", *job.paths], sudo=job.privileged and plan.sudo,
                                   timeout=60)  # fmt: skip
    return [line for line in result.out.splitlines() if line.strip()]


async def _sample_job(plan: ChainPlan, job: ArchiveJob, steps: _Steps) -> ArchiveJob | None:
    if job.kind == "command":
        return replace(job, suffix=f"{TEST_MARK}-{job.suffix}"[:80])
    files = await _samples(plan, job)
    if not files:
        where = ", ".join(job.paths)
        detail = f"No readable file under {SAMPLE_LIMIT // 1024} KiB in {where}: check the paths and permissions."
        steps.add(f"read {job.suffix}", False, detail)
        return None
    steps.add(f"read {job.suffix}", True, f"sample: {', '.join(files)}")
    return replace(job, suffix=f"{TEST_MARK}-{job.suffix}"[:80], paths=tuple(files), excludes=(), before=(), after=())


async def _verify(plan: ChainPlan, job: ArchiveJob, label: str, outcome: JobOutcome, steps: _Steps) -> None:
    """Read one item back through the source's own access and compare it with the original."""
    item = job.stdin_name if job.kind == "command" else job.paths[0].lstrip("/")
    args = ["extract", "--stdout", plan.repo_at_source.archive(outcome.archive), item]
    restored = await run_borg(plan.source, args, plan.repo_at_source.with_secrets(job.secret_env), borg=plan.borg,
                              sudo=job.privileged and plan.sudo)  # fmt: skip
    if job.kind == "command":
        steps.add(f"restore {label}", bool(restored.stdout), f"read back {len(restored.stdout)} bytes of the dump")
        return
    original = await plan.source.run(["cat", "--", job.paths[0]], sudo=job.privileged and plan.sudo, timeout=60)
    same = hashlib.sha256(original.stdout).digest() == hashlib.sha256(restored.stdout).digest()
    steps.add(f"restore {label}", same, f"{job.paths[0]} restored {'identical' if same else 'DIFFERENT'}")


async def _job(plan: ChainPlan, job: ArchiveJob, steps: _Steps, report: TestBackupReport, limit: float) -> None:
    sample = await _sample_job(plan, job, steps)
    if sample is None:
        return
    name = f"{plan.prefix}-{sample.suffix}-{stamp(datetime.now(UTC))}"
    outcome = await run_job(replace(plan, timeout=limit), sample, name, lambda p: p, None, None)
    if outcome.status == "failed" and outcome.kind == "command_timeout" and job.kind == "command":
        steps.add(f"back up {job.suffix}", True, f"the dump ran for {limit:g} s without error (too big to finish "
                                                 "in a test); the first real run completes it")  # fmt: skip
        return
    if not steps.add(f"back up {job.suffix}", outcome.status != "failed", outcome.reason + " " + outcome.hint,
                     outcome.kind):  # fmt: skip
        return
    report.archives.append(name)
    try:
        await _verify(plan, sample, job.suffix, outcome, steps)
    except (BorgError, TransportError) as error:
        steps.add(f"restore {job.suffix}", False, f"{error} {getattr(error, 'hint', '')}".strip(),
                  getattr(error, "kind", None))  # fmt: skip


async def _cleanup(plan: ChainPlan, steps: _Steps, compact_after: bool = True) -> None:
    """Delete every test archive (and checkpoints of interrupted ones), compact (unless told not to), and check none
    is left."""
    glob = f"{plan.prefix}-{TEST_MARK}-*"
    try:
        found = [a.name for a in await borg_list.archives(plan.pool, plan.repo_at_pool, glob=glob, borg=plan.pool_borg)]
        if found:
            await delete.archives(plan.pool, plan.repo_at_pool, found, borg=plan.pool_borg)
            if compact_after:
                await compact.run(plan.pool, plan.repo_at_pool, borg=plan.pool_borg)
        left = [a.name for a in await borg_list.archives(plan.pool, plan.repo_at_pool, glob=glob, borg=plan.pool_borg)]
    except (BorgError, TransportError) as error:
        steps.add("clean up", False, f"The test archives could not be removed: {error}", getattr(error, "kind", None))
        return
    steps.add("clean up", not left, "test archives removed" if not left else f"still listed: {', '.join(left)}")


async def run_test_backup(plan: ChainPlan, *, time_limit: float = 45.0, on_step: StepHandler | None = None,
                          compact: bool = True) -> TestBackupReport:  # fmt: skip
    """Run the test backup for ``plan``; never raises for what it finds — the report says it. ``compact=False`` for a
    chain's own repository: compaction there is the integrity-checked maintenance's (bot.backup.integrity) alone, so a
    test never makes permanent what a push key did; the test archives' space is freed at the next maintenance."""
    report = TestBackupReport(ok=True)
    steps = _Steps(report, on_step)
    try:
        reached = await plan.source.run(["true"], timeout=30)
        steps.add("connect to the source", reached.ok, plan.source.name)
        await borg_list.archives(plan.pool, plan.repo_at_pool, borg=plan.pool_borg, glob="none-*")
        steps.add("open the repository on the pool", True, "the passphrase opens it")
    except (BorgError, TransportError) as error:
        steps.add("open the repository on the pool" if report.steps else "connect to the source", False,
                  f"{error} {getattr(error, 'hint', '')}".strip(), getattr(error, "kind", None))  # fmt: skip
        return report
    try:
        for job in plan.jobs:
            await _job(plan, job, steps, report, time_limit)
    finally:
        await _cleanup(plan, steps, compact)
    return report
