"""Running borg: common options, the passphrase kept off the command line, --log-json parsed, exit codes mapped.

Every call gets ``--log-json`` (stderr becomes JSON lines: log messages with a ``msgid``, progress events)
and ``--lock-wait``; the environment sets ``BORG_EXIT_CODES=modern`` so borg 1.4 returns a specific code
per failure. :func:`outcome_of` maps code + messages to an outcome (ok / warning / error), a ``kind`` the
runs layer uses for retries and recovery hints, and a sentence for people. The passphrase travels through
the transport's ``secret_env`` (fed on stdin into the environment), never through argv.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from bot.borg.repo import Repo
from bot.transport.base import CommandResult, Transport

DEFAULT_LOCK_WAIT = 60
Outcome = Literal["ok", "warning", "error"]
EventHandler = Callable[[dict[str, Any]], None]

# kind → (transient?, what to do). The runs layer retries transient kinds with backoff.
KINDS: dict[str, tuple[bool, str]] = {
    "lock": (
        True,
        "Another borg process holds the repository lock. The run is retried; if no backup or "
        "maintenance is running on this repository, the stale lock must be broken.",
    ),
    "unreachable": (
        True,
        "The connection to the repository broke. Check the network and that the pool's SSH "
        "server is up; the run is retried.",
    ),
    "disk_full": (
        False,
        "The storage pool is out of space (or the repository quota is reached). Free space "
        "on the pool, lower the retention, or move the repository to a larger pool.",
    ),
    "passphrase": (
        False,
        "The repository passphrase was refused. The stored passphrase does not match this "
        "repository: restore the right one or re-create the repository.",
    ),
    "repo_missing": (
        False,
        "The repository does not exist at that path. Re-create it from the chain, or fix the pool path.",
    ),
    "repo_exists": (
        False,
        "A repository already exists at that path. Choose another name, or use the "
        "existing repository with its passphrase.",
    ),
    "not_allowed": (
        False,
        "The pool refused the repository path for this key (restrict-to-path). The key "
        "installed on the pool does not match this repository: set the repository up again.",
    ),
    "archive_exists": (False, "An archive with that name already exists; the name must be unique."),
    "archive_missing": (False, "That archive does not exist (it may have been pruned)."),
    "integrity": (False, "borg found an inconsistency: run a repository check before the next backup."),
    "security": (
        False,
        "The repository differs from what this client saw before (replay, moved, or "
        "re-created). Verify that it is the right repository before continuing.",
    ),
    "permission": (False, "Permission denied on the repository path. Fix the ownership of the pool directory."),
    "borg_missing": (False, "borg is not installed where it must run. Install borg 1.4 there."),
    "killed": (True, "borg was killed before it finished. The run is retried."),
    "source": (False, "borg could not read its input (a failing dump command or an unreadable source)."),
    "error": (False, "borg failed; its own message says why."),
}

# One table of borg's failures: (modern exit code, --log-json msgid, kind). The code decides (BORG_EXIT_CODES=modern);
# the msgid (the exception's qualified name in borg 1.4's log_message events) decides when the code is only the
# generic 2 — a borg that ignores BORG_EXIT_CODES, or an error re-raised through ``borg serve``.
BORG_ERRORS: tuple[tuple[int, str, str], ...] = (
    (10, "Repository.AlreadyExists", "repo_exists"),
    (12, "Repository.CheckNeeded", "integrity"),
    (13, "Repository.DoesNotExist", "repo_missing"),
    (14, "Repository.InsufficientFreeSpaceError", "disk_full"),
    (15, "Repository.InvalidRepository", "repo_missing"),
    (18, "Repository.ParentPathDoesNotExist", "repo_missing"),
    (19, "Repository.PathAlreadyExists", "repo_exists"),
    (20, "Repository.StorageQuotaExceeded", "disk_full"),
    (21, "Repository.PathPermissionDenied", "permission"),
    (30, "Archive.AlreadyExists", "archive_exists"),
    (31, "Archive.DoesNotExist", "archive_missing"),
    (50, "NoPassphraseFailure", "passphrase"),
    (51, "PasscommandFailure", "passphrase"),
    (52, "PassphraseWrong", "passphrase"),
    (53, "PasswordRetriesExceeded", "passphrase"),
    (61, "Cache.EncryptionMethodMismatch", "security"),
    (62, "Cache.RepositoryAccessAborted", "security"),
    (63, "Cache.RepositoryIDNotUnique", "security"),
    (64, "Cache.RepositoryReplay", "security"),
    (70, "LockError", "lock"),
    (71, "LockErrorT", "lock"),
    (72, "LockFailed", "lock"),
    (73, "LockTimeout", "lock"),
    (80, "ConnectionClosed", "unreachable"),
    (81, "ConnectionClosedWithHint", "unreachable"),
    (83, "PathNotAllowed", "not_allowed"),
    (87, "ConnectionBrokenWithHint", "unreachable"),
    (127, "", "borg_missing"),  # the shell's "command not found"
)  # fmt: skip
_CODE_KINDS: dict[int, str] = {code: kind for code, _, kind in BORG_ERRORS}
_MSGID_KINDS: dict[str, str] = {msgid: kind for _, msgid, kind in BORG_ERRORS if msgid}


@dataclass(frozen=True)
class BorgResult:
    argv: tuple[str, ...]
    exit_code: int | None
    outcome: Outcome
    kind: str | None
    reason: str
    messages: tuple[dict[str, Any], ...]
    stdout: bytes = field(repr=False)
    duration: float = 0.0

    def json(self) -> Any:
        return json.loads(self.stdout.decode("utf-8"))

    def json_lines(self) -> list[Any]:
        return [json.loads(line) for line in self.stdout.decode("utf-8").splitlines() if line.strip()]


class BorgError(Exception):
    """borg ended in error; ``kind``/``transient``/``hint`` come from :data:`KINDS`."""

    def __init__(self, result: BorgResult) -> None:
        super().__init__(result.reason)
        self.result = result
        self.kind = result.kind or "error"
        self.transient, self.hint = KINDS.get(self.kind, KINDS["error"])


def parse_stderr(stderr: str) -> tuple[list[dict[str, Any]], list[str]]:
    """--log-json lines → (JSON events, other lines such as ssh's or a wrapper's messages)."""
    events, other = [], []
    for line in stderr.splitlines():
        text = line.strip()
        if not text:
            continue
        try:
            value = json.loads(text)
        except ValueError:
            other.append(text)
            continue
        (events if isinstance(value, dict) else other).append(value if isinstance(value, dict) else text)
    return events, other


def _kind(code: int | None, messages: Sequence[dict[str, Any]], other: Sequence[str]) -> str:
    if code is None:
        return "killed"
    if code in _CODE_KINDS:
        return _CODE_KINDS[code]
    for message in reversed(messages):
        if message.get("msgid") in _MSGID_KINDS:
            return _MSGID_KINDS[message["msgid"]]
    text = " ".join([*(m.get("message", "") for m in messages), *other]).lower()
    if "command not found" in text or "no such file or directory: 'borg'" in text:
        return "borg_missing"
    if "no space left" in text:
        return "disk_full"
    if "content-from-command" in text or ("command " in text and "exited with" in text):
        return "source"
    return "error"


def outcome_of(result: CommandResult) -> BorgResult:
    """Map a finished borg process to an outcome, kind and sentence."""
    events, other = parse_stderr(result.err)
    messages = tuple(e for e in events if e.get("type") == "log_message")
    code = result.exit_status
    if code == 0:
        outcome: Outcome = "ok"
    elif code == 1 or (code is not None and 100 <= code <= 107):  # 100-107: borg 1.4's specific warnings
        outcome = "warning"
    else:
        outcome = "error"
    worst = [m for m in messages if m.get("levelname") in ("ERROR", "CRITICAL")] or [
        m for m in messages if m.get("levelname") == "WARNING"
    ]
    detail = (worst[-1].get("message", "") if worst else (other[-1] if other else "")).strip().rstrip(".")
    kind = None if outcome == "ok" else ("warning" if outcome == "warning" else _kind(code, messages, other))
    if getattr(result, "overflow", None):  # stopped by the bot's output cap: a retry would stop the same way
        kind = "error"
    if outcome == "ok":
        reason = "borg finished successfully."
    elif outcome == "warning":
        reason = f"borg finished with warnings: {detail or 'see the log'}."
    else:
        how = f"was killed by {result.signal}" if code is None else f"failed (exit code {code})"
        reason = f"borg {how}: {detail or 'no message'}."
        if other and other[-1].strip().rstrip(".") != detail:
            # A dump's (or ssh's) own last words: "pg_dump: error: connection to server … failed".
            reason += f" Last output: {other[-1][:300]}"
    return BorgResult(result.argv, code, outcome, kind, reason, messages, result.stdout, result.duration)


async def run_borg(
    transport: Transport,
    args: Sequence[str],
    repo: Repo,
    *,
    borg: str = "borg",
    lock_wait: int = DEFAULT_LOCK_WAIT,
    timeout: float | None = None,
    on_event: EventHandler | None = None,
    check: bool = True,
    sudo: bool = False,
    env: Mapping[str, str] | None = None,
) -> BorgResult:
    """Run ``borg --log-json --lock-wait N <args>`` with the client state of ``repo`` (:meth:`Repo.command`: one
    security and cache dir per host, login and repository URL); raise :class:`BorgError` on an error outcome if
    ``check``. The result's ``argv`` is borg's own (without the state wrapper). ``env``: more (non-secret)
    variables, e.g. ``TZ=UTC`` so borg prints archive times in UTC."""
    argv = (borg, "--log-json", "--lock-wait", str(lock_wait), *args)

    def forward(line: str) -> None:
        if on_event is not None and line.startswith("{"):
            try:
                event = json.loads(line)
            except ValueError:
                return
            if isinstance(event, dict):
                on_event(event)

    result = await transport.run(
        repo.command(argv),
        env={**repo.env(), **(env or {})},
        secret_env=repo.secret_env() or None,
        timeout=timeout,
        sudo=sudo,
        on_stderr=forward if on_event is not None else None,
    )
    outcome = replace(outcome_of(result), argv=argv)
    if check and outcome.outcome == "error":
        raise BorgError(outcome)
    return outcome
