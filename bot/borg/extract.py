"""``borg extract`` into a target directory (restores never write over the live paths by default)."""

from __future__ import annotations

from collections.abc import Sequence

from bot.borg.repo import Repo
from bot.borg.runner import BorgResult, run_borg
from bot.transport.base import Transport

# borg extracts into its working directory; the transport has no cwd, so a fixed script changes into $1.
_IN_DIR = 'mkdir -p -- "$1" && cd -- "$1" && shift && exec "$@"'


def argv(repo: Repo, archive: str, paths: Sequence[str] = (), *, strip_components: int = 0,
         sparse: bool = True) -> tuple[str, ...]:  # fmt: skip
    """``--sparse`` recreates holes for all-zero chunks (sparse VM images and databases stay sparse)."""
    strip = ("--strip-components", str(strip_components)) if strip_components else ()
    return ("extract", *strip, *(("--sparse",) if sparse else ()), repo.archive(archive), *paths)


async def run(
    transport: Transport, repo: Repo, archive: str, target_dir: str, paths: Sequence[str] = (), *,
    strip_components: int = 0, sparse: bool = True, borg: str = "borg", **kwargs,
) -> BorgResult:  # fmt: skip
    if not target_dir.startswith("/"):
        raise ValueError("the restore target must be an absolute directory")
    inner = argv(repo, archive, paths, strip_components=strip_components, sparse=sparse)
    wrapper = _InDir(transport, target_dir)
    return await run_borg(wrapper, inner, repo, borg=borg, **kwargs)


class _InDir:
    """A transport view that runs every command inside ``directory`` (created if missing)."""

    def __init__(self, inner: Transport, directory: str) -> None:
        self.inner, self.directory, self.name = inner, directory, inner.name

    async def run(self, argv: Sequence[str], **kwargs) -> object:
        return await self.inner.run(["sh", "-c", _IN_DIR, "sh", self.directory, *argv], **kwargs)

    async def close(self) -> None:
        return None
