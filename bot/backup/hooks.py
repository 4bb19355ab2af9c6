"""Pre- and post-backup commands of a repository, run on the source server around the backup.

Stored form (``Repository.pre_backup_commands`` / ``post_backup_commands``, JSON): a list whose entries are
  * an argument list, ``["systemctl", "stop", "app"]`` — run as is, no shell involved;
  * an object, ``{"argv": [...], "timeout": 60, "privileged": true}`` — the same with its own timeout (seconds,
    default :data:`DEFAULT_TIMEOUT`) and, with ``privileged``, through sudo for a non-root login;
  * a plain string, ``"pg_ctl reload && sleep 1"`` — run as ``["sh", "-c", string]`` and nothing else.
The string form is for an operator who deliberately writes a shell line into the repository's settings: it is
never split into words (quoting would be guessed) and never taken as a program name, and the run log marks it as
run through a shell. Anything the bot itself generates (from the wizard's form fields) is stored as an argument
list, so no value a person typed into a form ever reaches a shell.

Semantics (:func:`backup_hooks`):
  * pre-commands run in order; the first that fails (non-zero exit, killed, timed out, unreachable) stops the
    run — the backup does not start and the error names the command, its exit status and its last stderr line;
  * post-commands always run, each of them, in order: after the backup succeeded, failed or was cancelled,
    and also after a pre-command failed (an earlier pre-command may have stopped a service the post-command
    restarts; post-commands should be safe to run in any case);
  * a failing post-command is reported (:class:`PostCommandsFailed` after a successful backup, a note on the
    backup's own error otherwise) and never hides the backup's own error.
Every command that ran is in the :class:`HookRecord` (argv, status, duration, stderr tail) for the run log.
"""

from __future__ import annotations

import math
import shlex
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal

from bot.backup.snapshots.base import uncancellable
from bot.probes.base import ProbeContext
from bot.transport.base import CommandTimeout, TransportError
from bot.transport.command import UnsafeArgument, check_argv

DEFAULT_TIMEOUT = 300.0
MAX_TIMEOUT = 6 * 3600.0
TAIL_LINES = 20
TAIL_CHARS = 2000
_KEYS = {"argv", "timeout", "privileged"}

Phase = Literal["pre", "post"]
Status = Literal["ok", "failed", "timeout", "unreachable"]


@dataclass(frozen=True)
class HookCommand:
    """One command to run: its argument list, its own time limit, and whether it needs root."""

    argv: tuple[str, ...]
    timeout: float = DEFAULT_TIMEOUT
    privileged: bool = False
    via_shell: bool = False  # came from the string form: argv is ("sh", "-c", string)

    @property
    def label(self) -> str:
        return shown(self.argv)


def shown(argv: tuple[str, ...]) -> str:
    """How a command is named in messages: a shell line as written, an argument list shell-quoted; bounded."""
    text = argv[2] if argv[:2] == ("sh", "-c") and len(argv) == 3 else shlex.join(argv)
    return text if len(text) <= 160 else text[:157] + "..."


def parse_command(entry: object, where: str) -> HookCommand:
    """One stored entry (see the module docstring); a malformed one raises ValueError saying where and why."""
    if isinstance(entry, dict):
        unknown = set(entry) - _KEYS
        if unknown or "argv" not in entry:
            raise ValueError(f'{where}: an object needs "argv" and may have only {sorted(_KEYS)}')
        base = parse_command(entry["argv"], where)
        return HookCommand(base.argv, _timeout(entry.get("timeout"), where), _flag(entry, where), base.via_shell)
    if isinstance(entry, str):
        if not entry.strip():
            raise ValueError(f"{where}: an empty command")
        return HookCommand(("sh", "-c", entry), via_shell=True)
    if isinstance(entry, list):
        try:
            return HookCommand(check_argv(entry))
        except UnsafeArgument as exc:
            raise ValueError(f"{where}: {exc}") from None
    raise ValueError(f'{where}: a command is a list of arguments, an object with "argv", or a shell line')


def _timeout(value: object, where: str) -> float:
    if value is None:
        return DEFAULT_TIMEOUT
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_TIMEOUT:
        raise ValueError(f'{where}: "timeout" must be a number of seconds above 0 and at most {MAX_TIMEOUT:g}')
    if not math.isfinite(value):
        raise ValueError(f'{where}: "timeout" must be finite')
    return float(value)


def _flag(entry: dict[str, object], where: str) -> bool:
    value = entry.get("privileged", False)
    if not isinstance(value, bool):
        raise ValueError(f'{where}: "privileged" must be true or false')
    return value


