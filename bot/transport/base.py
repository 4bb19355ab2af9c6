"""The transport contract: ``run(argv, stdin=…, env=…, secret_env=…, timeout=…) -> CommandResult``.

Errors are split in two on purpose. A command that ran and failed is a *result* (non-zero ``exit_status``),
because callers (probes, borg) interpret exit codes themselves. Not being able to run it at all (host
unreachable, authentication refused, host key changed, timeout) is a :class:`TransportError` whose message
is a sentence for a person, and whose ``kind`` lets the runs layer choose a retry policy and a recovery hint.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

log = logging.getLogger(__name__)
LineHandler = Callable[[str], None]


@dataclass(frozen=True)
class RemoteProcess:
    """A command started on a server under the remote supervisor (GNU ``timeout``), as it announced itself: enough
    to find it again after the bot died (``pid`` runs a command line ending in ``argv``) and to stop it."""

    host: str
    port: int
    user: str
    pid: int
    argv: tuple[str, ...]
    sudo: bool


RemoteStarted = Callable[[RemoteProcess], Awaitable[None]]
REMOTE_STARTED: ContextVar[RemoteStarted | None] = ContextVar("remote_started", default=None)
"""Set by whoever must outlive a crash of this process (a run's executor records what it started on servers)."""


async def announce_started(process: RemoteProcess) -> None:
    """Tell the current context's :data:`REMOTE_STARTED` listener, if any; its failure never stops the command."""
    listener = REMOTE_STARTED.get()
    if listener is None:
        return
    try:
        await listener(process)
    except Exception:
        log.exception("recording a started remote command failed")


@dataclass(frozen=True)
class CommandResult:
    """What a command did. ``exit_status`` is None when it was killed by a signal (see ``signal``), or stopped by
    the bot because it printed more than the output limit: then ``overflow`` says so in a sentence, ``signal`` names
    the bot's limit (so "X was killed by <signal>" messages read right) and stdout/stderr hold what was kept."""

    argv: tuple[str, ...]
    exit_status: int | None
    stdout: bytes
    stderr: bytes
    signal: str | None = None
    duration: float = 0.0
    overflow: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_status == 0 and self.overflow is None

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", errors="replace")

    @property
    def err(self) -> str:
        return self.stderr.decode("utf-8", errors="replace")

    def describe_failure(self, limit: int = 300) -> str:
        """``'<prog>' exited with status N: <last stderr line>`` — for messages."""
        if self.overflow:
            return self.overflow
        how = f"was killed by {self.signal}" if self.signal else f"exited with status {self.exit_status}"
        detail = self.err.strip().splitlines()
        tail = f": {detail[-1][:limit]}" if detail else ""
        return f"`{self.argv[0] if self.argv else '?'}` {how}{tail}"


@dataclass
class TransportError(Exception):
    """The command could not be run. ``message`` is for people; ``kind`` for the runs layer."""

    message: str
    kind: str = "transport"
    transient: bool = True
    details: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message


class HostUnreachable(TransportError):
    def __init__(self, message: str) -> None:
        super().__init__(message, kind="host_unreachable", transient=True)


class ConnectTimeout(TransportError):
    def __init__(self, message: str) -> None:
        super().__init__(message, kind="connect_timeout", transient=True)


class AuthenticationFailed(TransportError):
    def __init__(self, message: str) -> None:
        super().__init__(message, kind="auth_failed", transient=False)


class HostKeyNotPinned(TransportError):
    def __init__(self, message: str) -> None:
        super().__init__(message, kind="host_key_unpinned", transient=False)


class HostKeyChanged(TransportError):
    """The server presented a key other than the pinned one: refused, and an alert is raised."""

    def __init__(self, host: str, port: int, pinned: str, presented: str) -> None:
        super().__init__(
            f"The SSH host key of {host}:{port} has changed: pinned {pinned}, presented {presented}. The "
            "connection was refused. If the server was reinstalled or its key rotated, confirm the new "
            "fingerprint with its administrator and re-pin it; otherwise treat this as a possible attack.",
            kind="host_key_changed",
            transient=False,
            details={"host": host, "port": str(port), "pinned": pinned, "presented": presented},
        )


class PoolBusy(TransportError):
    """No SSH connection slot became free within the pool's wait: the message names the full share and the fix."""

    def __init__(self, message: str) -> None:
        super().__init__(message, kind="pool_busy", transient=True)


class CommandTimeout(TransportError):
    def __init__(self, message: str) -> None:
        super().__init__(message, kind="command_timeout", transient=True)


@runtime_checkable
class Transport(Protocol):
    """Runs an argument list somewhere. ``secret_env`` never appears on a command line or in a log;
    ``on_stderr`` receives stderr line by line while the command runs (e.g. borg's --log-json progress)."""

    name: str

    async def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        secret_env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        sudo: bool = False,
        on_stderr: LineHandler | None = None,
    ) -> CommandResult: ...

    async def close(self) -> None: ...
