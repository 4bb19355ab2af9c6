"""Helpers for the source tests: run one planned job with the real borg layer, the way the chain runner will.

Not the production runner (``bot.backup.runner`` is someone else's): only enough to turn an ``ArchiveJob``
into ``create.paths_argv``/``create.command_argv`` + ``create.run``, with the job's ``secret_env`` added to
the transport's secret environment and ``after`` run always, so the tests exercise exactly the plan's argv.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bot.backup.jobs import ArchiveJob
from bot.borg import create, init
from bot.borg.repo import Repo
from bot.borg.runner import BorgError, BorgResult, run_borg
from bot.transport.base import CommandResult, Transport
from tests.harness.ssh import target_of

PASSPHRASE = "repo pass 'with' $(quotes)"
DATA = Path(__file__).parent / "data" / "sources"


class WithSecrets:
    """A transport view that adds a job's ``secret_env`` to every command (borg's, and so the dump's)."""

    def __init__(self, inner: Transport, secrets: Mapping[str, str]) -> None:
        self.inner, self.secrets, self.name = inner, dict(secrets), inner.name

    async def run(self, argv: Sequence[str], *, secret_env: Mapping[str, str] | None = None, **kwargs: Any):
        merged = {**(secret_env or {}), **self.secrets}
        return await self.inner.run(argv, secret_env=merged or None, **kwargs)

    async def close(self) -> None:
        return None


class InDir:
    """Runs commands inside ``directory`` (for ``borg extract`` with options the borg layer does not expose)."""

    def __init__(self, inner: Transport, directory: str) -> None:
        self.inner, self.directory, self.name = inner, directory, inner.name

    async def run(self, argv: Sequence[str], **kwargs: Any) -> CommandResult:
        script = 'mkdir -p -- "$1" && cd -- "$1" && shift && exec "$@"'
        return await self.inner.run(["sh", "-c", script, "sh", self.directory, *argv], **kwargs)

    async def close(self) -> None:
        return None


@dataclass
class JobRun:
    result: BorgResult | None = None
    error: BorgError | None = None
    before: list[CommandResult] = field(default_factory=list)
    after: list[CommandResult] = field(default_factory=list)


async def run_job(
    transport: Transport, repo: Repo, job: ArchiveJob, archive: str, *, borg: str = "borg",
    during: Callable[[], Awaitable[None]] | None = None, options: create.CreateOptions | None = None,
) -> JobRun:  # fmt: skip
    """before → borg create (the job's argv) → after (always). ``during`` runs after ``before`` (observation)."""
    run = JobRun()
    opts = options or create.CreateOptions(
        excludes=job.excludes, one_file_system=job.one_file_system, exclude_caches=job.exclude_caches
    )
    try:
        for argv in job.before:
            done = await transport.run(argv, timeout=120)
            run.before.append(done)
            if not done.ok:
                return run
        if during is not None:
            await during()
        if job.kind == "paths":
            args = create.paths_argv(repo, archive, job.paths, opts)
        else:
            args = create.command_argv(repo, archive, job.stdin_name, job.command, opts)
        try:
            run.result, _ = await create.run(WithSecrets(transport, job.secret_env), repo, args, borg=borg)
        except BorgError as exc:
            run.error = exc
    finally:
        for argv in job.after:
            run.after.append(await transport.run(argv, timeout=120))
    return run


async def extract_stdout(transport: Transport, repo: Repo, archive: str, *paths: str, borg: str = "borg") -> bytes:
    result = await run_borg(transport, ["extract", "--stdout", repo.archive(archive), *paths], repo, borg=borg)
    return result.stdout


@pytest.fixture
async def source_host(make_sshd, pool_for, tmp_path):
    """A root sshd host with a local-path borg repository on it; ``(host, transport, repo)``."""
    host = make_sshd("source")
    transport = pool_for(host).transport(target_of(host))
    repo = Repo(url=str(host.workdir / "repo"), passphrase=PASSPHRASE, base_dir=str(tmp_path / "borg-base"))
    await init.run(transport, repo)
    return host, transport, repo


def install_stand_in(host: Any, name: str, source: str, **replace: str) -> Path:
    """Copy ``tests/data/sources/<source>`` as ``<name>`` into the sshd host's PATH dir (first on its PATH)."""
    text = (DATA / source).read_text()
    for key, value in replace.items():
        text = text.replace(f"@{key}@", value)
    path = host.workdir / "bin" / name
    path.write_text(text)
    path.chmod(0o755)
    return path


def tree_manifest(root: Path) -> dict[str, tuple]:
    """Every entry below ``root``: type, mode, owner, mtime (ns), size, content hash or link target, and a
    hard-link group (paths sharing an inode get the same group id)."""
    inodes: dict[int, str] = {}
    manifest: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                manifest[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                manifest[rel] = ("dir", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
            else:
                group = inodes.setdefault(st.st_ino, rel) if st.st_nlink > 1 else None
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                manifest[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns,
                                 st.st_size, digest, group)  # fmt: skip
    return manifest
