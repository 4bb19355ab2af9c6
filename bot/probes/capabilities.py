"""Capabilities: every probe for one server, run concurrently, each failure isolated and explained.

The system probe runs first because it decides how the others run (through sudo or not); the rest run
together. A probe that fails, times out, or finds its program missing becomes a failed
:class:`ProbeOutcome` with a sentence; the others are unaffected. Only when the server itself cannot be
reached (the system probe hit a transport error) are the rest not attempted, and each says why.

The result is plain JSON-able data (pydantic), cached on the Server row by the caller; typed access goes
through :meth:`Capabilities.get`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel

from bot.probes import system
from bot.probes.base import Absent, Model, ProbeContext, ProbeError
from bot.transport.base import TransportError

log = logging.getLogger(__name__)
M = TypeVar("M", bound=Model)


@dataclass(frozen=True)
class ProbeSpec:
    """One entry of the capabilities table."""

    name: str
    run: Callable[[ProbeContext], Awaitable[Model]]
    result_type: type[Model]
    timeout: float = 60.0
    absent_means: str = "not installed"


class ProbeOutcome(BaseModel):
    name: str
    ok: bool
    value: dict[str, Any] | None = None
    error: str | None = None
    kind: str | None = None  # "absent", "error", "timeout", "unreachable", "bug"
    transport_kind: str | None = None  # TransportError.kind when the server could not be used
    seconds: float = 0.0


class Capabilities(BaseModel):
    target: str
    collected_at: datetime
    outcomes: dict[str, ProbeOutcome]

    def get(self, name: str, result_type: type[M]) -> M | None:
        """The typed result of probe ``name``, or None when it failed."""
        outcome = self.outcomes.get(name)
        if outcome is None or not outcome.ok or outcome.value is None:
            return None
        return result_type.model_validate(outcome.value)

    def problems(self) -> dict[str, str]:
        return {name: o.error or "failed" for name, o in self.outcomes.items() if not o.ok}


async def _outcome(spec: ProbeSpec, ctx: ProbeContext) -> ProbeOutcome:
    started = time.monotonic()

    def done(**kwargs: Any) -> ProbeOutcome:
        return ProbeOutcome(name=spec.name, seconds=round(time.monotonic() - started, 3), **kwargs)

    try:
        value = await asyncio.wait_for(spec.run(ctx), spec.timeout)
    except Absent as exc:
        return done(ok=False, kind="absent", error=f"`{exc}` is {spec.absent_means} on this server.")
    except ProbeError as exc:
        return done(ok=False, kind="error", error=str(exc))
    except TransportError as exc:
        kind = "timeout" if exc.kind == "command_timeout" else "unreachable"
        return done(ok=False, kind=kind, error=str(exc), transport_kind=exc.kind)
    except TimeoutError:
        return done(ok=False, kind="timeout", error=f"The {spec.name} probe did not finish within {spec.timeout:g} s.")
    except Exception as exc:  # a parser bug must not hide the other probes
        log.exception("probe %s crashed", spec.name)
        return done(ok=False, kind="bug", error=f"The {spec.name} probe failed unexpectedly ({type(exc).__name__}).")
    return done(ok=True, value=value.model_dump(mode="json"))


SYSTEM = ProbeSpec("system", system.probe, system.SystemInfo, timeout=30.0)


async def gather(
    ctx: ProbeContext, specs: Sequence[ProbeSpec], *, target: str = "", system_spec: ProbeSpec = SYSTEM
) -> Capabilities:
    """Run ``system_spec`` then ``specs`` concurrently; see the module docstring."""
    first = await _outcome(system_spec, ctx)
    outcomes = {first.name: first}
    if not first.ok and first.kind == "unreachable":
        for spec in specs:
            outcomes[spec.name] = ProbeOutcome(
                name=spec.name,
                ok=False,
                kind="unreachable",
                transport_kind=first.transport_kind,
                error=f"Not attempted: {first.error}",
            )
    else:
        info = system.SystemInfo.model_validate(first.value) if first.ok and first.value else None
        probe_ctx = system.context_for(ctx, info) if info else ctx
        for outcome in await asyncio.gather(*(_outcome(spec, probe_ctx) for spec in specs)):
            outcomes[outcome.name] = outcome
    return Capabilities(target=target or ctx.transport.name, collected_at=datetime.now(UTC), outcomes=outcomes)
