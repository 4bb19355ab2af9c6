"""What every probe shares: the result wrapper, the error type, and helpers to run a command.

A probe is one module: the command(s) it runs, a *pure* parser from their output to a typed value
(pydantic models, so results round-trip through the Server row's JSON cache), and an ``async def probe``
that runs them through a :class:`~bot.transport.base.Transport`. Parsers never touch the network and are
tested on real recorded output; probes are tested against real servers where this machine can run them.

A probe that cannot answer raises :class:`ProbeError` with a sentence a person can act on. The
capabilities aggregate turns that into a failed :class:`ProbeOutcome` and carries on with the others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict

from bot.transport.base import CommandResult, Transport
from bot.transport.capture import probe_output

DEFAULT_TIMEOUT = 20.0


@dataclass(frozen=True)
class ProbeContext:
    """How to reach a server and how much we may do there (from the system probe).

    ``sudo``: run privileged commands through ``sudo -n`` (a non-root login with passwordless sudo).
    ``privileged``: root or passwordless sudo; probes that need privileges say so when it is False.
    ``env``: extra non-secret environment for every command (e.g. DOCKER_HOST).
    ``system``: the system probe's SystemInfo once known (OS-specific hints use it).
    """

    transport: Transport
    sudo: bool = False
    privileged: bool = True
    env: Mapping[str, str] = field(default_factory=dict)
    system: Any = None

    async def run(
        self,
        argv: Sequence[str],
        *,
        what: str,
        stdin: bytes | None = None,
        secret_env: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        privileged: bool = False,
        check: bool = True,
    ) -> CommandResult:
        """Run ``argv`` (through sudo when ``privileged`` and needed); see :func:`run_checked`."""
        runner = run_checked if check else _run_unchecked
        return await runner(
            self.transport,
            argv,
            what=what,
            stdin=stdin,
            env=self.env or None,
            secret_env=secret_env,
            timeout=timeout,
            sudo=privileged and self.sudo,
        )


class ProbeError(Exception):
    """The probe could not determine its facts; the message says why and what to do."""


class Model(BaseModel):
    """Base for probe results: immutable, and strict about unknown fields so cached data stays honest."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Absent(Exception):
    """The program a probe needs is not installed (exit status 127 or "command not found")."""


def missing_program(result: CommandResult) -> bool:
    text = result.err.lower()
    return result.exit_status == 127 or "command not found" in text or "not found" in text.split(":")[-1]


async def run_checked(
    transport: Transport,
    argv: Sequence[str],
    *,
    what: str,
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
    secret_env: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    sudo: bool = False,
) -> CommandResult:
    """Run ``argv``; a missing program raises :class:`Absent`, another failure :class:`ProbeError`.

    Probes read facts, never bulk data: their output is kept within the transport's small probe limit.
    """
    with probe_output():
        result = await transport.run(argv, stdin=stdin, env=env, secret_env=secret_env, timeout=timeout, sudo=sudo)
    if result.ok:
        return result
    if missing_program(result):
        raise Absent(argv[0])
    raise ProbeError(f"{what} failed: {result.describe_failure()}.")


async def _run_unchecked(transport: Transport, argv: Sequence[str], *, what: str, **kwargs) -> CommandResult:
    del what
    with probe_output():
        return await transport.run(argv, **kwargs)
