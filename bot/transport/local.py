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

from bot.transport.base import CommandResult, CommandTimeout, LineHandler, TransportError, read_lines
from bot.transport.command import check_argv, check_env


class LocalTransport:
    name = "local"

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
            out, err = await asyncio.wait_for(_communicate(process, stdin, on_stderr), timeout)
        except TimeoutError:
            _kill_group(process)
            await process.wait()
            raise CommandTimeout(
                f"`{args[0]}` did not finish within {timeout:g} s on the bot's host and was stopped."
            ) from None
        except BaseException:
            _kill_group(process)
            raise
        code = process.returncode
        sig = signal.Signals(-code).name if code is not None and code < 0 else None
        return CommandResult(args, None if sig else code, out, err, sig, time.monotonic() - started)

    async def close(self) -> None:
        return None


async def _communicate(
    process: asyncio.subprocess.Process, stdin: bytes | None, on_stderr: LineHandler | None
) -> tuple[bytes, bytes]:
    if on_stderr is None:
        return await process.communicate(stdin)
    if process.stdin is not None:
        process.stdin.write(stdin or b"")
        await process.stdin.drain()
        process.stdin.close()
    out, err = await asyncio.gather(process.stdout.read(), read_lines(process.stderr, on_stderr))
    await process.wait()
    return out, err


def _kill_group(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