def parse_commands(value: object, *, field: str = "commands") -> tuple[HookCommand, ...]:
    """A Repository column (``None`` = no commands) as :class:`HookCommand` values."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValueError(f"{field} must be a list of commands")
    return tuple(parse_command(entry, f"{field}[{index}]") for index, entry in enumerate(value))


@dataclass(frozen=True)
class HookResult:
    """What one command did, for the run log."""

    phase: Phase
    argv: tuple[str, ...]
    status: Status
    exit_status: int | None
    signal: str | None
    duration: float
    stderr_tail: str
    detail: str = ""  # for timeout/unreachable: the transport's sentence

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def describe(self) -> str:
        """``the pre-backup command `x` exited with status 3: <last stderr line>``."""
        name = f"the {self.phase}-backup command `{shown(self.argv)}`"
        last = self.stderr_tail.strip().splitlines()[-1:] or [""]
        tail = f": {last[0][:300]}" if last[0] else " (nothing on stderr)"
        if self.status == "timeout":
            return f"{name} did not finish within its time limit and was stopped ({self.detail})"
        if self.status == "unreachable":
            return f"{name} could not be run: {self.detail}"
        if self.signal:
            return f"{name} was killed by {self.signal}{tail}"
        return f"{name} exited with status {self.exit_status}{tail}"


@dataclass
class HookRecord:
    """Every command that ran, in order."""

    results: list[HookResult] = field(default_factory=list)

    def phase(self, phase: Phase) -> list[HookResult]:
        return [r for r in self.results if r.phase == phase]

    @property
    def post_failures(self) -> list[HookResult]:
        return [r for r in self.phase("post") if not r.ok]


class HookError(Exception):
    """A hook failed; ``record`` holds everything that ran. ``kind``/``hint`` are for the chain runner."""

    kind = "hook_failed"

    def __init__(self, message: str, record: HookRecord, hint: str = "") -> None:
        super().__init__(message)
        self.record = record
        self.hint = hint


class PreCommandFailed(HookError):
    """A pre-command failed, so the backup did not run (the post-commands did)."""

    def __init__(self, result: HookResult, record: HookRecord) -> None:
        super().__init__(
            f"The backup did not run: {result.describe()}.",
            record,
            "Fix the command or its timeout in the repository's pre-backup commands and run the backup again.",
        )
        self.result = result


class PostCommandsFailed(HookError):
    """The backup itself ended well, but post-commands failed (all of them were still run)."""

    def __init__(self, failures: list[HookResult], record: HookRecord) -> None:
        text = "; ".join(f.describe() for f in failures)
        super().__init__(
            f"The backup finished, but {text}.", record, "Check the service the post-backup command handles."
        )
        self.failures = failures


def tail(text: str) -> str:
    """The last lines of a command's stderr, bounded, for the run log."""
    lines = text.rstrip().splitlines()[-TAIL_LINES:]
    return "\n".join(lines)[-TAIL_CHARS:]


async def run_hook(ctx: ProbeContext, command: HookCommand, phase: Phase) -> HookResult:
    """Run one command and describe the outcome; never raises for a failing command or an unreachable server."""
    started = time.monotonic()
    try:
        result = await ctx.run(
            command.argv,
            what=f"The {phase}-backup command",
            privileged=command.privileged,
            check=False,
            timeout=command.timeout,
        )
    except TransportError as exc:
        status: Status = "timeout" if isinstance(exc, CommandTimeout) else "unreachable"
        return HookResult(phase, command.argv, status, None, None, time.monotonic() - started, "", str(exc))
    status = "ok" if result.ok else "failed"
    duration = result.duration or time.monotonic() - started
    return HookResult(phase, command.argv, status, result.exit_status, result.signal, duration, tail(result.err))


async def _run_pre(ctx: ProbeContext, commands: Sequence[HookCommand], record: HookRecord) -> None:
    for command in commands:
        result = await run_hook(ctx, command, "pre")
        record.results.append(result)
        if not result.ok:
            raise PreCommandFailed(result, record)


async def _run_post(ctx: ProbeContext, commands: Sequence[HookCommand], record: HookRecord) -> list[HookResult]:
    failures = []
    for command in commands:
        result = await run_hook(ctx, command, "post")
        record.results.append(result)
        if not result.ok:
            failures.append(result)
    return failures


@asynccontextmanager
async def backup_hooks(
    ctx: ProbeContext, pre: Sequence[HookCommand] = (), post: Sequence[HookCommand] = ()
) -> AsyncIterator[HookRecord]:
    """Run ``pre`` before the body and ``post`` after it, whatever happens (see the module docstring)."""
    record = HookRecord()
    try:
        await _run_pre(ctx, pre, record)
        yield record
    except BaseException as exc:
        failures = await uncancellable(_run_post(ctx, post, record))
        for failure in failures:
            exc.add_note(f"Afterwards, {failure.describe()}.")
        raise
    failures = await uncancellable(_run_post(ctx, post, record))
    if failures:
        raise PostCommandsFailed(failures, record)
