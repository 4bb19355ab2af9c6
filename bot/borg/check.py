"""``borg check``: repository and/or archive consistency, optionally verifying all data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bot.borg.repo import Repo
from bot.borg.runner import run_borg
from bot.transport.base import Transport

Scope = Literal["all", "repository", "archives"]


@dataclass(frozen=True)
class CheckReport:
    ok: bool
    problems: tuple[str, ...]


def argv(repo: Repo, scope: Scope = "all", *, verify_data: bool = False, glob: str | None = None) -> tuple:
    flags = {"all": [], "repository": ["--repository-only"], "archives": ["--archives-only"]}[scope]
    extra = (["--verify-data"] if verify_data else []) + (["--glob-archives", glob] if glob else [])
    return ("check", *flags, *extra, repo.url)


async def run(transport: Transport, repo: Repo, scope: Scope = "all", *, verify_data: bool = False,
              **kwargs) -> CheckReport:  # fmt: skip
    result = await run_borg(transport, argv(repo, scope, verify_data=verify_data), repo, check=False, **kwargs)
    problems = tuple(m.get("message", "") for m in result.messages if m.get("levelname") in ("ERROR", "CRITICAL"))
    if result.outcome == "error" and result.kind not in (None, "integrity", "error"):
        from bot.borg.runner import BorgError

        raise BorgError(result)  # could not check at all (lock, passphrase, unreachable …)
    return CheckReport(ok=result.outcome == "ok", problems=problems)
