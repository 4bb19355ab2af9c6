"""A repository as borg sees it: where it is, how to reach it, and the passphrase (held in memory only)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

_ARCHIVE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,199}$")


class InvalidName(ValueError):
    """An archive or repository name that the bot will not hand to borg."""


def archive_name(name: str) -> str:
    """Archive names the bot creates: letters, digits and ``._@+-`` (no spaces, no ``::`` or ``/``)."""
    if not _ARCHIVE.match(name):
        raise InvalidName(f"{name!r} is not a valid archive name: use letters, digits and . _ @ + - only.")
    return name


@dataclass(frozen=True)
class Repo:
    """``url`` is a local path or ``ssh://user@host:port/path``; ``rsh`` the BORG_RSH for ssh URLs.

    ``passphrase`` is passed to borg through the transport's ``secret_env`` (stdin-fed, never argv) and is
    excluded from ``repr``. ``base_dir`` sets BORG_BASE_DIR (borg's cache/security/keys location): each
    client of a repository must keep its own.
    """

    url: str
    passphrase: str | None = field(default=None, repr=False)
    rsh: str | None = None
    base_dir: str | None = None
    extra_secrets: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # e.g. a dump's password

    def with_secrets(self, secrets: Mapping[str, str]) -> Repo:
        """This repo with more variables for borg's secret environment (inherited by a dump command)."""
        return replace(self, extra_secrets=self.extra_secrets + tuple(secrets.items())) if secrets else self

    def archive(self, name: str) -> str:
        return f"{self.url}::{archive_name(name)}"

    def env(self) -> dict[str, str]:
        values = {"BORG_EXIT_CODES": "modern"}
        if self.rsh:
            values["BORG_RSH"] = self.rsh
        if self.base_dir:
            values["BORG_BASE_DIR"] = self.base_dir
        return values

    def secret_env(self) -> dict[str, str]:
        values = dict(self.extra_secrets)
        if self.passphrase is not None:
            values["BORG_PASSPHRASE"] = self.passphrase
        return values


def ssh_url(user: str, host: str, port: int, path: str) -> str:
    """borg's ssh URL; IPv6 hosts in brackets."""
    shown = f"[{host}]" if ":" in host else host
    return f"ssh://{user}@{shown}:{port}{path if path.startswith('/') else '/' + path}"


def rsh_command(identity_file: str, known_hosts_file: str, *, connect_timeout: int = 30) -> str:
    """BORG_RSH for a source server pushing to a pool: its own key, the pool's pinned host key, no prompts."""
    return shlex.join(
        [
            "ssh",
            "-i", identity_file,
            "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={known_hosts_file}",
            "-o", f"ConnectTimeout={connect_timeout}",
            "-o", "ServerAliveInterval=30",
            "-o", "ServerAliveCountMax=4",
        ]
    )  # fmt: skip
