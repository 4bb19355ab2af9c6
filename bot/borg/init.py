"""``borg init``: create a repository (encryption chosen by the wizard, default repokey-blake2)."""

from __future__ import annotations

from bot.borg.repo import Repo
from bot.borg.runner import BorgResult, run_borg
from bot.transport.base import Transport

ENCRYPTIONS = (
    "repokey-blake2",
    "repokey",
    "keyfile-blake2",
    "keyfile",
    "authenticated-blake2",
    "authenticated",
    "none",
)
DEFAULT_ENCRYPTION = "repokey-blake2"


def is_unencrypted(encryption: str | None) -> bool:
    """Given an encryption mode, return whether borg treats such a repository as unencrypted (``none`` and
    ``authenticated*``: no confidentiality), so a new client of it must confirm its first access."""
    return (encryption or "").startswith(("none", "authenticated"))


def argv(repo: Repo, encryption: str = DEFAULT_ENCRYPTION, *, storage_quota: str | None = None) -> tuple[str, ...]:
    if encryption not in ENCRYPTIONS:
        raise ValueError(f"Unknown encryption {encryption!r}; choose one of {', '.join(ENCRYPTIONS)}.")
    quota = ("--storage-quota", storage_quota) if storage_quota else ()
    return ("init", "--encryption", encryption, "--make-parent-dirs", *quota, repo.url)


async def run(transport: Transport, repo: Repo, encryption: str = DEFAULT_ENCRYPTION, **kwargs) -> BorgResult:
    return await run_borg(
        transport, argv(repo, encryption, storage_quota=kwargs.pop("storage_quota", None)), repo, **kwargs
    )
