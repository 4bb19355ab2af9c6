"""The real borg (PyPI borgbackup 1.4.x from the project's venv) with per-simulated-host state.

Why per-host ``BORG_BASE_DIR``: borg keeps a security dir per repository id (last known location, key type,
nonce) under ``$BORG_BASE_DIR/.config/borg/security``. Simulated hosts on one machine would all share root's, and
borg then aborts with "repository was previously located at …" when the "other host" reaches the same repository
by another URL (TESTING.md). So every simulated host gets its own base dir: :meth:`BorgEnv.base_dir` for borg run
by the test process "as" a host, and ``SshHost.borg_base_dir`` (set by the sshd fixture) for borg run in an ssh
session on a simulated host.

Passphrases reach borg only through ``BORG_PASSPHRASE_FD`` (a pipe inherited by the child) or ``BORG_PASSCOMMAND``
(``cat`` of a 0600 file), never argv and never ``BORG_PASSPHRASE`` — the same rule the bot follows.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from tests.harness.common import IN_CI, find_borg, make_workdir, run

# Answer borg's yes/no questions with "no" instead of hanging on stdin or silently accepting.
NO_PROMPTS = {
    "BORG_RELOCATED_REPO_ACCESS_IS_OK": "no",
    "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "no",
    "BORG_CHECK_I_KNOW_WHAT_I_AM_DOING": "NO",
    "BORG_DELETE_I_KNOW_WHAT_I_AM_DOING": "NO",
    "BORG_DISPLAY_PASSPHRASE": "no",
}
_SECRET_VARS = ("BORG_PASSPHRASE", "BORG_PASSCOMMAND", "BORG_PASSPHRASE_FD", "BORG_NEW_PASSPHRASE", "BORG_REPO")


@dataclass(frozen=True)
class BorgCall:
    """Environment and inherited fds for one borg process (``subprocess.run(..., env=env, pass_fds=pass_fds)``)."""

    env: dict[str, str]
    pass_fds: tuple[int, ...] = ()


@dataclass(frozen=True)
class BorgEnv:
    """The venv's borg, its version, and per-simulated-host state dirs."""

    borg: Path  # absolute path of the borg executable
    version: str  # e.g. "1.4.5"
    root: Path  # temp dir holding the per-host base dirs and passphrase files
    _secrets: Path = field(repr=False)

    def base_dir(self, host: str) -> Path:
        """``BORG_BASE_DIR`` for borg run "as" simulated host ``host`` (created on first use)."""
        path = self.root / "hosts" / host / "borg-base"
        path.mkdir(parents=True, exist_ok=True)
        return path

    @contextlib.contextmanager
    def environ(
        self,
        host: str = "local",
        *,
        passphrase: str | None = None,
        via: Literal["fd", "command"] = "fd",
        rsh: str | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> Iterator[BorgCall]:
        """Environment for one borg process as ``host``: its BORG_BASE_DIR, no prompts, optional ``BORG_RSH``,
        and the passphrase via ``BORG_PASSPHRASE_FD`` (a fresh pipe: borg reads it once, so use one
        ``environ()`` per process) or ``BORG_PASSCOMMAND`` (a 0600 file, removed on exit)."""
        env = {k: v for k, v in os.environ.items() if k not in _SECRET_VARS}
        env.update(NO_PROMPTS)
        env["BORG_BASE_DIR"] = os.fspath(self.base_dir(host))
        if rsh is not None:
            env["BORG_RSH"] = rsh
        if extra:
            env.update(extra)
        with contextlib.ExitStack() as stack:
            pass_fds: tuple[int, ...] = ()
            if passphrase is not None and via == "fd":
                read_fd, write_fd = os.pipe()
                stack.callback(os.close, read_fd)
                try:
                    os.write(write_fd, passphrase.encode())
                finally:
                    os.close(write_fd)
                env["BORG_PASSPHRASE_FD"] = str(read_fd)
                pass_fds = (read_fd,)
            elif passphrase is not None:
                self._secrets.mkdir(mode=0o700, exist_ok=True)
                secret = self._secrets / f"pass-{os.urandom(8).hex()}"
                fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as fh:
                    fh.write(passphrase)
                stack.callback(secret.unlink, missing_ok=True)
                env["BORG_PASSCOMMAND"] = f"cat {shlex.quote(os.fspath(secret))}"
            yield BorgCall(env=env, pass_fds=pass_fds)

    def run(
        self,
        *args: str | os.PathLike[str],
        host: str = "local",
        passphrase: str | None = None,
        via: Literal["fd", "command"] = "fd",
        rsh: str | None = None,
        extra: Mapping[str, str] | None = None,
        check: bool = True,
        input: str | None = None,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``borg *args`` as simulated host ``host``; raises ``CommandError`` on a non-zero exit if ``check``."""
        with self.environ(host, passphrase=passphrase, via=via, rsh=rsh, extra=extra) as call:
            return run(
                [self.borg, *args], env=call.env, pass_fds=call.pass_fds, input=input, check=check, timeout=timeout
            )


@pytest.fixture(scope="session")
def borg_env() -> Iterator[BorgEnv]:
    """The real borg of the venv (what the project pins, 1.4.x), with per-host base dirs; see module docstring."""
    borg = find_borg()
    if borg is None:
        message = "borg not found next to the interpreter nor on PATH (pip install -e .[dev] installs it)"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    out = run([borg, "--version"]).stdout.strip()
    match = re.search(r"(\d+\.\d+\.\d+\S*)", out)
    root = make_workdir("borg")
    try:
        yield BorgEnv(borg=Path(borg), version=match.group(1) if match else out, root=root, _secrets=root / "secrets")
    finally:
        shutil.rmtree(root, ignore_errors=True)
