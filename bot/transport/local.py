"""Running commands on the bot's own host (a local storage pool, the bot's own borg).

Same contract as SSH: argument lists only (``create_subprocess_exec``, no shell), secrets through the
child's environment (readable only by the same user), timeouts that kill the process group.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Mapping, Sequence

from bot.transport.base import CommandResult, CommandTimeout, LineHandler, TransportError
from bot.transport.capture import (
    CHUNK,
    DEFAULT_OUTPUT_LIMIT,
    DEFAULT_PROBE_OUTPUT_LIMIT,
    OutputExceeded,
    collect,
    pick_limit,
    stopped_result,
)
from bot.transport.command import check_argv, check_env


class LocalTransport:
    """Commands on the bot's host; what they print is kept within ``output_limit`` (``probe_output_limit`` for
    probes), past which the command is killed and its result says so (see :mod:`bot.transport.capture`)."""

    name = "local"

    def __init__(
        self, *, output_limit: int = DEFAULT_OUTPUT_LIMIT, probe_output_limit: int = DEFAULT_PROBE_OUTPUT_LIMIT
    ) -> None:
        self.output_limit = output_limit
        self.probe_output_limit = probe_output_limit

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
    ) -> CommandResult:
        args = check_argv(argv)
        limit = pick_limit(self.output_limit, self.probe_output_limit)
        if sudo and os.geteuid() != 0:
            args = ("sudo", "-n", "--", *args)
        child_env = dict(os.environ)
        for extra, secret in ((env, False), (secret_env, True)):
            if extra:
                check_env(extra, secret=secret)
                child_env.update(extra)
        started = time.monotonic()
        try:
            process = await asyncio.create_subprocess_exec(
                *args,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=child_env,
                start_new_session=True,  # its own process group, so a timeout kills its children too
            )
        except FileNotFoundError:
            return CommandResult(args, 127, b"", f"{args[0]}: command not found\n".encode(), None, 0.0)
        except OSError as exc:
            raise TransportError(
                f"Cannot start `{args[0]}` on the bot's host: {exc.strerror}.", transient=False
            ) from None
        try:
            out, err, overflow = await asyncio.wait_for(_communicate(process, stdin, on_stderr, limit), timeout)
        except TimeoutError:
            await _stop(process)
            raise CommandTimeout(
                f"`{args[0]}` did not finish within {timeout:g} s on the bot's host and was stopped."
            ) from None
        except BaseException:
            _kill_group(process)
            raise
        if overflow is not None:
            await _stop(process)
            return stopped_result(args, out, err, overflow, time.monotonic() - started)
        code = process.returncode
        sig = signal.Signals(-code).name if code is not None and code < 0 else None
        return CommandResult(args, None if sig else code, out, err, sig, time.monotonic() - started)

    async def close(self) -> None:
        return None


async def _communicate(
    process: asyncio.subprocess.Process, stdin: bytes | None, on_stderr: LineHandler | None, limit: int
) -> tuple[bytes, bytes, OutputExceeded | None]:
    """Feed stdin while reading both streams within ``limit`` (a child that reads nothing cannot block us)."""
    feeding = asyncio.ensure_future(_feed(process, stdin))
    try:
        out, err, overflow = await collect(process.stdout, process.stderr, on_stderr, limit)
    finally:
        feeding.cancel()
        await asyncio.gather(feeding, return_exceptions=True)
    if overflow is None:
        await process.wait()
    return out, err, overflow


async def _feed(process: asyncio.subprocess.Process, stdin: bytes | None) -> None:
    if process.stdin is None:
        return
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        process.stdin.write(stdin or b"")
        await process.stdin.drain()
    process.stdin.close()


async def _stop(process: asyncio.subprocess.Process) -> None:
    """Kill the command's process group and reap it. Its pipes are read (and dropped) to their end: asyncio
    reports the exit only once they close, which a paused pipe (the bot stopped reading) never would."""
    _kill_group(process)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(10):  # a child that left the group may hold a pipe open: do not wait for it
            await asyncio.gather(_discard(process.stdout), _discard(process.stderr))
            await process.wait()


async def _discard(stream: asyncio.StreamReader | None) -> None:
    while stream is not None and await stream.read(CHUNK):
        pass


def _kill_group(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
